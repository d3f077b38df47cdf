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
#include <cpuid.h>
#include <immintrin.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
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
constexpr index_t kPadRows = 32;  // zero rows after a kernel's rows: the AMX step reads 32
constexpr index_t kPW = 32;  // columns of one panel (two vectors of 16 sums)
constexpr index_t kColumnGroups = 4;  // tasks per row slice of a tile (candidate_heaps)

/// bf16 rows as the kernels read them: `rows`, row-major, d32 features (zero-padded), the
/// row count padded with zero rows to a multiple of kPW plus kPadRows (the kernels read past
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

/// Rows i0 .. i0 + count - 1 of X (n x d fp32) (with ids: rows ids[i0 .. i0 + count - 1])
/// in bf16 into out, ld apart; out's padding (features past d, rows past count) is left
/// as it is (zero).
void convert_rows(const float* X, index_t d, index_t i0, index_t count, index_t ld, u16* out,
                  int threads, const index_t* ids = nullptr) {
  parallel_for(
      count, threads,
      [&](index_t r) {
        const float* x = X + (ids != nullptr ? ids[i0 + r] : i0 + r) * d;
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
    p.rows.assign(static_cast<std::size_t>((n32 + kPadRows) * ld), 0);
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
/// ld, zero-padded features), with kPadRows zero rows after them (the kernel reads ahead).
void rows_block(const Packed& p, index_t i0, index_t count, std::vector<u16>& buf, int threads) {
  buf.assign(static_cast<std::size_t>((count + kPadRows) * p.ld), 0);
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

// ---- AMX: TDPBF16PS on 16 x 16 tiles ----------------------------------------------
//
// One kernel step: rows r .. r + 31 (two A tiles, 16 rows x 32 features) against the
// panel's 32 columns (two B tiles) into four 16 x 16 fp32 accumulator tiles, 32 features
// at a time. The panels' layout is the B tiles' (the VNNI pairs vdpbf16ps reads too):
// k-pair kp of column col at panel[(kp * kPW + col) * 2], so one B tile is 16 k-pairs,
// 64 bytes of 16 columns each, 2 kPW u16 (128 bytes) apart. The body is written once
// against a tile interface: AmxTiles runs the instructions; AmxEmulated runs the same
// steps through TDPBF16PS's arithmetic in C++, so the tests check this kernel's layout,
// steps and edges on any CPU, and amx_ready() checks the instructions against it before
// the search uses them.

/// Palette 1 with every tile 16 rows of 64 bytes (tiles 0-3: C, 4-5: A, 6-7: B).
struct alignas(64) AmxConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t tile_rows[16] = {};
  AmxConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      tile_rows[t] = 16;
    }
  }
};

/// TDPBF16PS in C++: C[m][n] += A[m][2k] B[k][2n] + A[m][2k + 1] B[k][2n + 1], k = 0 ..
/// 15, one fp32 addition after the other (each bf16 product is exact in fp32), with the
/// instruction's denormals-are-zero on its inputs and flush-to-zero on its sums.
struct AmxEmulated {
  alignas(64) unsigned char tile[8][16 * 64];
  static float daz(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? 0.0f * x : x; }
  void configure() const {}
  void release() const {}
  template <int T>
  void zero() {
    std::memset(tile[T], 0, sizeof tile[T]);
  }
  template <int T>
  void load(const void* base, index_t stride_bytes) {
    for (int r = 0; r < 16; ++r)
      std::memcpy(tile[T] + r * 64, static_cast<const unsigned char*>(base) + r * stride_bytes, 64);
  }
  template <int T>
  void store(void* base, index_t stride_bytes) const {
    for (int r = 0; r < 16; ++r)
      std::memcpy(static_cast<unsigned char*>(base) + r * stride_bytes, tile[T] + r * 64, 64);
  }
  template <int C, int A, int B>
  void dot() {
    float c[16][16];
    u16 a[16][32], b[16][32];
    std::memcpy(c, tile[C], sizeof c);
    std::memcpy(a, tile[A], sizeof a);
    std::memcpy(b, tile[B], sizeof b);
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        float acc = c[m][n];
        for (int k = 0; k < 16; ++k)
          for (int h = 0; h < 2; ++h) {
            acc += daz(from_bf16(a[m][2 * k + h])) * daz(from_bf16(b[k][2 * n + h]));
            acc = daz(acc);
          }
        c[m][n] = acc;
      }
    std::memcpy(tile[C], c, sizeof c);
  }
};

