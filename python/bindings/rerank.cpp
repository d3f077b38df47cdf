#include "aas/rerank.hpp"

#include <pybind11/stl.h>

#include <optional>
#include <utility>

#include "bindings.hpp"

namespace aas_py {
namespace {

// Checks the graph arrays; returns the features' pointer and width (null, 0 without).
std::pair<const float*, std::int64_t> graph_inputs(const CArray<std::int64_t>& rank,
                                                   const CArray<float>& sims,
                                                   const std::optional<CArray<float>>& features) {
  check_ndim(rank, 2, "rank");
  check_ndim(sims, 2, "sims");
  if (sims.shape(0) != rank.shape(0) || sims.shape(1) != rank.shape(1))
    throw std::invalid_argument("rank and sims must have the same shape");
  if (!features) return {nullptr, 0};
  check_ndim(*features, 2, "features");
  if (features->shape(0) != rank.shape(0))
    throw std::invalid_argument("features must have one row per graph row");
  return {features->data(), features->shape(1)};
}

py::tuple csr_tuple(aas::CsrF32&& out) {
  return py::make_tuple(to_numpy(std::move(out.indptr)), to_numpy(std::move(out.indices)),
                        to_numpy(std::move(out.data)));
}

py::tuple jaccard(const CArray<std::int64_t>& rank, const CArray<float>& sims,
                  std::optional<CArray<float>> features, int k1, int k2, double max_distance,
                  int n_threads) {
  const auto [f, d] = graph_inputs(rank, sims, features);
  aas::CsrF32 out;
  {
    py::gil_scoped_release release;
    aas::k_reciprocal_jaccard(rank.data(), sims.data(), rank.shape(0), rank.shape(1), f, d, k1, k2,
                              max_distance, n_threads, out);
  }
  return csr_tuple(std::move(out));
}

py::tuple jaccard_emulated(const CArray<std::int64_t>& rank, const CArray<float>& sims,
                           std::optional<CArray<float>> features, int k1, int k2,
                           double max_distance, std::int64_t pair_budget) {
  const auto [f, d] = graph_inputs(rank, sims, features);
  aas::CsrF32 out;
  {
    py::gil_scoped_release release;
    aas::k_reciprocal_jaccard_emulated(rank.data(), sims.data(), rank.shape(0), rank.shape(1), f,
                                       d, k1, k2, max_distance, pair_budget, out);
  }
  return csr_tuple(std::move(out));
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
