// Host-callable entry points of FINCH on the GPU (cuda/finch.cu): the first-neighbour
// linking, the cluster directions and the whole level loop, each identical to the CPU
// code it mirrors (cpp/src/finch.cpp, aas_core.cluster.finch). No CUDA headers here.
#pragma once

#include <cstdint>
#include <vector>

namespace aas {
namespace cuda {

using index_t = std::int64_t;

/// aas::finch_link on device 0. kappa: (n,) host int64 in [0, n), != i; out_labels:
/// (n,) host int64, numbered by smallest member. Returns the number of clusters.
/// Throws std::invalid_argument (finch_link's messages) on a bad kappa, and
/// std::runtime_error with CUDA's message on a CUDA failure.
index_t finch_link(const index_t* kappa, index_t n, index_t* out_labels);

/// aas::cluster_directions on device 0, bit for bit. x: (n, d) float32, weights: (n,)
/// float64, labels: (n,) int64 in [0, n_clusters), all host. out_dirs: (n_clusters, d)
/// float32 and out_norms: (n_clusters,) float64, host.
void cluster_directions(const float* x, const double* weights, index_t n, index_t d,
                        const index_t* labels, index_t n_clusters, float* out_dirs,
                        double* out_norms);

/// Every FINCH level on device 0, as aas_core.cluster.finch computes them: level 0 from
/// kappa0 (host (n,) int64) or, when it is null, from the exact cosine first neighbours
/// of X's rows (knn_graph_device, k = 1, self excluded); each further level from the
/// first neighbours among the cluster directions. X: (n, d) host float32 unit rows,
/// n >= 2. stop_at: stop after the first level with at most that many clusters (0:
/// none). out_labels: (n, P) row-major int64; out_counts: (P,). Device memory: X, the
/// directions of two levels, O(n) indices, and the kNN tile (block², float32).
void finch_levels(const float* X, index_t n, index_t d, const index_t* kappa0, index_t stop_at,
                  index_t block, std::vector<index_t>& out_labels,
                  std::vector<index_t>& out_counts);

}  // namespace cuda
}  // namespace aas