#ifdef AAS_X86_DISPATCH
#define AAS_AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))
#define AAS_AMX_INLINE __attribute__((target("amx-tile,amx-bf16"), always_inline)) inline

/// The same interface on the CPU's tiles. The intrinsics paste their tile numbers into
/// the instruction's text, so each number the body uses is spelled out.
#define AAS_TILE_CASES(F) \
  if constexpr (T == 0) F(0);     \
  else if constexpr (T == 1) F(1); \
  else if constexpr (T == 2) F(2); \
  else if constexpr (T == 3) F(3); \
  else if constexpr (T == 4) F(4); \
  else if constexpr (T == 5) F(5); \
  else if constexpr (T == 6) F(6); \
  else F(7)

struct AmxTiles {
  AAS_AMX_INLINE void configure() const {
    static const AmxConfig config;
    _tile_loadconfig(&config);
  }
  AAS_AMX_INLINE void release() const { _tile_release(); }
  template <int T>
  AAS_AMX_INLINE void zero() {
#define AAS_TILE_ZERO(t) _tile_zero(t)
    AAS_TILE_CASES(AAS_TILE_ZERO);
#undef AAS_TILE_ZERO
  }
  template <int T>
  AAS_AMX_INLINE void load(const void* base, index_t stride_bytes) {
#define AAS_TILE_LOAD(t) _tile_loadd(t, base, stride_bytes)
    AAS_TILE_CASES(AAS_TILE_LOAD);
#undef AAS_TILE_LOAD
  }
  template <int T>
  AAS_AMX_INLINE void store(void* base, index_t stride_bytes) const {
#define AAS_TILE_STORE(t) _tile_stored(t, base, stride_bytes)
    AAS_TILE_CASES(AAS_TILE_STORE);
#undef AAS_TILE_STORE
  }
  // the body's four products
  template <int C, int A, int B>
  AAS_AMX_INLINE void dot() {
    static_assert((C == 0 && A == 4 && B == 6) || (C == 1 && A == 4 && B == 7) ||
                      (C == 2 && A == 5 && B == 6) || (C == 3 && A == 5 && B == 7),
                  "add the product's tile numbers here");
    if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
    else if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
    else if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
    else _tile_dpbf16ps(3, 5, 7);
  }
};
#undef AAS_TILE_CASES
#else
#define AAS_AMX_TARGET
#endif

/// The PanelFn of the AMX kernel on `tiles`. Rows from r_begin in steps of 32 (the
/// buffers hold kPadRows zero rows past their last row); only rows < min(r_end, rows)
/// and columns < cols are stored.
template <class Tiles>
AAS_AMX_TARGET void panel_amx_body(Tiles& tiles, const u16* A, const Packed& B, index_t b0,
                                   index_t r_begin, index_t r_end, index_t rows, index_t cols,
                                   index_t c, float* C) {
  const index_t lda = B.ld * 2, ldb = 2 * kPW * 2, steps = B.d32 / 32;  // strides in bytes
  const u16* P = B.panel(b0 + c);
  const index_t w = std::min(kPW, cols - c), stop = std::min(r_end, rows);
  alignas(64) float out[4][16 * 16];
  tiles.configure();
  for (index_t r = r_begin; r < stop; r += 32) {
    tiles.template zero<0>();
    tiles.template zero<1>();
    tiles.template zero<2>();
    tiles.template zero<3>();
    for (index_t s = 0; s < steps; ++s) {
      const u16* a = A + r * B.ld + s * 32;  // 32 features of 16 rows
      const u16* p = P + s * 16 * 2 * kPW;  // their 16 pairs, the panel's 32 columns
      tiles.template load<4>(a, lda);
      tiles.template load<5>(a + 16 * B.ld, lda);
      tiles.template load<6>(p, ldb);
      tiles.template load<7>(p + 32, ldb);  // columns 16 .. 31
      tiles.template dot<0, 4, 6>();
      tiles.template dot<1, 4, 7>();
      tiles.template dot<2, 5, 6>();
      tiles.template dot<3, 5, 7>();
    }
    tiles.template store<0>(out[0], 64);
    tiles.template store<1>(out[1], 64);
    tiles.template store<2>(out[2], 64);
    tiles.template store<3>(out[3], 64);
    for (index_t i = 0; i < 32 && r + i < stop; ++i) {
      const float* lo = out[i < 16 ? 0 : 2] + (i % 16) * 16;
      const float* hi = out[i < 16 ? 1 : 3] + (i % 16) * 16;
      float* dst = C + (r + i) * cols + c;
      std::memcpy(dst, lo, sizeof(float) * std::min<index_t>(w, 16));
      if (w > 16) std::memcpy(dst + 16, hi, sizeof(float) * (w - 16));
    }
  }
  tiles.release();
}

