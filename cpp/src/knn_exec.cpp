// The GPU's exact kNN algorithms (aas/knn_exec.hpp) run on the host, for the tests:
// the fp32 result the device's tiles compute (dot_fma), and the low-precision
// candidates + exact re-rank + certificate + fallback that must equal it.
#include "aas/knn_exec.hpp"

#include <memory>

#include "aas/gemm_tile.hpp"
#include "aas/lp_tile.hpp"

#include "aas/knn.hpp"

namespace aas {

index_t knn_low_precision_emulated(const float* X, index_t n, index_t d, index_t k,
                                   bool include_self, int bits, index_t cand_cap,
                                   index_t* out_idx, float* out_sims, int input_bits) {
  const exec::Host ex;
  if (input_bits <= 0) input_bits = bits;
  auto candidates = [&](float* s, index_t* id, index_t* size, index_t cap) {
    ex.for_each(n, knnx::HostCandidates{X, n, d, input_bits, s, id, size, cap});
  };
  auto exact_rows = [&](const index_t* rows, index_t m, float* s, index_t* id, index_t* size,
                        index_t cap) {
    ex.for_each(m, knnx::HostExactRow{X, n, d, rows, s, id, size, cap});
  };
  return knn_low_precision_exec(ex, X, n, d, k, include_self, bits, cand_cap, candidates,
                                exact_rows, out_idx, out_sims);
}

void knn_fp32_emulated(const float* X, index_t n, index_t d, index_t k, bool include_self,
                       index_t* out_idx, float* out_sims) {
  const exec::Host ex;
  const index_t cap = include_self ? k - 1 : k;
  AAS_REQUIRE(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
  std::vector<index_t> rows(static_cast<std::size_t>(n)), ids(static_cast<std::size_t>(n * cap + 1)),
      size(static_cast<std::size_t>(n), 0);
  std::vector<float> s(static_cast<std::size_t>(n * cap + 1));
  for (index_t i = 0; i < n; ++i) rows[i] = i;
  if (cap > 0) ex.for_each(n, knnx::HostExactRow{X, n, d, rows.data(), s.data(), ids.data(),
                                                 size.data(), cap});
  ex.for_each(n, knnx::Finalize{s.data(), ids.data(), size.data(), cap, k, include_self, out_idx,
                                out_sims});
}

void similarity_tile_emulated(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                              float* C) {
  using namespace gemm;
  AAS_REQUIRE(rows >= 0 && cols >= 0 && d >= 1, "similarity_tile: bad sizes");
  Slices slices;
  std::vector<float> acc(static_cast<std::size_t>(kThreads) * kTM * kTN);
  auto patch = [&](int tid) -> float(&)[kTM][kTN] {
    return *reinterpret_cast<float(*)[kTM][kTN]>(acc.data() + tid * kTM * kTN);
  };
  // the kernel's grid, each block's threads one phase at a time (the barriers)
  for (index_t row0 = 0; row0 < rows; row0 += kBM) {
    for (index_t col0 = 0; col0 < cols; col0 += kBN) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (index_t k0 = 0; k0 < d; k0 += kBK) {
        for (int tid = 0; tid < kThreads; ++tid)
          load_slices(tid, A, rows, B, cols, d, row0, col0, k0, slices);
        for (int tid = 0; tid < kThreads; ++tid)
          accumulate(tid, slices, slice_width(k0, d), patch(tid));
      }
      for (int tid = 0; tid < kThreads; ++tid) store(tid, patch(tid), rows, cols, row0, col0, C);
    }
  }
}

void dot_fma_matrix(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                    float* C) {
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) C[r * cols + c] = knnx::dot_fma(A + r * d, B + c * d, d);
}

void lp_tile_emulated(const float* Xr, index_t n16, index_t d16, index_t r0, index_t c0,
                      index_t rows, index_t cols, float* C) {
  using namespace lp;
  using Acc = HostFragments::Acc;
  AAS_REQUIRE(n16 % 16 == 0 && d16 % 16 == 0 && r0 >= 0 && c0 >= 0 && rows >= 0 && cols >= 0,
          "lp_tile: bad sizes");
  const index_t bx_n = (cols + kBN - 1) / kBN, by_n = (rows + kBM - 1) / kBM;
  const index_t ldc = bx_n * kBN;  // the kernel's wide tile: whole blocks
  std::vector<float> wide(static_cast<std::size_t>(by_n * kBM * ldc));
  auto slices = std::make_unique<Slices<float>>();
  auto acc = std::make_unique<Acc[][kFragRows][kFragCols]>(kWarps);
  // the kernel's grid, each block's threads (loads) and warps (fragments) one phase at
  // a time, as the barriers order them
  for (index_t by = 0; by < by_n; ++by) {
    for (index_t bx = 0; bx < bx_n; ++bx) {
      for (int w = 0; w < kWarps; ++w)
        for (auto& row : acc[w])
          for (Acc& c : row) HostFragments::zero(c);
      const index_t row0 = r0 + by * kBM, col0 = c0 + bx * kBN;
      for (index_t k0 = 0; k0 < d16; k0 += kBK) {
        for (int tid = 0; tid < kThreads; ++tid)
          load_slices(tid, Xr, n16, d16, row0, col0, k0, *slices);
        for (int w = 0; w < kWarps; ++w) accumulate<HostFragments>(w, *slices, acc[w]);
      }
      for (int w = 0; w < kWarps; ++w)
        store<HostFragments>(w, acc[w], wide.data() + by * kBM * ldc + bx * kBN, ldc);
    }
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) C[r * cols + c] = wide[r * ldc + c];
}

}  // namespace aas
