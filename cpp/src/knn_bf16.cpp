// The CPU's exact kNN through bf16 candidates (aas/knn_cpu_lp.hpp). The steps after the
// candidate search are those of the CUDA path (aas/knn_exec.hpp: re-rank, certificate,
// fallback), with its per-row bound (knnx::residual_bound); only the tiles and the
// batched exact dot products are the CPU's own. The fp32 path (knn_fp32_rerank_cpu)
// runs the same steps on candidates from BLAS tiles, with the fp32 rounding bound
// (fp32_gemm_bound), so every CPU precision gives the same graph.
//
// The AVX512-BF16 kernel is compiled with a target attribute in this otherwise portable
// file and only called when cpuid says the CPU (and OS) can run it, so the default
// build runs on any x86-64 (and any other architecture, without the kernel).
#include "aas/knn_cpu_lp.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "aas/knn.hpp"
#include "aas/knn_exec.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AAS_X86_DISPATCH 1
#include <immintrin.h>
#endif

namespace aas {
namespace {

using u16 = std::uint16_t;

/// x rounded to bf16 (to nearest, ties to even: the rounding low_precision_bound assumes).
u16 to_bf16(float x) {
  const float r = knnx::round_to_bits(x, 8);
  std::uint32_t u;
  std::memcpy(&u, &r, sizeof u);
  return static_cast<u16>(u >> 16);
}

float from_bf16(u16 b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

constexpr index_t kGR = 12;  // rows of one AVX512-BF16 kernel step
constexpr index_t kPW = 32;  // columns of one panel (two vectors of 16 sums)
constexpr index_t kColumnGroups = 4;  // tasks per row slice of a tile (candidate_heaps)

/// bf16 rows as the kernels read them: `rows`, row-major, d32 features (zero-padded), the
/// row count padded with zero rows to a multiple of kPW plus kGR (the kernels read past
/// the last row, never store it); `panels` (AVX512-BF16 only): kPW rows at a time,
/// features in pairs, panel[(kp * kPW + c) * 2 + h] = row c's feature 2 kp + h, so
/// that one vector load gives 16 rows' pairs for vdpbf16ps.
struct Packed {
  std::vector<u16> rows, panels;
  index_t d32 = 0, ld = 0;  // features, row stride (one cache line more: see pack_bf16)
  // without `rows` (the AVX512-BF16 kernel reads its columns from the panels only): the
  // fp32 rows whose blocks rows_block converts when the kernel needs them as its rows
  const float* src = nullptr;
  index_t d = 0;
  const u16* panel(index_t c) const { return panels.data() + (c / kPW) * (d32 / 2) * 2 * kPW; }
};

/// Rows i0 .. i0 + count - 1 of X (n x d fp32) in bf16 into out, ld apart; out's padding
/// (features past d, rows past count) is left as it is (zero).
void convert_rows(const float* X, index_t d, index_t i0, index_t count, index_t ld, u16* out,
                  int threads) {
  parallel_for(
      count, threads,
      [&](index_t r) {
        const float* x = X + (i0 + r) * d;
        for (index_t e = 0; e < d; ++e) out[r * ld + e] = to_bf16(x[e]);
      },
      64);
}

/// Packs X in bf16. keep_rows = false (needs panels): no row-major copy (n x d32 bf16, as
/// large as the panels); the kernel's rows come from rows_block, one block at a time.
Packed pack_bf16(const float* X, index_t n, index_t d, bool panels, int threads,
                 bool keep_rows = true) {
  Packed p;
  p.d32 = (d + 31) / 32 * 32;  // one vdpbf16ps: 32 features
  // rows 4 KiB apart would share their L1 sets, and the kernel reads kGR rows at once
  p.ld = p.d32 + 32;
  p.src = X;
  p.d = d;
  const index_t d32 = p.d32, ld = p.ld, n32 = (n + kPW - 1) / kPW * kPW;
  if (keep_rows || !panels) {
    p.rows.assign(static_cast<std::size_t>((n32 + kGR) * ld), 0);
    convert_rows(X, d, 0, n, ld, p.rows.data(), threads);
  }
  if (panels) {
    p.panels.resize(static_cast<std::size_t>(n32 * d32));
    parallel_for(
        n32 / kPW, threads,
        [&](index_t q) {
          u16* out = p.panels.data() + q * d32 * kPW;
          for (index_t c = 0; c < kPW; ++c) {
            const index_t i = q * kPW + c;
            for (index_t e = 0; e < d32; ++e)  // zero past the last row and feature
              out[((e / 2) * kPW + c) * 2 + (e % 2)] =
                  i < n && e < d ? to_bf16(X[i * d + e]) : u16{0};
          }
        },
        1);
  }
  return p;
}

/// Rows i0 .. i0 + count - 1 of a Packed without `rows`, laid out as `rows` is (stride
/// ld, zero-padded features), with kGR zero rows after them (the kernel reads ahead).
void rows_block(const Packed& p, index_t i0, index_t count, std::vector<u16>& buf, int threads) {
  buf.assign(static_cast<std::size_t>((count + kGR) * p.ld), 0);
  convert_rows(p.src, p.d, i0, count, p.ld, buf.data(), threads);
}

/// One kernel call: the tile entries C[r][c .. c + kPW - 1] (C is rows x cols, row r of
/// the tile is row r of A (rows B.ld apart), column c row b0 + c of B) of rows r_begin .. r_end - 1; columns
/// past `cols` and rows past `rows` are never stored.
using PanelFn = void (*)(const u16* A, const Packed& B, index_t b0, index_t r_begin, index_t r_end,
                         index_t rows, index_t cols, index_t c, float* C);

// products of bf16 values are exact in fp32; the sums, in any order, are within the bound
void panel_portable(const u16* A, const Packed& B, index_t b0, index_t r_begin, index_t r_end,
                    index_t rows, index_t cols, index_t c, float* C) {
  const index_t d32 = B.d32, ld = B.ld;
  for (index_t r = r_begin; r < std::min(r_end, rows); ++r)
    for (index_t j = c; j < std::min(c + kPW, cols); ++j) {
      const u16* b = B.rows.data() + (b0 + j) * ld;
      float acc = 0.0f;
      for (index_t e = 0; e < d32; ++e) acc += from_bf16(A[r * ld + e]) * from_bf16(b[e]);
      C[r * cols + j] = acc;
    }
}

#ifdef AAS_X86_DISPATCH
// kGR rows x 32 columns at a time: 24 accumulators of 16 column sums each (no
// horizontal sums); per feature pair two panel loads and kGR broadcasts feed 24
// vdpbf16ps
__attribute__((target("avx512f,avx512bf16"))) void panel_avx512(const u16* A, const Packed& B,
                                                                index_t b0, index_t r_begin,
                                                                index_t r_end, index_t rows,
                                                                index_t cols, index_t c,
                                                                float* C) {
  const index_t ld = B.ld, pairs = B.d32 / 2;
  const u16* P = B.panel(b0 + c);
  const index_t w = std::min(kPW, cols - c);
  const __mmask16 m0 = w >= 16 ? 0xffff : static_cast<__mmask16>((1u << w) - 1);
  const __mmask16 m1 = w >= 32 ? 0xffff : (w > 16 ? static_cast<__mmask16>((1u << (w - 16)) - 1) : 0);
  for (index_t r = r_begin; r < r_end; r += kGR) {
    const u16* a = A + r * ld;
    __m512 acc[kGR][2];
#pragma GCC unroll 12
    for (int i = 0; i < kGR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (index_t kp = 0; kp < pairs; ++kp) {
      const __m512bh v0 = (__m512bh)_mm512_loadu_si512(P + kp * 2 * kPW);
      const __m512bh v1 = (__m512bh)_mm512_loadu_si512(P + kp * 2 * kPW + kPW);
#pragma GCC unroll 12
      for (int i = 0; i < kGR; ++i) {
        std::uint32_t pair;
        std::memcpy(&pair, a + i * ld + 2 * kp, sizeof pair);
        const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, v0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, v1);
      }
    }
    for (int i = 0; i < kGR && r + i < rows; ++i) {
      _mm512_mask_storeu_ps(C + (r + i) * cols + c, m0, acc[i][0]);
      _mm512_mask_storeu_ps(C + (r + i) * cols + c + 16, m1, acc[i][1]);
    }
  }
}
#endif

/// Each row's top-cap by the bf16 similarity into st: square tiles on and above the
/// diagonal (knn_merge_tile mirrors them), each computed in row slices that stay in L2.
void candidate_heaps(const Packed& Xb, index_t n, PanelFn kernel, TopKState st, int threads) {
  const index_t block = std::min<index_t>(n, 1024), d32 = Xb.d32;
  // a multiple of kGR, so that no slice starts inside another's last kernel step
  const index_t slice = std::max<index_t>(kGR, (index_t{384} * 1024 / (d32 * 2)) / kGR * kGR);
  std::vector<float> tile(static_cast<std::size_t>(block * block));
  std::vector<u16> block_rows;  // the block's rows, when Xb keeps none
  for (index_t i0 = 0; i0 < n; i0 += block) {
    const u16* A = Xb.rows.data() + i0 * Xb.ld;
    if (Xb.rows.empty()) {
      rows_block(Xb, i0, std::min(block, n - i0), block_rows, threads);
      A = block_rows.data();
    }
    for (index_t j0 = i0; j0 < n; j0 += block) {
      const index_t rows = std::min(block, n - i0), cols = std::min(block, n - j0);
      const bool diagonal = i0 == j0;
      const index_t panels = (cols + kPW - 1) / kPW;
      // one task per row slice and column group: the slice's rows stay in the core's
      // L2 while the group's panels pass (one barrier per tile, which matters on a
      // shared machine); column groups make enough tasks that the last ones do not
      // leave a thread idle (a 1024-row tile has 11 slices)
      const index_t n_slices = (rows + slice - 1) / slice;
      const index_t groups = std::min<index_t>(panels, threads > 1 ? kColumnGroups : 1);
      const index_t per_group = (panels + groups - 1) / groups;
      parallel_for(
          n_slices * groups, threads,
          [&](index_t task) {
            const index_t t = task / groups, g = task % groups;
            const index_t rs = t * slice, re = std::min(rows, rs + slice);
            for (index_t q = g * per_group; q < std::min(panels, (g + 1) * per_group); ++q) {
              const index_t c = kPW * q;
              // a diagonal tile is read above its diagonal only
              const index_t end = diagonal ? std::min(re, c + kPW) : re;
              if (rs < end)
                kernel(A, Xb, j0, rs, end, rows, cols, c, tile.data());
            }
          },
          1);
      knn_merge_tile(tile.data(), rows, cols, i0, j0, st, threads);
    }
  }
}

/// out[t] = dot_fma(x, row ids[t] of X) (ids null: row t), bit for bit: eight chains at
/// a time, since one chain waits on its fused multiply-add's latency.
#if defined(__GNUC__) || defined(__clang__)
#define AAS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define AAS_ALWAYS_INLINE inline
#endif

// always inlined, so that dots_fma's copy is compiled with its FMA target
AAS_ALWAYS_INLINE void dots_body(const float* x, const float* X, index_t d,
                                                     const index_t* ids, index_t m, float* out) {
  constexpr int kChains = 8;
  for (index_t t = 0; t < m; t += kChains) {
    // a short last group repeats its last row in the spare chains (results dropped)
    const float* p[kChains];
    float acc[kChains];
    for (int c = 0; c < kChains; ++c) {
      const index_t u = std::min(t + c, m - 1);
      p[c] = X + (ids != nullptr ? ids[u] : u) * d;
      acc[c] = 0.0f;
    }
    for (index_t e = 0; e < d; ++e)
      for (int c = 0; c < kChains; ++c) acc[c] = std::fma(x[e], p[c][e], acc[c]);
    for (int c = 0; c < kChains && t + c < m; ++c) out[t + c] = acc[c];
  }
}

void dots_portable(const float* x, const float* X, index_t d, const index_t* ids, index_t m,
                   float* out) {
  dots_body(x, X, d, ids, m, out);
}

#ifdef AAS_X86_DISPATCH
__attribute__((target("fma"))) void dots_fma(const float* x, const float* X, index_t d,
                                             const index_t* ids, index_t m, float* out) {
  dots_body(x, X, d, ids, m, out);
}
#endif

using DotsFn = void (*)(const float*, const float*, index_t, const index_t*, index_t, float*);

#ifdef AAS_X86_DISPATCH
constexpr int kLanes = 16, kRowsAtOnce = 8;

/// out[r * ldo + l] = dot_fma(xr[r], row l of the panel) for r < 8, l < 16: the panel
/// holds 16 rows of X transposed (panel[e * 16 + l]), so each lane runs one dot_fma
/// chain, feature by feature, as the scalar one does.
__attribute__((target("avx512f,fma"))) void panel_dots_avx512(const float* panel, index_t d,
                                                               const float* const* xr, float* out,
                                                               index_t ldo) {
  __m512 acc[kRowsAtOnce];
#pragma GCC unroll 8
  for (int r = 0; r < kRowsAtOnce; ++r) acc[r] = _mm512_setzero_ps();
  for (index_t e = 0; e < d; ++e) {
    const __m512 p = _mm512_loadu_ps(panel + e * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < kRowsAtOnce; ++r)
      acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(xr[r][e]), p, acc[r]);
  }
  for (int r = 0; r < kRowsAtOnce; ++r) _mm512_storeu_ps(out + r * ldo, acc[r]);
}

/// vals[r * n + j] = dot_fma(row rows[r], row j) for r < m, every j: 16 columns of X
/// transposed into a panel at a time, each panel used by all m rows.
void rows_dots_avx512(const float* X, index_t n, index_t d, const index_t* rows, index_t m,
                      float* vals, int threads) {
  const index_t blocks = (n + kLanes - 1) / kLanes;
  parallel_team(threads, [&](int tid, int team) {
    std::vector<float> panel(static_cast<std::size_t>(d * kLanes));
    float out[kRowsAtOnce * kLanes];
    for (index_t b = tid; b < blocks; b += team) {
      const index_t j0 = b * kLanes, w = std::min<index_t>(kLanes, n - j0);
      for (index_t e = 0; e < d; ++e)
        for (index_t l = 0; l < kLanes; ++l)
          panel[e * kLanes + l] = l < w ? X[(j0 + l) * d + e] : 0.0f;
      for (index_t r0 = 0; r0 < m; r0 += kRowsAtOnce) {
        const float* xr[kRowsAtOnce];
        for (int r = 0; r < kRowsAtOnce; ++r)  // spare slots repeat the last row
          xr[r] = X + rows[std::min<index_t>(r0 + r, m - 1)] * d;
        panel_dots_avx512(panel.data(), d, xr, out, kLanes);
        for (index_t r = r0; r < std::min<index_t>(r0 + kRowsAtOnce, m); ++r)
          std::memcpy(vals + r * n + j0, out + (r - r0) * kLanes, sizeof(float) * w);
      }
    }
  });
}
#endif

DotsFn pick_dots() {
#ifdef AAS_X86_DISPATCH
  if (__builtin_cpu_supports("fma")) return dots_fma;
#endif
  return dots_portable;
}

/// exec::Host with its per-index steps on the OpenMP threads (each index writes its own
/// row; Rerank's `broken` flag is only ever set to 1).
struct ParallelHost : exec::Host {
  int threads;
  template <class F>
  void for_each(index_t n, const F& f) const {
    parallel_for(n, threads, [&](index_t i) { f(i); }, 64);
  }
};

}  // namespace

bool cpu_has_avx512_bf16() {
#ifdef AAS_X86_DISPATCH
  // libgcc sets these only when the OS also saves the zmm state (xgetbv)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

namespace {

PanelFn kernel_of(Bf16Kernel kernel) {
  if (kernel == Bf16Kernel::portable) return panel_portable;
#ifdef AAS_X86_DISPATCH
  require(cpu_has_avx512_bf16(), "knn_graph: this CPU has no AVX512-BF16 instructions");
  return panel_avx512;
#else
  require(false, "knn_graph: AVX512-BF16 is an x86-64 kernel");
  return nullptr;
#endif
}

}  // namespace

void bf16_similarity_tile(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                          Bf16Kernel kernel, float* C) {
  require(rows >= 1 && cols >= 1 && d >= 1, "bf16_similarity_tile: bad sizes");
  const PanelFn fn = kernel_of(kernel);
  const bool panels = kernel == Bf16Kernel::avx512;
  const Packed Ap = pack_bf16(A, rows, d, false, 1), Bp = pack_bf16(B, cols, d, panels, 1);
  for (index_t c = 0; c < cols; c += kPW) fn(Ap.rows.data(), Bp, 0, 0, rows, rows, cols, c, C);
}

namespace {

// Sharing mutual pairs' dot products pays from this many features (its id scans cost
// about cc compares per pair); kMaxShareCc bounds the per-row scratch.
constexpr index_t kShareMinD = 256, kMaxShareCc = 256;

/// The steps after a candidate search (aas/knn_exec.hpp: exact re-rank of each row's
/// cc candidates, certificate against row_bound, fallback), shared by the bf16 search
/// and the BLAS fp32 one. search(s, id, size) fills the candidate heaps (n, cc); the
/// candidates' dot_fma values are computed here, in batches. avx512: the fallback's
/// dot products through AVX-512F panels (else eight scalar chains); both give dot_fma
/// bit for bit.
template <class Search>
index_t rerank_certified(const float* X, index_t n, index_t d, index_t k, bool include_self,
                         index_t cc, const Search& search, const float* row_bound, bool avx512,
                         bool force_fallback, int threads, index_t* out_idx, float* out_sims) {
  const DotsFn dots = pick_dots();
  std::vector<float> exact(static_cast<std::size_t>(n * cc > 0 ? n * cc : 1));
  ParallelHost ex;
  ex.threads = threads;
  auto candidates = [&](float* s, index_t* id, index_t* size, index_t heap_cap) {
    require(heap_cap == cc, "knn_graph: candidate capacity mismatch");
    search(s, id, size);
    if (d < kShareMinD || cc > kMaxShareCc) {
      parallel_for(
          n, threads,
          [&](index_t i) { dots(X + i * d, X, d, id + i * cc, size[i], &exact[i * cc]); }, 16);
      return;
    }
    // dot_fma(x, y) == dot_fma(y, x) bit for bit (a fused multiply-add's product is
    // exact, so its factors commute): a pair that is a candidate of both its rows is
    // computed once, by the lower row, and copied into the higher row's slot; this cuts
    // the scattered row reads, which bound the re-rank at large d.
    std::vector<index_t> from(static_cast<std::size_t>(n * cc), -1);
    parallel_for(
        n, threads,
        [&](index_t i) {
          const index_t* ci = id + i * cc;
          index_t pick[kMaxShareCc], slot[kMaxShareCc];
          index_t m = 0;
          for (index_t t = 0; t < size[i]; ++t) {
            const index_t j = ci[t];
            index_t pos = -1;
            if (j < i) {
              const index_t* cj = id + j * cc;
              for (index_t u = 0; u < size[j]; ++u)
                if (cj[u] == i) pos = u;
            }
            if (pos >= 0) {
              from[i * cc + t] = j * cc + pos;
            } else {
              pick[m] = j;
              slot[m++] = t;
            }
          }
          float v[kMaxShareCc];
          dots(X + i * d, X, d, pick, m, v);
          for (index_t r = 0; r < m; ++r) exact[i * cc + slot[r]] = v[r];
        },
        16);
    parallel_for(
        n, threads,
        [&](index_t i) {
          for (index_t t = 0; t < size[i]; ++t)
            if (from[i * cc + t] >= 0) exact[i * cc + t] = exact[from[i * cc + t]];
        },
        256);
  };
  auto exact_rows = [&](const index_t* rows, index_t m, float* s, index_t* id, index_t* size,
                        index_t c) {
    auto offer_all = [&](index_t i, const float* v) {
      topk::RowHeap h{s + i * c, id + i * c, size + i, c};
      *h.size = 0;
      for (index_t j = 0; j < n; ++j)
        if (j != i) h.offer(v[j], j);
    };
#ifdef AAS_X86_DISPATCH
    if (avx512) {
      // a chunk of rows at a time bounds the buffer (every row, when forced)
      const index_t chunk = std::max<index_t>(kRowsAtOnce, (index_t{1} << 23) / n);
      std::vector<float> vals(static_cast<std::size_t>(std::min(chunk, m) * n));
      for (index_t r0 = 0; r0 < m; r0 += chunk) {
        const index_t mc = std::min(chunk, m - r0);
        rows_dots_avx512(X, n, d, rows + r0, mc, vals.data(), threads);
        parallel_for(
            mc, threads, [&](index_t r) { offer_all(rows[r0 + r], vals.data() + r * n); }, 1);
      }
      return;
    }
#else
    (void)avx512;
#endif
    parallel_for(
        m, threads,
        [&](index_t r) {
          std::vector<float> v(static_cast<std::size_t>(n));
          dots(X + rows[r] * d, X, d, nullptr, n, v.data());
          offer_all(rows[r], v.data());
        },
        1);
  };
  // bits (8) only passes the exec's check: row_bound replaces its bound
  return knn_low_precision_exec(ex, X, n, d, k, include_self, 8, cc, candidates, exact_rows,
                                out_idx, out_sims, exact.data(), row_bound, force_fallback);
}

bool cpu_has_avx512f() {
#ifdef AAS_X86_DISPATCH
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

/// Each row's 2-norm (double, rounded up).
std::vector<double> row_norms(const float* X, index_t n, index_t d, int threads) {
  std::vector<double> norm(static_cast<std::size_t>(n));
  parallel_for(
      n, threads,
      [&](index_t i) {
        double x2 = 0.0;
        for (index_t e = 0; e < d; ++e) x2 += static_cast<double>(X[i * d + e]) * X[i * d + e];
        norm[i] = std::sqrt(x2) * (1.0 + 1e-12);
      },
      256);
  return norm;
}

/// gamma_d = d u / (1 - d u) for unit roundoff u (Higham, Accuracy and Stability of
/// Numerical Algorithms, 3.1), rounded up; needs d u < 1/2.
double gamma_bound(index_t d, double u) {
  const double du = static_cast<double>(d) * u;
  require(du < 0.5, "knn_graph: too many features for the fp32 rounding bound");
  return du / (1.0 - du) * (1.0 + 1e-12);
}

/// Bound on |sgemm(x, y) - dot_fma(x, y)| for row x (norm norm_i) against any row y (norm
/// <= norm_max). Proof: BLAS may sum the d products in any order (blocks, SIMD lanes,
/// a tree), with or without fused multiply-adds; each product passes through at most d
/// roundings (its multiplication and at most d - 1 additions on its path to the root),
/// so |sgemm - x.y| <= gamma_d(u) sum_e |x_e y_e| (Higham, Lemma 3.1 and 3.1's "any
/// order" remark), u = 2^-23 to cover a BLAS that truncates rather than rounds. dot_fma
/// is one chain of d fused multiply-adds, each rounded to nearest once:
/// |dot_fma - x.y| <= gamma_d(2^-24) sum_e |x_e y_e|. By Cauchy-Schwarz sum_e |x_e y_e|
/// <= |x| |y| <= norm_i norm_max. Clamping both to [-1, 1] (the heaps do) shrinks the
/// difference. The 1.001 covers rounding the bound to float; the 1e-6 the float rounding
/// of the certificate's f + bound and underflow (at most d 2^-149 in all).
float fp32_gemm_bound(index_t d, double norm_i, double norm_max) {
  const double g23 = gamma_bound(d, std::ldexp(1.0, -23));
  const double g24 = gamma_bound(d, std::ldexp(1.0, -24));
  return static_cast<float>((g23 + g24) * norm_i * norm_max * 1.001 + 1e-6);
}

}  // namespace

index_t knn_bf16_cpu(const float* X, index_t n, index_t d, index_t k, bool include_self,
                     index_t cand_cap, Bf16Kernel kernel, bool force_fallback, int n_threads,
                     index_t* out_idx, float* out_sims) {
  const index_t cap = include_self ? k - 1 : k;
  require(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
  const PanelFn panel = kernel_of(kernel);
  // a small search runs on one thread: its dozen parallel steps would each wake the team
  // (results do not depend on the thread count); below ~10^10 multiply-adds (~0.1 s on
  // one core; n 5000, d 256) two shared cores ran it 2-3x slower than one
  const int threads = n_threads > 0 && n * n * d >= (index_t{1} << 33) ? n_threads : 1;
  if (cand_cap <= 0) cand_cap = cap + std::max<index_t>(cap, 32);  // as the CUDA path
  // knn_low_precision_exec's own clamp, to size the exact values' buffer
  const index_t cc = std::min(n - 1, std::max(cand_cap, cap));
  // each row's rounding residual and norm (double), for the per-row bound
  std::vector<double> resid(static_cast<std::size_t>(n)), norm(static_cast<std::size_t>(n)),
      rnorm(static_cast<std::size_t>(n));
  parallel_for(
      n, threads,
      [&](index_t i) {
        double r2 = 0.0, x2 = 0.0, y2 = 0.0;
        for (index_t e = 0; e < d; ++e) {
          const double x = X[i * d + e], y = from_bf16(to_bf16(X[i * d + e]));
          r2 += (y - x) * (y - x);
          x2 += x * x;
          y2 += y * y;
        }
        resid[i] = std::sqrt(r2) * (1.0 + 1e-12);
        norm[i] = std::sqrt(x2) * (1.0 + 1e-12);
        rnorm[i] = std::sqrt(y2) * (1.0 + 1e-12);
      },
      256);
  const double r_max = *std::max_element(resid.begin(), resid.end());
  const double y_max = *std::max_element(rnorm.begin(), rnorm.end());
  std::vector<float> row_bound(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i)
    row_bound[i] = knnx::residual_bound(resid[i], norm[i], y_max, r_max, d);

  auto search = [&](float* s, index_t* id, index_t* size) {
    const bool avx512 = kernel == Bf16Kernel::avx512;
    const Packed Xb = pack_bf16(X, n, d, avx512, threads, /*keep_rows=*/!avx512);
    std::fill(size, size + n, index_t{0});
    candidate_heaps(Xb, n, panel, TopKState{s, id, size, n, cc}, threads);
  };
  // (the avx512 kernel implies AVX-512F)
  return rerank_certified(X, n, d, k, include_self, cc, search, row_bound.data(),
                          kernel == Bf16Kernel::avx512, force_fallback, threads, out_idx,
                          out_sims);
}

index_t knn_fp32_rerank_cpu(const float* X, index_t n, index_t d, index_t k, bool include_self,
                            TopKState cands, bool force_fallback, int n_threads, index_t* out_idx,
                            float* out_sims) {
  const index_t cap = include_self ? k - 1 : k;
  require(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
  require(cands.n == n && cands.cap >= cap && cands.cap <= n - 1,
          "knn_graph: the candidate heaps do not match X and k");
  const index_t cc = std::max(cands.cap, cap);
  // the work here is the re-rank's, n cc d: below ~10^8 multiply-adds one thread is
  // faster than waking a team beside BLAS's threads, which spin a while after a GEMM
  const int threads = n_threads > 0 && n * cc * d >= (index_t{1} << 27) ? n_threads : 1;
  const std::vector<double> norm = row_norms(X, n, d, threads);
  const double norm_max = *std::max_element(norm.begin(), norm.end());
  std::vector<float> row_bound(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) row_bound[i] = fp32_gemm_bound(d, norm[i], norm_max);
  auto search = [&](float* s, index_t* id, index_t* size) {
    if (cc == 0) return;
    std::memcpy(s, cands.heap_sims, sizeof(float) * n * cc);
    std::memcpy(id, cands.heap_idx, sizeof(index_t) * n * cc);
    std::memcpy(size, cands.heap_size, sizeof(index_t) * n);
  };
  return rerank_certified(X, n, d, k, include_self, cc, search, row_bound.data(),
                          cpu_has_avx512f(), force_fallback, threads, out_idx, out_sims);
}

}  // namespace aas
