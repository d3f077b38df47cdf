// Host-callable entry points for inputs that already live in device memory (a torch
// or cupy array read in place, its pointer taken from __cuda_array_interface__ or
// DLPack). No CUDA headers here, so the pybind11 bindings compile with the host
// compiler alone. Every call runs on the calling thread's current CUDA device and
// throws std::runtime_error with CUDA's message on any CUDA failure.
#pragma once

#include <cstddef>
#include <cstdint>

#include "knn_cuda.hpp"

namespace aas {
namespace cuda {

/// The calling thread's current CUDA device (the one the kernels run on).
int current_device();

/// Where the pointer p lives: kind 0 host (pageable or unknown to CUDA), 1 pinned host,
/// 2 device memory, 3 managed memory; *device is its CUDA device (-1 for host memory).
int pointer_kind(const void* p, int* device);

/// Free and total bytes of memory on `device` (the current device when device < 0), as
/// cudaMemGetInfo reports them: the whole device, every process included.
void mem_info(int device, std::size_t* free_bytes, std::size_t* total_bytes);

/// Blocks until the work queued on a producer's stream is done. stream is the integer of
/// the CUDA array interface: 1 the legacy default stream, 2 the per-thread default
/// stream, otherwise a cudaStream_t; 0 does nothing; -1 (a producer that does not say)
/// waits for the whole device.
void sync_stream(std::int64_t stream);

/// Euclidean norm of every row of dX ((n, d) row-major float32, device memory), summed in
/// double as aas_core.normalize_rows does on the host. out_norms: (n,) host memory.
void row_norms_device(const float* dX, index_t n, index_t d, double* out_norms);

/// Exact kNN graph over rows already in device memory, results copied to the host.
/// dX: (n, d) row-major float32 on the current device, never written. norms: (n,) host
/// doubles, or nullptr; when given the search runs over float(x / norm) written to a
/// device scratch copy (the rounding of the host's float64 division). out_idx/out_sims:
/// (n, k) host memory, as knn_graph writes them. out_features: (n, d) host memory for
/// the rows searched (scaled or as given), or nullptr to skip that copy. bits, cand_cap:
/// knn_graph_device's precision (24: fp32 tiles; 8 bf16, 11 tf32 candidates re-ranked in
/// fp32).
void knn_graph_from_device(const float* dX, index_t n, index_t d, index_t k, bool include_self,
                           const double* norms, index_t* out_idx, float* out_sims,
                           float* out_features, index_t block, int bits = 24,
                           index_t cand_cap = 0);

/// Copies (n, d) float32 rows from device memory dX to host memory out.
void rows_to_host(const float* dX, index_t n, index_t d, float* out);

}  // namespace cuda
}  // namespace aas
