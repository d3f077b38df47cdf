// SpCL's k-reciprocal Jaccard distance as a template over an Exec (aas/exec.hpp): the
// GPU algorithm (cuda/jaccard.cu instantiates it with exec::Cuda), which the CPU build
// instantiates with exec::Host so that the tests check it against the CPU code
// (cpp/src/rerank.cpp) bit for bit. Per-row arithmetic: aas/jaccard_steps.hpp.
//
// Layout on the device, step by step (n rows, k1/k2 as in SpCL, w = round(k1/2) + 1):
//   1. reciprocal sets R(i, k1), R(i, w): (n, k1) and (n, w) int32;
//   2. expanded sets E_i, sorted, in an (n, k1 (1 + w)) int32 scratch, then V as CSR:
//      similarities from the ranking row (else a dot product of the features), then
//      the softmax;
//   3. query expansion: V_i <- mean of the rows of the first k2 neighbours, as CSR
//      (a count pass, a scan, a fill pass; each column summed in neighbour order);
//   4. the transpose of V as sorted (column, row) keys;
//   5. for blocks of rows holding at most `pair_budget` candidate pairs: the pairs
//      (i, j > i) sharing a column of V, sorted and made unique, m_ij by a merge of
//      the two rows, the distance and the max_distance filter, compacted and copied
//      to the host; the host mirrors the upper triangle into the symmetric CSR.
// Device memory: O(n k1 w + nnz(V) + pair_budget), never n x n.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aas/common.hpp"
#include "aas/exec.hpp"
#include "aas/jaccard_steps.hpp"
#include "aas/rerank.hpp"

