#include "aas/cells.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace aas {

void pair_dots(const float* a, index_t na, const float* b, index_t nb, index_t d,
               const index_t* pairs, index_t m, float* out, int n_threads) {
  AAS_REQUIRE(na >= 0 && nb >= 0 && d >= 1 && m >= 0, "pair_dots: bad sizes");
  AAS_REQUIRE(m == 0 || (a != nullptr && b != nullptr && pairs != nullptr && out != nullptr),
          "pair_dots: null pointer");
  for (index_t t = 0; t < m; ++t) {
    const index_t i = pairs[2 * t], j = pairs[2 * t + 1];
    if (i < 0 || i >= na || j < 0 || j >= nb)
      throw std::invalid_argument("pair_dots: pair " + std::to_string(t) + " is (" +
                                  std::to_string(i) + ", " + std::to_string(j) +
                                  "), outside the row ranges [0, " + std::to_string(na) +
                                  ") and [0, " + std::to_string(nb) + ")");
  }
  parallel_for(
      m, n_threads,
      [&](index_t t) {
        const float* x = a + pairs[2 * t] * d;
        const float* y = b + pairs[2 * t + 1] * d;
        // eight independent float accumulators in a fixed order: vectorisable,
        // and the result does not depend on how the pairs are split over threads
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        index_t k = 0;
        for (; k + 8 <= d; k += 8)
          for (int l = 0; l < 8; ++l) acc[l] += x[k + l] * y[k + l];
        for (; k < d; ++k) acc[k % 8] += x[k] * y[k];
        out[t] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      },
      1024);
}

void top_k_per_group(const index_t* group, const float* score, const index_t* tie, index_t m,
                     index_t n_groups, index_t k, std::uint8_t* out_keep, int n_threads) {
  AAS_REQUIRE(m >= 0 && n_groups >= 0 && k >= 0, "top_k_per_group: bad sizes");
  AAS_REQUIRE(m == 0 || (group != nullptr && score != nullptr && tie != nullptr && out_keep != nullptr),
          "top_k_per_group: null pointer");
  // bucket the entries by group (counting sort keeps them in index order)
  std::vector<index_t> start(static_cast<std::size_t>(n_groups) + 1, 0);
  for (index_t t = 0; t < m; ++t) {
    const index_t g = group[t];
    if (g < 0 || g >= n_groups)
      throw std::invalid_argument("top_k_per_group: group of entry " + std::to_string(t) + " is " +
                                  std::to_string(g) + ", outside [0, " + std::to_string(n_groups) +
                                  ")");
    ++start[g + 1];
  }
  for (index_t g = 0; g < n_groups; ++g) start[g + 1] += start[g];
  std::vector<index_t> members(static_cast<std::size_t>(m));
  {
    std::vector<index_t> fill(start.begin(), start.end() - 1);
    for (index_t t = 0; t < m; ++t) members[fill[group[t]]++] = t;
  }
  std::fill(out_keep, out_keep + m, std::uint8_t{0});
  // a strict total order: score descending, then tie ascending, then index
  const auto before = [&](index_t p, index_t q) {
    if (score[p] != score[q]) return score[p] > score[q];
    if (tie[p] != tie[q]) return tie[p] < tie[q];
    return p < q;
  };
  parallel_for(
      n_groups, n_threads,
      [&](index_t g) {
        index_t* first = members.data() + start[g];
        index_t* last = members.data() + start[g + 1];
        index_t* cut = first + std::min<index_t>(k, last - first);
        std::partial_sort(first, cut, last, before);
        for (index_t* p = first; p != cut; ++p) out_keep[*p] = 1;
      },
      256);
}

}  // namespace aas
