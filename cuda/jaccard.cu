// The k-reciprocal Jaccard step on the GPU: aas/jaccard_exec.hpp with exec::Cuda. The
// CPU build runs the same template with exec::Host in its tests.
#include "aas/jaccard_exec.hpp"
#include "exec_cuda.cuh"
#include "jaccard_cuda.hpp"
#include "knn_cuda.hpp"

namespace aas {
namespace cuda {

void k_reciprocal_jaccard(const std::int64_t* rank, const float* sims, std::int64_t n,
                          std::int64_t width, const float* features, std::int64_t d, int k1,
                          int k2, double max_distance, std::int64_t pair_budget, bool on_device,
                          CsrF32& out) {
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
  const exec::Cuda ex;
  if (on_device) {
    k_reciprocal_jaccard_exec(ex, rank, sims, n, width, features, d, k1, k2, max_distance,
                              pair_budget, out);
    return;
  }
  AAS_REQUIRE(n >= 2 && width >= 1 && (features == nullptr || d >= 1),
          "k_reciprocal_jaccard: bad sizes");
  exec::Cuda::Buffer<std::int64_t> r(ex, n * width);
  exec::Cuda::Buffer<float> s(ex, n * width), f(ex, features != nullptr ? n * d : 1);
  ex.to_device(rank, n * width, r.data());
  ex.to_device(sims, n * width, s.data());
  if (features != nullptr) ex.to_device(features, n * d, f.data());
  k_reciprocal_jaccard_exec(ex, r.data(), s.data(), n, width,
                            features != nullptr ? f.data() : nullptr, d, k1, k2, max_distance,
                            pair_budget, out);
}

}  // namespace cuda
}  // namespace aas
