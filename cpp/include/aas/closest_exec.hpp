// The U_us closest-pair search of aas::closest_inconsistent_pairs (cpp/src/sampling.cpp)
// as an Exec template (see aas/exec.hpp), for the GPU. It searches the same cluster
// pairs, computes every dot product with the CPU's exact arithmetic (8 float lanes over
// d, the same lane reduction; fused multiply-adds exactly where the CPU uses AVX2+FMA)
// and keeps the best pair with aas::closest (ties to the smallest u, then v; the result
// does not depend on the order of the offers), so it returns the CPU's pairs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "aas/closest.hpp"
#include "aas/exec.hpp"
#include "aas/sampling.hpp"

namespace aas {
namespace closest_exec {

using index_t = std::int64_t;
using closest::Best;

/// Members of the second cluster one work item scans (bounds a thread's work).
constexpr index_t kChunk = 256;
/// Work items whose partial bests are held at once (24 bytes each).
constexpr index_t kBatchItems = index_t{1} << 22;

/// <a, b> over d floats as cpp/src/sampling.cpp computes it: lane l sums the features
/// e + l (e a multiple of 8) in order, the lanes are reduced as
/// ((0+4)+(2+6))+((1+5)+(3+7)). fused (AVX2+FMA on the CPU): every product is fused
/// into its lane, the last d % 8 features as a zero-padded lane block; otherwise
/// products are rounded before the add and the tail is added after the reduction.
AAS_HD float dot(const float* a, const float* b, index_t d, bool fused) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  index_t e = 0;
  for (; e + 8 <= d; e += 8)
    for (int l = 0; l < 8; ++l) {
#if defined(__CUDA_ARCH__)
      acc[l] = fused ? __fmaf_rn(a[e + l], b[e + l], acc[l])
                     : __fadd_rn(acc[l], __fmul_rn(a[e + l], b[e + l]));
#else
      acc[l] = fused ? std::fma(a[e + l], b[e + l], acc[l]) : acc[l] + a[e + l] * b[e + l];
#endif
    }
  if (fused && e < d)
    for (int l = 0; l < 8; ++l) {
      const float av = e + l < d ? a[e + l] : 0.f, bv = e + l < d ? b[e + l] : 0.f;
#if defined(__CUDA_ARCH__)
      acc[l] = __fmaf_rn(av, bv, acc[l]);
#else
      acc[l] = std::fma(av, bv, acc[l]);
#endif
    }
  float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  if (!fused)
    for (; e < d; ++e) {
#if defined(__CUDA_ARCH__)
      s = __fadd_rn(s, __fmul_rn(a[e], b[e]));
#else
      s += a[e] * b[e];
#endif
    }
  return s;
}

/// The largest p < m with off[p] <= t, for a non-decreasing off with off[0] <= t.
AAS_HD index_t segment_of(const index_t* off, index_t m, index_t t) {
  index_t lo = 0, hi = m;
  while (hi - lo > 1) {
    const index_t mid = lo + (hi - lo) / 2;
    if (off[mid] <= t)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// (other, mine) cell of each row inside a region.
struct CellKey {
  const index_t* rows;  // rows inside a region
  const index_t* mine;
  const index_t* other;
  index_t n_mine;
  std::uint64_t* keys;
  AAS_HD void operator()(index_t p) const {
    const index_t i = rows[p];
    keys[p] = static_cast<std::uint64_t>(other[i]) * static_cast<std::uint64_t>(n_mine) +
              static_cast<std::uint64_t>(mine[i]);
  }
};

struct CountOther {
  const std::uint64_t* cells;
  index_t n_mine;
  index_t* count;
  AAS_HD void operator()(index_t p) const {
    hd::atomic_add(count + static_cast<index_t>(cells[p] / static_cast<std::uint64_t>(n_mine)), 1);
  }
};

// Partners of a cell: the later cells of the same other-cluster (larger mine).
struct PartnerCount {
  const std::uint64_t* cells;
  const index_t* g_start;
  const index_t* g_count;
  index_t n_mine;
  index_t* out;
  AAS_HD void operator()(index_t p) const {
    const index_t o = static_cast<index_t>(cells[p] / static_cast<std::uint64_t>(n_mine));
    out[p] = g_count[o] - 1 - (p - g_start[o]);
  }
};

struct PartnerKey {
  const std::uint64_t* cells;
  const index_t* cand_off;
  index_t n_cells, n_mine;
  std::uint64_t* keys;
  AAS_HD void operator()(index_t t) const {
    const index_t p = segment_of(cand_off, n_cells, t);
    const std::uint64_t m = static_cast<std::uint64_t>(n_mine);
    const std::uint64_t c1 = cells[p] % m, c2 = cells[p + 1 + (t - cand_off[p])] % m;
    keys[t] = c1 * m + c2;
  }
};

// Work items of a cluster pair: every member of c1 against kChunk members of c2.
struct ItemCount {
  const std::uint64_t* pairs;
  const index_t* m_start;
  index_t n_mine;
  index_t* out;
  AAS_HD void operator()(index_t q) const {
    const std::uint64_t m = static_cast<std::uint64_t>(n_mine);
    const index_t c1 = static_cast<index_t>(pairs[q] / m), c2 = static_cast<index_t>(pairs[q] % m);
    const index_t n1 = m_start[c1 + 1] - m_start[c1], n2 = m_start[c2 + 1] - m_start[c2];
    out[q] = n1 * ((n2 + kChunk - 1) / kChunk);
  }
};

struct SearchItem {
  const float* x;
  index_t d;
  bool fused;
  const std::uint64_t* pairs;
  const index_t* item_off;
  index_t n_pairs, n_mine;
  const index_t* m_start;
  const index_t* m_rows;
  index_t i0;  // first item of the batch
  Best* partial;
  AAS_HD void operator()(index_t t) const {
    const index_t item = i0 + t;
    const index_t q = segment_of(item_off, n_pairs, item);
    const std::uint64_t m = static_cast<std::uint64_t>(n_mine);
    const index_t c1 = static_cast<index_t>(pairs[q] / m), c2 = static_cast<index_t>(pairs[q] % m);
    const index_t n2 = m_start[c2 + 1] - m_start[c2];
    const index_t chunks = (n2 + kChunk - 1) / kChunk, local = item - item_off[q];
    const index_t u = m_rows[m_start[c1] + local / chunks];
    const index_t v0 = (local % chunks) * kChunk;
    const index_t v1 = v0 + kChunk < n2 ? v0 + kChunk : n2;
    const float* xu = x + u * d;
    Best b;
    for (index_t s = v0; s < v1; ++s) {
      const index_t v = m_rows[m_start[c2] + s];
      closest::offer(b, dot(xu, x + v * d, d, fused), u, v);
    }
    partial[t] = b;
  }
};

struct MergeBatch {
  const index_t* item_off;
  index_t n_pairs, n_items, i0, i1, p0;
  const Best* partial;
  Best* pair_best;
  AAS_HD void operator()(index_t r) const {
    const index_t q = p0 + r;
    const index_t end = q + 1 < n_pairs ? item_off[q + 1] : n_items;
    const index_t a = item_off[q] > i0 ? item_off[q] : i0, b = end < i1 ? end : i1;
    for (index_t t = a; t < b; ++t) closest::merge(pair_best[q], partial[t - i0]);
  }
};

/// One clustering's side (ζ = mine): appends its inconsistent closest pairs (i < j).
/// mine/other: (n,) host, compacted; region: (n,) host.
template <class Exec>
void one_side(const Exec& ex, const float* d_x, index_t n, index_t d,
              const std::vector<index_t>& mine, index_t n_mine, const std::vector<index_t>& other,
              const index_t* region, bool fused, index_t batch,
              std::vector<std::pair<index_t, index_t>>& found) {
  using IBuf = typename Exec::template Buffer<index_t>;
  using KBuf = typename Exec::template Buffer<std::uint64_t>;
  using BBuf = typename Exec::template Buffer<Best>;
  // Rows inside a region grouped by their cluster, ascending (counting sort, O(n)).
  std::vector<index_t> m_start(static_cast<std::size_t>(n_mine) + 1, 0), m_rows;
  for (index_t i = 0; i < n; ++i)
    if (region[i] >= 0) ++m_start[mine[i] + 1];
  for (index_t c = 0; c < n_mine; ++c) m_start[c + 1] += m_start[c];
  const index_t n_in = m_start[n_mine];
  if (n_in == 0) return;
  m_rows.resize(static_cast<std::size_t>(n_in));
  {
    std::vector<index_t> fill(m_start.begin(), m_start.end() - 1);
    for (index_t i = 0; i < n; ++i)
      if (region[i] >= 0) m_rows[fill[mine[i]]++] = i;
  }
  IBuf dm_start(ex, n_mine + 1), dm_rows(ex, n_in), dmine(ex, n), dother(ex, n);
  ex.to_device(m_start.data(), n_mine + 1, dm_start.data());
  ex.to_device(m_rows.data(), n_in, dm_rows.data());
  ex.to_device(mine.data(), n, dmine.data());
  ex.to_device(other.data(), n, dother.data());
  index_t n_other = 0;
  for (index_t i = 0; i < n; ++i) n_other = std::max(n_other, other[i] + 1);

  // The (other, mine) cells, sorted: each other-cluster's mine-clusters, ascending.
  KBuf cells(ex, n_in);
  ex.for_each(n_in, CellKey{dm_rows.data(), dmine.data(), dother.data(), n_mine, cells.data()});
  ex.sort(cells.data(), n_in);
  const index_t n_cells = ex.unique(cells.data(), n_in);
  IBuf g_count(ex, n_other), g_start(ex, n_other), cand_off(ex, n_cells);
  ex.fill(g_count.data(), n_other, index_t{0});
  ex.for_each(n_cells, CountOther{cells.data(), n_mine, g_count.data()});
  ex.exclusive_scan(g_count.data(), g_start.data(), n_other);
  // Cluster pairs c1 < c2 sharing an other-cluster: the CPU's partner lists.
  ex.for_each(n_cells,
              PartnerCount{cells.data(), g_start.data(), g_count.data(), n_mine, cand_off.data()});
  const index_t n_cand = ex.exclusive_scan(cand_off.data(), cand_off.data(), n_cells);
  if (n_cand == 0) return;
  KBuf pairs(ex, n_cand);
  ex.for_each(n_cand, PartnerKey{cells.data(), cand_off.data(), n_cells, n_mine, pairs.data()});
  ex.sort(pairs.data(), n_cand);
  const index_t n_pairs = ex.unique(pairs.data(), n_cand);

  IBuf item_off(ex, n_pairs);
  ex.for_each(n_pairs, ItemCount{pairs.data(), dm_start.data(), n_mine, item_off.data()});
  const index_t n_items = ex.exclusive_scan(item_off.data(), item_off.data(), n_pairs);
  BBuf pair_best(ex, n_pairs), partial(ex, std::min(n_items, batch));
  ex.fill(pair_best.data(), n_pairs, Best{});
  std::vector<index_t> off_host;
  if (n_items > batch) {
    off_host.resize(static_cast<std::size_t>(n_pairs));
    ex.to_host(item_off.data(), n_pairs, off_host.data());
  }
  for (index_t i0 = 0; i0 < n_items; i0 += batch) {
    const index_t i1 = std::min(n_items, i0 + batch);
    ex.for_each(i1 - i0, SearchItem{d_x, d, fused, pairs.data(), item_off.data(), n_pairs, n_mine,
                                    dm_start.data(), dm_rows.data(), i0, partial.data()});
    index_t p0 = 0, p1 = n_pairs;
    if (!off_host.empty()) {
      p0 = segment_of(off_host.data(), n_pairs, i0);
      p1 = segment_of(off_host.data(), n_pairs, i1 - 1) + 1;
    }
    ex.for_each(p1 - p0, MergeBatch{item_off.data(), n_pairs, n_items, i0, i1, p0, partial.data(),
                                    pair_best.data()});
  }
  std::vector<Best> best(static_cast<std::size_t>(n_pairs));
  ex.to_host(pair_best.data(), n_pairs, best.data());
  for (const Best& b : best) {
    // no pair wins only when all its dot products are NaN
    if (b.u == Best{}.u)
      throw std::invalid_argument(
          "closest_inconsistent_pairs: x holds NaN or inf (dot products are NaN)");
    if (other[b.u] == other[b.v]) found.emplace_back(std::min(b.u, b.v), std::max(b.u, b.v));
  }
}

/// aas::closest_inconsistent_pairs with the dot products on the device.
/// d_x: (n, d) float32 device rows. labels_a, labels_b, region: (n,) host int64 (labels
/// >= 0, region -1 outside every region). fused: whether the CPU search fuses (see
/// dot(); aas::closest_pairs_fused() on the CPU that should be matched). batch: work
/// items per pass (device memory 24 bytes each). out_pairs: 2·m entries (i, j), i < j,
/// sorted; out_via: m entries, 0 via A, 1 via B only.
template <class Exec>
void closest_inconsistent_pairs(const Exec& ex, const float* d_x, index_t n, index_t d,
                                const index_t* labels_a, const index_t* labels_b,
                                const index_t* region, bool fused, std::vector<index_t>& out_pairs,
                                std::vector<std::int8_t>& out_via, index_t batch = kBatchItems) {
  if (n < 0 || d < 1) throw std::invalid_argument("closest_inconsistent_pairs: bad sizes");
  if (batch < 1) throw std::invalid_argument("closest_inconsistent_pairs: batch must be >= 1");
  out_pairs.clear();
  out_via.clear();
  if (n == 0) return;
  std::vector<index_t> a, b;
  const index_t na = compact_labels(labels_a, n, "closest_inconsistent_pairs: labels_a", a);
  const index_t nb = compact_labels(labels_b, n, "closest_inconsistent_pairs: labels_b", b);
  std::vector<std::pair<index_t, index_t>> via_a, via_b;
  one_side(ex, d_x, n, d, a, na, b, region, fused, batch, via_a);
  one_side(ex, d_x, n, d, b, nb, a, region, fused, batch, via_b);
  merge_closest_sides(via_a, via_b, out_pairs, out_via);
}

}  // namespace closest_exec
}  // namespace aas
