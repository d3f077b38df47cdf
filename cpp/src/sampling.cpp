#include "aas/sampling.hpp"

#include "aas/closest.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AAS_SAMPLING_AVX2 1
#endif

namespace aas {
namespace {

// ---- labels -----------------------------------------------------------------

// Counting sort: the rows i with keep(i), grouped by key[i] in [0, n_keys),
// ascending inside each group. start has n_keys + 1 entries.
template <class Keep>
void group_rows(const index_t* key, index_t n, index_t n_keys, Keep keep,
                std::vector<index_t>& start, std::vector<index_t>& rows) {
  start.assign(static_cast<std::size_t>(n_keys) + 1, 0);
  for (index_t i = 0; i < n; ++i)
    if (keep(i)) ++start[key[i] + 1];
  for (index_t c = 0; c < n_keys; ++c) start[c + 1] += start[c];
  rows.resize(static_cast<std::size_t>(start[n_keys]));
  std::vector<index_t> fill(start.begin(), start.end() - 1);
  for (index_t i = 0; i < n; ++i)
    if (keep(i)) rows[fill[key[i]]++] = i;
}

// ---- blocked dot products -------------------------------------------------------
//
// out[r * C + c] = <rows[r], cols[c]> for an R × C register tile. Every dot
// product is accumulated the same way wherever it sits in a tile (8 float
// lanes over d in order, then a fixed reduction of the lanes), so a pair's
// similarity does not depend on the blocking or the thread count. The AVX2
// version (chosen at run time; default builds target baseline x86-64) fuses
// multiply-adds and so rounds differently from the portable one.

using BlockFn = void (*)(const float* const* rows, const float* const* cols, index_t d, float* out);

constexpr int kMaxRows = 4;
// Columns per tile for 1..4 rows: R·C accumulators fit the 16 vector registers.
constexpr int kMaxCols[kMaxRows + 1] = {0, 8, 6, 4, 3};

template <int R, int C>
void dot_block_portable(const float* const* rows, const float* const* cols, index_t d, float* out) {
  float acc[R][C][8] = {};
  index_t e = 0;
  for (; e + 8 <= d; e += 8)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c)
        for (int l = 0; l < 8; ++l) acc[r][c][l] += rows[r][e + l] * cols[c][e + l];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      const float* a = acc[r][c];
      float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
      for (index_t t = e; t < d; ++t) s += rows[r][t] * cols[c][t];
      out[r * C + c] = s;
    }
}

#ifdef AAS_SAMPLING_AVX2
__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

