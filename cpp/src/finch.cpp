#include "aas/finch.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace aas {

index_t finch_link(const index_t* kappa, index_t n, index_t* out_labels) {
  require(n >= 0, "finch_link: n must be >= 0");
  require(n == 0 || (kappa != nullptr && out_labels != nullptr), "finch_link: null pointer");
  for (index_t i = 0; i < n; ++i) {
    const index_t j = kappa[i];
    require(j >= 0 && j < n, "finch_link: first neighbour of row " + std::to_string(i) + " is " +
                                 std::to_string(j) + ", outside [0, " + std::to_string(n) + ")");
    require(j != i, "finch_link: row " + std::to_string(i) + " is its own first neighbour");
  }
  UnionFind uf(n);
  for (index_t i = 0; i < n; ++i) uf.unite(i, kappa[i]);
  return uf.labels(out_labels);
}

template <class T>
void cluster_sums(const T* x, index_t n, index_t d, const index_t* labels, index_t n_clusters,
                  double* out, int n_threads) {
  require(n >= 0 && d >= 1 && n_clusters >= 0, "cluster_sums: bad sizes");
  require(n == 0 || (x != nullptr && labels != nullptr), "cluster_sums: null pointer");
  require(n_clusters == 0 || out != nullptr, "cluster_sums: null output");
  // Members of each cluster, ascending (counting sort): a fixed summation order.
  std::vector<index_t> start(static_cast<std::size_t>(n_clusters) + 1, 0);
  for (index_t i = 0; i < n; ++i) {
    const index_t c = labels[i];
    require(c >= 0 && c < n_clusters, "cluster_sums: label of row " + std::to_string(i) +
                                          " is " + std::to_string(c) + ", outside [0, " +
                                          std::to_string(n_clusters) + ")");
    ++start[c + 1];
  }
  for (index_t c = 0; c < n_clusters; ++c) start[c + 1] += start[c];
  std::vector<index_t> members(static_cast<std::size_t>(n));
  {
    std::vector<index_t> fill(start.begin(), start.end() - 1);
    for (index_t i = 0; i < n; ++i) members[fill[labels[i]]++] = i;
  }
  // Work items are (cluster, column block) so that a level with few, large
  // clusters still uses every thread.
  constexpr index_t kCols = 512;
  const index_t n_blocks = (d + kCols - 1) / kCols;
  parallel_for(
      n_clusters * n_blocks, n_threads,
      [&](index_t item) {
        const index_t c = item / n_blocks;
        const index_t j0 = (item % n_blocks) * kCols;
        const index_t w = std::min(kCols, d - j0);
        double* acc = out + c * d + j0;
        std::fill(acc, acc + w, 0.0);
        for (index_t p = start[c]; p < start[c + 1]; ++p) {
          const T* row = x + members[p] * d + j0;
          for (index_t j = 0; j < w; ++j) acc[j] += static_cast<double>(row[j]);
        }
      },
      4);
}

template void cluster_sums<float>(const float*, index_t, index_t, const index_t*, index_t,
                                  double*, int);
template void cluster_sums<double>(const double*, index_t, index_t, const index_t*, index_t,
                                   double*, int);

void unit_rows(const double* s, index_t n, index_t d, float* out, int n_threads) {
  require(n >= 0 && d >= 1, "unit_rows: bad sizes");
  require(n == 0 || (s != nullptr && out != nullptr), "unit_rows: null pointer");
  parallel_for(
      n, n_threads,
      [&](index_t r) {
        const double* row = s + r * d;
        float* o = out + r * d;
        double ss = 0.0;
        for (index_t j = 0; j < d; ++j) ss += row[j] * row[j];
        const double inv = ss > 0.0 ? 1.0 / std::sqrt(ss) : 0.0;
        for (index_t j = 0; j < d; ++j) o[j] = static_cast<float>(row[j] * inv);
      },
      16);
}

}  // namespace aas
