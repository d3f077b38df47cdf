// FINCH on the GPU: the Exec templates of aas/finch_exec.hpp over exec::Cuda, with the
// first neighbours from the CUDA kNN (k = 1, self excluded).
#include <stdexcept>

#include "aas/finch_exec.hpp"
#include "exec_cuda.cuh"
#include "finch_cuda.hpp"
#include "knn_cuda.hpp"

namespace aas {
namespace cuda {
namespace {

void require_device() {
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
}

}  // namespace

index_t finch_link(const index_t* kappa, index_t n, index_t* out_labels) {
  require_device();
  const exec::Cuda ex{};
  exec::Cuda::Buffer<index_t> k(ex, n), labels(ex, n);
  ex.to_device(kappa, n, k.data());
  const index_t count = finch_exec::link(ex, k.data(), n, labels.data());
  ex.to_host(labels.data(), n, out_labels);
  return count;
}

void cluster_directions(const float* x, const double* weights, index_t n, index_t d,
                        const index_t* labels, index_t n_clusters, float* out_dirs,
                        double* out_norms) {
  require_device();
  const exec::Cuda ex{};
  exec::Cuda::Buffer<float> dx(ex, n * d), dirs(ex, n_clusters * d);
  exec::Cuda::Buffer<double> w(ex, n), norms(ex, n_clusters);
  exec::Cuda::Buffer<index_t> lab(ex, n);
  ex.to_device(x, n * d, dx.data());
  ex.to_device(weights, n, w.data());
  ex.to_device(labels, n, lab.data());
  finch_exec::directions(ex, dx.data(), w.data(), n, d, lab.data(), n_clusters, dirs.data(),
                         norms.data());
  ex.to_host(dirs.data(), n_clusters * d, out_dirs);
  ex.to_host(norms.data(), n_clusters, out_norms);
}

void finch_levels(const float* X, index_t n, index_t d, const index_t* kappa0, index_t stop_at,
                  index_t block, std::vector<index_t>& out_labels,
                  std::vector<index_t>& out_counts) {
  require_device();
  const exec::Cuda ex{};
  exec::Cuda::Buffer<float> dX(ex, n * d), sims(ex, n);
  ex.to_device(X, n * d, dX.data());
  const auto first_nn = [&](const float* dM, index_t rows, index_t dd, index_t* d_kappa) {
    knn_graph_device(dM, rows, dd, 1, false, d_kappa, sims.data(), block);
  };
  finch_exec::levels(ex, first_nn, dX.data(), n, d, kappa0, stop_at, out_labels, out_counts);
}

}  // namespace cuda
}  // namespace aas
