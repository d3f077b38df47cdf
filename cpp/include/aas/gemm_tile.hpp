// The fp32 similarity tile of the GPU kNN, C = A B^T, as the per-thread steps of a
// register-blocked kernel: a block of kThreads threads computes a kBM x kBN block of C,
// each thread a kTM x kTN patch held in registers, over kBK-wide slices of the
// features staged in shared memory. cuda/knn.cu's kernel calls these steps between
// barriers; similarity_tile_emulated (below) runs the same steps on the host, block by
// block, thread by thread, phase by phase, so the tests check the indexing and the
// arithmetic without a GPU. Every element is one fused multiply-add per feature in
// feature order: the value of aas::knnx::dot_fma, bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#include "aas/hd.hpp"

namespace aas {
namespace gemm {

using index_t = std::int64_t;

constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
constexpr int kThreads = (kBM / kTM) * (kBN / kTN);  // 256
constexpr int kPad = 4;                              // shared rows kBM + kPad wide

/// The shared-memory slices of one block: A and B rows k-major (slice[k][row]).
struct Slices {
  float a[kBK][kBM + kPad];
  float b[kBK][kBN + kPad];
};

/// Thread `tid` copies its share of features [k0, k0 + kBK) of the block's A rows
/// (row0 ..) and B rows (col0 ..) into the slices; out of range: 0.
AAS_HD void load_slices(int tid, const float* A, index_t rows, const float* B, index_t cols,
                        index_t d, index_t row0, index_t col0, index_t k0, Slices& s) {
  for (int l = tid; l < kBM * kBK; l += kThreads) {
    const int m = l / kBK, kk = l % kBK;  // consecutive threads: consecutive features
    const index_t r = row0 + m, k = k0 + kk;
    s.a[kk][m] = (r < rows && k < d) ? A[r * d + k] : 0.0f;
  }
  for (int l = tid; l < kBN * kBK; l += kThreads) {
    const int m = l / kBK, kk = l % kBK;
    const index_t c = col0 + m, k = k0 + kk;
    s.b[kk][m] = (c < cols && k < d) ? B[c * d + k] : 0.0f;
  }
}

/// Thread `tid` adds the slice's features (only the kend < kBK real ones of the last
/// slice, so no padded term is ever added) to its kTM x kTN patch.
AAS_HD void accumulate(int tid, const Slices& s, int kend, float (&acc)[kTM][kTN]) {
  const int tr = tid / (kBN / kTN), tc = tid % (kBN / kTN);
  for (int kk = 0; kk < kend; ++kk) {
    float a[kTM], b[kTN];
    for (int i = 0; i < kTM; ++i) a[i] = s.a[kk][tr * kTM + i];
    for (int j = 0; j < kTN; ++j) b[j] = s.b[kk][tc * kTN + j];
    for (int i = 0; i < kTM; ++i)
      for (int j = 0; j < kTN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

/// Thread `tid` writes its patch into C (rows, cols), row-major.
AAS_HD void store(int tid, const float (&acc)[kTM][kTN], index_t rows, index_t cols, index_t row0,
                  index_t col0, float* C) {
  const int tr = tid / (kBN / kTN), tc = tid % (kBN / kTN);
  for (int i = 0; i < kTM; ++i) {
    const index_t r = row0 + tr * kTM + i;
    if (r >= rows) continue;
    for (int j = 0; j < kTN; ++j) {
      const index_t c = col0 + tc * kTN + j;
      if (c < cols) C[r * cols + c] = acc[i][j];
    }
  }
}

/// The number of features of the slice starting at k0 that are real.
AAS_HD int slice_width(index_t k0, index_t d) {
  return d - k0 < kBK ? static_cast<int>(d - k0) : kBK;
}

}  // namespace gemm
}  // namespace aas
