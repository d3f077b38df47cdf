// Top-k selection of one row: a bounded binary heap whose root is the worst kept
// candidate, in the order "similarity descending, index ascending". Shared by the
// CPU kNN (cpp/src/knn.cpp) and the CUDA kNN (cuda/knn.cu); no allocation, no std::.
#pragma once

#include <cmath>
#include <cstdint>

#include "aas/hd.hpp"

namespace aas {
namespace topk {

using index_t = std::int64_t;

/// Candidate (sa, ia) ranks before (sb, ib): higher similarity, then smaller index.
AAS_HD bool better(float sa, index_t ia, float sb, index_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

/// Cosine similarities are clamped to [-1, 1] before ranking (rounding can leave them
/// just outside).
AAS_HD float clamp_sim(float v) { return v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v); }

/// One row's heap over caller-owned storage: s/id hold `cap` slots, *size the fill.
struct RowHeap {
  float* s;
  index_t* id;
  index_t* size;
  index_t cap;

  /// Threshold below which nothing can enter; -inf while the heap is not full.
  AAS_HD float floor() const { return *size < cap ? -INFINITY : s[0]; }

  AAS_HD void sift_down(index_t pos, index_t n) {
    const float sv = s[pos];
    const index_t iv = id[pos];
    while (true) {
      index_t child = 2 * pos + 1;
      if (child >= n) break;
      // the worse child (the one that belongs nearer the root)
      if (child + 1 < n && better(s[child], id[child], s[child + 1], id[child + 1])) ++child;
      if (!better(sv, iv, s[child], id[child])) break;
      s[pos] = s[child];
      id[pos] = id[child];
      pos = child;
    }
    s[pos] = sv;
    id[pos] = iv;
  }

  AAS_HD void sift_up(index_t pos) {
    const float sv = s[pos];
    const index_t iv = id[pos];
    while (pos > 0) {
      const index_t parent = (pos - 1) / 2;
      if (!better(s[parent], id[parent], sv, iv)) break;
      s[pos] = s[parent];
      id[pos] = id[parent];
      pos = parent;
    }
    s[pos] = sv;
    id[pos] = iv;
  }

  /// Offers (v, j): kept if the heap is not full or (v, j) beats the worst kept.
  AAS_HD void offer(float v, index_t j) {
    v = clamp_sim(v);
    if (*size < cap) {
      s[*size] = v;
      id[*size] = j;
      ++*size;
      sift_up(*size - 1);
    } else if (better(v, j, s[0], id[0])) {
      s[0] = v;
      id[0] = j;
      sift_down(0, *size);
    }
  }

  /// Heapsort in place: afterwards s/id are best first. The heap is used up.
  AAS_HD void sort_best_first() {
    for (index_t end = *size - 1; end > 0; --end) {
      const float ts = s[0];
      const index_t ti = id[0];
      s[0] = s[end];
      id[0] = id[end];
      s[end] = ts;  // the worst left goes to the back
      id[end] = ti;
      sift_down(0, end);
    }
  }
};

/// Offers one row of a similarity tile: t[c] = sim(row, col0 + c), c < cols, skipping
/// column `skip` (-1: none). The cheap floor test uses max(t, -1) to agree with the
/// clamping in offer().
AAS_HD void offer_row(RowHeap& h, const float* t, index_t cols, index_t col0, index_t skip) {
  float fl = h.floor();
  for (index_t c = 0; c < cols; ++c) {
    const float v = t[c] < -1.0f ? -1.0f : t[c];
    if (c != skip && v >= fl) {
      h.offer(t[c], col0 + c);
      fl = h.floor();
    }
  }
}

}  // namespace topk
}  // namespace aas
