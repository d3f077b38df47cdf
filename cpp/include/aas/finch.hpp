// FINCH: clustering by first-neighbour relations (Sarfraz, Sharma and
// Stiefelhagen, "Efficient Parameter-free Clustering Using First Neighbor
// Relations", CVPR 2019, §3 and Algorithm 1).
//
// The exact first neighbours themselves come from the kNN code (BLAS tiles +
// C++ top-k); this file holds the two steps that are specific to FINCH: the
// first-neighbour linking and the cluster means that feed the next level.
#pragma once

#include <cstdint>

#include "aas/common.hpp"

namespace aas {

/// One FINCH partition from first neighbours (paper eq. 1).
/// kappa: (n,) int64, kappa[i] = the first neighbour of i, in [0, n), != i.
/// Points i and j are linked when j = κ(i), i = κ(j) or κ(i) = κ(j); linking
/// every i to κ(i) and taking connected components gives exactly that
/// partition (κ(i) = κ(j) = c joins i and j through c).
/// out_labels: (n,) int64, labels 0..C-1 numbered in order of each cluster's
/// smallest member. Returns C. Throws std::invalid_argument on a κ out of
/// range or equal to its own index.
index_t finch_link(const index_t* kappa, index_t n, index_t* out_labels);

/// Directions of the per-cluster sums of weighted rows (the "merge" step
/// between levels): sum_c = Σ_{i : labels[i] = c} weights[i] · x[i], accumulated in
/// double over the members in ascending row order (so the result does not
/// depend on n_threads). Cosine sees only the direction of a cluster mean,
/// which is that of its sum; the norm is kept so that the next level can sum
/// these sums (weights = norms, x = directions) without re-reading the points.
/// x: (n, d) row-major float32. weights: (n,) float64. labels: (n,) int64 in
/// [0, n_clusters). out_dirs: (n_clusters, d) float32, sum_c / |sum_c|, or a
/// zero row when the sum is exactly zero (no direction: cosine 0 to every
/// other row) or the label is empty. out_norms: (n_clusters,) float64 |sum_c|.
void cluster_directions(const float* x, const double* weights, index_t n, index_t d,
                        const index_t* labels, index_t n_clusters, float* out_dirs,
                        double* out_norms, int n_threads);

}  // namespace aas
