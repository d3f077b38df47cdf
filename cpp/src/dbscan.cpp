// DBSCAN on a CSR distance graph: parallel core counting, union-find over
// core-core links, then border assignment in sklearn's order. O(nnz · n_eps).
#include "aas/dbscan.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace aas {

void check_distance_graph(const std::int64_t* indptr, const std::int32_t* indices,
                          const float* data, index_t n, int n_threads) {
  AAS_REQUIRE(n >= 0, "dbscan: n must be >= 0; got " + std::to_string(n));
  AAS_REQUIRE(indptr != nullptr, "dbscan: indptr is null");
  AAS_REQUIRE(indptr[0] == 0, "dbscan: indptr[0] must be 0; got " + std::to_string(indptr[0]));
  for (index_t i = 0; i < n; ++i)
    if (indptr[i + 1] < indptr[i])
      throw std::invalid_argument("dbscan: indptr must be non-decreasing; indptr[" +
                                  std::to_string(i + 1) + "] < indptr[" + std::to_string(i) + "]");
  AAS_REQUIRE(indptr[n] == 0 || (indices != nullptr && data != nullptr),
          "dbscan: indices or data is null");
  // Messages are built only on failure: this loop runs once per stored entry.
  parallel_for(
      n, n_threads,
      [&](index_t i) {
        std::int64_t previous = -1;
        for (std::int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
          const std::int64_t j = indices[k];
          if (j < 0 || j >= n)
            throw std::invalid_argument("dbscan: column index " + std::to_string(j) + " in row " +
                                        std::to_string(i) + " is outside [0, " + std::to_string(n) +
                                        ")");
          if (j <= previous)
            throw std::invalid_argument("dbscan: the columns of row " + std::to_string(i) +
                                        " must be sorted without duplicates");
          previous = j;
          if (!(std::isfinite(data[k]) && data[k] >= 0.0f))
            throw std::invalid_argument("dbscan: distances must be finite and >= 0; row " +
                                        std::to_string(i) + " holds " + std::to_string(data[k]));
        }
      },
      256);
}

void dbscan_csr(const std::int64_t* indptr, const std::int32_t* indices, const float* data,
                index_t n, const double* eps, index_t n_eps, index_t min_samples, int n_threads,
                std::int64_t* labels, std::uint8_t* is_core) {
  AAS_REQUIRE(n_eps >= 1, "dbscan: at least one eps is needed");
  AAS_REQUIRE(min_samples >= 1, "dbscan: min_samples must be >= 1; got " + std::to_string(min_samples));
  std::vector<float> radius(static_cast<std::size_t>(n_eps));
  for (index_t e = 0; e < n_eps; ++e) {
    AAS_REQUIRE(std::isfinite(eps[e]) && eps[e] >= 0.0,
            "dbscan: eps must be finite and >= 0; got " + std::to_string(eps[e]));
    radius[e] = static_cast<float>(eps[e]);
  }
  check_distance_graph(indptr, indices, data, n, n_threads);

  // 1. Core points: one pass over each row counts the neighbours for every eps.
  parallel_for(
      n, n_threads,
      [&](index_t i) {
        std::vector<index_t> count(static_cast<std::size_t>(n_eps), 1);  // i itself
        for (std::int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
          if (indices[k] == i) continue;  // a stored diagonal is i itself, already counted
          for (index_t e = 0; e < n_eps; ++e) count[e] += data[k] <= radius[e];
        }
        for (index_t e = 0; e < n_eps; ++e) is_core[e * n + i] = count[e] >= min_samples;
      },
      256);

  // 2. and 3. per eps: components of the core points, then border points.
  for (index_t e = 0; e < n_eps; ++e) {
    const std::uint8_t* core = is_core + e * n;
    std::int64_t* out = labels + e * n;
    const float r = radius[e];
    UnionFind uf(n);
    for (index_t i = 0; i < n; ++i) {
      if (!core[i]) continue;
      for (std::int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
        const index_t j = indices[k];
        if (j != i && core[j] && data[k] <= r) uf.unite(i, j);
      }
    }
    // The union-find root of a set is its smallest member, so visiting the
    // core points in index order numbers clusters by their smallest core point.
    std::vector<std::int64_t> root_label(static_cast<std::size_t>(n), -1);
    std::int64_t next = 0;
    for (index_t i = 0; i < n; ++i) {
      out[i] = -1;
      if (!core[i]) continue;
      const index_t root = uf.find(i);
      if (root_label[root] < 0) root_label[root] = next++;
      out[i] = root_label[root];
    }
    for (index_t i = 0; i < n; ++i) {
      if (!core[i]) continue;
      const std::int64_t c = out[i];
      for (std::int64_t k = indptr[i]; k < indptr[i + 1]; ++k) {
        const index_t j = indices[k];
        if (core[j] || data[k] > r) continue;
        if (out[j] < 0 || c < out[j]) out[j] = c;
      }
    }
  }
}

}  // namespace aas
