#include "aas/rerank.hpp"

#include "aas/jaccard_steps.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace aas {
namespace {

// Rows are processed in chunks so per-row scratch stays small and results
// can be appended in row order without a second full-size buffer.
constexpr index_t kChunk = 4096;

// A row-sorted sparse matrix built in memory (float values).
struct Csr {
  std::vector<std::int64_t> ptr;
  std::vector<std::int32_t> col;
  std::vector<float> val;
};

// Builds rows [0, n) of a CSR from row_fn(i, cols, vals), run in parallel
// chunk by chunk; each row's output is appended in order.
template <class RowFn>
Csr build_rows(index_t n, int n_threads, RowFn&& row_fn) {
  Csr out;
  out.ptr.assign(static_cast<std::size_t>(n) + 1, 0);
  std::vector<std::vector<std::int32_t>> cols(static_cast<std::size_t>(std::min(n, kChunk)));
  std::vector<std::vector<float>> vals(cols.size());
  for (index_t c0 = 0; c0 < n; c0 += kChunk) {
    const index_t c1 = std::min(n, c0 + kChunk);
    parallel_for(
        c1 - c0, n_threads,
        [&](index_t r) {
          cols[r].clear();
          vals[r].clear();
          row_fn(c0 + r, cols[r], vals[r]);
        },
        16);
    for (index_t r = 0; r < c1 - c0; ++r) {
      out.col.insert(out.col.end(), cols[r].begin(), cols[r].end());
      out.val.insert(out.val.end(), vals[r].begin(), vals[r].end());
      out.ptr[c0 + r + 1] = static_cast<std::int64_t>(out.col.size());
    }
  }
  return out;
}

// Per-thread "is j marked for row i" stamps: O(1) reset between rows.
struct Stamp {
  std::vector<index_t> tag;
  explicit Stamp(index_t n) : tag(static_cast<std::size_t>(n), -1) {}
  bool has(index_t j, index_t row) const { return tag[j] == row; }
  void set(index_t j, index_t row) { tag[j] = row; }
};

// k-reciprocal neighbours of every row using the first `cols` columns of the
// ranking (SpCL's k_reciprocal_neigh): j in row i, and i in row j. Kept in
// ranking order. Returned as (n, cols) with counts.
void reciprocal_sets(const index_t* rank, index_t n, index_t width, index_t cols, int n_threads,
                     std::vector<std::int32_t>& sets, std::vector<std::int32_t>& counts) {
  sets.assign(static_cast<std::size_t>(n * cols), 0);
  counts.assign(static_cast<std::size_t>(n), 0);
  parallel_for(
      n, n_threads,
      [&](index_t i) {
        counts[i] = jaccard::reciprocal_row(rank, width, cols, i, sets.data() + i * cols);
      },
      256);
}

}  // namespace

