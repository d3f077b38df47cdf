// k-reciprocal Jaccard distance of SpCL (Ge et al., NeurIPS 2020), itself the
// re-ranking of Zhong et al. (CVPR 2017), on sparse structures end to end.
// Memory is O(n·k1·k2) plus the output; no n×n array.
#pragma once

#include <cstdint>
#include <vector>

#include "aas/common.hpp"

namespace aas {

/// A CSR matrix being handed to Python: int64 row pointers, int32 columns.
struct CsrF32 {
  std::vector<std::int64_t> indptr;
  std::vector<std::int32_t> indices;
  std::vector<float> data;
};

/// SpCL's `compute_jaccard_distance`, step for step, sparse.
///
/// rank: (n, width) int64 initial ranking, row i = i itself then its
///   neighbours by similarity descending; width >= k1 (only the first k1
///   columns define the k-reciprocal sets, as SpCL searches k1 columns).
/// sims: (n, width) float32 cosine similarity of those entries.
/// features: (n, d) float32 unit rows, used for the few similarities the
///   expansion needs outside row i of the ranking; may be null, in which case
///   such a need throws std::invalid_argument.
/// k1 >= 2, 1 <= k2 <= k1. max_distance in [0, 1): entries with a larger
///   distance are dropped (pass 1 to keep every entry below 1).
/// out: (n, n) CSR of the distances 1 - m/(2 - m) (clipped at 0) where
///   m_ij = Σ_k min(V_ik, V_jk) > 0; absent entries mean distance 1. Rows are
///   sorted, the matrix is exactly symmetric and its diagonal is stored as 0.
void k_reciprocal_jaccard(const index_t* rank, const float* sims, index_t n, index_t width,
                          const float* features, index_t d, int k1, int k2, double max_distance,
                          int n_threads, CsrF32& out);

/// The same result by the GPU algorithm (aas/jaccard_exec.hpp) run serially on the
/// host, holding at most pair_budget candidate pairs at once; for tests.
void k_reciprocal_jaccard_emulated(const index_t* rank, const float* sims, index_t n,
                                   index_t width, const float* features, index_t d, int k1, int k2,
                                   double max_distance, index_t pair_budget, CsrF32& out);

/// The symmetric distance CSR from its strict upper triangle (uptr/ucol/uval: rows
/// sorted, every column > its row): the diagonal stored as 0, rows sorted.
void mirror_upper(index_t n, const std::int64_t* uptr, const std::int32_t* ucol, const float* uval,
                  CsrF32& out);

}  // namespace aas