namespace aas {
namespace jaccard {

/// The first index in [lo, hi) whose key is > x (keys sorted ascending).
AAS_HD index_t upper_bound_key(const std::uint64_t* keys, index_t lo, index_t hi,
                               std::uint64_t x) {
  while (lo < hi) {
    const index_t mid = lo + (hi - lo) / 2;
    if (keys[mid] <= x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/// The first index in [lo, hi) whose column is >= c (columns sorted ascending).
AAS_HD index_t lower_bound_col(const std::int32_t* cols, index_t lo, index_t hi, std::int32_t c) {
  while (lo < hi) {
    const index_t mid = lo + (hi - lo) / 2;
    if (cols[mid] < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

constexpr std::uint64_t kLow32 = 0xffffffffull;

struct CheckRank {
  const index_t* rank;
  index_t n, total;
  index_t* first_bad;
  AAS_HD void operator()(index_t t) const {
    if (rank[t] < 0 || rank[t] >= n) hd::atomic_min(first_bad, t);
  }
};

struct Reciprocal {
  const index_t* rank;
  index_t width, cols;
  std::int32_t* sets;
  std::int32_t* counts;
  AAS_HD void operator()(index_t i) const {
    counts[i] = reciprocal_row(rank, width, cols, i, sets + i * cols);
  }
};

struct Expand {
  const std::int32_t *r1, *n1, *r2, *n2;
  index_t cols1, cols2, cap;
  std::int32_t* e;
  index_t* size;
  AAS_HD void operator()(index_t i) const {
    size[i] = expand_row(r1 + i * cols1, n1[i], r2, n2, cols2, e + i * cap);
  }
};

// V rows: E_i's columns, their similarities to i, then the softmax.
struct FillV {
  const std::int32_t* e;
  index_t cap;
  const index_t* vptr;
  const index_t* rank;
  const float* sims;
  index_t width;
  const float* features;
  index_t d;
  std::int32_t* vcol;
  float* vval;
  index_t* missing;  // set to 1 when a similarity is needed and there are no features
  AAS_HD void operator()(index_t i) const {
    const index_t start = vptr[i];
    const std::int32_t m = static_cast<std::int32_t>(vptr[i + 1] - start);
    const index_t* ri = rank + i * width;
    for (std::int32_t a = 0; a < m; ++a) {
      const std::int32_t j = e[i * cap + a];
      vcol[start + a] = j;
      index_t u = width - 1;  // the last occurrence, as the CPU's position table keeps
      while (u >= 0 && ri[u] != j) --u;
      float s = 0.0f;
      if (u >= 0) {
        s = sims[i * width + u];
      } else if (features != nullptr) {
        s = dot_clamped(features + i * d, features + static_cast<index_t>(j) * d, d);
      } else {
        *missing = 1;
      }
      vval[start + a] = s;
    }
    softmax_row(vval + start, m);
  }
};

// Query expansion, one pass to count the union of the k2 rows and one to fill it:
// columns ascending, each summed in double over the neighbours in ranking order.
struct QueryExpand {
  const index_t* rank;
  index_t width, k2;
  const index_t* vptr;
  const std::int32_t* vcol;
  const float* vval;
  const index_t* qptr;  // null: count only
  index_t* qcount;
  std::int32_t* qcol;
  float* qval;
  AAS_HD void operator()(index_t i) const {
    const index_t* ri = rank + i * width;
    index_t count = 0;
    std::int64_t last = -1;
    while (true) {
      std::int64_t next = INT64_MAX;  // the smallest column > last over the k2 rows
      for (index_t q = 0; q < k2; ++q) {
        const index_t j = ri[q];
        const index_t p = lower_bound_col(vcol, vptr[j], vptr[j + 1],
                                          static_cast<std::int32_t>(last + 1));
        if (p < vptr[j + 1] && vcol[p] < next) next = vcol[p];
      }
      if (next == INT64_MAX) break;
      if (qptr != nullptr) {
        double acc = 0.0;
        for (index_t q = 0; q < k2; ++q) {
          const index_t j = ri[q];
          const index_t p = lower_bound_col(vcol, vptr[j], vptr[j + 1],
                                            static_cast<std::int32_t>(next));
          if (p < vptr[j + 1] && vcol[p] == next) acc += vval[p];
        }
        qcol[qptr[i] + count] = static_cast<std::int32_t>(next);
        qval[qptr[i] + count] = static_cast<float>(acc / static_cast<double>(k2));
      }
      ++count;
      last = next;
    }
    if (qptr == nullptr) qcount[i] = count;
  }
};

struct ColumnCounts {
  const index_t* vptr;
  const std::int32_t* vcol;
  index_t* count;
  AAS_HD void operator()(index_t i) const {
    for (index_t p = vptr[i]; p < vptr[i + 1]; ++p) hd::atomic_add(count + vcol[p], 1);
  }
};

struct TransposeKeys {
  const index_t* vptr;
  const std::int32_t* vcol;
  std::uint64_t* keys;
  AAS_HD void operator()(index_t i) const {
    for (index_t p = vptr[i]; p < vptr[i + 1]; ++p)
      keys[p] = (static_cast<std::uint64_t>(vcol[p]) << 32) | static_cast<std::uint64_t>(i);
  }
};

// Candidate pairs of row i: the rows j > i of each column of V_i. With `out` null it
// counts them (`room`); else it writes ((i - r0) << 32 | j) from out + offset[i - r0].
struct Candidates {
  const index_t* vptr;
  const std::int32_t* vcol;
  const index_t* tptr;
  const std::uint64_t* tkeys;
  index_t r0;
  const index_t* offset;
  std::uint64_t* out;
  index_t* room;
  AAS_HD void operator()(index_t r) const {
    const index_t i = r0 + r;
    index_t at = out != nullptr ? offset[r] : 0;
    index_t total = 0;
    for (index_t p = vptr[i]; p < vptr[i + 1]; ++p) {
      const std::int32_t c = vcol[p];
      const std::uint64_t me = (static_cast<std::uint64_t>(c) << 32) | static_cast<std::uint64_t>(i);
      const index_t from = upper_bound_key(tkeys, tptr[c], tptr[c + 1], me);
      total += tptr[c + 1] - from;
      if (out != nullptr)
        for (index_t t = from; t < tptr[c + 1]; ++t)
          out[at++] = (static_cast<std::uint64_t>(r) << 32) | (tkeys[t] & kLow32);
    }
    if (out == nullptr) room[r] = total;
  }
};

struct Distances {
  const std::uint64_t* pairs;
  index_t r0;
  const index_t* vptr;
  const std::int32_t* vcol;
  const float* vval;
  double m_low;
  float keep_below;
  index_t* kept;
  float* dist;
  AAS_HD void operator()(index_t t) const {
    const index_t i = r0 + static_cast<index_t>(pairs[t] >> 32);
    const index_t j = static_cast<index_t>(pairs[t] & kLow32);
    const float m = min_sum(vcol + vptr[i], vval + vptr[i], vptr[i + 1] - vptr[i], vcol + vptr[j],
                            vval + vptr[j], vptr[j + 1] - vptr[j]);
    kept[t] = keep_distance(m, m_low, keep_below, dist + t) ? 1 : 0;
  }
};

struct Compact {
  const std::uint64_t* pairs;
  const float* dist;
  const index_t* kept;  // 0/1
  const index_t* at;    // exclusive scan of kept
  std::uint64_t* out_pairs;
  float* out_dist;
  AAS_HD void operator()(index_t t) const {
    if (kept[t]) {
      out_pairs[at[t]] = pairs[t];
      out_dist[at[t]] = dist[t];
    }
  }
};

}  // namespace jaccard

/// k_reciprocal_jaccard (aas/rerank.hpp) with every step on `ex`'s memory: rank
/// (n, width), sims (n, width) and features (n, d, or null) are on ex's side (device
/// memory for exec::Cuda); `out` is on the host. Gives the CPU's result (the CPU's
/// exp where ex runs on the host). pair_budget bounds the candidate pairs held at once.
template <class Exec>
void k_reciprocal_jaccard_exec(const Exec& ex, const index_t* rank, const float* sims, index_t n,
                               index_t width, const float* features, index_t d, int k1, int k2,
                               double max_distance, index_t pair_budget, CsrF32& out) {
  using namespace jaccard;
  using Keys = typename Exec::template Buffer<std::uint64_t>;
  using Idx = typename Exec::template Buffer<index_t>;
  using I32 = typename Exec::template Buffer<std::int32_t>;
  using F32 = typename Exec::template Buffer<float>;
  AAS_REQUIRE(rank != nullptr && sims != nullptr, "k_reciprocal_jaccard: null input");
  AAS_REQUIRE(n >= 2, "k_reciprocal_jaccard: need at least 2 rows");
  AAS_REQUIRE(n < INT32_MAX, "k_reciprocal_jaccard: too many rows");
  AAS_REQUIRE(k1 >= 2 && k1 <= width, "k_reciprocal_jaccard: need 2 <= k1 <= graph width");
  AAS_REQUIRE(k2 >= 1 && k2 <= k1, "k_reciprocal_jaccard: need 1 <= k2 <= k1");
  AAS_REQUIRE(max_distance >= 0.0 && max_distance <= 1.0, "k_reciprocal_jaccard: bad max_distance");
  AAS_REQUIRE(features == nullptr || d >= 1, "k_reciprocal_jaccard: bad feature dimension");
  AAS_REQUIRE(pair_budget >= 1, "k_reciprocal_jaccard: pair_budget must be >= 1");
  {
    Idx bad(ex, 1);
    const index_t total = n * width;
    ex.fill(bad.data(), 1, total);
    ex.for_each(total, CheckRank{rank, n, total, bad.data()});
    AAS_REQUIRE(ex.get(bad.data(), 0) == total, "k_reciprocal_jaccard: neighbour index out of range");
  }

  // 1-2. reciprocal sets, expanded sets, V
  const index_t k_half = static_cast<index_t>(std::nearbyint(k1 / 2.0));
  const index_t cols1 = k1;
  const index_t cols2 = std::min<index_t>(k_half + 1, k1);
  const index_t cap = cols1 + cols1 * cols2;
  Idx vptr(ex, n + 1);
  index_t nnz_v;
  I32 vcol0(ex, 0);
  F32 vval0(ex, 0);
  {
    I32 r1(ex, n * cols1), n1(ex, n), r2(ex, n * cols2), n2(ex, n);
    ex.for_each(n, Reciprocal{rank, width, cols1, r1.data(), n1.data()});
    ex.for_each(n, Reciprocal{rank, width, cols2, r2.data(), n2.data()});
    I32 e(ex, n * cap);
    ex.fill(vptr.data(), n + 1, index_t{0});
    ex.for_each(n, Expand{r1.data(), n1.data(), r2.data(), n2.data(), cols1, cols2, cap, e.data(),
                          vptr.data()});
    nnz_v = ex.exclusive_scan(vptr.data(), vptr.data(), n + 1);  // vptr[n] was 0
    I32 vcol(ex, nnz_v);
    F32 vval(ex, nnz_v);
    Idx missing(ex, 1);
    ex.fill(missing.data(), 1, index_t{0});
    ex.for_each(n, FillV{e.data(), cap, vptr.data(), rank, sims, width, features, d, vcol.data(),
                         vval.data(), missing.data()});
    AAS_REQUIRE(ex.get(missing.data(), 0) == 0,
            "k_reciprocal_jaccard: the expansion needs similarities outside the kNN graph; "
            "pass the features the graph was built from");
    vcol0.swap(vcol);
    vval0.swap(vval);
  }

  // 3. query expansion
  if (k2 != 1) {
    Idx qptr(ex, n + 1);
    ex.fill(qptr.data(), n + 1, index_t{0});
    ex.for_each(n, QueryExpand{rank, width, k2, vptr.data(), vcol0.data(), vval0.data(), nullptr,
                               qptr.data(), nullptr, nullptr});
    const index_t nnz_q = ex.exclusive_scan(qptr.data(), qptr.data(), n + 1);
    I32 qcol(ex, nnz_q);
    F32 qval(ex, nnz_q);
    ex.for_each(n, QueryExpand{rank, width, k2, vptr.data(), vcol0.data(), vval0.data(),
                               qptr.data(), nullptr, qcol.data(), qval.data()});
    vptr.swap(qptr);
    vcol0.swap(qcol);
    vval0.swap(qval);
    nnz_v = nnz_q;
  }
  const index_t* vp = vptr.data();
  const std::int32_t* vc = vcol0.data();
  const float* vv = vval0.data();

  // 4. transpose: (column, row) keys sorted, column starts by counting
  Idx tptr(ex, n + 1);
  ex.fill(tptr.data(), n + 1, index_t{0});
  ex.for_each(n, ColumnCounts{vp, vc, tptr.data()});
  ex.exclusive_scan(tptr.data(), tptr.data(), n + 1);
  Keys tkeys(ex, nnz_v);
  ex.for_each(n, TransposeKeys{vp, vc, tkeys.data()});
  ex.sort(tkeys.data(), nnz_v);

  // 5. candidate pairs in blocks of rows, distances, filter, back to the host
  Idx room(ex, n);
  ex.for_each(n, Candidates{vp, vc, tptr.data(), tkeys.data(), 0, nullptr, nullptr, room.data()});
  std::vector<index_t> room_h(static_cast<std::size_t>(n));
  ex.to_host(room.data(), n, room_h.data());
  index_t widest = 1, all = 0;
  for (index_t r = 0; r < n; ++r) {
    widest = std::max(widest, room_h[r]);
    all += room_h[r];
  }
  // one row always fits; never more room than every candidate together
  const index_t slots = std::max(widest, std::min(pair_budget, all));
  Keys pairs(ex, slots), kept_pairs(ex, slots);
  Idx kept(ex, slots), at(ex, slots), offset(ex, n);
  F32 dist(ex, slots), kept_dist(ex, slots);
  std::vector<std::int64_t> uptr(static_cast<std::size_t>(n) + 1, 0);
  std::vector<std::int32_t> ucol;
  std::vector<float> uval;
  std::vector<index_t> offset_h;
  std::vector<std::uint64_t> pairs_h;
  std::vector<float> dist_h;
  const float keep_below = static_cast<float>(max_distance);
  const double m_low = keep_floor(keep_below);
  for (index_t r0 = 0; r0 < n;) {
    index_t r1 = r0, total = 0;
    offset_h.clear();
    while (r1 < n && (r1 == r0 || total + room_h[r1] <= slots)) {
      offset_h.push_back(total);
      total += room_h[r1++];
    }
    if (total > 0) {
      ex.to_device(offset_h.data(), r1 - r0, offset.data());
      ex.for_each(r1 - r0, Candidates{vp, vc, tptr.data(), tkeys.data(), r0, offset.data(),
                                      pairs.data(), nullptr});
      ex.sort(pairs.data(), total);
      const index_t u = ex.unique(pairs.data(), total);
      ex.for_each(u, Distances{pairs.data(), r0, vp, vc, vv, m_low, keep_below, kept.data(),
                               dist.data()});
      const index_t n_kept = ex.exclusive_scan(kept.data(), at.data(), u);
      ex.for_each(u, Compact{pairs.data(), dist.data(), kept.data(), at.data(), kept_pairs.data(),
                             kept_dist.data()});
      pairs_h.resize(static_cast<std::size_t>(n_kept));
      dist_h.resize(static_cast<std::size_t>(n_kept));
      ex.to_host(kept_pairs.data(), n_kept, pairs_h.data());
      ex.to_host(kept_dist.data(), n_kept, dist_h.data());
      for (index_t t = 0; t < n_kept; ++t) {  // sorted by (i, j): rows arrive in order
        ++uptr[r0 + static_cast<index_t>(pairs_h[t] >> 32) + 1];
        ucol.push_back(static_cast<std::int32_t>(pairs_h[t] & kLow32));
        uval.push_back(dist_h[t]);
      }
    }
    r0 = r1;
  }
  for (index_t i = 0; i < n; ++i) uptr[i + 1] += uptr[i];
  mirror_upper(n, uptr.data(), ucol.data(), uval.data(), out);
}

}  // namespace aas
