#include "aas/cells.hpp"

#include <string>

namespace aas {

void pair_dots(const float* a, index_t na, const float* b, index_t nb, index_t d,
               const index_t* pairs, index_t m, float* out, int n_threads) {
  require(na >= 0 && nb >= 0 && d >= 1 && m >= 0, "pair_dots: bad sizes");
  require(m == 0 || (a != nullptr && b != nullptr && pairs != nullptr && out != nullptr),
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
        // four independent double accumulators: vectorisable, fixed order
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        index_t k = 0;
        for (; k + 4 <= d; k += 4) {
          s0 += static_cast<double>(x[k]) * y[k];
          s1 += static_cast<double>(x[k + 1]) * y[k + 1];
          s2 += static_cast<double>(x[k + 2]) * y[k + 2];
          s3 += static_cast<double>(x[k + 3]) * y[k + 3];
        }
        for (; k < d; ++k) s0 += static_cast<double>(x[k]) * y[k];
        out[t] = static_cast<float>((s0 + s1) + (s2 + s3));
      },
      1024);
}

}  // namespace aas