void panel_amx_emulated(const u16* A, const Packed& B, index_t b0, index_t r_begin,
                        index_t r_end, index_t rows, index_t cols, index_t c, float* C) {
  AmxEmulated tiles;
  panel_amx_body(tiles, A, B, b0, r_begin, r_end, rows, cols, c, C);
}

#ifdef AAS_X86_DISPATCH
AAS_AMX_TARGET void panel_amx(const u16* A, const Packed& B, index_t b0, index_t r_begin,
                              index_t r_end, index_t rows, index_t cols, index_t c, float* C) {
  AmxTiles tiles;
  panel_amx_body(tiles, A, B, b0, r_begin, r_end, rows, cols, c, C);
}
#endif

/// tile (rows x cols) = the bf16 similarities of A's rows (ld apart, kPadRows zero rows
/// after them) with Xb's rows j0 .. j0 + cols - 1; a diagonal tile only above its
/// diagonal. One task per row slice and column group: the slice's rows stay in the
/// core's L2 while the group's panels pass (one barrier per tile, which matters on a
/// shared machine); column groups make enough tasks that the last ones do not leave a
/// thread idle (a 1024-row tile has 11 slices).
void tile_product(const u16* A, const Packed& Xb, index_t j0, index_t rows, index_t cols,
                  bool diagonal, PanelFn kernel, float* tile, int threads) {
  // a multiple of kGR, so that no slice starts inside another's last kernel step
  const index_t slice =
      std::max<index_t>(kGR, (index_t{384} * 1024 / (Xb.d32 * 2)) / kGR * kGR);
  const index_t panels = (cols + kPW - 1) / kPW;
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
          if (rs < end) kernel(A, Xb, j0, rs, end, rows, cols, c, tile);
        }
      },
      1);
}

constexpr index_t kBlockRows = 1024;  // rows (and columns) of one candidate tile

/// Each row's top-cap by the bf16 similarity into st: square tiles on and above the
/// diagonal (knn_merge_tile mirrors them), each computed in row slices that stay in L2.
void candidate_heaps(const Packed& Xb, index_t n, PanelFn kernel, TopKState st, int threads) {
  const index_t block = std::min<index_t>(n, kBlockRows);
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
      tile_product(A, Xb, j0, rows, cols, i0 == j0, kernel, tile.data(), threads);
      knn_merge_tile(tile.data(), rows, cols, i0, j0, st, threads);
    }
  }
}

