// Host-callable entry points of the CUDA kernels (no CUDA headers here, so the
// pybind11 bindings compile with the host compiler alone).
#pragma once

#include <cstddef>
#include <cstdint>

namespace aas {
namespace cuda {

using index_t = std::int64_t;

/// CUDA devices visible to this process; 0 when there is no GPU or no driver.
int device_count();

/// Exact kNN graph by inner product of the rows of X (unit rows: cosine) on the
/// calling thread's current CUDA device.
/// X: (n, d) row-major float32 in host memory; out_idx/out_sims: (n, k) row-major,
/// best first, ties to the smaller index; with include_self column 0 is the row itself
/// (similarity 1), as the CPU knn_finalize writes it. The similarity tiles are
/// (block, block) fp32 on the device, so device memory is O(n d + n k + block^2).
/// bits: 24 computes fp32 tiles (each similarity one fused multiply-add per element in
/// element order, aas::knnx::dot_fma); 8 (bf16) or 11 (tf32) finds cand_cap candidates
/// per row on the tensor cores (cand_cap <= 0: k-1 + max(k-1, 32)), re-ranks them in
/// fp32 and recomputes in fp32 the rows whose result it cannot certify
/// (aas/knn_exec.hpp): the output is the fp32 one either way. *fallback_rows (when
/// given) receives how many rows needed that recomputation. block: a multiple of 16.
/// resident_rows: rows of X held on the device at once (<= 0: resident_rows_for the
/// free memory); fewer than n streams X from the host block by block, in fp32.
/// Throws std::runtime_error with CUDA's message on any CUDA failure.
void knn_graph(const float* X, index_t n, index_t d, index_t k, bool include_self,
               index_t* out_idx, float* out_sims, index_t block, int bits = 24,
               index_t cand_cap = 0, index_t* fallback_rows = nullptr,
               index_t resident_rows = 0);

/// How many rows of X knn_graph keeps on the device at once given the free device
/// memory: n when X fits (with its heaps and tiles) in 60% of it, else a multiple of
/// block, X then being streamed from the host in fp32. Throws when not even one block
/// fits beside the heaps.
index_t resident_rows_for(index_t n, index_t d, index_t k, index_t block, std::size_t free_bytes);

/// knn_graph over device memory: dX (n, d) and the outputs (n, k) are device pointers
/// on the current device (nothing is copied to or from the host).
void knn_graph_device(const float* dX, index_t n, index_t d, index_t k, bool include_self,
                      index_t* d_out_idx, float* d_out_sims, index_t block, int bits = 24,
                      index_t cand_cap = 0, index_t* fallback_rows = nullptr);

}  // namespace cuda
}  // namespace aas