void k_reciprocal_jaccard(const index_t* rank, const float* sims, index_t n, index_t width,
                          const float* features, index_t d, int k1, int k2, double max_distance,
                          int n_threads, CsrF32& out) {
  AAS_REQUIRE(rank != nullptr && sims != nullptr, "k_reciprocal_jaccard: null input");
  AAS_REQUIRE(n >= 2, "k_reciprocal_jaccard: need at least 2 rows");
  AAS_REQUIRE(n < std::numeric_limits<std::int32_t>::max(), "k_reciprocal_jaccard: too many rows");
  AAS_REQUIRE(k1 >= 2 && k1 <= width, "k_reciprocal_jaccard: need 2 <= k1 <= graph width");
  AAS_REQUIRE(k2 >= 1 && k2 <= k1, "k_reciprocal_jaccard: need 1 <= k2 <= k1");
  AAS_REQUIRE(max_distance >= 0.0 && max_distance <= 1.0, "k_reciprocal_jaccard: bad max_distance");
  AAS_REQUIRE(features == nullptr || d >= 1, "k_reciprocal_jaccard: bad feature dimension");
  for (index_t t = 0; t < n * width; ++t)
    AAS_REQUIRE(rank[t] >= 0 && rank[t] < n, "k_reciprocal_jaccard: neighbour index out of range");

  // 1. k-reciprocal sets at k1 and at round(k1/2) (half to even, as Python's
  //    round / numpy's around); SpCL slices [:k+1] of a k1-column ranking.
  const index_t k_half = static_cast<index_t>(std::nearbyint(k1 / 2.0));
  const index_t cols1 = k1;                                 // [:k1+1] of k1 columns
  const index_t cols2 = std::min<index_t>(k_half + 1, k1);  // [:k_half+1]
  std::vector<std::int32_t> r1, n1, r2, n2;
  reciprocal_sets(rank, n, width, cols1, n_threads, r1, n1);
  reciprocal_sets(rank, n, width, cols2, n_threads, r2, n2);

  // 2-3. Expanded set E_i and V_i = softmax over E_i of -(2 - 2 cos).
  std::vector<Stamp> in_r1, in_e, in_rank;
  std::vector<std::vector<std::int32_t>> rank_pos;
  const int team = std::max(1, n_threads);
  for (int t = 0; t < team; ++t) {
    in_r1.emplace_back(n);
    in_e.emplace_back(n);
    in_rank.emplace_back(n);
    rank_pos.emplace_back(static_cast<std::size_t>(n), 0);
  }
  auto thread_id = []() {
#ifdef AAS_HAVE_OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
  };

  Csr V = build_rows(
      n, n_threads, [&](index_t i, std::vector<std::int32_t>& cols, std::vector<float>& vals) {
        const int t = thread_id();
        Stamp& mark_r1 = in_r1[t];
        Stamp& mark_e = in_e[t];
        const std::int32_t* set1 = r1.data() + i * cols1;
        for (std::int32_t a = 0; a < n1[i]; ++a) {
          mark_r1.set(set1[a], i);
          mark_e.set(set1[a], i);
          cols.push_back(set1[a]);
        }
        for (std::int32_t a = 0; a < n1[i]; ++a) {
          const index_t c = set1[a];
          const std::int32_t* set2 = r2.data() + c * cols2;
          std::int32_t inter = 0;
          for (std::int32_t b = 0; b < n2[c]; ++b) inter += mark_r1.has(set2[b], i);
          // The test is against the original R(i, k1).
          if (jaccard::expands(inter, n2[c])) {
            for (std::int32_t b = 0; b < n2[c]; ++b) {
              if (!mark_e.has(set2[b], i)) {
                mark_e.set(set2[b], i);
                cols.push_back(set2[b]);
              }
            }
          }
        }
        std::sort(cols.begin(), cols.end());

        // similarities: from row i of the ranking when present, else a dot product
        Stamp& mark_rank = in_rank[t];
        std::vector<std::int32_t>& pos = rank_pos[t];
        const index_t* ri = rank + i * width;
        for (index_t u = 0; u < width; ++u) {
          mark_rank.set(ri[u], i);
          pos[ri[u]] = static_cast<std::int32_t>(u);
        }
        vals.resize(cols.size());
        for (std::size_t a = 0; a < cols.size(); ++a) {
          const index_t j = cols[a];
          double s;
          if (mark_rank.has(j, i)) {
            s = sims[i * width + pos[j]];
          } else {
            AAS_REQUIRE(features != nullptr,
                    "k_reciprocal_jaccard: the expansion needs similarities outside the kNN graph; "
                    "pass the features the graph was built from");
            s = jaccard::dot_clamped(features + i * d, features + j * d, d);
          }
          vals[a] = static_cast<float>(s);  // the similarity, until softmax_row
        }
        jaccard::softmax_row(vals.data(), static_cast<std::int32_t>(vals.size()));
      });
  r1 = {};
  n1 = {};
  r2 = {};
  n2 = {};
  in_r1.clear();
  in_rank.clear();
  rank_pos.clear();

  // 4. Query expansion: V_i <- mean of V_j over the first k2 columns of row i.
  if (k2 != 1) {
    std::vector<std::vector<double>> acc_v(team, std::vector<double>(static_cast<std::size_t>(n)));
    Csr Vq = build_rows(
        n, n_threads, [&](index_t i, std::vector<std::int32_t>& cols, std::vector<float>& vals) {
          const int t = thread_id();
          std::vector<double>& acc = acc_v[t];
          Stamp& seen = in_e[t];
          const index_t* ri = rank + i * width;
          for (int q = 0; q < k2; ++q) {
            const index_t j = ri[q];
            for (std::int64_t p = V.ptr[j]; p < V.ptr[j + 1]; ++p) {
              const std::int32_t c = V.col[p];
              if (!seen.has(c, -2 - i)) {  // tags >= 0 were used by step 2; use negatives
                seen.set(c, -2 - i);
                acc[c] = 0.0;
                cols.push_back(c);
              }
              acc[c] += V.val[p];
            }
          }
          std::sort(cols.begin(), cols.end());
          vals.resize(cols.size());
          for (std::size_t a = 0; a < cols.size(); ++a)
            vals[a] = static_cast<float>(acc[cols[a]] / static_cast<double>(k2));
        });
    V = std::move(Vq);
  }
  in_e.clear();

  // 5. m_ij = Σ_k min(V_ik, V_jk) through the transpose of V (SpCL's
  //    invIndex). Only j > i is computed; the mirror makes the output
  //    exactly symmetric.
  std::vector<std::int64_t> tptr(static_cast<std::size_t>(n) + 1, 0);
  for (std::int32_t c : V.col) ++tptr[c + 1];
  for (index_t c = 0; c < n; ++c) tptr[c + 1] += tptr[c];
  // row and value side by side: one memory stream per column visited
  struct TEntry {
    std::int32_t row;
    float val;
  };
  std::vector<TEntry> tcol(V.col.size());
  // where each entry (i, k) of V sits in column k: V_ik > 0 puts i itself in
  // column k, so the rows j > i of that column start right after it (no search)
  std::vector<std::int32_t> at_in_col(V.col.size());  // offset from the column's start
  {
    std::vector<std::int64_t> cursor(tptr.begin(), tptr.end() - 1);
    for (index_t i = 0; i < n; ++i) {
      for (std::int64_t p = V.ptr[i]; p < V.ptr[i + 1]; ++p) {
        const std::int64_t q = cursor[V.col[p]]++;
        tcol[q] = TEntry{static_cast<std::int32_t>(i), V.val[p]};  // rows ascending per column
        at_in_col[p] = static_cast<std::int32_t>(q - tptr[V.col[p]]);
      }
    }
  }

  std::vector<std::vector<float>> acc_m(team,
                                        std::vector<float>(static_cast<std::size_t>(n), 0.0f));
  std::vector<std::vector<std::int32_t>> touched_m(team);  // per-thread, grows only
  const float keep_below = static_cast<float>(max_distance);
  // d = 1 - m/(2 - m) <= keep_below  <=>  m >= 2(1 - keep_below)/(2 - keep_below).
  // Below m_low (that bound less a margin far wider than the float rounding
  // of d) an entry cannot be kept, so its distance is not computed; entries
  // at or above it go through the same arithmetic as always.
  const double m_low = jaccard::keep_floor(keep_below);
  Csr upper = build_rows(
      n, n_threads, [&](index_t i, std::vector<std::int32_t>& cols, std::vector<float>& vals) {
        std::vector<float>& acc = acc_m[thread_id()];
        // Room for every update, so that a new j is recorded without a branch
        // (whether acc[j] is still 0 is a coin flip the predictor loses).
        std::size_t room = 0;
        for (std::int64_t p = V.ptr[i]; p < V.ptr[i + 1]; ++p)
          room += static_cast<std::size_t>(tptr[V.col[p] + 1] - tptr[V.col[p]] - at_in_col[p] - 1);
        std::vector<std::int32_t>& seen = touched_m[thread_id()];
        if (seen.size() < room) seen.resize(room);
        std::size_t touched = 0;
        for (std::int64_t p = V.ptr[i]; p < V.ptr[i + 1]; ++p) {
#if defined(__GNUC__)
          if (p + 1 < V.ptr[i + 1])  // the next column is a cache miss otherwise
            __builtin_prefetch(tcol.data() + tptr[V.col[p + 1]] + at_in_col[p + 1] + 1);
#endif
          const float vik = V.val[p];
          const TEntry* column = tcol.data() + tptr[V.col[p]];
          const TEntry* end = tcol.data() + tptr[V.col[p] + 1];
          for (const TEntry* e = column + at_in_col[p] + 1; e < end; ++e) {  // rows j > i
            const std::int32_t j = e->row;
            seen[touched] = j;
            touched += (acc[j] == 0.0f);  // every term is > 0: zero means untouched
            acc[j] += std::min(vik, e->val);
          }
        }
        // filter first, then sort only what is kept
        std::vector<std::pair<std::int32_t, float>> kept;
        for (std::size_t a = 0; a < touched; ++a) {
          const std::int32_t j = seen[a];
          const float m = acc[j];
          acc[j] = 0.0f;
          float dist;
          if (jaccard::keep_distance(m, m_low, keep_below, &dist)) kept.emplace_back(j, dist);
        }
        std::sort(kept.begin(), kept.end());
        cols.resize(kept.size());
        vals.resize(kept.size());
        for (std::size_t a = 0; a < kept.size(); ++a) {
          cols[a] = kept[a].first;
          vals[a] = kept[a].second;
        }
      });
  V = {};
  tcol = {};
  at_in_col = {};

  mirror_upper(n, upper.ptr.data(), upper.col.data(), upper.val.data(), out);
}

