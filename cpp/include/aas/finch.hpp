// FINCH: clustering by first-neighbour relations (Sarfraz, Sharma and
// Stiefelhagen, "Efficient Parameter-free Clustering Using First Neighbor
// Relations", CVPR 2019, §3 and Algorithm 1; DESIGN.md §3.5).
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

/// Per-cluster sums of the rows of x (the "merge" step between levels).
/// x: (n, d) row-major, float32 (points) or float64 (the previous level's
/// sums: summing sums gives the sum over the original points, without
/// re-reading them). labels: (n,) int64 in [0, n_clusters).
/// out: (n_clusters, d) row-major float64. Each sum runs over the members in
/// ascending row order, so the result does not depend on n_threads; an empty
/// label gives a zero row.
template <class T>
void cluster_sums(const T* x, index_t n, index_t d, const index_t* labels, index_t n_clusters,
                  double* out, int n_threads);

/// Unit-L2-norm float32 copies of the rows of s: (n, d) float64 -> out (n, d)
/// float32. The direction of a cluster's sum is the direction of its mean,
/// which is all cosine similarity sees. A row that is exactly zero has no
/// direction and stays zero (cosine 0 to everything).
void unit_rows(const double* s, index_t n, index_t d, float* out, int n_threads);

}  // namespace aas
