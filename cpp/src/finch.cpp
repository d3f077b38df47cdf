#include "aas/finch.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace aas {

index_t finch_link(const index_t* kappa, index_t n, index_t* out_labels) {
  AAS_REQUIRE(n >= 0, "finch_link: n must be >= 0");
  AAS_REQUIRE(n == 0 || (kappa != nullptr && out_labels != nullptr), "finch_link: null pointer");
  for (index_t i = 0; i < n; ++i) {
    const index_t j = kappa[i];
    if (j < 0 || j >= n)  // messages are built only on failure: this runs per row
      throw std::invalid_argument("finch_link: first neighbour of row " + std::to_string(i) +
                                  " is " + std::to_string(j) + ", outside [0, " +
                                  std::to_string(n) + ")");
    if (j == i)
      throw std::invalid_argument("finch_link: row " + std::to_string(i) +
                                  " is its own first neighbour");
  }
  UnionFind uf(n);
  for (index_t i = 0; i < n; ++i) uf.unite(i, kappa[i]);
  return uf.labels(out_labels);
}

void cluster_directions(const float* x, const double* weights, index_t n, index_t d,
                        const index_t* labels, index_t n_clusters, float* out_dirs,
                        double* out_norms, int n_threads) {
  AAS_REQUIRE(n >= 0 && d >= 1 && n_clusters >= 0, "cluster_directions: bad sizes");
  AAS_REQUIRE(n == 0 || (x != nullptr && weights != nullptr && labels != nullptr),
          "cluster_directions: null pointer");
  AAS_REQUIRE(n_clusters == 0 || (out_dirs != nullptr && out_norms != nullptr),
          "cluster_directions: null output");
  // Members of each cluster, ascending (counting sort): a fixed summation order.
  std::vector<index_t> start(static_cast<std::size_t>(n_clusters) + 1, 0);
  for (index_t i = 0; i < n; ++i) {
    const index_t c = labels[i];
    if (c < 0 || c >= n_clusters)
      throw std::invalid_argument("cluster_directions: label of row " + std::to_string(i) + " is " +
                                  std::to_string(c) + ", outside [0, " +
                                  std::to_string(n_clusters) + ")");
    ++start[c + 1];
  }
  for (index_t c = 0; c < n_clusters; ++c) start[c + 1] += start[c];
  std::vector<index_t> members(static_cast<std::size_t>(n));
  {
    std::vector<index_t> fill(start.begin(), start.end() - 1);
    for (index_t i = 0; i < n; ++i) members[fill[labels[i]]++] = i;
  }
  // One cluster per item: its double row stays in cache and the output is
  // written once (a fresh output costs page faults; touching it twice, more).
  parallel_team(n_threads, [&](int tid, int n_used) {
    std::vector<double> acc(static_cast<std::size_t>(d));
    for (index_t c = tid; c < n_clusters; c += n_used) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (index_t p = start[c]; p < start[c + 1]; ++p) {
        const index_t i = members[p];
        const double w = weights[i];
        const float* row = x + i * d;
        for (index_t j = 0; j < d; ++j) acc[j] += w * static_cast<double>(row[j]);
      }
      double ss = 0.0;
      for (index_t j = 0; j < d; ++j) ss += acc[j] * acc[j];
      const double norm = std::sqrt(ss);
      const double inv = norm > 0.0 ? 1.0 / norm : 0.0;
      float* o = out_dirs + c * d;
      for (index_t j = 0; j < d; ++j) o[j] = static_cast<float>(acc[j] * inv);
      out_norms[c] = norm;
    }
  });
}

}  // namespace aas
