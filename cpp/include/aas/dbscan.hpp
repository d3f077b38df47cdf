// DBSCAN (Ester et al., KDD 1996) on a sparse precomputed distance graph,
// with scikit-learn's semantics for metric="precomputed".
#pragma once

#include <cstdint>

#include "aas/common.hpp"

namespace aas {

/// Checks that (indptr, indices, data) is a valid n×n CSR distance graph:
/// indptr[0] == 0, indptr non-decreasing, every column index in [0, n),
/// columns strictly increasing within each row (sorted, no duplicates), and
/// every stored distance finite and >= 0. Throws std::invalid_argument naming
/// the first problem. O(nnz), parallel over rows.
void check_distance_graph(const std::int64_t* indptr, const std::int32_t* indices,
                          const float* data, index_t n, int n_threads);

/// DBSCAN on a sparse distance graph, for several eps values in one call.
///
/// indptr: (n+1,) int64; indices: (nnz,) int32; data: (nnz,) float32 with
///   nnz = indptr[n]. Row i lists the stored distances d(i, j). An ABSENT
///   entry means "not within eps", whatever eps is (as in sklearn on sparse
///   input); stored zeros are explicit neighbours. The graph is checked with
///   check_distance_graph first.
/// eps: (n_eps,) thresholds >= 0; each is rounded to float32, the dtype of the
///   distances, and j is a neighbour of i when d(i, j) <= eps (sklearn
///   compares float32 data with a float32 radius in the same way).
/// min_samples >= 1: i is a core point when its neighbourhood, row i plus i
///   itself (counted once whether or not the diagonal is stored, and even if
///   a stored diagonal exceeds eps), holds at least min_samples points.
/// Clusters: connected components of core points, two core points being
///   linked when either row stores the other within eps. They are numbered
///   0, 1, ... in order of their smallest core point (sklearn's order).
/// Border points (non-core, stored within eps in the row of a core point)
///   join the smallest-numbered such cluster, which is what sklearn's
///   breadth-first search does. Everything else is noise, labelled -1.
/// For a symmetric graph the labels equal sklearn.cluster.DBSCAN's exactly.
/// labels: (n_eps, n) int64 out, row e for eps[e]; is_core: (n_eps, n) uint8
///   out (1 for core points). The core counts of all eps values are taken in
///   one parallel pass over the graph.
void dbscan_csr(const std::int64_t* indptr, const std::int32_t* indices, const float* data,
                index_t n, const double* eps, index_t n_eps, index_t min_samples, int n_threads,
                std::int64_t* labels, std::uint8_t* is_core);

}  // namespace aas