template <int R, int C>
__attribute__((target("avx2,fma"))) void dot_block_avx2(const float* const* rows,
                                                        const float* const* cols, index_t d,
                                                        float* out) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  index_t e = 0;
  for (; e + 8 <= d; e += 8) {
    __m256 cv[C];
    for (int c = 0; c < C; ++c) cv[c] = _mm256_loadu_ps(cols[c] + e);
    for (int r = 0; r < R; ++r) {
      const __m256 rv = _mm256_loadu_ps(rows[r] + e);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(rv, cv[c], acc[r][c]);
    }
  }
  if (e < d) {  // the last d % 8 features, through a masked load (the same lanes for every pair)
    alignas(32) static const std::int32_t kMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                       0,  0,  0,  0,  0,  0,  0,  0};
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMask + 8 - (d - e)));
    __m256 cv[C];
    for (int c = 0; c < C; ++c) cv[c] = _mm256_maskload_ps(cols[c] + e, mask);
    for (int r = 0; r < R; ++r) {
      const __m256 rv = _mm256_maskload_ps(rows[r] + e, mask);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(rv, cv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[r * C + c] = hsum256(acc[r][c]);
}

bool cpu_has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#define AAS_PICK(R, C) (avx2 ? &dot_block_avx2<R, C> : &dot_block_portable<R, C>)
#else
#define AAS_PICK(R, C) (&dot_block_portable<R, C>)
#endif

// The tile kernel for R rows and C columns (1 <= C <= kMaxCols[R]).
BlockFn pick_block(int R, int C, bool avx2) {
  (void)avx2;
  switch (R * 16 + C) {
    case 0x11:
      return AAS_PICK(1, 1);
    case 0x12:
      return AAS_PICK(1, 2);
    case 0x13:
      return AAS_PICK(1, 3);
    case 0x14:
      return AAS_PICK(1, 4);
    case 0x15:
      return AAS_PICK(1, 5);
    case 0x16:
      return AAS_PICK(1, 6);
    case 0x17:
      return AAS_PICK(1, 7);
    case 0x18:
      return AAS_PICK(1, 8);
    case 0x21:
      return AAS_PICK(2, 1);
    case 0x22:
      return AAS_PICK(2, 2);
    case 0x23:
      return AAS_PICK(2, 3);
    case 0x24:
      return AAS_PICK(2, 4);
    case 0x25:
      return AAS_PICK(2, 5);
    case 0x26:
      return AAS_PICK(2, 6);
    case 0x31:
      return AAS_PICK(3, 1);
    case 0x32:
      return AAS_PICK(3, 2);
    case 0x33:
      return AAS_PICK(3, 3);
    case 0x34:
      return AAS_PICK(3, 4);
    case 0x41:
      return AAS_PICK(4, 1);
    case 0x42:
      return AAS_PICK(4, 2);
    case 0x43:
      return AAS_PICK(4, 3);
    default:
      throw std::logic_error("pick_block: no kernel for this tile shape");
  }
}
#undef AAS_PICK

struct BlockTable {
  BlockFn fn[kMaxRows + 1][9] = {};
  BlockTable() {
#ifdef AAS_SAMPLING_AVX2
    const bool avx2 = cpu_has_avx2_fma();
#else
    const bool avx2 = false;
#endif
    for (int r = 1; r <= kMaxRows; ++r)
      for (int c = 1; c <= kMaxCols[r]; ++c) fn[r][c] = pick_block(r, c, avx2);
  }
};

const BlockTable& blocks() {
  static const BlockTable table;
  return table;
}

// ---- closest pairs ----------------------------------------------------------------

using closest::Best;
using closest::merge;

// A unit of work: rows [r0, r1) of cluster c1 against its partners [s0, s1);
// its bests go to partial[out0 + s - s0].
struct Item {
  index_t c1, r0, r1, s0, s1, out0, cost;
};

// Dot products per work item: large enough to amortise scheduling, small
// enough to balance a giant cluster pair over the threads.
constexpr index_t kItemDots = index_t{1} << 14;

// The exact closest pair (u in c1, v in c2; largest dot product, ties to the
// smallest u, then v) of every (c1, partners[c1][s]), in that order (c1, then s).
// Cluster c's rows: m_rows[m_start[c] .. m_start[c + 1]), none empty.
std::vector<Best> closest_of_partners(const float* x, index_t d, const index_t* m_start,
                                      const index_t* m_rows,
                                      const std::vector<std::vector<index_t>>& partners,
                                      int n_threads) {
  const index_t n_mine = static_cast<index_t>(partners.size());
  std::vector<index_t> pair_off(static_cast<std::size_t>(n_mine) + 1, 0);
  for (index_t c = 0; c < n_mine; ++c)
    pair_off[c + 1] = pair_off[c] + static_cast<index_t>(partners[c].size());
  const index_t n_pairs = pair_off[n_mine];
  if (n_pairs == 0) return {};

  // Work items: a cluster's partners in ranges of about kItemDots dot
  // products; a range that is still too large is split by rows (4 at a time).
  std::vector<Item> items;
  index_t n_partial = 0;
  const auto size_of = [&](index_t c) { return m_start[c + 1] - m_start[c]; };
  for (index_t c = 0; c < n_mine; ++c) {
    const auto& ps = partners[c];
    const index_t p = size_of(c);
    index_t s0 = 0;
    while (s0 < static_cast<index_t>(ps.size())) {
      index_t s1 = s0, q = 0;
      while (s1 < static_cast<index_t>(ps.size()) &&
             (s1 == s0 || p * (q + size_of(ps[s1])) <= kItemDots))
        q += size_of(ps[s1++]);
      index_t step = p;
      if (p * q > kItemDots && p > kMaxRows) {
        step = std::max<index_t>(kMaxRows, (kItemDots / q) / kMaxRows * kMaxRows);
      }
      for (index_t r0 = 0; r0 < p; r0 += step) {
        const index_t r1 = std::min(p, r0 + step);
        items.push_back(Item{c, r0, r1, s0, s1, n_partial, (r1 - r0) * q});
        n_partial += s1 - s0;
      }
      s0 = s1;
    }
  }
  // Largest items first, for balance; the result does not depend on the order.
  std::vector<index_t> order(items.size());
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](index_t a, index_t b) { return items[a].cost > items[b].cost; });

  std::vector<Best> partial(static_cast<std::size_t>(n_partial));
  const BlockTable& table = blocks();
  parallel_for(
      static_cast<index_t>(items.size()), n_threads,
      [&](index_t t) {
        const Item& it = items[order[t]];
        const index_t* members1 = m_rows + m_start[it.c1];
        const auto& ps = partners[it.c1];
        const float* row_ptr[kMaxRows];
        const float* col_ptr[8];
        index_t col_v[8], col_slot[8];
        float out[kMaxRows * 8];
        for (index_t rb = it.r0; rb < it.r1; rb += kMaxRows) {
          const int R = static_cast<int>(std::min<index_t>(kMaxRows, it.r1 - rb));
          for (int r = 0; r < R; ++r) row_ptr[r] = x + members1[rb + r] * d;
          const int c_max = kMaxCols[R];
          // The partners' members in one stream, so that small clusters
          // (singletons above all) still fill whole tiles.
          index_t s = it.s0, at = 0;
          while (s < it.s1) {
            int C = 0;
            while (C < c_max && s < it.s1) {
              const index_t c2 = ps[s];
              const index_t v = m_rows[m_start[c2] + at];
              col_ptr[C] = x + v * d;
              col_v[C] = v;
              col_slot[C] = it.out0 + (s - it.s0);
              ++C;
              if (++at == m_start[c2 + 1] - m_start[c2]) {
                ++s;
                at = 0;
              }
            }
            table.fn[R][C](row_ptr, col_ptr, d, out);
            for (int r = 0; r < R; ++r) {
              const index_t u = members1[rb + r];
              for (int c = 0; c < C; ++c) {
                closest::offer(partial[col_slot[c]], out[r * C + c], u, col_v[c]);
              }
            }
          }
        }
      },
      1);

  std::vector<Best> pair_best(static_cast<std::size_t>(n_pairs));
  for (const Item& it : items)
    for (index_t s = it.s0; s < it.s1; ++s)
      merge(pair_best[pair_off[it.c1] + s], partial[it.out0 + (s - it.s0)]);
  return pair_best;
}

