// Exact k-nearest-neighbour graph by cosine similarity.
//
// The similarity matrix S = X Xᵀ is produced tile by tile by BLAS (the caller
// owns the GEMM); this file keeps, for every row, the k best candidates seen so
// far. Because S is symmetric only tiles on or above the diagonal are needed:
// each tile updates its rows and, mirrored, its columns, which halves the GEMM.
#pragma once

#include <cstdint>

#include "aas/common.hpp"

namespace aas {

/// Running top-k state of every row: `heap_sims`/`heap_idx` are (n, cap)
/// row-major, `heap_size` is (n,). Row r holds a binary heap whose root is the
/// worst kept candidate, in the order "similarity descending, index
/// ascending". Start with heap_size all zero.
struct TopKState {
  float* heap_sims;
  index_t* heap_idx;
  index_t* heap_size;
  index_t n;
  index_t cap;
};

/// Merges one similarity tile into the running state.
/// tile: (tile_rows, tile_cols) row-major float32, tile[r][c] = <x_{row0+r}, x_{col0+c}>.
/// When row0 == col0 the tile is a diagonal block: only its strict upper
/// triangle is read (so sim(i, j) and sim(j, i) are the same float and self is
/// never a candidate). Otherwise the tile updates rows row0.. from its rows and
/// rows col0.. from its columns. Values are clamped to [-1, 1] before ranking.
void knn_merge_tile(const float* tile, index_t tile_rows, index_t tile_cols, index_t row0,
                    index_t col0, TopKState state, int n_threads);

/// Merges a query tile into the running state of its rows only (k nearest
/// rows of a database for each query row; no mirroring, unlike knn_merge_tile).
/// tile: (tile_rows, tile_cols) row-major float32, tile[r][c] = <q_{row0+r}, y_{col0+c}>,
/// where state row row0 + r belongs to query q_{row0+r} and column col0 + c
/// to database row y_{col0+c}. exclude: (state.n,) int64 or nullptr; database
/// row exclude[i] is never a candidate of query i (a query's own row; -1:
/// none). Values are clamped to [-1, 1] before ranking, as in knn_merge_tile.
void knn_merge_rows(const float* tile, index_t tile_rows, index_t tile_cols, index_t row0,
                    index_t col0, const index_t* exclude, TopKState state, int n_threads);

/// Writes the final graph. out_idx/out_sims: (n, k) row-major. With
/// include_self, column 0 is the row itself with similarity 1 and the other
/// k-1 columns come from the state (cap == k-1); otherwise cap == k. Rows are
/// sorted by similarity descending, ties to the smaller index.
void knn_finalize(TopKState state, bool include_self, index_t k, index_t* out_idx, float* out_sims,
                  int n_threads);

/// Tests only: the GPU's fp32 kNN computed on the host (top-k by aas::knnx::dot_fma,
/// the value the device's fp32 tiles compute).
void knn_fp32_emulated(const float* X, index_t n, index_t d, index_t k, bool include_self,
                       index_t* out_idx, float* out_sims);

/// Tests only: the GPU's fp32 similarity tile kernel (aas/gemm_tile.hpp) run on the
/// host, block by block and thread by thread: C (rows, cols) = A B^T.
void similarity_tile_emulated(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                              float* C);

/// Tests only: the GPU's tensor-core tile kernel (aas/lp_tile.hpp) run on the host:
/// C (rows, cols) = Xr[r0 ..] Xr[c0 ..]^T, Xr (n16, d16) zero-padded.
void lp_tile_emulated(const float* Xr, index_t n16, index_t d16, index_t r0, index_t c0,
                      index_t rows, index_t cols, float* C);

/// Tests only: C = A B^T by aas::knnx::dot_fma, element by element.
void dot_fma_matrix(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                    float* C);

/// Tests only: the GPU's low-precision path (aas/knn_exec.hpp) on the host, inputs
/// rounded to `bits` bits, cand_cap candidates per row. Equals knn_fp32_emulated;
/// returns how many rows needed the fp32 fallback (-1: all, the bound was broken).
/// input_bits > 0 rounds the inputs to that many bits instead while the bound stays
/// the one of `bits` (tests: a producer that breaks its bound).
index_t knn_low_precision_emulated(const float* X, index_t n, index_t d, index_t k,
                                   bool include_self, int bits, index_t cand_cap,
                                   index_t* out_idx, float* out_sims, int input_bits = 0);

}  // namespace aas
