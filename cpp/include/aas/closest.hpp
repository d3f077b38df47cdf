// The closest-pair update of the U_us search: the best (largest cosine) pair (u, v)
// seen so far between two clusters, ties to the smallest u, then v. Shared by the CPU
// search (cpp/src/sampling.cpp) and, through AAS_HD, by device code.
#pragma once

#include <cmath>
#include <cstdint>

#include "aas/hd.hpp"

namespace aas {
namespace closest {

using index_t = std::int64_t;

struct Best {
  float s = -INFINITY;
  index_t u = INT64_MAX;  // INT64_MAX: no pair yet (every dot product was NaN)
  index_t v = INT64_MAX;
};

/// (s, u, v) beats b: larger similarity, ties to the smallest u, then v. A NaN never wins.
AAS_HD bool beats(float s, index_t u, index_t v, const Best& b) {
  return s > b.s || (s == b.s && (u < b.u || (u == b.u && v < b.v)));
}

/// Keeps the better of two partial results (the order of merging does not matter).
AAS_HD void merge(Best& into, const Best& other) {
  if (beats(other.s, other.u, other.v, into)) into = other;
}

/// Offers one candidate pair.
AAS_HD void offer(Best& b, float s, index_t u, index_t v) {
  if (beats(s, u, v, b)) {
    b.s = s;
    b.u = u;
    b.v = v;
  }
}

}  // namespace closest
}  // namespace aas
