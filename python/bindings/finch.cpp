#include "aas/finch.hpp"

#include "bindings.hpp"

namespace aas_py {
namespace {

py::tuple finch_link(const CArray<std::int64_t>& kappa) {
  check_ndim(kappa, 1, "kappa");
  const auto n = kappa.shape(0);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  std::int64_t n_clusters = 0;
  {
    py::gil_scoped_release release;
    n_clusters = aas::finch_link(kappa.data(), n, labels.data());
  }
  return py::make_tuple(to_numpy(std::move(labels)), n_clusters);
}

py::tuple cluster_directions(const CArray<float>& x, const CArray<double>& weights,
                             const CArray<std::int64_t>& labels, std::int64_t n_clusters,
                             int n_threads) {
  check_ndim(x, 2, "x");
  check_ndim(weights, 1, "weights");
  check_ndim(labels, 1, "labels");
  if (labels.shape(0) != x.shape(0) || weights.shape(0) != x.shape(0))
    throw std::invalid_argument("labels and weights must have one entry per row of x (" +
                                std::to_string(x.shape(0)) + ")");
  if (n_clusters < 0) throw std::invalid_argument("n_clusters must be >= 0");
  const auto d = x.shape(1);
  CArray<float> dirs({static_cast<py::ssize_t>(n_clusters), d});
  CArray<double> norms({static_cast<py::ssize_t>(n_clusters)});
  float* od = dirs.mutable_data();
  double* on = norms.mutable_data();
  {
    py::gil_scoped_release release;
    aas::cluster_directions(x.data(), weights.data(), x.shape(0), d, labels.data(), n_clusters, od,
                            on, n_threads);
  }
  return py::make_tuple(dirs, norms);
}

}  // namespace

void register_finch(py::module_& m) {
  m.def("finch_link", &finch_link, py::arg("kappa").noconvert(),
        "FINCH partition from first neighbours: (labels (n,) int64 ordered by smallest member, "
        "number of clusters).");
  m.def("cluster_directions", &cluster_directions, py::arg("x").noconvert(),
        py::arg("weights").noconvert(), py::arg("labels").noconvert(), py::arg("n_clusters"),
        py::arg("n_threads"),
        "Per-cluster sums of weights[i]·x[i]: (unit directions (C, d) float32, norms (C,) "
        "float64); a zero sum gives a zero row.");
}

}  // namespace aas_py
