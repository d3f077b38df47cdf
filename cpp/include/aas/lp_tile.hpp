// The tensor-core similarity tile of the GPU kNN's tf32/bf16 path, C = Xr[rows] Xr[cols]^T
// with fp32 accumulation, as the steps of a block-tiled kernel: a block of 8 warps
// computes a 128 x 128 block of C, each warp a 32 x 64 patch of 2 x 4 fragments of
// 16 x 16, over 32-wide feature slices staged in shared memory. The fragment
// operations come from an Ops policy: cuda/knn.cu's wraps nvcuda::wmma, the host's
// (HostFragments below) does the same arithmetic on plain arrays, so the tests run
// every index of the kernel on the CPU (lp_tile_emulated in cpp/src/knn_exec.cpp).
#pragma once

#include <cstdint>

#include "aas/hd.hpp"

namespace aas {
namespace lp {

using index_t = std::int64_t;

constexpr int kBM = 128, kBN = 128, kBK = 32;
constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kWarpRows = 4, kWarpCols = 2;  // warps per block, as a grid
constexpr int kFragRows = 2, kFragCols = 4;  // 16 x 16 fragments per warp
constexpr int kLd = kBK + 8;                 // shared row stride (elements): 32-byte aligned

/// The shared-memory slices of one block, row-major: a[r][k] = Xr[row0 + r][k0 + k].
template <class T>
struct Slices {
  alignas(32) T a[kBM][kLd];
  alignas(32) T b[kBN][kLd];
};

/// Thread `tid` copies its share of features [k0, k0 + kBK) of the block's rows
/// (row0 ..) and columns (col0 ..) of Xr ((n16, d16), zero-padded) into the slices;
/// beyond n16 or d16: 0.
template <class T>
AAS_HD void load_slices(int tid, const T* Xr, index_t n16, index_t d16, index_t row0,
                        index_t col0, index_t k0, Slices<T>& s) {
  for (int l = tid; l < kBM * kBK; l += kThreads) {
    const int r = l / kBK, k = l % kBK;  // consecutive threads: consecutive features
    const index_t gr = row0 + r, gc = col0 + r, gk = k0 + k;
    const bool in_k = gk < d16;
    s.a[r][k] = (in_k && gr < n16) ? Xr[gr * d16 + gk] : T(0.0f);
    s.b[r][k] = (in_k && gc < n16) ? Xr[gc * d16 + gk] : T(0.0f);
  }
}

/// Warp `warp` adds the slice to its 2 x 4 accumulator fragments. B's fragment is read
/// column-major from the row-major slice of the column rows: B(k, j) = b[j][k].
template <class Ops, class T>
AAS_HD void accumulate(int warp, const Slices<T>& s,
                       typename Ops::Acc (&acc)[kFragRows][kFragCols]) {
  const int wr = warp / kWarpCols, wc = warp % kWarpCols;
  for (int kk = 0; kk < kBK; kk += Ops::kK) {
    typename Ops::A a[kFragRows];
    typename Ops::B b[kFragCols];
    for (int i = 0; i < kFragRows; ++i)
      Ops::load_a(a[i], &s.a[wr * 32 + i * 16][kk], kLd);
    for (int j = 0; j < kFragCols; ++j)
      Ops::load_b(b[j], &s.b[wc * 64 + j * 16][kk], kLd);
    for (int i = 0; i < kFragRows; ++i)
      for (int j = 0; j < kFragCols; ++j) Ops::mma(acc[i][j], a[i], b[j]);
  }
}

/// Warp `warp` writes its fragments into C (row-major, leading dimension ldc, at
/// least kBM rows and kBN columns from the block's corner).
template <class Ops>
AAS_HD void store(int warp, const typename Ops::Acc (&acc)[kFragRows][kFragCols], float* C,
                  index_t ldc) {
  const int wr = warp / kWarpCols, wc = warp % kWarpCols;
  for (int i = 0; i < kFragRows; ++i)
    for (int j = 0; j < kFragCols; ++j)
      Ops::store(C + (wr * 32 + i * 16) * ldc + wc * 64 + j * 16, acc[i][j], ldc);
}

/// The host's fragments: 16 x 16 arrays, products summed in float in feature order
/// (the tensor cores' order is theirs; the certificate's bound covers any order).
struct HostFragments {
  static constexpr int kK = 16;
  struct A {
    float v[16][16];
  };
  struct B {
    float v[16][16];  // v[k][j]
  };
  struct Acc {
    float v[16][16];
  };
  static void zero(Acc& c) {
    for (auto& row : c.v)
      for (float& x : row) x = 0.0f;
  }
  template <class T>
  static void load_a(A& a, const T* p, int ld) {
    for (int i = 0; i < 16; ++i)
      for (int k = 0; k < kK; ++k) a.v[i][k] = static_cast<float>(p[i * ld + k]);
  }
  template <class T>
  static void load_b(B& b, const T* p, int ld) {  // column-major: B(k, j) at p[j * ld + k]
    for (int j = 0; j < 16; ++j)
      for (int k = 0; k < kK; ++k) b.v[k][j] = static_cast<float>(p[j * ld + k]);
  }
  static void mma(Acc& c, const A& a, const B& b) {
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) {
        float s = c.v[i][j];
        for (int k = 0; k < kK; ++k) s += a.v[i][k] * b.v[k][j];
        c.v[i][j] = s;
      }
  }
  static void store(float* p, const Acc& c, index_t ld) {
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) p[i * ld + j] = c.v[i][j];
  }
};

}  // namespace lp
}  // namespace aas
