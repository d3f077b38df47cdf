#include "aas/rerank.hpp"

#include <pybind11/stl.h>

#include <optional>

#include "bindings.hpp"

namespace aas_py {
namespace {

py::tuple jaccard(const CArray<std::int64_t>& rank, const CArray<float>& sims,
                  std::optional<CArray<float>> features, int k1, int k2, double max_distance,
                  int n_threads) {
  check_ndim(rank, 2, "rank");
  check_ndim(sims, 2, "sims");
  if (sims.shape(0) != rank.shape(0) || sims.shape(1) != rank.shape(1))
    throw std::invalid_argument("rank and sims must have the same shape");
  const float* f = nullptr;
  std::int64_t d = 0;
  if (features) {
    check_ndim(*features, 2, "features");
    if (features->shape(0) != rank.shape(0))
      throw std::invalid_argument("features must have one row per graph row");
    f = features->data();
    d = features->shape(1);
  }
  aas::CsrF32 out;
  {
    py::gil_scoped_release release;
    aas::k_reciprocal_jaccard(rank.data(), sims.data(), rank.shape(0), rank.shape(1), f, d, k1, k2,
                              max_distance, n_threads, out);
  }
  return py::make_tuple(to_numpy(std::move(out.indptr)), to_numpy(std::move(out.indices)),
                        to_numpy(std::move(out.data)));
}

py::tuple jaccard_emulated(const CArray<std::int64_t>& rank, const CArray<float>& sims,
                           std::optional<CArray<float>> features, int k1, int k2,
                           double max_distance, std::int64_t pair_budget) {
  check_ndim(rank, 2, "rank");
  check_ndim(sims, 2, "sims");
  if (sims.shape(0) != rank.shape(0) || sims.shape(1) != rank.shape(1))
    throw std::invalid_argument("rank and sims must have the same shape");
  const float* f = nullptr;
  std::int64_t d = 0;
  if (features) {
    check_ndim(*features, 2, "features");
    if (features->shape(0) != rank.shape(0))
      throw std::invalid_argument("features must have one row per graph row");
    f = features->data();
    d = features->shape(1);
  }
  aas::CsrF32 out;
  {
    py::gil_scoped_release release;
    aas::k_reciprocal_jaccard_emulated(rank.data(), sims.data(), rank.shape(0), rank.shape(1), f,
                                       d, k1, k2, max_distance, pair_budget, out);
  }
  return py::make_tuple(to_numpy(std::move(out.indptr)), to_numpy(std::move(out.indices)),
                        to_numpy(std::move(out.data)));
}

}  // namespace

void register_rerank(py::module_& m) {
  m.def("k_reciprocal_jaccard", &jaccard, py::arg("rank").noconvert(), py::arg("sims").noconvert(),
        py::arg("features").noconvert().none(true), py::arg("k1"), py::arg("k2"),
        py::arg("max_distance"), py::arg("n_threads"),
        "SpCL's k-reciprocal Jaccard distance; returns CSR (indptr, indices, data).");
  m.def("_k_reciprocal_jaccard_emulated", &jaccard_emulated, py::arg("rank").noconvert(),
        py::arg("sims").noconvert(), py::arg("features").noconvert().none(true), py::arg("k1"),
        py::arg("k2"), py::arg("max_distance"), py::arg("pair_budget"),
        "Tests only: the GPU algorithm of k_reciprocal_jaccard run serially on the host.");
}

}  // namespace aas_py