// One clustering's side (ζ): appends the inconsistent closest pairs (i < j).
void closest_pairs_one_side(const float* x, index_t n, index_t d, const std::vector<index_t>& mine,
                            index_t n_mine, const std::vector<index_t>& other, index_t n_other,
                            const index_t* region, int n_threads,
                            std::vector<std::pair<index_t, index_t>>& found) {
  const auto inside = [&](index_t i) { return region[i] >= 0; };
  std::vector<index_t> m_start, m_rows, o_start, o_rows;
  group_rows(mine.data(), n, n_mine, inside, m_start, m_rows);
  group_rows(other.data(), n, n_other, inside, o_start, o_rows);

  // The mine-clusters meeting each other-cluster (sorted), and the reverse.
  std::vector<index_t> g_start(static_cast<std::size_t>(n_other) + 1, 0), g_list;
  g_list.reserve(o_rows.size());
  for (index_t o = 0; o < n_other; ++o) {
    const std::size_t first = g_list.size();
    for (index_t p = o_start[o]; p < o_start[o + 1]; ++p) g_list.push_back(mine[o_rows[p]]);
    std::sort(g_list.begin() + first, g_list.end());
    g_list.erase(std::unique(g_list.begin() + first, g_list.end()), g_list.end());
    g_start[o + 1] = static_cast<index_t>(g_list.size());
  }
  std::vector<index_t> meets_start, meets;
  {
    // (mine, other) cells from the grouped lists, grouped again by mine
    std::vector<index_t> cell_mine(g_list.size()), cell_other(g_list.size());
    for (index_t o = 0; o < n_other; ++o)
      for (index_t p = g_start[o]; p < g_start[o + 1]; ++p) {
        cell_mine[p] = g_list[p];
        cell_other[p] = o;
      }
    std::vector<index_t> cells;
    group_rows(
        cell_mine.data(), static_cast<index_t>(cell_mine.size()), n_mine,
        [](index_t) { return true; }, meets_start, cells);
    meets.resize(cells.size());
    for (std::size_t p = 0; p < cells.size(); ++p) meets[p] = cell_other[cells[p]];
  }

  // Partners of c1: the clusters c2 > c1 that share an other-cluster with it.
  std::vector<std::vector<index_t>> partners(static_cast<std::size_t>(n_mine));
  parallel_for(
      n_mine, n_threads,
      [&](index_t c) {
        std::vector<index_t>& out = partners[c];
        for (index_t p = meets_start[c]; p < meets_start[c + 1]; ++p) {
          const index_t o = meets[p];
          const index_t* begin = g_list.data() + g_start[o];
          const index_t* end = g_list.data() + g_start[o + 1];
          const index_t* from = std::upper_bound(begin, end, c);
          out.insert(out.end(), from, end);
        }
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
      },
      16);
  const std::vector<Best> pair_best =
      closest_of_partners(x, d, m_start.data(), m_rows.data(), partners, n_threads);
  for (const Best& b : pair_best) {
    // no pair wins a block only when all its dot products are NaN
    AAS_REQUIRE(b.u != Best{}.u,
            "closest_inconsistent_pairs: x holds NaN or inf (dot products are NaN)");
    if (other[b.u] == other[b.v]) found.emplace_back(std::min(b.u, b.v), std::max(b.u, b.v));
  }
}

}  // namespace