/// The second chance of rows the certificate left (see knn_bf16_cpu): for each of the m
/// rows, its top-wide rows by the bf16 similarity (all n, itself excluded) in the heaps
/// st (m rows, cap wide).
void wide_candidates(const Packed& Xb, index_t n, const index_t* rows, index_t m,
                     PanelFn kernel, TopKState st, int threads) {
  const index_t block = std::min<index_t>(n, kBlockRows);
  std::vector<float> tile(static_cast<std::size_t>(std::min(m, block) * block));
  std::vector<u16> A;
  std::fill(st.heap_size, st.heap_size + m, index_t{0});
  for (index_t r0 = 0; r0 < m; r0 += block) {
    const index_t count = std::min(block, m - r0);
    A.assign(static_cast<std::size_t>((count + kPadRows) * Xb.ld), 0);
    convert_rows(Xb.src, Xb.d, r0, count, Xb.ld, A.data(), threads, rows);
    const TopKState part{st.heap_sims + r0 * st.cap, st.heap_idx + r0 * st.cap,
                         st.heap_size + r0, count, st.cap};
    for (index_t j0 = 0; j0 < n; j0 += block) {
      const index_t cols = std::min(block, n - j0);
      tile_product(A.data(), Xb, j0, count, cols, false, kernel, tile.data(), threads);
      knn_merge_rows(tile.data(), count, cols, 0, j0, rows + r0, part, threads);
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

#ifdef AAS_X86_DISPATCH
/// The similarities of a fixed 40 x 96 by 72 x 96 problem (sizes that end inside the
/// tiles) through `kernel`.
std::vector<float> amx_probe(PanelFn kernel) {
  const index_t rows = 40, cols = 72, d = 96;
  std::vector<float> A(rows * d), B(cols * d), C(rows * cols, 0.0f);
  std::uint32_t state = 12345u;
  auto next = [&]() {  // a small LCG: values in [-1, 1), the same on every machine
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 8388608.0f - 1.0f;
  };
  for (float& x : A) x = next();
  for (float& x : B) x = next();
  const Packed Ap = pack_bf16(A.data(), rows, d, false, 1), Bp = pack_bf16(B.data(), cols, d, true, 1);
  for (index_t c = 0; c < cols; c += kPW) kernel(Ap.rows.data(), Bp, 0, 0, rows, rows, cols, c, C.data());
  return C;
}
#endif

}  // namespace

bool cpu_amx_ready() {
#ifdef AAS_X86_DISPATCH
  static const bool ready = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid(1, eax, ebx, ecx, edx);
    if (!((ecx >> 27) & 1u)) return false;  // OSXSAVE: without it xgetbv faults
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
    if (!amx_bf16 || !amx_tile) return false;
#ifdef __linux__
    // Linux hands out the tiles' 8 KiB of register state only on request
    // (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); a kernel without it refuses
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    if (syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) != 0) return false;
#else
    return false;  // no way to ask this OS for the tile state
#endif
    std::uint32_t xcr0_lo = 0, xcr0_hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if (((xcr0_lo >> 17) & 3u) != 3u) return false;  // XTILECFG and XTILEDATA enabled
    // the instructions against their C++ description, once, before any search uses them:
    // each sum within fp32 rounding of the other (a wrong layout is off by far more)
    const std::vector<float> hw = amx_probe(panel_amx), emu = amx_probe(panel_amx_emulated);
    for (std::size_t t = 0; t < hw.size(); ++t)
      if (!(std::fabs(hw[t] - emu[t]) <= 1e-4f)) return false;
    return true;
  }();
  return ready;
#else
  return false;
#endif
}

namespace {

PanelFn kernel_of(Bf16Kernel kernel) {
  if (kernel == Bf16Kernel::portable) return panel_portable;
  if (kernel == Bf16Kernel::amx_emulated) return panel_amx_emulated;
#ifdef AAS_X86_DISPATCH
  if (kernel == Bf16Kernel::amx) {
    AAS_REQUIRE(cpu_amx_ready(),
            "knn_graph: this CPU (or its OS) cannot run the AMX kernel (AMX-BF16 tiles)");
    return panel_amx;
  }
  AAS_REQUIRE(cpu_has_avx512_bf16(), "knn_graph: this CPU has no AVX512-BF16 instructions");
  return panel_avx512;
#else
  AAS_REQUIRE(false, "knn_graph: AVX512-BF16 is an x86-64 kernel");
  return nullptr;
#endif
}

}  // namespace