void mirror_upper(index_t n, const std::int64_t* uptr, const std::int32_t* ucol, const float* uval,
                  CsrF32& out) {
  // Mirror the upper triangle into a full, row-sorted CSR with a zero
  // diagonal. Rows are visited in order, so each row's lower part (written by
  // earlier rows) is complete before its diagonal and upper part are added.
  out.indptr.assign(static_cast<std::size_t>(n) + 1, 0);
  for (index_t i = 0; i < n; ++i) {
    out.indptr[i + 1] += 1 + (uptr[i + 1] - uptr[i]);
    for (std::int64_t p = uptr[i]; p < uptr[i + 1]; ++p)
      out.indptr[ucol[p] + 1] += 1;
  }
  for (index_t i = 0; i < n; ++i) out.indptr[i + 1] += out.indptr[i];
  const std::size_t nnz = static_cast<std::size_t>(out.indptr[n]);
  out.indices.resize(nnz);
  out.data.resize(nnz);
  std::vector<std::int64_t> cursor(out.indptr.begin(), out.indptr.end() - 1);
  for (index_t i = 0; i < n; ++i) {
    std::int64_t& ci = cursor[i];
    out.indices[ci] = static_cast<std::int32_t>(i);
    out.data[ci] = 0.0f;
    ++ci;
    for (std::int64_t p = uptr[i]; p < uptr[i + 1]; ++p) {
      const std::int32_t j = ucol[p];
      out.indices[ci] = j;
      out.data[ci] = uval[p];
      ++ci;
      std::int64_t& cj = cursor[j];
      out.indices[cj] = static_cast<std::int32_t>(i);
      out.data[cj] = uval[p];
      ++cj;
    }
  }
}

}  // namespace aas
