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

template <class T>
CArray<double> cluster_sums(const CArray<T>& x, const CArray<std::int64_t>& labels,
                            std::int64_t n_clusters, int n_threads) {
  check_ndim(x, 2, "x");
  check_ndim(labels, 1, "labels");
  if (labels.shape(0) != x.shape(0))
    throw std::invalid_argument("labels must have one entry per row of x; got " +
                                std::to_string(labels.shape(0)) + " for " +
                                std::to_string(x.shape(0)) + " rows");
  if (n_clusters < 0) throw std::invalid_argument("n_clusters must be >= 0");
  const auto d = x.shape(1);
  CArray<double> out({static_cast<py::ssize_t>(n_clusters), d});
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    aas::cluster_sums<T>(x.data(), x.shape(0), d, labels.data(), n_clusters, o, n_threads);
  }
  return out;
}

CArray<float> unit_rows(const CArray<double>& s, int n_threads) {
  check_ndim(s, 2, "s");
  CArray<float> out({s.shape(0), s.shape(1)});
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    aas::unit_rows(s.data(), s.shape(0), s.shape(1), o, n_threads);
  }
  return out;
}

}  // namespace

void register_finch(py::module_& m) {
  m.def("finch_link", &finch_link, py::arg("kappa").noconvert(),
        "FINCH partition from first neighbours: (labels (n,) int64 ordered by smallest member, "
        "number of clusters).");
  // float32 rows (the points) or float64 rows (the previous level's sums)
  m.def("cluster_sums", &cluster_sums<float>, py::arg("x").noconvert(),
        py::arg("labels").noconvert(), py::arg("n_clusters"), py::arg("n_threads"),
        "(n_clusters, d) float64 sums of the rows of x per label.");
  m.def("cluster_sums", &cluster_sums<double>, py::arg("x").noconvert(),
        py::arg("labels").noconvert(), py::arg("n_clusters"), py::arg("n_threads"));
  m.def("unit_rows", &unit_rows, py::arg("s").noconvert(), py::arg("n_threads"),
        "float32 unit-norm copies of the rows of a float64 array (zero rows stay zero).");
}

}  // namespace aas_py
