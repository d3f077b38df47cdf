// aas_core._cuda: the CUDA kernels for Python. Importable without a GPU (the CUDA
// runtime is linked statically and looks for the driver only when called):
// device_count() is then 0 and every kernel call raises RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"  // CArray, to_numpy: the _core bindings' helpers
#include "device_input_cuda.hpp"
#include "jaccard_cuda.hpp"
#include "knn_cuda.hpp"
#include "closest_cuda.hpp"
#include "finch_cuda.hpp"

namespace py = pybind11;
using aas_py::CArray;
using aas_py::to_numpy;
using aas::cuda::index_t;

namespace {

// ---- the kNN from host rows ------------------------------------------------------------
using HostRows = py::array_t<float, py::array::c_style | py::array::forcecast>;

// aas::cuda::knn_graph over host rows: (idx, sims, rows recomputed in fp32).
py::tuple knn_host(const HostRows& X, index_t k, bool include_self, index_t block, int bits,
                   index_t cand_cap, index_t resident_rows) {
  if (X.ndim() != 2) throw std::invalid_argument("_cuda.knn_graph: X must be 2-D");
  const index_t n = X.shape(0), d = X.shape(1);
  py::array_t<index_t> idx({n, k});
  py::array_t<float> sims({n, k});
  const float* x = X.data();
  index_t* oi = idx.mutable_data();
  float* os = sims.mutable_data();
  index_t fallback = 0;
  {
    py::gil_scoped_release release;
    aas::cuda::knn_graph(x, n, d, k, include_self, oi, os, block, bits, cand_cap, &fallback,
                         resident_rows);
  }
  return py::make_tuple(idx, sims, fallback);
}

// ---- the Jaccard step ----------------------------------------------------------------
py::tuple jaccard(py::array_t<std::int64_t, py::array::c_style | py::array::forcecast> rank,
                  py::array_t<float, py::array::c_style | py::array::forcecast> sims,
                  std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>> f,
                  int k1, int k2, double max_distance, index_t pair_budget) {
  if (rank.ndim() != 2 || sims.ndim() != 2 || sims.shape(0) != rank.shape(0) ||
      sims.shape(1) != rank.shape(1))
    throw std::invalid_argument("_cuda.k_reciprocal_jaccard: rank and sims must be (n, width)");
  if (f && (f->ndim() != 2 || f->shape(0) != rank.shape(0)))
    throw std::invalid_argument("_cuda.k_reciprocal_jaccard: features must be (n, d)");
  aas::CsrF32 out;
  const std::int64_t* r = rank.data();
  const float* s = sims.data();
  const float* x = f ? f->data() : nullptr;
  const index_t n = rank.shape(0), width = rank.shape(1), d = f ? f->shape(1) : 0;
  {
    py::gil_scoped_release release;
    aas::cuda::k_reciprocal_jaccard(r, s, n, width, x, d, k1, k2, max_distance, pair_budget,
                                    false, out);
  }
  return py::make_tuple(to_numpy(std::move(out.indptr)), to_numpy(std::move(out.indices)),
                        to_numpy(std::move(out.data)));
}

}  // namespace

