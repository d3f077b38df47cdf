// The GPU's exact kNN algorithms (aas/knn_exec.hpp) run on the host, for the tests:
// the fp32 result the device's tiles compute (dot_fma), and the low-precision
// candidates + exact re-rank + certificate + fallback that must equal it.
#include "aas/knn_exec.hpp"

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
  require(n >= 2 && d >= 1 && k >= 1 && cap <= n - 1, "knn_graph: bad sizes (need 1 <= k < n)");
  std::vector<index_t> rows(static_cast<std::size_t>(n)), ids(static_cast<std::size_t>(n * cap + 1)),
      size(static_cast<std::size_t>(n), 0);
  std::vector<float> s(static_cast<std::size_t>(n * cap + 1));
  for (index_t i = 0; i < n; ++i) rows[i] = i;
  if (cap > 0) ex.for_each(n, knnx::HostExactRow{X, n, d, rows.data(), s.data(), ids.data(),
                                                 size.data(), cap});
  ex.for_each(n, knnx::Finalize{s.data(), ids.data(), size.data(), cap, k, include_self, out_idx,
                                out_sims});
}

}  // namespace aas
