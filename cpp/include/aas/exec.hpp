// Execution back-ends for the GPU algorithms. An algorithm written as a template over
// an Exec runs unchanged on the CPU (exec::Host, here) and on the GPU (exec::Cuda in
// cuda/exec_cuda.cuh): its per-index work is a functor with an AAS_HD operator()(i),
// and the few collective steps (scan, sort, unique, copies) go through the Exec. The
// CPU build instantiates every such algorithm with exec::Host, so the tests run all of
// a kernel's code except the launch itself and the CUDA library calls.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "aas/hd.hpp"

namespace aas {
namespace exec {

using index_t = std::int64_t;

/// Serial host execution. for_each runs the indices in order, one at a time, so a
/// functor's device atomics (hd::atomic_* below) are plain read-modify-writes here.
struct Host {
  template <class T>
  struct Buffer {
    std::vector<T> v;
    Buffer(const Host&, index_t count) : v(static_cast<std::size_t>(count > 0 ? count : 1)) {}
    T* data() { return v.data(); }
    const T* data() const { return v.data(); }
    void swap(Buffer& other) { v.swap(other.v); }
  };

  template <class F>
  void for_each(index_t n, const F& f) const {
    for (index_t i = 0; i < n; ++i) f(i);
  }
  /// out[i] = in[0] + ... + in[i-1]; returns the total. in == out is allowed.
  index_t exclusive_scan(const index_t* in, index_t* out, index_t n) const {
    index_t run = 0;
    for (index_t i = 0; i < n; ++i) {
      const index_t v = in[i];
      out[i] = run;
      run += v;
    }
    return run;
  }
  void sort(std::uint64_t* keys, index_t n) const { std::sort(keys, keys + n); }
  /// Drops adjacent repeats of sorted keys; returns the new count.
  index_t unique(std::uint64_t* keys, index_t n) const {
    return static_cast<index_t>(std::unique(keys, keys + n) - keys);
  }
  template <class T>
  void fill(T* p, index_t n, T v) const {
    std::fill(p, p + n, v);
  }
  template <class T>
  void to_device(const T* host, index_t n, T* dev) const {
    std::copy(host, host + n, dev);
  }
  template <class T>
  void to_host(const T* dev, index_t n, T* host) const {
    std::copy(dev, dev + n, host);
  }
  /// One element of device memory.
  template <class T>
  T get(const T* dev, index_t at) const {
    return dev[at];
  }
  void synchronize() const {}
};

}  // namespace exec

namespace hd {

/// Atomic min / add on device memory; on the host (serial for_each) a plain update.
AAS_HD std::int64_t atomic_min(std::int64_t* p, std::int64_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::int64_t>(
      atomicMin(reinterpret_cast<long long*>(p), static_cast<long long>(v)));
#else
  const std::int64_t old = *p;
  if (v < old) *p = v;
  return old;
#endif
}

AAS_HD std::int64_t atomic_add(std::int64_t* p, std::int64_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(p),
                                             static_cast<unsigned long long>(v)));
#else
  const std::int64_t old = *p;
  *p += v;
  return old;
#endif
}

}  // namespace hd
}  // namespace aas