// A dense table when the values are small (the usual case: cluster ids and
// singletons), a sort otherwise.
index_t compact_labels(const index_t* labels, index_t n, const char* name,
                       std::vector<index_t>& out) {
  out.resize(static_cast<std::size_t>(n));
  if (n == 0) return 0;
  index_t hi = 0;
  for (index_t i = 0; i < n; ++i) {
    if (labels[i] < 0)  // the message is built only on failure: this runs per element
      throw std::invalid_argument(std::string(name) +
                                  " must be >= 0 with outliers made singletons; got " +
                                  std::to_string(labels[i]) + " at " + std::to_string(i));
    hi = std::max(hi, labels[i]);
  }
  if (hi < 4 * n + 1024) {
    std::vector<index_t> id(static_cast<std::size_t>(hi) + 1, -1);
    for (index_t i = 0; i < n; ++i) id[labels[i]] = 0;
    index_t c = 0;
    for (auto& v : id)
      if (v == 0) v = c++;
    for (index_t i = 0; i < n; ++i) out[i] = id[labels[i]];
    return c;
  }
  std::vector<index_t> values(labels, labels + n);
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  for (index_t i = 0; i < n; ++i)
    out[i] = std::lower_bound(values.begin(), values.end(), labels[i]) - values.begin();
  return static_cast<index_t>(values.size());
}


index_t uncertainty_regions(const index_t* labels_a, const index_t* labels_b, index_t n,
                            index_t* out_region) {
  AAS_REQUIRE(n >= 0, "uncertainty_regions: n must be >= 0");
  if (n == 0) return 0;
  AAS_REQUIRE(labels_a != nullptr && labels_b != nullptr && out_region != nullptr,
          "uncertainty_regions: null pointer");
  std::vector<index_t> a, b;
  const index_t na = compact_labels(labels_a, n, "uncertainty_regions: labels_a", a);
  const index_t nb = compact_labels(labels_b, n, "uncertainty_regions: labels_b", b);
  std::vector<index_t> size_b(static_cast<std::size_t>(nb), 0);
  for (index_t i = 0; i < n; ++i) ++size_b[b[i]];
  std::vector<index_t> start, members;
  group_rows(a.data(), n, na, [](index_t) { return true; }, start, members);

  // Walk the contingency table one A-cluster at a time. A cell agrees when it
  // holds all of its A-cluster and all of its B-cluster (IoU = 1); then the
  // A-cluster has no other cell. Every other cell is an edge.
  UnionFind uf(na + nb);
  std::vector<index_t> count(static_cast<std::size_t>(nb), 0);
  std::vector<std::uint8_t> agrees(static_cast<std::size_t>(na), 0);
  for (index_t c = 0; c < na; ++c) {
    const index_t size = start[c + 1] - start[c];
    for (index_t p = start[c]; p < start[c + 1]; ++p) ++count[b[members[p]]];
    for (index_t p = start[c]; p < start[c + 1]; ++p) {
      const index_t cb = b[members[p]];
      if (count[cb] == 0) continue;  // cell already seen
      if (count[cb] == size && count[cb] == size_b[cb])
        agrees[c] = 1;
      else
        uf.unite(c, na + cb);
      count[cb] = 0;
    }
  }
  std::vector<index_t> number(static_cast<std::size_t>(na + nb), -1);
  index_t n_regions = 0;
  for (index_t i = 0; i < n; ++i) {
    if (agrees[a[i]]) {
      out_region[i] = -1;
      continue;
    }
    const index_t root = uf.find(a[i]);
    if (number[root] < 0) number[root] = n_regions++;
    out_region[i] = number[root];
  }
  return n_regions;
}

