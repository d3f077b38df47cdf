// Shared building blocks of the C++ core: argument checks, the OpenMP loop
// that never lets an exception escape a parallel region, and union-find.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef AAS_HAVE_OPENMP
#include <omp.h>
#endif

namespace aas {

using index_t = std::int64_t;

/// Throws std::invalid_argument(message) when `ok` is false. The Python layer
/// validates first; this is the second line of defence, never an assert. A
/// macro, so that the message (often built with to_string) is built only on
/// failure: checks run per element inside loops.
#define AAS_REQUIRE(ok, ...)                                 \
  do {                                                       \
    if (!(ok)) throw std::invalid_argument(__VA_ARGS__);     \
  } while (0)

/// True when the library was compiled with OpenMP.
inline bool has_openmp() {
#ifdef AAS_HAVE_OPENMP
  return true;
#else
  return false;
#endif
}

/// Runs body(i) for i in [0, n) on `n_threads` threads (dynamic schedule,
/// `chunk` iterations at a time). The first exception thrown by any
/// iteration is re-thrown on the calling thread after the region ends.
template <class Body>
void parallel_for(index_t n, int n_threads, Body&& body, index_t chunk = 64) {
  std::exception_ptr first_error;
  std::atomic<bool> failed{false};
  (void)n_threads;
  (void)chunk;
#ifdef AAS_HAVE_OPENMP
#pragma omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(dynamic, chunk)
#endif
  for (index_t i = 0; i < n; ++i) {
    if (failed.load(std::memory_order_relaxed)) continue;  // drain fast after an error
    try {
      body(i);
    } catch (...) {
#ifdef AAS_HAVE_OPENMP
#pragma omp critical(aas_first_error)
#endif
      if (!first_error) first_error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  }
  if (first_error) std::rethrow_exception(first_error);
}

/// Runs body(thread_id, n_used) once per thread of a team of `n_threads`,
/// with the same exception guarantee as parallel_for. For loops that need
/// per-thread scratch buffers.
template <class Body>
void parallel_team(int n_threads, Body&& body) {
  std::exception_ptr first_error;
  (void)n_threads;
#ifdef AAS_HAVE_OPENMP
#pragma omp parallel num_threads(n_threads > 0 ? n_threads : 1)
  {
    try {
      body(omp_get_thread_num(), omp_get_num_threads());
    } catch (...) {
#pragma omp critical(aas_first_error)
      if (!first_error) first_error = std::current_exception();
    }
  }
#else
  try {
    body(0, 1);
  } catch (...) {
    first_error = std::current_exception();
  }
#endif
  if (first_error) std::rethrow_exception(first_error);
}

/// Disjoint-set forest with path halving and union by index (the smaller
/// root wins), so component representatives are deterministic.
class UnionFind {
 public:
  explicit UnionFind(index_t n) : parent_(static_cast<std::size_t>(n)) {
    std::iota(parent_.begin(), parent_.end(), index_t{0});
  }
  index_t find(index_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];
      x = parent_[x];
    }
    return x;
  }
  /// Returns true when a and b were in different sets.
  bool unite(index_t a, index_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return false;
    if (a < b)
      parent_[b] = a;
    else
      parent_[a] = b;
    return true;
  }
  /// Labels 0..c-1 numbered in order of each set's smallest member; returns c.
  index_t labels(index_t* out) {
    const index_t n = static_cast<index_t>(parent_.size());
    std::vector<index_t> root_label(parent_.size(), -1);
    index_t c = 0;
    for (index_t i = 0; i < n; ++i) {
      const index_t r = find(i);
      if (root_label[r] < 0) root_label[r] = c++;
      out[i] = root_label[r];
    }
    return c;
  }

 private:
  std::vector<index_t> parent_;
};

}  // namespace aas
