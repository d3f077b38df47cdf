// Kernels of the over-segmentation pool over cells (our refinement of paper
// §3.1 B; see python/aas_core/sampling/cells.py): dot products of given row
// pairs, without gathering the rows into temporaries.
#pragma once

#include <cstdint>

#include "aas/common.hpp"

namespace aas {

/// out[t] = <a[pairs[2t]], b[pairs[2t+1]]> for t in [0, m), accumulated in
/// float32 over eight interleaved partial sums in a fixed order (so the result
/// does not depend on n_threads; relative error ~1e-6 for d = 2048).
/// a: (na, d) and b: (nb, d) row-major float32; pairs: (m, 2) int64 with
/// pairs[2t] in [0, na) and pairs[2t+1] in [0, nb). out: (m,) float32.
/// Throws std::invalid_argument on an index out of range. O(m·d).
void pair_dots(const float* a, index_t na, const float* b, index_t nb, index_t d,
               const index_t* pairs, index_t m, float* out, int n_threads);

/// Marks, in every group, the k entries with the highest score: ties go to
/// the smaller tie value, then to the smaller entry index.
/// group: (m,) int64 in [0, n_groups); score: (m,) float32; tie: (m,) int64.
/// out_keep: (m,) uint8, set to 1 for the kept entries (0 otherwise).
/// Throws std::invalid_argument on a group out of range or k < 0. O(m log k).
void top_k_per_group(const index_t* group, const float* score, const index_t* tie, index_t m,
                     index_t n_groups, index_t k, std::uint8_t* out_keep, int n_threads);

}  // namespace aas
