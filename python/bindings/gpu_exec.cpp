// Private entry points that run the GPU algorithms of aas/finch_exec.hpp and
// aas/closest_exec.hpp on the CPU (exec::Host), so that the tests check, without a GPU,
// that they give the production CPU functions' results. Not a public API.
#include <pybind11/stl.h>

#include <optional>

#include "aas/closest_exec.hpp"
#include "aas/finch_exec.hpp"
#include "aas/sampling.hpp"
#include "bindings.hpp"

namespace aas_py {
namespace {

using aas::exec::Host;

void check_length(const CArray<std::int64_t>& a, py::ssize_t n, const char* name) {
  check_ndim(a, 1, name);
  if (a.shape(0) != n)
    throw std::invalid_argument(std::string(name) + " must have " + std::to_string(n) +
                                " entries; got " + std::to_string(a.shape(0)));
}

py::tuple finch_link_exec(const CArray<std::int64_t>& kappa) {
  check_ndim(kappa, 1, "kappa");
  const auto n = kappa.shape(0);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  std::int64_t count = 0;
  {
    py::gil_scoped_release release;
    count = aas::finch_exec::link(Host{}, kappa.data(), n, labels.data());
  }
  return py::make_tuple(to_numpy(std::move(labels)), count);
}

py::tuple cluster_directions_exec(const CArray<float>& x, const CArray<double>& weights,
                                  const CArray<std::int64_t>& labels, std::int64_t n_clusters) {
  check_ndim(x, 2, "x");
  check_ndim(weights, 1, "weights");
  check_length(labels, x.shape(0), "labels");
  if (weights.shape(0) != x.shape(0))
    throw std::invalid_argument("weights must have one entry per row of x");
  if (n_clusters < 0) throw std::invalid_argument("n_clusters must be >= 0");
  CArray<float> dirs({static_cast<py::ssize_t>(n_clusters), x.shape(1)});
  CArray<double> norms({static_cast<py::ssize_t>(n_clusters)});
  float* od = dirs.mutable_data();
  double* on = norms.mutable_data();
  {
    py::gil_scoped_release release;
    aas::finch_exec::directions(Host{}, x.data(), weights.data(), x.shape(0), x.shape(1),
                                labels.data(), n_clusters, od, on);
  }
  return py::make_tuple(dirs, norms);
}

// The level loop with first neighbours from a Python callable first_nn(M) -> (rows,)
// int64 (the tests pass the CPU search); the GIL is held throughout.
py::tuple finch_levels_exec(const CArray<float>& x, std::optional<CArray<std::int64_t>> kappa0,
                            std::int64_t stop_at, const py::function& first_nn) {
  check_ndim(x, 2, "x");
  const auto n = x.shape(0), d = x.shape(1);
  if (kappa0) check_length(*kappa0, n, "kappa0");
  const auto nn = [&](const float* m, std::int64_t rows, std::int64_t dd, std::int64_t* out) {
    CArray<float> view({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(dd)}, m);
    py::object got = first_nn(view);
    auto k = got.cast<CArray<std::int64_t>>();
    if (k.ndim() != 1 || k.shape(0) != rows)
      throw std::invalid_argument("first_nn must return (rows,) int64");
    std::copy(k.data(), k.data() + rows, out);
  };
  std::vector<std::int64_t> labels, counts;
  aas::finch_exec::levels(Host{}, nn, x.data(), n, d, kappa0 ? kappa0->data() : nullptr, stop_at,
                          labels, counts);
  const auto p = static_cast<py::ssize_t>(counts.size());
  return py::make_tuple(to_numpy(std::move(labels)).reshape({static_cast<py::ssize_t>(n), p}),
                        to_numpy(std::move(counts)));
}

py::tuple closest_pairs_exec(const CArray<float>& x, const CArray<std::int64_t>& labels_a,
                             const CArray<std::int64_t>& labels_b,
                             const CArray<std::int64_t>& region, std::optional<bool> fused,
                             std::int64_t batch) {
  check_ndim(x, 2, "x");
  const auto n = x.shape(0);
  check_length(labels_a, n, "labels_a");
  check_length(labels_b, n, "labels_b");
  check_length(region, n, "region");
  const bool f = fused ? *fused : aas::closest_pairs_fused();
  std::vector<std::int64_t> pairs;
  std::vector<std::int8_t> via;
  {
    py::gil_scoped_release release;
    aas::closest_exec::closest_inconsistent_pairs(Host{}, x.data(), n, x.shape(1), labels_a.data(),
                                                  labels_b.data(), region.data(), f, pairs, via,
                                                  batch);
  }
  const auto m = static_cast<py::ssize_t>(via.size());
  return py::make_tuple(to_numpy(std::move(pairs)).reshape({m, py::ssize_t{2}}),
                        to_numpy(std::move(via)));
}

}  // namespace

void register_gpu_exec(py::module_& m) {
  m.def("_finch_link_exec", &finch_link_exec, py::arg("kappa").noconvert(),
        "finch_link through the GPU code on the CPU (tests only).");
  m.def("_cluster_directions_exec", &cluster_directions_exec, py::arg("x").noconvert(),
        py::arg("weights").noconvert(), py::arg("labels").noconvert(), py::arg("n_clusters"),
        "cluster_directions through the GPU code on the CPU (tests only).");
  m.def("_finch_levels_exec", &finch_levels_exec, py::arg("x").noconvert(), py::arg("kappa0"),
        py::arg("stop_at"), py::arg("first_nn"),
        "FINCH's level loop through the GPU code on the CPU: (labels (n, P), counts (P,)) "
        "(tests only).");
  m.def("_closest_pairs_exec", &closest_pairs_exec, py::arg("x").noconvert(),
        py::arg("labels_a").noconvert(), py::arg("labels_b").noconvert(),
        py::arg("region").noconvert(), py::arg("fused") = py::none(),
        py::arg("batch") = aas::closest_exec::kBatchItems,
        "closest_inconsistent_pairs through the GPU code on the CPU: (pairs (m, 2), via (m,)) "
        "(tests only).");
  m.def("_closest_pairs_fused", &aas::closest_pairs_fused,
        "Whether the CPU closest-pair search fuses its multiply-adds (AVX2+FMA).");
}

}  // namespace aas_py