void region_medoids(const float* x, index_t n, index_t d, const index_t* region, index_t n_regions,
                    index_t* out_medoids, int n_threads) {
  AAS_REQUIRE(n >= 0 && d >= 1 && n_regions >= 0, "region_medoids: bad sizes");
  if (n_regions == 0) return;
  AAS_REQUIRE(x != nullptr && region != nullptr && out_medoids != nullptr,
          "region_medoids: null pointer");
  for (index_t i = 0; i < n; ++i)
    if (region[i] < -1 || region[i] >= n_regions)
      throw std::invalid_argument("region_medoids: region of row " + std::to_string(i) + " is " +
                                  std::to_string(region[i]) + ", outside [-1, " +
                                  std::to_string(n_regions) + ")");
  std::vector<index_t> start, members;
  group_rows(region, n, n_regions, [&](index_t i) { return region[i] >= 0; }, start, members);
  for (index_t k = 0; k < n_regions; ++k)
    if (start[k + 1] == start[k])
      throw std::invalid_argument("region_medoids: region " + std::to_string(k) + " is empty");

  // Small regions: one per thread at a time. A large region is shared by all
  // threads: the sum split over features, the scores over members (the same
  // arithmetic per value either way).
  constexpr index_t kShared = index_t{1} << 22;  // |S_k|·d above which a region is shared
  std::vector<index_t> small, large;
  for (index_t k = 0; k < n_regions; ++k)
    ((start[k + 1] - start[k]) * d >= kShared ? large : small).push_back(k);

  const auto argmax = [&](const double* score, const index_t* m, index_t size) {
    index_t best = 0;
    for (index_t t = 1; t < size; ++t)
      if (score[t] > score[best]) best = t;  // members ascending: ties to the smaller index
    return m[best];
  };
  // Σ_{j != i} <x_i, x_j> = <x_i, sum - x_i>: the self term is left out, so
  // that members as central as each other (both members of a pair) tie
  // exactly instead of by the rounding of their norms. 8 partial sums in a
  // fixed order: vectorisable, and the same for every member.
  const auto score_of = [&](const double* sum, index_t i) {
    const float* row = x + i * d;
    double part[8] = {};
    index_t j = 0;
    for (; j + 8 <= d; j += 8)
      for (int l = 0; l < 8; ++l) {
        const double v = static_cast<double>(row[j + l]);
        part[l] += v * (sum[j + l] - v);
      }
    double s =
        ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    for (; j < d; ++j) {
      const double v = static_cast<double>(row[j]);
      s += v * (sum[j] - v);
    }
    return s;
  };
  parallel_for(
      static_cast<index_t>(small.size()), n_threads,
      [&](index_t t) {
        const index_t k = small[t];
        const index_t* m = members.data() + start[k];
        const index_t size = start[k + 1] - start[k];
        std::vector<double> sum(static_cast<std::size_t>(d), 0.0), score(size);
        for (index_t p = 0; p < size; ++p) {
          const float* row = x + m[p] * d;
          for (index_t j = 0; j < d; ++j) sum[j] += static_cast<double>(row[j]);
        }
        for (index_t p = 0; p < size; ++p) score[p] = score_of(sum.data(), m[p]);
        out_medoids[k] = argmax(score.data(), m, size);
      },
      4);
  for (const index_t k : large) {
    const index_t* m = members.data() + start[k];
    const index_t size = start[k + 1] - start[k];
    std::vector<double> sum(static_cast<std::size_t>(d), 0.0), score(size);
    constexpr index_t kSlice = 256;
    parallel_for((d + kSlice - 1) / kSlice, n_threads,
                 [&](index_t s) {
                   const index_t j0 = s * kSlice, j1 = std::min(d, j0 + kSlice);
                   for (index_t p = 0; p < size; ++p) {
                     const float* row = x + m[p] * d;
                     for (index_t j = j0; j < j1; ++j) sum[j] += static_cast<double>(row[j]);
                   }
                 },
                 1);
    parallel_for(size, n_threads, [&](index_t p) { score[p] = score_of(sum.data(), m[p]); }, 64);
    out_medoids[k] = argmax(score.data(), m, size);
  }
}

