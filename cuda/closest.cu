// The U_us closest-pair search on the GPU: the Exec template of aas/closest_exec.hpp
// over exec::Cuda (one thread per member of the first cluster and chunk of the second).
#include <stdexcept>

#include "aas/closest_exec.hpp"
#include "closest_cuda.hpp"
#include "exec_cuda.cuh"
#include "knn_cuda.hpp"

namespace aas {
namespace cuda {

void closest_inconsistent_pairs(const float* x, index_t n, index_t d, const index_t* labels_a,
                                const index_t* labels_b, const index_t* region, bool fused,
                                std::vector<index_t>& out_pairs,
                                std::vector<std::int8_t>& out_via) {
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
  const exec::Cuda ex{};
  exec::Cuda::Buffer<float> dx(ex, n * d);
  ex.to_device(x, n * d, dx.data());
  closest_exec::closest_inconsistent_pairs(ex, dx.data(), n, d, labels_a, labels_b, region, fused,
                                           out_pairs, out_via);
}

}  // namespace cuda
}  // namespace aas
