// The exact kNN of the GPU from low-precision similarity tiles (bf16 or tf32 tensor
// cores), as a template over an Exec (aas/exec.hpp): cuda/knn.cu runs it with
// exec::Cuda, the CPU build with exec::Host in its tests.
//
// "Exact" means: the result equals the fp32 one, i.e. the top-k by dot_fma (fp32, one
// fused multiply-add per element in element order: what the fp32 similarity tile of
// cuda/knn.cu computes), ties to the smaller index. The steps:
//   1. candidates: each row's top-k' (k' > k) by the low-precision similarity;
//   2. re-rank: the candidates' exact fp32 similarities give a top-k;
//   3. certificate: a non-candidate j has low-precision similarity <= f (the worst
//      candidate's), so its fp32 similarity is <= f + B, where B bounds the
//      low-precision error (low_precision_bound). When the k-th exact similarity is
//      > f + B no non-candidate can enter or tie: the row is exact. Otherwise
//   4. fallback: the row's top-k is recomputed from fp32 similarities to every row.
// The result is always the fp32 one; the precision only changes the speed (through
// how many rows need step 4).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "aas/common.hpp"
#include "aas/exec.hpp"
#include "aas/hd.hpp"
#include "aas/topk.hpp"

namespace aas {
namespace knnx {

using index_t = std::int64_t;

/// fp32 similarity with one fused multiply-add per element, in element order.
AAS_HD float dot_fma(const float* a, const float* b, index_t d) {
  float acc = 0.0f;
  for (index_t e = 0; e < d; ++e) acc = fmaf(a[e], b[e], acc);
  return acc;
}

/// x rounded to `bits` significant bits (bf16: 8, tf32: 11), to nearest, ties to
/// even, as __float2bfloat16_rn and the tf32 conversion do; inf and NaN unchanged.
AAS_HD float round_to_bits(float x, int bits) {
  std::uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(x);
#else
  std::memcpy(&u, &x, sizeof u);
#endif
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  const int drop = 24 - bits;
  const std::uint32_t half = 1u << (drop - 1);
  const std::uint32_t lsb = (u >> drop) & 1u;
  u = (u + half - 1u + lsb) & ~((1u << drop) - 1u);
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
#endif
}

/// Bound on |low-precision similarity - dot_fma| for rows of norm <= 1 (+1e-3 slack):
/// inputs rounded to `bits` bits change a product by at most (2u + u^2)|x_e y_e|
/// (u = 2^-bits), and sum_e |x_e y_e| <= |x| |y| <= 1; the fp32 accumulations of the
/// two sides add at most d 2^-23 (any order, even truncating adds) and d 2^-24.
AAS_HD float low_precision_bound(index_t d, int bits) {
  const double u = ldexp(1.0, -bits);
  const double rounding = (2.0 * u + u * u) * 1.001;
  const double accumulation = static_cast<double>(d) * (ldexp(1.0, -23) + ldexp(1.0, -24)) * 1.001;
  return static_cast<float>(rounding + accumulation + 1e-6);
}

/// A tighter bound for row i against any row j, from the rounding residuals
/// r = |round(x) - x| (2-norms) of the rows themselves rather than their worst case:
/// round(x).round(y) - x.y = (round(x) - x).round(y) + x.(round(y) - y), so by
/// Cauchy-Schwarz it is at most r_i |round(y)| + |x_i| r_j <= r_i y_max + |x_i| r_max
/// (y_max, r_max: the largest over all rows), plus low_precision_bound's two fp32
/// accumulation terms, each at most d 2^-23 (or 2^-24) times sum_e |x_e y_e| <= |x| |y|
/// <= 1.01 y_max^2 for the rounded and the fp32 rows alike (|x| <= |round(x)| / (1 - u)).
/// Inputs are computed in double and passed rounded up.
AAS_HD float residual_bound(double r_i, double norm_i, double y_max, double r_max, index_t d) {
  const double mass = y_max * y_max * 1.01 > 1.01 ? y_max * y_max * 1.01 : 1.01;
  const double accumulation = static_cast<double>(d) * (ldexp(1.0, -23) + ldexp(1.0, -24)) * mass;
  return static_cast<float>((r_i * y_max + norm_i * r_max) * 1.001 + accumulation + 1e-6);
}

/// Row i's exact top-`cap` from its low-precision candidates, and whether it is
/// certified (see the file comment; a row a candidate of which breaks the bound is not).
/// Candidate heaps: (n, cand_cap); exact heaps: (n, cap). With `rows`, candidate heap r
/// (and uncertified[r]) belongs to row rows[r] (m compact heaps, the CPU's second chance).
struct Rerank {
  const float* X;
  index_t d;
  const float* cand_s;
  const index_t* cand_i;
  const index_t* cand_n;
  index_t cand_cap;
  float bound;
  float* ex_s;
  index_t* ex_i;
  index_t* ex_n;
  index_t cap;
  index_t* uncertified;
  index_t* broken;  // set to 1 when a candidate's low-precision similarity is off by > bound
  // the candidates' dot_fma values, laid out as cand_s, when the caller computed them in a
  // batch (the CPU, whose single dot_fma chain is latency-bound); null: computed here
  const float* cand_exact = nullptr;
  // a bound per row (residual_bound) in place of `bound`, or null
  const float* row_bound = nullptr;
  // the row of each candidate heap, or null: heap r is row r
  const index_t* rows = nullptr;
  AAS_HD void operator()(index_t r) const {
    const index_t i = rows != nullptr ? rows[r] : r;
    const float bound = row_bound != nullptr ? row_bound[i] : this->bound;
    topk::RowHeap h{ex_s + i * cap, ex_i + i * cap, ex_n + i, cap};
    *h.size = 0;
    const index_t m = cand_n[r];
    bool within = true;
    for (index_t t = 0; t < m; ++t) {
      const index_t j = cand_i[r * cand_cap + t];
      const float exact =
          cand_exact != nullptr ? cand_exact[r * cand_cap + t] : dot_fma(X + i * d, X + j * d, d);
      // the certificate rests on |low - exact| <= bound: check it wherever both are known
      const float gap = cand_s[r * cand_cap + t] - topk::clamp_sim(exact);
      if (!(gap <= bound && -gap <= bound)) {
        *broken = 1;
        within = false;
      }
      h.offer(exact, j);
    }
    // a candidate heap that is not full held every other row: nothing was left out
    const bool complete = m < cand_cap || cap == 0;
    uncertified[r] = within && (complete || h.s[0] > cand_s[r * cand_cap] + bound) ? 0 : 1;
  }
};

/// Best-first output rows from the heaps, with the row itself first when include_self
/// (similarity 1), as the CPU's knn_finalize writes them.
struct Finalize {
  float* heap_s;
  index_t* heap_i;
  index_t* heap_n;
  index_t cap, k;
  bool include_self;
  index_t* out_i;
  float* out_s;
  AAS_HD void operator()(index_t i) const {
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
};

// ---- the host's stand-ins for the device's tiles (tests) -------------------------------

/// Row i's candidates by the low-precision similarity: inputs rounded to `bits` bits,
/// products (exact in fp32 for bf16) accumulated in fp32.
struct HostCandidates {
  const float* X;
  index_t n, d;
  int bits;  // of the inputs (tests give it apart from the bound's, to break the bound)
  float* s;
  index_t* id;
  index_t* size;
  index_t cap;
  void operator()(index_t i) const {
    topk::RowHeap h{s + i * cap, id + i * cap, size + i, cap};
    *h.size = 0;
    for (index_t j = 0; j < n; ++j) {
      if (j == i) continue;
      float acc = 0.0f;
      for (index_t e = 0; e < d; ++e)
        acc += round_to_bits(X[i * d + e], bits) * round_to_bits(X[j * d + e], bits);
      h.offer(acc, j);
    }
  }
};

/// Row rows[r]'s exact top-cap over every other row, into the exact heaps.
struct HostExactRow {
  const float* X;
  index_t n, d;
  const index_t* rows;
  float* s;
  index_t* id;
  index_t* size;
  index_t cap;
  void operator()(index_t r) const {
    const index_t i = rows[r];
    topk::RowHeap h{s + i * cap, id + i * cap, size + i, cap};
    *h.size = 0;
    for (index_t j = 0; j < n; ++j)
      if (j != i) h.offer(dot_fma(X + i * d, X + j * d, d), j);
  }
};

/// No second chance (see knn_low_precision_exec): every uncertified row is left.
struct NoSecondChance {
  index_t operator()(index_t*, index_t m, float*, index_t*, index_t*, index_t) const {
    return m;
  }
};

struct Flagged {  // rows[at[i]] = i where flag[i]
  const index_t* flag;
  const index_t* at;
  index_t* rows;
  AAS_HD void operator()(index_t i) const {
    if (flag[i]) rows[at[i]] = i;
  }
};

}  // namespace knnx

/// The exact kNN through low-precision candidates (see the file comment). X: (n, d)
/// fp32 unit rows on ex's side; out_i/out_s: (n, k) on ex's side. candidates(s, id,
/// size, cand_cap) fills the candidate heaps; exact_rows(rows, m, s, id, size, cap)
/// fills the exact heaps of the m listed rows (rows on ex's side) from every other
/// row. Returns how many rows needed that fallback. Should any candidate's
/// low-precision similarity be further than the bound from its fp32 one (the
/// candidates' producer is broken, or X's rows are not unit norm), every row is
/// recomputed in fp32 and -1 is returned. cand_exact (optional): where candidates()
/// leaves the candidates' dot_fma values, laid out as its heaps (see Rerank).
/// row_bound (optional): a bound per row (residual_bound) in place of low_precision_bound.
/// force_fallback (tests): every row takes the fallback, as if none were certified.
/// second_chance(rows, m, s, id, size, cap) (optional; host-side rows): may fill the exact
/// heaps of some of the m uncertified rows some cheaper way, certified; it moves the
/// rows it leaves to the front of `rows` and returns their count. It is not asked when
/// the bound broke or the fallback is forced. recomputed (optional) receives how many
/// rows exact_rows recomputed.
template <class Exec, class Candidates, class ExactRows,
          class SecondChance = knnx::NoSecondChance>
index_t knn_low_precision_exec(const Exec& ex, const float* X, index_t n, index_t d, index_t k,
                               bool include_self, int bits, index_t cand_cap,
                               const Candidates& candidates, const ExactRows& exact_rows,
                               index_t* out_i, float* out_s, const float* cand_exact = nullptr,
                               const float* row_bound = nullptr, bool force_fallback = false,
                               const SecondChance& second_chance = {},
                               index_t* recomputed = nullptr) {
  using namespace knnx;
  using Idx = typename Exec::template Buffer<index_t>;
  using F32 = typename Exec::template Buffer<float>;
  const index_t cap = include_self ? k - 1 : k;
  AAS_REQUIRE(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
  AAS_REQUIRE(bits >= 2 && bits <= 23, "knn_graph: bad precision");
  cand_cap = std::min(n - 1, std::max(cand_cap, cap));
  Idx cand_i(ex, n * cand_cap), cand_n(ex, n), ex_i(ex, n * cap), ex_n(ex, n), flag(ex, n),
      broken(ex, 1);
  F32 cand_s(ex, n * cand_cap), ex_s(ex, n * cap);
  index_t fallback = 0;
  if (recomputed != nullptr) *recomputed = 0;
  if (cap > 0) {
    candidates(cand_s.data(), cand_i.data(), cand_n.data(), cand_cap);
    ex.fill(broken.data(), 1, index_t{0});
    ex.for_each(n, Rerank{X, d, cand_s.data(), cand_i.data(), cand_n.data(), cand_cap,
                          low_precision_bound(d, bits), ex_s.data(), ex_i.data(), ex_n.data(), cap,
                          flag.data(), broken.data(), cand_exact, row_bound});
    const bool trust_none = ex.get(broken.data(), 0) != 0;
    if (trust_none || force_fallback) ex.fill(flag.data(), n, index_t{1});
    Idx at(ex, n);
    fallback = ex.exclusive_scan(flag.data(), at.data(), n);
    if (trust_none) fallback = -1;
    if (fallback != 0) {
      index_t m = fallback < 0 ? n : fallback;
      Idx rows(ex, m);
      ex.for_each(n, Flagged{flag.data(), at.data(), rows.data()});
      if (!trust_none && !force_fallback)
        m = second_chance(rows.data(), m, ex_s.data(), ex_i.data(), ex_n.data(), cap);
      if (recomputed != nullptr) *recomputed = m;
      if (m > 0) exact_rows(rows.data(), m, ex_s.data(), ex_i.data(), ex_n.data(), cap);
    }
  } else {
    ex.fill(ex_n.data(), n, index_t{0});
  }
  ex.for_each(n, Finalize{ex_s.data(), ex_i.data(), ex_n.data(), cap, k, include_self, out_i,
                          out_s});
  return fallback;
}

}  // namespace aas