bool closest_pairs_fused() {
#ifdef AAS_SAMPLING_AVX2
  return cpu_has_avx2_fma();
#else
  return false;
#endif
}

void closest_inconsistent_pairs(const float* x, index_t n, index_t d, const index_t* labels_a,
                                const index_t* labels_b, const index_t* region, int n_threads,
                                std::vector<index_t>& out_pairs,
                                std::vector<std::int8_t>& out_via) {
  AAS_REQUIRE(n >= 0 && d >= 1, "closest_inconsistent_pairs: bad sizes");
  out_pairs.clear();
  out_via.clear();
  if (n == 0) return;
  AAS_REQUIRE(x != nullptr && labels_a != nullptr && labels_b != nullptr && region != nullptr,
          "closest_inconsistent_pairs: null pointer");
  std::vector<index_t> a, b;
  const index_t na = compact_labels(labels_a, n, "closest_inconsistent_pairs: labels_a", a);
  const index_t nb = compact_labels(labels_b, n, "closest_inconsistent_pairs: labels_b", b);
  std::vector<std::pair<index_t, index_t>> via_a, via_b;
  closest_pairs_one_side(x, n, d, a, na, b, nb, region, n_threads, via_a);
  closest_pairs_one_side(x, n, d, b, nb, a, na, region, n_threads, via_b);
  merge_closest_sides(via_a, via_b, out_pairs, out_via);
}

void closest_cluster_pairs(const float* x, index_t n, index_t d, const index_t* starts,
                           const index_t* rows, index_t n_clusters, const index_t* pairs,
                           index_t m, int n_threads, index_t* out_pairs) {
  AAS_REQUIRE(n >= 0 && d >= 1 && n_clusters >= 0 && m >= 0, "closest_cluster_pairs: bad sizes");
  if (m == 0) return;
  AAS_REQUIRE(x != nullptr && starts != nullptr && rows != nullptr && pairs != nullptr &&
              out_pairs != nullptr,
          "closest_cluster_pairs: null pointer");
  AAS_REQUIRE(starts[0] == 0, "closest_cluster_pairs: starts must begin at 0");
  for (index_t c = 0; c < n_clusters; ++c)
    AAS_REQUIRE(starts[c + 1] > starts[c], "closest_cluster_pairs: cluster " + std::to_string(c) +
                                               " has no rows (starts must increase)");
  for (index_t p = 0; p < starts[n_clusters]; ++p) {
    const index_t r = rows[p];
    AAS_REQUIRE(r >= 0 && r < n, "closest_cluster_pairs: row " + std::to_string(r) +
                                     " outside [0, " + std::to_string(n) + ")");
  }
  // Each pair's place among its first cluster's partners, to give the answers back in order.
  std::vector<std::vector<index_t>> partners(static_cast<std::size_t>(n_clusters));
  std::vector<index_t> slot(static_cast<std::size_t>(m));
  for (index_t k = 0; k < m; ++k) {
    const index_t c1 = pairs[2 * k], c2 = pairs[2 * k + 1];
    AAS_REQUIRE(c1 >= 0 && c1 < n_clusters && c2 >= 0 && c2 < n_clusters && c1 != c2,
                "closest_cluster_pairs: pair " + std::to_string(k) + " (" + std::to_string(c1) +
                    ", " + std::to_string(c2) + ") is not two distinct clusters in [0, " +
                    std::to_string(n_clusters) + ")");
    slot[k] = static_cast<index_t>(partners[c1].size());
    partners[c1].push_back(c2);
  }
  std::vector<index_t> offset(static_cast<std::size_t>(n_clusters) + 1, 0);
  for (index_t c = 0; c < n_clusters; ++c)
    offset[c + 1] = offset[c] + static_cast<index_t>(partners[c].size());
  const std::vector<Best> best = closest_of_partners(x, d, starts, rows, partners, n_threads);
  for (index_t k = 0; k < m; ++k) {
    const Best& b = best[offset[pairs[2 * k]] + slot[k]];
    AAS_REQUIRE(b.u != Best{}.u, "closest_cluster_pairs: x holds NaN or inf (dot products are NaN)");
    out_pairs[2 * k] = b.u;
    out_pairs[2 * k + 1] = b.v;
  }
}

