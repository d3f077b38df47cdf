#include "aas/knn.hpp"

#include "aas/topk.hpp"

#include <algorithm>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace aas {
namespace {

using topk::better;
using topk::RowHeap;

constexpr index_t kBlock = 16;  // columns of one floor test in pass 1 of knn_merge_tile
constexpr index_t kStrip = 64;  // columns of one thread's strip in pass 2

// whether max(t[e], -1) >= floor may hold for some e < kBlock (the test of offer's
// callers): a superset (a floor <= -1 answers true, the walk then tests exactly);
// NaN compares false, as in the exact test. SSE2 (every x86-64) tests four at a time.
inline bool any_at_or_above(const float* t, float floor) {
  if (floor <= -1.0f) return true;
#if defined(__SSE2__)
  const __m128 f = _mm_set1_ps(floor);
  __m128 hit = _mm_setzero_ps();
  for (index_t e = 0; e < kBlock; e += 4) hit = _mm_or_ps(hit, _mm_cmpge_ps(_mm_loadu_ps(t + e), f));
  return _mm_movemask_ps(hit) != 0;
#else
  bool any = false;
  for (index_t e = 0; e < kBlock; ++e) any |= t[e] >= floor;
  return any;
#endif
}

// the same against one floor per column, over a strip of kStrip columns
inline bool any_at_or_above(const float* t, const float* floors) {
#if defined(__SSE2__)
  const __m128 low = _mm_set1_ps(-1.0f);
  __m128 hit = _mm_setzero_ps();
  for (index_t e = 0; e < kStrip; e += 4) {
    const __m128 f = _mm_loadu_ps(floors + e);
    hit = _mm_or_ps(hit, _mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(t + e), f), _mm_cmple_ps(f, low)));
  }
  return _mm_movemask_ps(hit) != 0;
#else
  bool any = false;
  for (index_t e = 0; e < kStrip; ++e) any |= t[e] >= floors[e] || floors[e] <= -1.0f;
  return any;
#endif
}

inline RowHeap row_heap(const TopKState& st, index_t row) {
  return RowHeap{st.heap_sims + row * st.cap, st.heap_idx + row * st.cap, st.heap_size + row,
                 st.cap};
}

}  // namespace

void knn_merge_tile(const float* tile, index_t tile_rows, index_t tile_cols, index_t row0,
                    index_t col0, TopKState st, int n_threads) {
  AAS_REQUIRE(tile != nullptr && tile_rows >= 0 && tile_cols >= 0, "knn_merge_tile: bad tile");
  AAS_REQUIRE(row0 >= 0 && col0 >= 0 && row0 + tile_rows <= st.n && col0 + tile_cols <= st.n,
          "knn_merge_tile: tile lies outside the state");
  if (st.cap == 0 || tile_rows == 0 || tile_cols == 0) return;
  const bool diagonal = (row0 == col0);
  AAS_REQUIRE(!diagonal || tile_rows == tile_cols, "knn_merge_tile: diagonal tile must be square");

  // Pass 1: rows of the tile update rows row0 + r (strict upper triangle on the diagonal).
  parallel_for(
      tile_rows, n_threads,
      [&](index_t r) {
        RowHeap h = row_heap(st, row0 + r);
        const float* t = tile + r * tile_cols;
        float floor = h.floor();
        index_t c = diagonal ? r + 1 : 0;
        // blocks of kBlock columns are skipped on one vectorised test against the
        // floor (once the heap is full, almost every block): only a block with a
        // value at or above it is walked, with the floor as it rises
        for (; c + kBlock <= tile_cols; c += kBlock) {
          if (!any_at_or_above(t + c, floor)) continue;
          for (index_t e = c; e < c + kBlock; ++e)
            if (std::max(t[e], -1.0f) >= floor) {
              h.offer(t[e], col0 + e);
              floor = h.floor();
            }
        }
        for (; c < tile_cols; ++c) {
          // max(.,-1) keeps the cheap test consistent with clamping in offer()
          if (std::max(t[c], -1.0f) >= floor) {
            h.offer(t[c], col0 + c);
            floor = h.floor();
          }
        }
      },
      16);

  // Pass 2: columns of the tile update rows col0 + c. A thread owns a strip of
  // columns and walks the tile row by row, so reads stay contiguous.
  const index_t n_strips = (tile_cols + kStrip - 1) / kStrip;
  parallel_for(
      n_strips, n_threads,
      [&](index_t strip) {
        const index_t c_begin = strip * kStrip;
        const index_t c_end = std::min(tile_cols, c_begin + kStrip);
        float floors[kStrip];
        for (index_t c = c_begin; c < c_end; ++c)
          floors[c - c_begin] = row_heap(st, col0 + c).floor();
        // on the diagonal only rows r < c are read: the transpose of pass 1's triangle
        const index_t r_end = diagonal ? std::min(tile_rows, c_end) : tile_rows;
        for (index_t r = 0; r < r_end; ++r) {
          const float* t = tile + r * tile_cols;
          const index_t first = std::max(c_begin, diagonal ? r + 1 : c_begin);
          // a full strip is skipped on one vectorised test against its floors
          if (first == c_begin && c_end - c_begin == kStrip &&
              !any_at_or_above(t + c_begin, floors))
            continue;
          for (index_t c = first; c < c_end; ++c) {
            if (std::max(t[c], -1.0f) >= floors[c - c_begin]) {
              RowHeap h = row_heap(st, col0 + c);
              h.offer(t[c], row0 + r);
              floors[c - c_begin] = h.floor();
            }
          }
        }
      },
      1);
}

void knn_merge_rows(const float* tile, index_t tile_rows, index_t tile_cols, index_t row0,
                    index_t col0, const index_t* exclude, TopKState st, int n_threads) {
  AAS_REQUIRE(tile != nullptr && tile_rows >= 0 && tile_cols >= 0, "knn_merge_rows: bad tile");
  AAS_REQUIRE(row0 >= 0 && col0 >= 0 && row0 + tile_rows <= st.n,
          "knn_merge_rows: tile rows lie outside the state");
  if (st.cap == 0 || tile_rows == 0 || tile_cols == 0) return;
  parallel_for(
      tile_rows, n_threads,
      [&](index_t r) {
        RowHeap h = row_heap(st, row0 + r);
        const index_t skip = exclude != nullptr ? exclude[row0 + r] - col0 : -1;
        topk::offer_row(h, tile + r * tile_cols, tile_cols, col0, skip);
      },
      16);
}

void knn_finalize(TopKState st, bool include_self, index_t k, index_t* out_idx, float* out_sims,
                  int n_threads) {
  AAS_REQUIRE(k >= 1, "knn_finalize: k must be >= 1");
  AAS_REQUIRE(st.cap == (include_self ? k - 1 : k), "knn_finalize: state capacity does not match k");
  parallel_for(
      st.n, n_threads,
      [&](index_t i) {
        RowHeap h = row_heap(st, i);
        AAS_REQUIRE(*h.size == st.cap, "knn_finalize: a row has fewer than k candidates");
        // sort a copy (the state stays a valid heap), straight into the output row
        index_t* oi = out_idx + i * k;
        float* os = out_sims + i * k;
        const index_t first = include_self ? 1 : 0;
        if (include_self) {
          oi[0] = i;
          os[0] = 1.0f;
        }
        index_t size = *h.size;
        for (index_t t = 0; t < size; ++t) {
          os[first + t] = h.s[t];
          oi[first + t] = h.id[t];
        }
        RowHeap out{os + first, oi + first, &size, st.cap};
        out.sort_best_first();
      },
      256);
}

}  // namespace aas
