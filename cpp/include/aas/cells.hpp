// Kernels of the over-segmentation pool over cells (our refinement of paper
// §3.1 B; see python/aas_core/sampling/cells.py): dot products of given row
// pairs, without gathering the rows into temporaries.
#pragma once

#include <cstdint>

#include "aas/common.hpp"

namespace aas {

/// out[t] = <a[pairs[2t]], b[pairs[2t+1]]> for t in [0, m), accumulated in
/// double in column order (so the result does not depend on n_threads) and
/// rounded to float32.
/// a: (na, d) and b: (nb, d) row-major float32; pairs: (m, 2) int64 with
/// pairs[2t] in [0, na) and pairs[2t+1] in [0, nb). out: (m,) float32.
/// Throws std::invalid_argument on an index out of range. O(m·d).
void pair_dots(const float* a, index_t na, const float* b, index_t nb, index_t d,
               const index_t* pairs, index_t m, float* out, int n_threads);

}  // namespace aas
