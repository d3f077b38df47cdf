// Host-callable entry point of the CUDA Jaccard step (no CUDA headers here, so the
// pybind11 bindings compile with the host compiler alone).
#pragma once

#include <cstdint>

#include "aas/rerank.hpp"

namespace aas {
namespace cuda {

/// aas::k_reciprocal_jaccard on the current CUDA device: the same arguments and the
/// same CSR (the per-row arithmetic is shared; only the double exp of the softmax is
/// CUDA's, so a distance can differ from the CPU's in its last bits). With on_device
/// the rank/sims/features pointers are device memory and are read in place; otherwise
/// they are host arrays and are copied over. pair_budget bounds the candidate pairs
/// held on the device at once (16 bytes each). Throws std::runtime_error with CUDA's
/// message on a CUDA failure, std::invalid_argument on bad arguments.
void k_reciprocal_jaccard(const std::int64_t* rank, const float* sims, std::int64_t n,
                          std::int64_t width, const float* features, std::int64_t d, int k1,
                          int k2, double max_distance, std::int64_t pair_budget, bool on_device,
                          CsrF32& out);

}  // namespace cuda
}  // namespace aas
