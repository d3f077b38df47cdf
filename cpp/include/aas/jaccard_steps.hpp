// The per-row arithmetic of SpCL's k-reciprocal Jaccard distance, shared by the CPU
// code (cpp/src/rerank.cpp), its Exec-template twin (aas/jaccard_exec.hpp) and through
// that the CUDA kernels (cuda/jaccard.cu). No allocation, no std:: containers: each
// function works on one row over caller-owned storage.
#pragma once

#include <cmath>
#include <cstdint>

#include "aas/hd.hpp"

namespace aas {
namespace jaccard {

using index_t = std::int64_t;

/// Writes the k-reciprocal neighbours of row i among the first `cols` columns of the
/// ranking (j in row i and i in row j), in ranking order; returns how many.
AAS_HD std::int32_t reciprocal_row(const index_t* rank, index_t width, index_t cols, index_t i,
                                   std::int32_t* out) {
  const index_t* ri = rank + i * width;
  std::int32_t c = 0;
  for (index_t t = 0; t < cols; ++t) {
    const index_t j = ri[t];
    const index_t* rj = rank + j * width;
    for (index_t u = 0; u < cols; ++u) {
      if (rj[u] == i) {
        out[c++] = static_cast<std::int32_t>(j);
        break;
      }
    }
  }
  return c;
}

/// SpCL's expansion test: a member's half-size reciprocal set (n2 entries, `inter` of
/// them in the unexpanded set) joins when inter > 2/3 · n2, in double as in SpCL.
AAS_HD bool expands(std::int32_t inter, std::int32_t n2) {
  return static_cast<double>(inter) > 2.0 / 3.0 * static_cast<double>(n2);
}

AAS_HD bool contains(const std::int32_t* a, std::int32_t n, std::int32_t x) {
  for (std::int32_t t = 0; t < n; ++t)
    if (a[t] == x) return true;
  return false;
}

/// The expanded set E_i of row i, sorted ascending, written to out (room for
/// n1 + n1 · cols2 entries); returns its size. set1/n1: R(i, k1); r2/n2/cols2: the
/// (n, cols2) half-size reciprocal sets of every row and their sizes.
AAS_HD std::int32_t expand_row(const std::int32_t* set1, std::int32_t n1, const std::int32_t* r2,
                               const std::int32_t* n2, index_t cols2, std::int32_t* out) {
  std::int32_t m = 0;
  for (std::int32_t a = 0; a < n1; ++a) out[m++] = set1[a];
  for (std::int32_t a = 0; a < n1; ++a) {
    const std::int32_t c = set1[a];
    const std::int32_t* set2 = r2 + static_cast<index_t>(c) * cols2;
    std::int32_t inter = 0;
    for (std::int32_t b = 0; b < n2[c]; ++b) inter += contains(set1, n1, set2[b]);
    if (!expands(inter, n2[c])) continue;
    for (std::int32_t b = 0; b < n2[c]; ++b)
      if (!contains(out, m, set2[b])) out[m++] = set2[b];
  }
  for (std::int32_t a = 1; a < m; ++a) {  // insertion sort: m is a few hundred at most
    const std::int32_t v = out[a];
    std::int32_t b = a - 1;
    while (b >= 0 && out[b] > v) {
      out[b + 1] = out[b];
      --b;
    }
    out[b + 1] = v;
  }
  return m;
}

/// Dot product of two float rows accumulated in float, element order, without fused
/// multiply-adds (nvcc would fuse them otherwise and the GPU result would differ in the
/// last bit from the CPU's), clamped to [-1, 1].
AAS_HD float dot_clamped(const float* a, const float* b, index_t d) {
  float acc = 0.0f;
  for (index_t e = 0; e < d; ++e) {
#if defined(__CUDA_ARCH__)
    acc = __fadd_rn(acc, __fmul_rn(a[e], b[e]));
#else
    acc += a[e] * b[e];
#endif
  }
  const float v = (-1.0f < acc) ? acc : -1.0f;  // std::min(1, std::max(-1, acc)), NaN -> -1
  return (v < 1.0f) ? v : 1.0f;
}

/// V row in place: vals hold the similarities of E_i on entry and
/// softmax(-(2 - 2 s)) = softmax(2 s) over E_i on exit, shifted by the maximum and
/// summed in double in column order (the exponentials are recomputed, not stored).
AAS_HD void softmax_row(float* vals, std::int32_t m) {
  double s_max = -2.0;
  for (std::int32_t a = 0; a < m; ++a) s_max = (s_max < vals[a]) ? vals[a] : s_max;
  double total = 0.0;
  for (std::int32_t a = 0; a < m; ++a) total += exp(2.0 * (static_cast<double>(vals[a]) - s_max));
  for (std::int32_t a = 0; a < m; ++a)
    vals[a] = static_cast<float>(exp(2.0 * (static_cast<double>(vals[a]) - s_max)) / total);
}

/// m_ij = Σ_k min(V_ik, V_jk) over the columns both sorted rows hold, summed in float
/// in ascending column order (the order the CPU's transposed accumulation adds them).
AAS_HD float min_sum(const std::int32_t* ci, const float* vi, index_t ni, const std::int32_t* cj,
                     const float* vj, index_t nj) {
  float acc = 0.0f;
  index_t a = 0, b = 0;
  while (a < ni && b < nj) {
    if (ci[a] < cj[b]) {
      ++a;
    } else if (cj[b] < ci[a]) {
      ++b;
    } else {
      acc += vi[a] < vj[b] ? vi[a] : vj[b];
      ++a;
      ++b;
    }
  }
  return acc;
}

/// Lower bound on m below which d = 1 - m/(2 - m) exceeds keep_below, less a margin far
/// wider than float rounding: entries under it are dropped without the division.
AAS_HD double keep_floor(float keep_below) {
  const double kb = static_cast<double>(keep_below);
  return 2.0 * (1.0 - kb) / (2.0 - kb) - 1e-6;
}

/// The Jaccard distance of an accumulated m, clipped at 0; false when the entry is
/// dropped (distance 1, or above keep_below).
AAS_HD bool keep_distance(float m_acc, double m_low, float keep_below, float* dist) {
  const double m = m_acc;
  if (m < m_low) return false;
  const double raw = 1.0 - m / (2.0 - m);
  *dist = static_cast<float>(raw > 0.0 ? raw : 0.0);
  return *dist < 1.0f && *dist <= keep_below;
}

}  // namespace jaccard
}  // namespace aas
