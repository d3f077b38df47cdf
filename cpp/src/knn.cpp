#include "aas/knn.hpp"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

namespace aas {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Candidate a ranks before candidate b.
inline bool better(float sa, index_t ia, float sb, index_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

inline float clamp_sim(float v) { return std::min(1.0f, std::max(-1.0f, v)); }

// One row's heap: root (position 0) is the worst kept candidate.
struct RowHeap {
  float* s;
  index_t* id;
  index_t* size;
  index_t cap;

  // Threshold below which nothing can enter; -inf while the heap is not full.
  float floor() const { return *size < cap ? kNegInf : s[0]; }

  void sift_down(index_t pos) {
    const index_t n = *size;
    const float sv = s[pos];
    const index_t iv = id[pos];
    while (true) {
      index_t child = 2 * pos + 1;
      if (child >= n) break;
      // pick the worse child (the one that should be nearer the root)
      if (child + 1 < n && better(s[child], id[child], s[child + 1], id[child + 1])) ++child;
      if (!better(sv, iv, s[child], id[child])) break;
      s[pos] = s[child];
      id[pos] = id[child];
      pos = child;
    }
    s[pos] = sv;
    id[pos] = iv;
  }

  void sift_up(index_t pos) {
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

  // Offers (v, j); v already passed the cheap floor() test on its raw value.
  void offer(float v, index_t j) {
    v = clamp_sim(v);
    if (*size < cap) {
      s[*size] = v;
      id[*size] = j;
      ++*size;
      sift_up(*size - 1);
    } else if (better(v, j, s[0], id[0])) {
      s[0] = v;
      id[0] = j;
      sift_down(0);
    }
  }
};

inline RowHeap row_heap(const TopKState& st, index_t row) {
  return RowHeap{st.heap_sims + row * st.cap, st.heap_idx + row * st.cap, st.heap_size + row,
                 st.cap};
}

}  // namespace

void knn_merge_tile(const float* tile, index_t tile_rows, index_t tile_cols, index_t row0,
                    index_t col0, TopKState st, int n_threads) {
  require(tile != nullptr && tile_rows >= 0 && tile_cols >= 0, "knn_merge_tile: bad tile");
  require(row0 >= 0 && col0 >= 0 && row0 + tile_rows <= st.n && col0 + tile_cols <= st.n,
          "knn_merge_tile: tile lies outside the state");
  if (st.cap == 0 || tile_rows == 0 || tile_cols == 0) return;
  const bool diagonal = (row0 == col0);
  require(!diagonal || tile_rows == tile_cols, "knn_merge_tile: diagonal tile must be square");

  // Pass 1: rows of the tile update rows row0 + r (strict upper triangle on the diagonal).
  parallel_for(
      tile_rows, n_threads,
      [&](index_t r) {
        RowHeap h = row_heap(st, row0 + r);
        const float* t = tile + r * tile_cols;
        float floor = h.floor();
        for (index_t c = diagonal ? r + 1 : 0; c < tile_cols; ++c) {
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
  constexpr index_t kStrip = 64;
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
          for (index_t c = std::max(c_begin, diagonal ? r + 1 : c_begin); c < c_end; ++c) {
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
  require(tile != nullptr && tile_rows >= 0 && tile_cols >= 0, "knn_merge_rows: bad tile");
  require(row0 >= 0 && col0 >= 0 && row0 + tile_rows <= st.n,
          "knn_merge_rows: tile rows lie outside the state");
  if (st.cap == 0 || tile_rows == 0 || tile_cols == 0) return;
  parallel_for(
      tile_rows, n_threads,
      [&](index_t r) {
        RowHeap h = row_heap(st, row0 + r);
        const float* t = tile + r * tile_cols;
        const index_t skip = exclude != nullptr ? exclude[row0 + r] - col0 : -1;
        float floor = h.floor();
        for (index_t c = 0; c < tile_cols; ++c) {
          if (c != skip && std::max(t[c], -1.0f) >= floor) {
            h.offer(t[c], col0 + c);
            floor = h.floor();
          }
        }
      },
      16);
}

void knn_finalize(TopKState st, bool include_self, index_t k, index_t* out_idx, float* out_sims,
                  int n_threads) {
  require(k >= 1, "knn_finalize: k must be >= 1");
  require(st.cap == (include_self ? k - 1 : k), "knn_finalize: state capacity does not match k");
  parallel_for(
      st.n, n_threads,
      [&](index_t i) {
        RowHeap h = row_heap(st, i);
        require(*h.size == st.cap, "knn_finalize: a row has fewer than k candidates");
        std::vector<std::pair<float, index_t>> row(static_cast<std::size_t>(*h.size));
        for (index_t t = 0; t < *h.size; ++t) row[t] = {h.s[t], h.id[t]};
        std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) {
          return better(a.first, a.second, b.first, b.second);
        });
        index_t* oi = out_idx + i * k;
        float* os = out_sims + i * k;
        index_t col = 0;
        if (include_self) {
          oi[0] = i;
          os[0] = 1.0f;
          col = 1;
        }
        for (const auto& [sv, j] : row) {
          oi[col] = j;
          os[col] = sv;
          ++col;
        }
      },
      256);
}

}  // namespace aas