void bf16_similarity_tile(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                          Bf16Kernel kernel, float* C) {
  AAS_REQUIRE(rows >= 1 && cols >= 1 && d >= 1, "bf16_similarity_tile: bad sizes");
  const PanelFn fn = kernel_of(kernel);
  const bool panels = kernel != Bf16Kernel::portable;
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
/// bit for bit. second_chance, full_rows: knn_low_precision_exec's second_chance and
/// recomputed.
template <class Search, class SecondChance = knnx::NoSecondChance>
index_t rerank_certified(const float* X, index_t n, index_t d, index_t k, bool include_self,
                         index_t cc, const Search& search, const float* row_bound, bool avx512,
                         bool force_fallback, int threads, index_t* out_idx, float* out_sims,
                         const SecondChance& second_chance = {}, index_t* full_rows = nullptr) {
  const DotsFn dots = pick_dots();
  std::vector<float> exact(static_cast<std::size_t>(n * cc > 0 ? n * cc : 1));
  ParallelHost ex;
  ex.threads = threads;
  auto candidates = [&](float* s, index_t* id, index_t* size, index_t heap_cap) {
    AAS_REQUIRE(heap_cap == cc, "knn_graph: candidate capacity mismatch");
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
                                out_idx, out_sims, exact.data(), row_bound, force_fallback,
                                second_chance, full_rows);
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
  AAS_REQUIRE(du < 0.5, "knn_graph: too many features for the fp32 rounding bound");
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
                     index_t* out_idx, float* out_sims, index_t* full_rows) {
  const index_t cap = include_self ? k - 1 : k;
  AAS_REQUIRE(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
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

  Packed Xb;  // kept for the second chance
  auto search = [&](float* s, index_t* id, index_t* size) {
    const bool panels = kernel != Bf16Kernel::portable;
    Xb = pack_bf16(X, n, d, panels, threads, /*keep_rows=*/!panels);
    std::fill(size, size + n, index_t{0});
    candidate_heaps(Xb, n, panel, TopKState{s, id, size, n, cc}, threads);
  };
  // The second chance of a row the certificate left (a near-tie around its cc-th
  // candidate): its best `wide` rows by the bf16 similarity, re-ranked by dot_fma and
  // certified the same way, costs a bf16 pass over every row (half an fp32 one) and
  // certifies most such rows; the rows it leaves go to the fp32 fallback. The steps and
  // the certificate are those of the first pass, only the heaps wider.
  auto second_chance = [&](index_t* rows, index_t m, float* s, index_t* id, index_t* size,
                           index_t c) {
    const index_t wide = std::min(n - 1, 4 * cc);
    index_t left = m;
    if (wide > cc) {
      std::vector<float> ws(static_cast<std::size_t>(m * wide)), ex(ws.size());
      std::vector<index_t> wi(ws.size()), wn(static_cast<std::size_t>(m)),
          flag(static_cast<std::size_t>(m));
      wide_candidates(Xb, n, rows, m, panel, TopKState{ws.data(), wi.data(), wn.data(), m, wide},
                      threads);
      const DotsFn dots = pick_dots();
      // the first pass's re-rank and certificate on the wide heaps; a row a candidate of
      // which breaks the bound is left to the fallback (`broken` is the first pass's
      // signal, unused here)
      index_t broken = 0;
      const knnx::Rerank rerank{X,       d,       ws.data(), wi.data(), wn.data(),
                                wide,    0.0f,    s,         id,        size,
                                c,       flag.data(), &broken, ex.data(), row_bound.data(),
                                rows};
      parallel_for(
          m, threads,
          [&](index_t r) {
            dots(X + rows[r] * d, X, d, &wi[r * wide], wn[r], &ex[r * wide]);
            rerank(r);
          },
          4);
      left = 0;
      for (index_t r = 0; r < m; ++r)
        if (flag[r]) rows[left++] = rows[r];
    }
    Xb = Packed{};  // the fp32 fallback needs the memory more
    return left;
  };
  // (the avx512 kernel implies AVX-512F; so does AMX on every CPU that has it, but that
  // is checked, not assumed; the emulated kernel keeps the fallback's portable path)
  const bool avx512 = kernel == Bf16Kernel::avx512 ||
                      (kernel == Bf16Kernel::amx && cpu_has_avx512f());
  return rerank_certified(X, n, d, k, include_self, cc, search, row_bound.data(), avx512,
                          force_fallback, threads, out_idx, out_sims, second_chance, full_rows);
}

index_t knn_fp32_rerank_cpu(const float* X, index_t n, index_t d, index_t k, bool include_self,
                            TopKState cands, bool force_fallback, int n_threads, index_t* out_idx,
                            float* out_sims) {
  const index_t cap = include_self ? k - 1 : k;
  AAS_REQUIRE(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
  AAS_REQUIRE(cands.n == n && cands.cap >= cap && cands.cap <= n - 1,
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
  // no second chance: BLAS candidates' tiles cost an fp32 pass, as the fallback does
  return rerank_certified(X, n, d, k, include_self, cc, search, row_bound.data(),
                          cpu_has_avx512f(), force_fallback, threads, out_idx, out_sims);
}

}  // namespace aas
