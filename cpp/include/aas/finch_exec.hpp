// FINCH's linking and cluster directions (cpp/src/finch.cpp) as Exec templates (see
// aas/exec.hpp), and the whole level loop of aas_core.cluster.finch over them, for the
// GPU. Results are identical to the CPU functions: the components and their numbering
// do not depend on the order of the parallel steps, and every sum runs in the CPU's
// order with unfused operations (nvcc would otherwise contract a*b + c into an FMA).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "aas/exec.hpp"

namespace aas {
namespace finch_exec {

using index_t = std::int64_t;

/// a * b + c in double, rounded twice as the host code rounds it (never fused).
AAS_HD double mul_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(__dmul_rn(a, b), c);
#else
  return a * b + c;
#endif
}

AAS_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

/// Smallest row whose value is out of [lo, hi) (or, with no_self, equals the row).
struct FirstBad {
  const index_t* v;
  index_t lo, hi;
  bool no_self;
  index_t* first;  // device scalar, starts at n
  AAS_HD void operator()(index_t i) const {
    const index_t j = v[i];
    if (j < lo || j >= hi || (no_self && j == i)) hd::atomic_min(first, i);
  }
};

// Hooking: for the edge i - kappa[i], the larger of the two current parents points at
// the smaller. Parents only decrease and stay inside the component (parent[x] <= x).
struct Hook {
  const index_t* kappa;
  index_t* parent;
  index_t* changed;
  AAS_HD void operator()(index_t i) const {
    const index_t a = parent[i], b = parent[kappa[i]];
    if (a == b) return;
    const index_t lo = a < b ? a : b, hi = a < b ? b : a;
    if (hd::atomic_min(parent + hi, lo) > lo) *changed = 1;
  }
};

// Pointer jumping; racing reads see older (larger) parents of the same component, so
// the pass is still correct, only possibly slower to converge.
struct Jump {
  index_t* parent;
  index_t* changed;
  AAS_HD void operator()(index_t i) const {
    const index_t p = parent[i], g = parent[p];
    if (g != p) {
      parent[i] = g;
      *changed = 1;
    }
  }
};

struct IsRoot {
  const index_t* parent;
  index_t* flag;
  AAS_HD void operator()(index_t i) const { flag[i] = parent[i] == i ? 1 : 0; }
};

struct LabelOfRoot {
  const index_t* parent;
  const index_t* rank;
  index_t* out;
  AAS_HD void operator()(index_t i) const { out[i] = rank[parent[i]]; }
};

struct Iota {
  index_t* p;
  AAS_HD void operator()(index_t i) const { p[i] = i; }
};

/// aas::finch_link on the device (paper eq. 1): the components of the edges
/// i - kappa[i], by min-hooking and pointer jumping until nothing changes; each root
/// is then its component's smallest member, so numbering the roots in index order
/// numbers the clusters by smallest member, as the CPU union-find does.
/// d_kappa: (n,) device int64 in [0, n), != i. d_labels: (n,) device int64, filled.
/// Returns the number of clusters. Throws std::invalid_argument with finch_link's
/// message for the first bad row.
template <class Exec>
index_t link(const Exec& ex, const index_t* d_kappa, index_t n, index_t* d_labels) {
  if (n < 0) throw std::invalid_argument("finch_link: n must be >= 0");
  if (n == 0) return 0;
  using IBuf = typename Exec::template Buffer<index_t>;
  IBuf first(ex, 1), parent(ex, n), flag(ex, n);
  ex.fill(first.data(), 1, n);
  ex.for_each(n, FirstBad{d_kappa, 0, n, true, first.data()});
  const index_t bad = ex.get(first.data(), 0);
  if (bad < n) {
    const index_t j = ex.get(d_kappa, bad);
    if (j < 0 || j >= n)
      throw std::invalid_argument("finch_link: first neighbour of row " + std::to_string(bad) +
                                  " is " + std::to_string(j) + ", outside [0, " +
                                  std::to_string(n) + ")");
    throw std::invalid_argument("finch_link: row " + std::to_string(bad) +
                                " is its own first neighbour");
  }
  index_t* par = parent.data();
  index_t* changed = first.data();  // reused as the "something changed" flag
  ex.for_each(n, Iota{par});
  while (true) {
    ex.fill(changed, 1, index_t{0});
    ex.for_each(n, Hook{d_kappa, par, changed});
    if (ex.get(changed, 0) == 0) break;  // every edge inside one star: done
    do {
      ex.fill(changed, 1, index_t{0});
      ex.for_each(n, Jump{par, changed});
    } while (ex.get(changed, 0) != 0);
  }
  ex.for_each(n, IsRoot{par, flag.data()});
  const index_t count = ex.exclusive_scan(flag.data(), flag.data(), n);
  ex.for_each(n, LabelOfRoot{par, flag.data(), d_labels});
  return count;
}

// Sort keys label * n + row: members of each cluster ascending, clusters in order.
struct MemberKey {
  const index_t* labels;
  index_t n;
  std::uint64_t* keys;
  AAS_HD void operator()(index_t i) const {
    keys[i] = static_cast<std::uint64_t>(labels[i]) * static_cast<std::uint64_t>(n) +
              static_cast<std::uint64_t>(i);
  }
};

struct CountLabel {
  const index_t* labels;
  index_t* count;
  AAS_HD void operator()(index_t i) const { hd::atomic_add(count + labels[i], 1); }
};

// acc[c, j] = sum over the members i of c, ascending, of weights[i] * x[i, j] (double).
struct AccumulateElement {
  const float* x;
  const double* weights;
  const std::uint64_t* keys;  // sorted member keys
  const index_t* start;       // (C,) first member of each cluster in keys
  const index_t* count;       // (C,) members per cluster
  index_t n, d;
  double* acc;
  AAS_HD void operator()(index_t e) const {
    const index_t c = e / d, j = e % d;
    double a = 0.0;
    for (index_t p = start[c], end = start[c] + count[c]; p < end; ++p) {
      const index_t i = static_cast<index_t>(keys[p] % static_cast<std::uint64_t>(n));
      a = mul_add(weights[i], static_cast<double>(x[i * d + j]), a);
    }
    acc[e] = a;
  }
};

// Norm of row c (squares summed over j in order) and its inverse (0 for a zero row).
struct RowNorm {
  const double* acc;
  index_t d;
  double* norms;
  double* inv;
  AAS_HD void operator()(index_t c) const {
    double ss = 0.0;
    for (index_t j = 0; j < d; ++j) ss = mul_add(acc[c * d + j], acc[c * d + j], ss);
    const double norm = sqrt(ss);
    norms[c] = norm;
#if defined(__CUDA_ARCH__)
    inv[c] = norm > 0.0 ? __ddiv_rn(1.0, norm) : 0.0;
#else
    inv[c] = norm > 0.0 ? 1.0 / norm : 0.0;
#endif
  }
};

struct Scale {
  const double* acc;
  const double* inv;
  index_t d;
  float* out;
  AAS_HD void operator()(index_t e) const { out[e] = static_cast<float>(mul(acc[e], inv[e / d])); }
};

/// aas::cluster_directions on the device, bit for bit: one work item per (cluster,
/// feature) sums its members in ascending row order in double, as the CPU does.
/// d_x: (n, d) float32, d_weights: (n,) float64, d_labels: (n,) int64 in
/// [0, n_clusters), all device memory. d_dirs: (n_clusters, d) float32 and d_norms:
/// (n_clusters,) float64, device, filled. Device scratch O(n + n_clusters·d) doubles.
template <class Exec>
void directions(const Exec& ex, const float* d_x, const double* d_weights, index_t n, index_t d,
                const index_t* d_labels, index_t n_clusters, float* d_dirs, double* d_norms) {
  if (n < 0 || d < 1 || n_clusters < 0)
    throw std::invalid_argument("cluster_directions: bad sizes");
  if (n_clusters == 0) return;
  using IBuf = typename Exec::template Buffer<index_t>;
  using DBuf = typename Exec::template Buffer<double>;
  if (n > 0) {
    IBuf first(ex, 1);
    ex.fill(first.data(), 1, n);
    ex.for_each(n, FirstBad{d_labels, 0, n_clusters, false, first.data()});
    const index_t bad = ex.get(first.data(), 0);
    if (bad < n)
      throw std::invalid_argument("cluster_directions: label of row " + std::to_string(bad) +
                                  " is " + std::to_string(ex.get(d_labels, bad)) +
                                  ", outside [0, " + std::to_string(n_clusters) + ")");
  }
  typename Exec::template Buffer<std::uint64_t> keys(ex, n);
  IBuf count(ex, n_clusters), start(ex, n_clusters);
  ex.for_each(n, MemberKey{d_labels, n, keys.data()});
  ex.sort(keys.data(), n);
  ex.fill(count.data(), n_clusters, index_t{0});
  ex.for_each(n, CountLabel{d_labels, count.data()});
  ex.exclusive_scan(count.data(), start.data(), n_clusters);
  DBuf acc(ex, n_clusters * d), inv(ex, n_clusters);
  ex.for_each(n_clusters * d, AccumulateElement{d_x, d_weights, keys.data(), start.data(),
                                                count.data(), n, d, acc.data()});
  ex.for_each(n_clusters, RowNorm{acc.data(), d, d_norms, inv.data()});
  ex.for_each(n_clusters * d, Scale{acc.data(), inv.data(), d, d_dirs});
}

struct Copy {
  const index_t* from;
  index_t* to;
  AAS_HD void operator()(index_t i) const { to[i] = from[i]; }
};

struct Gather {
  const index_t* map;
  index_t* v;
  AAS_HD void operator()(index_t i) const { v[i] = map[v[i]]; }
};

/// The level loop of aas_core.cluster.finch (its _finch) on the device: level 0 links
/// the first neighbours of the rows of X; each next level takes the directions of the
/// clusters' sums (weights = the finer level's norms, so the points are read once),
/// their first neighbours and their linking, and stops at a level with one cluster or
/// no fewer clusters (dropped), or after the first level with at most stop_at clusters.
/// first_nn(d_M, rows, d, d_kappa): the exact cosine first neighbour (self excluded) of
/// each of the `rows` device rows of d_M (unit or zero rows) into device d_kappa.
/// d_X: (n, d) float32 unit rows on the device, n >= 2. kappa0: (n,) host int64, the
/// level-0 first neighbours when known (nullptr: first_nn(d_X)). stop_at: 0 for none.
/// out_labels: (n, P) row-major host int64, partition p in column p; out_counts: (P,).
template <class Exec, class FirstNN>
void levels(const Exec& ex, FirstNN&& first_nn, const float* d_X, index_t n, index_t d,
            const index_t* kappa0, index_t stop_at, std::vector<index_t>& out_labels,
            std::vector<index_t>& out_counts) {
  if (n < 2 || d < 1) throw std::invalid_argument("finch: need n >= 2 rows and d >= 1");
  using IBuf = typename Exec::template Buffer<index_t>;
  using FBuf = typename Exec::template Buffer<float>;
  using DBuf = typename Exec::template Buffer<double>;
  std::vector<std::vector<index_t>> columns;
  out_counts.clear();

  auto kappa = std::make_unique<IBuf>(ex, n);
  if (kappa0 != nullptr)
    ex.to_device(kappa0, n, kappa->data());
  else
    first_nn(d_X, n, d, kappa->data());
  auto rows_of = std::make_unique<IBuf>(ex, n);  // cluster of each row of src
  index_t count = link(ex, kappa->data(), n, rows_of->data());
  IBuf current(ex, n);  // cluster of each point at the last kept level
  ex.for_each(n, Copy{rows_of->data(), current.data()});
  columns.emplace_back(static_cast<std::size_t>(n));
  ex.to_host(current.data(), n, columns.back().data());
  out_counts.push_back(count);

  // Level p+1 sums the finer level's sums (norm × direction), as _finch does.
  const float* src = d_X;
  index_t src_rows = n;
  auto weights = std::make_unique<DBuf>(ex, n);
  ex.fill(weights->data(), n, 1.0);
  std::unique_ptr<FBuf> src_buf;
  while (count > 1 && (stop_at <= 0 || count > stop_at)) {
    auto dirs = std::make_unique<FBuf>(ex, count * d);
    auto norms = std::make_unique<DBuf>(ex, count);
    directions(ex, src, weights->data(), src_rows, d, rows_of->data(), count, dirs->data(),
               norms->data());
    auto kc = std::make_unique<IBuf>(ex, count);
    first_nn(dirs->data(), count, d, kc->data());
    auto merged = std::make_unique<IBuf>(ex, count);
    const index_t next = link(ex, kc->data(), count, merged->data());
    if (next == 1 || next >= count) break;
    src_buf = std::move(dirs);
    src = src_buf->data();
    src_rows = count;
    weights = std::move(norms);
    rows_of = std::move(merged);
    ex.for_each(n, Gather{rows_of->data(), current.data()});
    columns.emplace_back(static_cast<std::size_t>(n));
    ex.to_host(current.data(), n, columns.back().data());
    count = next;
    out_counts.push_back(count);
  }
  const index_t P = static_cast<index_t>(columns.size());
  out_labels.assign(static_cast<std::size_t>(n * P), 0);
  for (index_t p = 0; p < P; ++p)
    for (index_t i = 0; i < n; ++i) out_labels[i * P + p] = columns[p][i];
}

}  // namespace finch_exec
}  // namespace aas
