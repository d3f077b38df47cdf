// exec::Cuda: the GPU back-end of the Exec interface of aas/exec.hpp. for_each is one
// launch of a grid-stride kernel over the functor; scans, sorts and uniques are
// thrust's (CCCL ships with the CUDA toolkit). Every call is checked and throws
// std::runtime_error with CUDA's message.
#pragma once

#include <cuda_runtime.h>
#include <thrust/execution_policy.h>
#include <thrust/scan.h>
#include <thrust/sort.h>
#include <thrust/unique.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "aas/exec.hpp"

namespace aas {
namespace exec {

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a sticky launch error before reporting it
    throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(err));
  }
}

template <class F>
__global__ void each_index(index_t n, F f) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    f(i);
}

template <class T>
struct FillWith {  // at namespace scope: a kernel's functor type may not be private
  T* p;
  T v;
  __device__ void operator()(index_t i) const { p[i] = v; }
};

/// Device memory for `count` T (at least one), freed on scope exit; every .cu file's
/// buffers are these.
template <class T>
struct DeviceMemory {
  T* p = nullptr;
  explicit DeviceMemory(index_t count) {
    cuda_check(cudaMalloc(&p, static_cast<size_t>(count > 0 ? count : 1) * sizeof(T)),
               "cudaMalloc");
  }
  ~DeviceMemory() { cudaFree(p); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  T* data() { return p; }
  const T* data() const { return p; }
  void swap(DeviceMemory& other) { std::swap(p, other.p); }
};

struct Cuda {
  template <class T>
  struct Buffer : DeviceMemory<T> {
    Buffer(const Cuda&, index_t count) : DeviceMemory<T>(count) {}
    void swap(Buffer& other) { DeviceMemory<T>::swap(other); }
  };

  template <class F>
  void for_each(index_t n, const F& f) const {
    if (n <= 0) return;
    const index_t blocks = std::min<index_t>((n + 255) / 256, 65535);
    each_index<<<static_cast<unsigned>(blocks), 256>>>(n, f);
    cuda_check(cudaGetLastError(), "kernel launch");
  }
  index_t exclusive_scan(const index_t* in, index_t* out, index_t n) const {
    if (n <= 0) return 0;
    const index_t last = get(in, n - 1);
    thrust::exclusive_scan(thrust::device, in, in + n, out);
    cuda_check(cudaGetLastError(), "exclusive_scan");
    return get(out, n - 1) + last;
  }
  void sort(std::uint64_t* keys, index_t n) const {
    thrust::sort(thrust::device, keys, keys + n);
    cuda_check(cudaGetLastError(), "sort");
  }
  index_t unique(std::uint64_t* keys, index_t n) const {
    const index_t m = static_cast<index_t>(thrust::unique(thrust::device, keys, keys + n) - keys);
    cuda_check(cudaGetLastError(), "unique");
    return m;
  }
  template <class T>
  void fill(T* p, index_t n, T v) const {
    for_each(n, FillWith<T>{p, v});
  }
  template <class T>
  void to_device(const T* host, index_t n, T* dev) const {
    cuda_check(cudaMemcpy(dev, host, sizeof(T) * n, cudaMemcpyHostToDevice), "copy to device");
  }
  template <class T>
  void to_host(const T* dev, index_t n, T* host) const {
    cuda_check(cudaMemcpy(host, dev, sizeof(T) * n, cudaMemcpyDeviceToHost), "copy to host");
  }
  template <class T>
  T get(const T* dev, index_t at) const {
    T v;
    to_host(dev + at, 1, &v);
    return v;
  }
  void synchronize() const { cuda_check(cudaDeviceSynchronize(), "synchronize"); }
};

}  // namespace exec
}  // namespace aas
