// Exact kNN on the GPU: fp32 similarity tiles (a shared-memory tiled GEMM), then one
// thread per row merges its tile row into its top-k heap (aas::topk, the same code
// the CPU runs), then one thread per row sorts its heap into the output.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "aas/topk.hpp"
#include "knn_cuda.hpp"

namespace aas {
namespace cuda {
namespace {

constexpr int kTile = 16;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a sticky launch error before reporting it
    throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(err));
  }
}

// C (rows, cols) = X[r0 : r0 + rows] . X[c0 : c0 + cols]^T, fp32.
__global__ void similarity_tile(const float* X, index_t d, index_t r0, index_t rows, index_t c0,
                                index_t cols, float* C) {
  __shared__ float As[kTile][kTile + 1];
  __shared__ float Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const index_t a_row = static_cast<index_t>(blockIdx.y) * kTile + ty;  // within the tile
  const index_t b_row = static_cast<index_t>(blockIdx.x) * kTile + ty;
  const index_t out_col = static_cast<index_t>(blockIdx.x) * kTile + tx;
  float acc = 0.0f;
  for (index_t k0 = 0; k0 < d; k0 += kTile) {
    const index_t k = k0 + tx;
    As[ty][tx] = (a_row < rows && k < d) ? X[(r0 + a_row) * d + k] : 0.0f;
    Bs[ty][tx] = (b_row < cols && k < d) ? X[(c0 + b_row) * d + k] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; ++kk) acc += As[ty][kk] * Bs[tx][kk];
    __syncthreads();
  }
  if (a_row < rows && out_col < cols) C[a_row * cols + out_col] = acc;
}

__global__ void merge_rows(const float* C, index_t rows, index_t cols, index_t r0, index_t c0,
                           float* heap_s, index_t* heap_i, index_t* heap_n, index_t cap) {
  const index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  topk::RowHeap h{heap_s + (r0 + r) * cap, heap_i + (r0 + r) * cap, heap_n + r0 + r, cap};
  index_t self = r0 + r - c0;  // a row is never its own candidate
  if (self < 0 || self >= cols) self = -1;
  topk::offer_row(h, C + r * cols, cols, c0, self);
}

__global__ void finalize(float* heap_s, index_t* heap_i, index_t* heap_n, index_t n, index_t cap,
                         index_t k, bool include_self, index_t* out_i, float* out_s) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  topk::RowHeap h{heap_s + i * cap, heap_i + i * cap, heap_n + i, cap};
  h.sort_best_first();
  const index_t first = include_self ? 1 : 0;
  if (include_self) {
    out_i[i * k] = i;
    out_s[i * k] = 1.0f;
  }
  for (index_t t = 0; t < *h.size; ++t) {
    out_i[i * k + first + t] = h.id[t];
    out_s[i * k + first + t] = h.s[t];
  }
}

template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  explicit DeviceBuffer(index_t count) {
    check(cudaMalloc(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(T)), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

void knn_graph_device(const float* dX, index_t n, index_t d, index_t k, bool include_self,
                      index_t* d_out_idx, float* d_out_sims, index_t block) {
  const index_t cap = include_self ? k - 1 : k;
  if (n < 2 || d < 1 || k < 1 || cap > n - 1 || block < kTile)
    throw std::invalid_argument("aas::cuda::knn_graph: bad sizes (need 1 <= k < n, block >= 16)");
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
  DeviceBuffer<float> tile(block * block), hs(n * cap);
  DeviceBuffer<index_t> hi(n * cap), hn(n);
  check(cudaMemset(hn.p, 0, sizeof(index_t) * n), "clear heaps");
  if (cap > 0) {
    for (index_t r0 = 0; r0 < n; r0 += block) {
      const index_t rows = (n - r0 < block) ? n - r0 : block;
      for (index_t c0 = 0; c0 < n; c0 += block) {
        const index_t cols = (n - c0 < block) ? n - c0 : block;
        dim3 threads(kTile, kTile);
        dim3 grid(static_cast<unsigned>((cols + kTile - 1) / kTile),
                  static_cast<unsigned>((rows + kTile - 1) / kTile));
        similarity_tile<<<grid, threads>>>(dX, d, r0, rows, c0, cols, tile.p);
        check(cudaGetLastError(), "similarity_tile");
        merge_rows<<<static_cast<unsigned>((rows + 127) / 128), 128>>>(tile.p, rows, cols, r0, c0,
                                                                       hs.p, hi.p, hn.p, cap);
        check(cudaGetLastError(), "merge_rows");
      }
    }
  }
  finalize<<<static_cast<unsigned>((n + 127) / 128), 128>>>(hs.p, hi.p, hn.p, n, cap, k,
                                                           include_self, d_out_idx, d_out_sims);
  check(cudaGetLastError(), "finalize");
  check(cudaDeviceSynchronize(), "knn_graph");
}

void knn_graph(const float* X, index_t n, index_t d, index_t k, bool include_self,
               index_t* out_idx, float* out_sims, index_t block) {
  if (n < 2 || d < 1 || k < 1)
    throw std::invalid_argument("aas::cuda::knn_graph: bad sizes (need 1 <= k < n)");
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
  DeviceBuffer<float> dX(n * d), os(n * k);
  DeviceBuffer<index_t> oi(n * k);
  check(cudaMemcpy(dX.p, X, sizeof(float) * n * d, cudaMemcpyHostToDevice), "copy X");
  knn_graph_device(dX.p, n, d, k, include_self, oi.p, os.p, block);
  check(cudaMemcpy(out_idx, oi.p, sizeof(index_t) * n * k, cudaMemcpyDeviceToHost), "copy out");
  check(cudaMemcpy(out_sims, os.p, sizeof(float) * n * k, cudaMemcpyDeviceToHost), "copy out");
}

}  // namespace cuda
}  // namespace aas
