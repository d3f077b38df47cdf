// Inputs already in device memory: row norms and the scaled copy on the device, the kNN
// over them (knn_graph_device), and the results copied back to the host.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "device_input_cuda.hpp"
#include "exec_cuda.cuh"

namespace aas {
namespace cuda {
namespace {

constexpr auto& check = exec::cuda_check;  // the one CUDA error check (exec_cuda.cuh)

constexpr int kNormThreads = 256;

// One block per row (grid-stride over rows): the sum of squares in double, so the norm
// is the one the host computes to double rounding.
__global__ void row_norms(const float* X, index_t n, index_t d, double* out) {
  __shared__ double part[kNormThreads];
  for (index_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* x = X + r * d;
    double acc = 0.0;
    for (index_t j = threadIdx.x; j < d; j += blockDim.x) {
      const double v = x[j];
      acc += v * v;
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kNormThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = sqrt(part[0]);
    __syncthreads();  // part is reused by the next row
  }
}

// out = float(double(x) / norm) elementwise: the host's (X / norms[:, None]) in float64
// rounded to float32, bit for bit.
__global__ void scale_rows(const float* X, const double* norms, index_t n, index_t d, float* out) {
  const index_t total = n * d;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride)
    out[i] = static_cast<float>(static_cast<double>(X[i]) / norms[i / d]);
}

unsigned grid_for(index_t count, index_t per_block) {
  const index_t blocks = (count + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

void need_device() {
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
}

}  // namespace

int current_device() {
  need_device();
  int dev = -1;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

int pointer_kind(const void* p, int* device) {
  need_device();
  cudaPointerAttributes attr{};
  check(cudaPointerGetAttributes(&attr, p), "cudaPointerGetAttributes");
  *device = attr.type == cudaMemoryTypeUnregistered ? -1 : attr.device;
  switch (attr.type) {
    case cudaMemoryTypeHost:
      return 1;
    case cudaMemoryTypeDevice:
      return 2;
    case cudaMemoryTypeManaged:
      return 3;
    default:
      return 0;
  }
}

void mem_info(int device, std::size_t* free_bytes, std::size_t* total_bytes) {
  need_device();
  if (device >= 0) check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

void sync_stream(std::int64_t stream) {
  if (stream == 0) return;
  need_device();
  if (stream == -1) {
    check(cudaDeviceSynchronize(), "wait for the device");
    return;
  }
  // 1 and 2 are cudaStreamLegacy and cudaStreamPerThread, the handles CUDA itself uses
  check(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), "producer's stream");
}

void row_norms_device(const float* dX, index_t n, index_t d, double* out_norms) {
  if (n < 1 || d < 1) throw std::invalid_argument("aas::cuda::row_norms_device: empty rows");
  need_device();
  exec::DeviceMemory<double> norms(n);
  row_norms<<<grid_for(n, 1), kNormThreads>>>(dX, n, d, norms.p);
  check(cudaGetLastError(), "row_norms");
  check(cudaMemcpy(out_norms, norms.p, sizeof(double) * n, cudaMemcpyDeviceToHost), "copy norms");
}

void knn_graph_from_device(const float* dX, index_t n, index_t d, index_t k, bool include_self,
                           const double* norms, index_t* out_idx, float* out_sims,
                           float* out_features, index_t block, int bits, index_t cand_cap) {
  if (n < 2 || d < 1 || k < 1 || k >= n)
    throw std::invalid_argument("aas::cuda::knn_graph_from_device: bad sizes (need 1 <= k < n)");
  need_device();
  const float* rows = dX;
  // the caller's rows are never written: scaled rows go to a scratch copy
  exec::DeviceMemory<float> scaled(norms ? n * d : 0);
  if (norms) {
    exec::DeviceMemory<double> dn(n);
    check(cudaMemcpy(dn.p, norms, sizeof(double) * n, cudaMemcpyHostToDevice), "copy norms");
    scale_rows<<<grid_for(n * d, 256), 256>>>(dX, dn.p, n, d, scaled.p);
    check(cudaGetLastError(), "scale_rows");
    check(cudaDeviceSynchronize(), "scale_rows");
    rows = scaled.p;
  }
  exec::DeviceMemory<index_t> oi(n * k);
  exec::DeviceMemory<float> os(n * k);
  knn_graph_device(rows, n, d, k, include_self, oi.p, os.p, block, bits, cand_cap);
  check(cudaMemcpy(out_idx, oi.p, sizeof(index_t) * n * k, cudaMemcpyDeviceToHost), "copy out");
  check(cudaMemcpy(out_sims, os.p, sizeof(float) * n * k, cudaMemcpyDeviceToHost), "copy out");
  if (out_features)
    check(cudaMemcpy(out_features, rows, sizeof(float) * n * d, cudaMemcpyDeviceToHost),
          "copy features");
}

void rows_to_host(const float* dX, index_t n, index_t d, float* out) {
  need_device();
  check(cudaMemcpy(out, dX, sizeof(float) * n * d, cudaMemcpyDeviceToHost), "copy to host");
}

}  // namespace cuda
}  // namespace aas
