// Host-callable entry points of the CUDA kernels (no CUDA headers here, so the
// pybind11 bindings compile with the host compiler alone).
#pragma once

#include <cstdint>

namespace aas {
namespace cuda {

using index_t = std::int64_t;

/// CUDA devices visible to this process; 0 when there is no GPU or no driver.
int device_count();

/// Exact kNN graph by inner product of the rows of X (unit rows: cosine) on device 0.
/// X: (n, d) row-major float32 in host memory; out_idx/out_sims: (n, k) row-major,
/// best first, ties to the smaller index; with include_self column 0 is the row itself
/// (similarity 1), as the CPU knn_finalize writes it. The similarity tiles are
/// (block, block) fp32 on the device, so device memory is O(n d + n k + block^2).
/// Throws std::runtime_error with CUDA's message on any CUDA failure.
void knn_graph(const float* X, index_t n, index_t d, index_t k, bool include_self,
               index_t* out_idx, float* out_sims, index_t block);

/// knn_graph over device memory: dX (n, d) and the outputs (n, k) are device pointers
/// on the current device (nothing is copied to or from the host).
void knn_graph_device(const float* dX, index_t n, index_t d, index_t k, bool include_self,
                      index_t* d_out_idx, float* d_out_sims, index_t block);

}  // namespace cuda
}  // namespace aas
