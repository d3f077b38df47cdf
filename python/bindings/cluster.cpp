// Bindings of the clustering kernels that work on a sparse distance graph.
#include "aas/dbscan.hpp"
#include "bindings.hpp"

namespace aas_py {
namespace {

/// Returns (labels (n_eps, n) int64, is_core (n_eps, n) bool).
py::tuple dbscan_csr(const CArray<std::int64_t>& indptr, const CArray<std::int32_t>& indices,
                     const CArray<float>& data, const CArray<double>& eps, std::int64_t min_samples,
                     int n_threads) {
  check_ndim(indptr, 1, "indptr");
  check_ndim(indices, 1, "indices");
  check_ndim(data, 1, "data");
  check_ndim(eps, 1, "eps");
  if (indptr.shape(0) < 1) throw std::invalid_argument("indptr must hold n + 1 >= 1 entries");
  const std::int64_t n = indptr.shape(0) - 1;
  const std::int64_t nnz = indptr.at(n);
  if (indices.shape(0) != data.shape(0))
    throw std::invalid_argument("indices and data must have the same length");
  if (nnz < 0 || nnz > indices.shape(0))
    throw std::invalid_argument("indptr[n] = " + std::to_string(nnz) + " does not fit the " +
                                std::to_string(indices.shape(0)) + " stored entries");
  const std::int64_t n_eps = eps.shape(0);
  py::array_t<std::int64_t> labels({static_cast<py::ssize_t>(n_eps), static_cast<py::ssize_t>(n)});
  py::array_t<bool> is_core({static_cast<py::ssize_t>(n_eps), static_cast<py::ssize_t>(n)});
  static_assert(sizeof(bool) == sizeof(std::uint8_t), "bool must be one byte");
  {
    py::gil_scoped_release release;
    aas::dbscan_csr(indptr.data(), indices.data(), data.data(), n, eps.data(), n_eps, min_samples,
                    n_threads, labels.mutable_data(),
                    reinterpret_cast<std::uint8_t*>(is_core.mutable_data()));
  }
  return py::make_tuple(labels, is_core);
}

}  // namespace

void register_cluster(py::module_& m) {
  m.def("dbscan_csr", &dbscan_csr, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
        py::arg("data").noconvert(), py::arg("eps").noconvert(), py::arg("min_samples"),
        py::arg("n_threads"),
        "DBSCAN on a CSR distance graph for several eps; returns (labels, is_core), each "
        "of shape (len(eps), n).");
}

}  // namespace aas_py