void merge_closest_sides(const std::vector<std::pair<index_t, index_t>>& via_a,
                         const std::vector<std::pair<index_t, index_t>>& via_b,
                         std::vector<index_t>& out_pairs, std::vector<std::int8_t>& out_via) {
  // A pair found both ways is listed once, as found through A.
  std::vector<std::pair<std::pair<index_t, index_t>, std::int8_t>> all;
  all.reserve(via_a.size() + via_b.size());
  for (const auto& p : via_a) all.push_back({p, 0});
  for (const auto& p : via_b) all.push_back({p, 1});
  std::sort(all.begin(), all.end());
  for (std::size_t t = 0; t < all.size(); ++t) {
    if (t > 0 && all[t].first == all[t - 1].first) continue;
    out_pairs.push_back(all[t].first.first);
    out_pairs.push_back(all[t].first.second);
    out_via.push_back(all[t].second);
  }
}

void stored_pairs_within(const std::int64_t* indptr, const std::int32_t* indices, const float* data,
                         index_t n, const index_t* points, index_t r, double min_similarity,
                         std::vector<index_t>& out_pairs) {
  AAS_REQUIRE(n >= 0 && r >= 0, "stored_pairs_within: bad sizes");
  const float threshold = static_cast<float>(min_similarity);
  out_pairs.clear();
  if (r == 0) return;
  AAS_REQUIRE(indptr != nullptr && points != nullptr, "stored_pairs_within: null pointer");
  std::vector<std::uint8_t> member(static_cast<std::size_t>(n), 0);
  for (index_t t = 0; t < r; ++t) {
    if (points[t] < 0 || points[t] >= n)
      throw std::invalid_argument("stored_pairs_within: point " + std::to_string(points[t]) +
                                  " outside [0, " + std::to_string(n) + ")");
    if (member[points[t]])
      throw std::invalid_argument("stored_pairs_within: point " + std::to_string(points[t]) +
                                  " is listed twice");
    member[points[t]] = 1;
  }
  std::vector<index_t> rows(points, points + r);
  std::sort(rows.begin(), rows.end());
  for (const index_t i : rows) {
    AAS_REQUIRE(indptr[i] <= indptr[i + 1], "stored_pairs_within: indptr decreases");
    for (std::int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      const index_t j = indices[p];
      AAS_REQUIRE(j >= 0 && j < n, "stored_pairs_within: column index outside [0, n)");
      if (j > i && member[j] && 1.0f - data[p] >= threshold) {
        out_pairs.push_back(i);
        out_pairs.push_back(j);
      }
    }
  }
}

void csr_lookup(const std::int64_t* indptr, const std::int32_t* indices, const float* data,
                index_t n, const index_t* pairs, index_t m, std::uint8_t* out_found,
                float* out_value, int n_threads) {
  AAS_REQUIRE(n >= 0 && m >= 0, "csr_lookup: bad sizes");
  if (m == 0) return;
  AAS_REQUIRE(indptr != nullptr && pairs != nullptr && out_found != nullptr && out_value != nullptr,
          "csr_lookup: null pointer");
  parallel_for(
      m, n_threads,
      [&](index_t t) {
        const index_t i = pairs[2 * t], j = pairs[2 * t + 1];
        if (i < 0 || i >= n || j < 0 || j >= n)
          throw std::invalid_argument("csr_lookup: pair " + std::to_string(t) +
                                      " lies outside [0, " + std::to_string(n) + ")");
        const std::int32_t* begin = indices + indptr[i];
        const std::int32_t* end = indices + indptr[i + 1];
        const std::int32_t* at = std::lower_bound(begin, end, static_cast<std::int32_t>(j));
        const bool found = at != end && *at == j;
        out_found[t] = found ? 1 : 0;
        out_value[t] = found ? data[at - indices] : 1.0f;
      },
      1024);
}

}  // namespace aas
