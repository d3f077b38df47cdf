// Host-callable entry point of the U_us closest-pair search on the GPU (cuda/closest.cu).
// No CUDA headers here.
#pragma once

#include <cstdint>
#include <vector>

namespace aas {
namespace cuda {

using index_t = std::int64_t;

/// aas::closest_inconsistent_pairs with the dot products on device 0; returns exactly
/// the CPU's pairs when `fused` is the CPU's aas::closest_pairs_fused() (the rounding
/// of its dot products). x: (n, d) host float32; labels_a, labels_b: (n,) int64 >= 0;
/// region: (n,) int64, -1 outside every region. out_pairs: 2·m entries (i, j), i < j,
/// sorted; out_via: m entries (0: via A, 1: via B only). Device memory: x, O(n)
/// indices, the candidate cluster pairs and at most 2^22 partial results (96 MiB).
/// Throws std::invalid_argument as the CPU does, std::runtime_error on CUDA failures.
void closest_inconsistent_pairs(const float* x, index_t n, index_t d, const index_t* labels_a,
                                const index_t* labels_b, const index_t* region, bool fused,
                                std::vector<index_t>& out_pairs, std::vector<std::int8_t>& out_via);

}  // namespace cuda
}  // namespace aas