// ---- FINCH and the U_us closest pairs ---------------------------------------------------
namespace finch_closest {

void check_1d(const py::array& a, py::ssize_t n, const char* what) {
  if (a.ndim() != 1 || a.shape(0) != n)
    throw std::invalid_argument(std::string(what) + " must be (" + std::to_string(n) + ",)");
}

void register_all(py::module_& m) {
  m.def(
      "finch_link",
      [](const CArray<index_t>& kappa) {
        if (kappa.ndim() != 1) throw std::invalid_argument("_cuda.finch_link: kappa must be 1-D");
        const index_t n = kappa.shape(0);
        py::array_t<index_t> labels(n);
        index_t count = 0;
        const index_t* k = kappa.data();
        index_t* out = labels.mutable_data();
        {
          py::gil_scoped_release release;
          count = aas::cuda::finch_link(k, n, out);
        }
        return py::make_tuple(labels, count);
      },
      py::arg("kappa").noconvert(), "finch_link on the GPU: (labels (n,), n_clusters)");
  m.def(
      "cluster_directions",
      [](const CArray<float>& x, const CArray<double>& weights, const CArray<index_t>& labels,
         index_t n_clusters) {
        if (x.ndim() != 2) throw std::invalid_argument("_cuda.cluster_directions: x must be 2-D");
        const index_t n = x.shape(0), d = x.shape(1);
        check_1d(weights, n, "_cuda.cluster_directions: weights");
        check_1d(labels, n, "_cuda.cluster_directions: labels");
        if (n_clusters < 0) throw std::invalid_argument("n_clusters must be >= 0");
        py::array_t<float> dirs({n_clusters, d});
        py::array_t<double> norms(n_clusters);
        const float* px = x.data();
        const double* pw = weights.data();
        const index_t* pl = labels.data();
        float* od = dirs.mutable_data();
        double* on = norms.mutable_data();
        {
          py::gil_scoped_release release;
          aas::cuda::cluster_directions(px, pw, n, d, pl, n_clusters, od, on);
        }
        return py::make_tuple(dirs, norms);
      },
      py::arg("x").noconvert(), py::arg("weights").noconvert(), py::arg("labels").noconvert(),
      py::arg("n_clusters"), "cluster_directions on the GPU: (dirs (C, d), norms (C,))");
  m.def(
      "finch",
      [](const CArray<float>& X, std::optional<CArray<index_t>> kappa0, index_t stop_at,
         index_t block) {
        if (X.ndim() != 2) throw std::invalid_argument("_cuda.finch: X must be 2-D");
        const index_t n = X.shape(0), d = X.shape(1);
        if (kappa0) check_1d(*kappa0, n, "_cuda.finch: kappa0");
        std::vector<index_t> labels, counts;
        const float* px = X.data();
        const index_t* k0 = kappa0 ? kappa0->data() : nullptr;
        {
          py::gil_scoped_release release;
          aas::cuda::finch_levels(px, n, d, k0, stop_at, block, labels, counts);
        }
        const auto p = static_cast<py::ssize_t>(counts.size());
        return py::make_tuple(to_numpy(std::move(labels)).reshape({static_cast<py::ssize_t>(n), p}),
                              to_numpy(std::move(counts)));
      },
      py::arg("X").noconvert(), py::arg("kappa0") = py::none(), py::arg("stop_at") = 0,
      py::arg("block") = 4096,
      "Every FINCH level on the GPU: (labels (n, P), counts (P,)); kappa0: level-0 first "
      "neighbours when known; stop_at: 0 for none");
  m.def(
      "closest_inconsistent_pairs",
      [](const CArray<float>& x, const CArray<index_t>& labels_a, const CArray<index_t>& labels_b,
         const CArray<index_t>& region, bool fused) {
        if (x.ndim() != 2)
          throw std::invalid_argument("_cuda.closest_inconsistent_pairs: x must be 2-D");
        const index_t n = x.shape(0), d = x.shape(1);
        check_1d(labels_a, n, "_cuda.closest_inconsistent_pairs: labels_a");
        check_1d(labels_b, n, "_cuda.closest_inconsistent_pairs: labels_b");
        check_1d(region, n, "_cuda.closest_inconsistent_pairs: region");
        std::vector<index_t> pairs;
        std::vector<std::int8_t> via;
        const float* px = x.data();
        const index_t *a = labels_a.data(), *b = labels_b.data(), *r = region.data();
        {
          py::gil_scoped_release release;
          aas::cuda::closest_inconsistent_pairs(px, n, d, a, b, r, fused, pairs, via);
        }
        const auto m_pairs = static_cast<py::ssize_t>(via.size());
        return py::make_tuple(to_numpy(std::move(pairs)).reshape({m_pairs, py::ssize_t{2}}), to_numpy(std::move(via)));
      },
      py::arg("x").noconvert(), py::arg("labels_a").noconvert(), py::arg("labels_b").noconvert(),
      py::arg("region").noconvert(), py::arg("fused"),
      "U_us closest pairs on the GPU: (pairs (m, 2), via (m,)); fused: the CPU's rounding "
      "(_core._closest_pairs_fused())");
}

}  // namespace finch_closest

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "CUDA kernels of aas-core (see aas_core.gpu)";
  finch_closest::register_all(m);
  m.def("device_count", &aas::cuda::device_count, "CUDA devices visible (0 without GPU/driver)");
  m.def("k_reciprocal_jaccard", &jaccard, py::arg("rank"), py::arg("sims"),
        py::arg("features").none(true), py::arg("k1"), py::arg("k2"), py::arg("max_distance"),
        py::arg("pair_budget") = index_t{1} << 27,
        "SpCL's k-reciprocal Jaccard distance on the GPU; CSR (indptr, indices, data).");
  m.def(
      "knn_graph",
      [](const HostRows& X, index_t k, bool include_self, index_t block, index_t resident_rows) {
        py::tuple r = knn_host(X, k, include_self, block, 24, 0, resident_rows);
        return py::make_tuple(r[0], r[1]);
      },
      py::arg("X"), py::arg("k"), py::arg("include_self") = true, py::arg("block") = 4096,
      py::arg("resident_rows") = 0,
      "exact fp32 kNN; resident_rows < n streams X from the host (0: from the free memory)");
  m.def("resident_rows_for", &aas::cuda::resident_rows_for, py::arg("n"), py::arg("d"),
        py::arg("k"), py::arg("block"), py::arg("free_bytes"),
        "rows of X knn_graph keeps on the device given free_bytes (n: no streaming)");
  m.def(
      "knn_graph_precision",
      [](const HostRows& X, index_t k, bool include_self, int bits, index_t cand_cap,
         index_t block) { return knn_host(X, k, include_self, block, bits, cand_cap, 0); },
      py::arg("X"), py::arg("k"), py::arg("include_self"), py::arg("bits"),
      py::arg("cand_cap") = 0, py::arg("block") = 4096,
      "knn_graph from bf16 (bits 8) or tf32 (bits 11) candidates, re-ranked and certified "
      "in fp32 (the fp32 result); returns (idx, sims, rows recomputed in fp32)");

  // ---- inputs in device memory (pointers from __cuda_array_interface__ / DLPack) ----
  // Pointers arrive as Python ints; aas_core.gpu checked dtype (float32), layout
  // (C-contiguous), shape and device before calling these.
  m.def("current_device", &aas::cuda::current_device, "the calling thread's CUDA device");
  m.def(
      "pointer_info",
      [](std::uintptr_t ptr) {
        static const char* kinds[] = {"host", "pinned", "device", "managed"};
        int device = -1;
        const int kind = aas::cuda::pointer_kind(reinterpret_cast<const void*>(ptr), &device);
        return py::make_tuple(kinds[kind], device);
      },
      py::arg("ptr"), "(kind, device) of a pointer: host, pinned, device or managed");
  m.def(
      "mem_info",
      [](int device) {
        std::size_t free_bytes = 0, total_bytes = 0;
        aas::cuda::mem_info(device, &free_bytes, &total_bytes);
        return py::make_tuple(free_bytes, total_bytes);
      },
      py::arg("device") = -1, "(free, total) bytes of the device (cudaMemGetInfo)");
  m.def(
      "row_norms_ptr",
      [](std::uintptr_t ptr, index_t n, index_t d, std::int64_t stream) {
        py::array_t<double> norms(n);
        double* out = norms.mutable_data();
        {
          py::gil_scoped_release release;
          aas::cuda::sync_stream(stream);
          aas::cuda::row_norms_device(reinterpret_cast<const float*>(ptr), n, d, out);
        }
        return norms;
      },
      py::arg("ptr"), py::arg("n"), py::arg("d"), py::arg("stream") = 0);
  m.def(
      "knn_graph_ptr",
      [](std::uintptr_t ptr, index_t n, index_t d, index_t k, bool include_self,
         py::object norms, index_t block, bool features, std::int64_t stream, int bits,
         index_t cand_cap) {
        using F64 = py::array_t<double, py::array::c_style>;
        const double* scale = nullptr;
        if (!norms.is_none()) {
          if (!py::isinstance<F64>(norms) || norms.cast<F64>().size() != n)
            throw std::invalid_argument("_cuda.knn_graph_ptr: norms must be (n,) float64");
          scale = norms.cast<F64>().data();
        }
        py::array_t<index_t> idx({n, k});
        py::array_t<float> sims({n, k});
        py::array_t<float> feats(features ? std::vector<py::ssize_t>{n, d}
                                          : std::vector<py::ssize_t>{0, d});
        index_t* oi = idx.mutable_data();
        float* os = sims.mutable_data();
        float* of = features ? feats.mutable_data() : nullptr;
        {
          py::gil_scoped_release release;
          aas::cuda::sync_stream(stream);
          aas::cuda::knn_graph_from_device(reinterpret_cast<const float*>(ptr), n, d, k,
                                           include_self, scale, oi, os, of, block, bits,
                                           cand_cap);
        }
        return py::make_tuple(idx, sims, features ? py::object(feats) : py::none());
      },
      py::arg("ptr"), py::arg("n"), py::arg("d"), py::arg("k"), py::arg("include_self") = true,
      py::arg("norms") = py::none(), py::arg("block") = 4096, py::arg("features") = true,
      py::arg("stream") = 0, py::arg("bits") = 24, py::arg("cand_cap") = 0,
      "knn_graph over (n, d) float32 rows at a device pointer; (idx, sims, host rows)");
  m.def(
      "to_host_ptr",
      [](std::uintptr_t ptr, index_t n, index_t d, std::int64_t stream) {
        py::array_t<float> out({n, d});
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          aas::cuda::sync_stream(stream);
          aas::cuda::rows_to_host(reinterpret_cast<const float*>(ptr), n, d, o);
        }
        return out;
      },
      py::arg("ptr"), py::arg("n"), py::arg("d"), py::arg("stream") = 0);
}
