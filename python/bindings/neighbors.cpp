#include <pybind11/stl.h>

#include <optional>

#include "aas/knn.hpp"
#include "aas/knn_cpu_lp.hpp"
#include "bindings.hpp"

namespace aas_py {
namespace {

aas::TopKState state_of(CArray<float>& heap_sims, CArray<std::int64_t>& heap_idx,
                        CArray<std::int64_t>& heap_size) {
  check_ndim(heap_sims, 2, "heap_sims");
  check_ndim(heap_idx, 2, "heap_idx");
  check_ndim(heap_size, 1, "heap_size");
  const auto n = heap_sims.shape(0), cap = heap_sims.shape(1);
  if (heap_idx.shape(0) != n || heap_idx.shape(1) != cap || heap_size.shape(0) != n)
    throw std::invalid_argument("heap arrays have inconsistent shapes");
  return aas::TopKState{heap_sims.mutable_data(), heap_idx.mutable_data(), heap_size.mutable_data(),
                        n, cap};
}

void merge_tile(const CArray<float>& tile, std::int64_t row0, std::int64_t col0,
                CArray<float>& heap_sims, CArray<std::int64_t>& heap_idx,
                CArray<std::int64_t>& heap_size, int n_threads) {
  check_ndim(tile, 2, "tile");
  const aas::TopKState st = state_of(heap_sims, heap_idx, heap_size);
  py::gil_scoped_release release;
  aas::knn_merge_tile(tile.data(), tile.shape(0), tile.shape(1), row0, col0, st, n_threads);
}

void merge_rows(const CArray<float>& tile, std::int64_t row0, std::int64_t col0,
                const std::optional<CArray<std::int64_t>>& exclude, CArray<float>& heap_sims,
                CArray<std::int64_t>& heap_idx, CArray<std::int64_t>& heap_size, int n_threads) {
  check_ndim(tile, 2, "tile");
  const aas::TopKState st = state_of(heap_sims, heap_idx, heap_size);
  const std::int64_t* ex = nullptr;
  if (exclude) {
    check_ndim(*exclude, 1, "exclude");
    if (exclude->shape(0) != st.n)
      throw std::invalid_argument("exclude must have one entry per heap row");
    ex = exclude->data();
  }
  py::gil_scoped_release release;
  aas::knn_merge_rows(tile.data(), tile.shape(0), tile.shape(1), row0, col0, ex, st, n_threads);
}

void finalize(CArray<float>& heap_sims, CArray<std::int64_t>& heap_idx,
              CArray<std::int64_t>& heap_size, bool include_self, CArray<std::int64_t>& out_idx,
              CArray<float>& out_sims, int n_threads) {
  const aas::TopKState st = state_of(heap_sims, heap_idx, heap_size);
  check_ndim(out_idx, 2, "out_idx");
  check_ndim(out_sims, 2, "out_sims");
  const auto k = out_idx.shape(1);
  if (out_idx.shape(0) != st.n || out_sims.shape(0) != st.n || out_sims.shape(1) != k)
    throw std::invalid_argument("output arrays have inconsistent shapes");
  auto* oi = out_idx.mutable_data();
  auto* os = out_sims.mutable_data();
  py::gil_scoped_release release;
  aas::knn_finalize(st, include_self, k, oi, os, n_threads);
}

// The (indices, sims, fallback rows) of a kNN graph of X that `fill(n, d, idx, sims)` writes
// without the GIL (returning its fallback count): the checks and outputs every kNN entry shares.
template <class Fill>
py::tuple knn_result(const CArray<float>& X, std::int64_t k, Fill&& fill) {
  check_ndim(X, 2, "X");
  const std::int64_t n = X.shape(0), d = X.shape(1);
  if (k < 1 || k >= n) throw std::invalid_argument("need 1 <= k < n");
  py::array_t<std::int64_t> idx({n, k});
  py::array_t<float> sims({n, k});
  std::int64_t* oi = idx.mutable_data();
  float* os = sims.mutable_data();
  std::int64_t fallback = 0;
  {
    py::gil_scoped_release release;
    fallback = fill(n, d, oi, os);
  }
  return py::make_tuple(idx, sims, fallback);
}

py::tuple knn_emulated(const CArray<float>& X, std::int64_t k, bool include_self, int bits,
                       std::int64_t cand_cap, int input_bits) {
  return knn_result(X, k, [&](std::int64_t n, std::int64_t d, std::int64_t* oi, float* os) {
    if (bits == 24) {
      aas::knn_fp32_emulated(X.data(), n, d, k, include_self, oi, os);
      return std::int64_t{0};
    }
    return aas::knn_low_precision_emulated(X.data(), n, d, k, include_self, bits, cand_cap, oi,
                                           os, input_bits);
  });
}

py::array_t<float> tile_emulated(const CArray<float>& A, const CArray<float>& B, bool reference) {
  check_ndim(A, 2, "A");
  check_ndim(B, 2, "B");
  if (A.shape(1) != B.shape(1)) throw std::invalid_argument("A and B need the same width");
  const std::int64_t rows = A.shape(0), cols = B.shape(0), d = A.shape(1);
  py::array_t<float> C({rows, cols});
  float* c = C.mutable_data();
  {
    py::gil_scoped_release release;
    if (reference)
      aas::dot_fma_matrix(A.data(), rows, B.data(), cols, d, c);
    else
      aas::similarity_tile_emulated(A.data(), rows, B.data(), cols, d, c);
  }
  return C;
}

py::array_t<float> lp_tile(const CArray<float>& Xr, std::int64_t r0, std::int64_t c0,
                           std::int64_t rows, std::int64_t cols) {
  check_ndim(Xr, 2, "Xr");
  py::array_t<float> C({rows, cols});
  float* c = C.mutable_data();
  {
    py::gil_scoped_release release;
    aas::lp_tile_emulated(Xr.data(), Xr.shape(0), Xr.shape(1), r0, c0, rows, cols, c);
  }
  return C;
}

aas::Bf16Kernel bf16_kernel(const std::string& kernel) {
  if (kernel == "avx512") return aas::Bf16Kernel::avx512;
  if (kernel == "amx") return aas::Bf16Kernel::amx;
  if (kernel == "amx_emulated") return aas::Bf16Kernel::amx_emulated;
  if (kernel == "portable") return aas::Bf16Kernel::portable;
  throw std::invalid_argument("kernel must be 'avx512', 'amx', 'amx_emulated' or 'portable'");
}

py::tuple knn_bf16(const CArray<float>& X, std::int64_t k, bool include_self,
                   std::int64_t cand_cap, const std::string& kernel, bool force_fallback,
                   int n_threads) {
  const aas::Bf16Kernel which = bf16_kernel(kernel);
  std::int64_t full = 0;
  const py::tuple r =
      knn_result(X, k, [&](std::int64_t n, std::int64_t d, std::int64_t* oi, float* os) {
        return aas::knn_bf16_cpu(X.data(), n, d, k, include_self, cand_cap, which,
                                 force_fallback, n_threads, oi, os, &full);
      });
  return py::make_tuple(r[0], r[1], r[2], full);
}

py::tuple knn_fp32_rerank(const CArray<float>& X, std::int64_t k, bool include_self,
                          CArray<float>& heap_sims, CArray<std::int64_t>& heap_idx,
                          CArray<std::int64_t>& heap_size, bool force_fallback, int n_threads) {
  const aas::TopKState st = state_of(heap_sims, heap_idx, heap_size);
  return knn_result(X, k, [&](std::int64_t n, std::int64_t d, std::int64_t* oi, float* os) {
    return aas::knn_fp32_rerank_cpu(X.data(), n, d, k, include_self, st, force_fallback,
                                    n_threads, oi, os);
  });
}

py::array_t<float> bf16_tile(const CArray<float>& A, const CArray<float>& B,
                             const std::string& kernel) {
  check_ndim(A, 2, "A");
  check_ndim(B, 2, "B");
  if (A.shape(1) != B.shape(1)) throw std::invalid_argument("A and B need the same width");
  const aas::Bf16Kernel which = bf16_kernel(kernel);
  const std::int64_t rows = A.shape(0), cols = B.shape(0), d = A.shape(1);
  py::array_t<float> C({rows, cols});
  float* c = C.mutable_data();
  {
    py::gil_scoped_release release;
    aas::bf16_similarity_tile(A.data(), rows, B.data(), cols, d, which, c);
  }
  return C;
}

}  // namespace

void register_neighbors(py::module_& m) {
  m.def("knn_merge_tile", &merge_tile, py::arg("tile").noconvert(), py::arg("row0"),
        py::arg("col0"), py::arg("heap_sims").noconvert(), py::arg("heap_idx").noconvert(),
        py::arg("heap_size").noconvert(), py::arg("n_threads"),
        "Merge one similarity tile (upper-triangle tiles only) into the running top-k heaps.");
  m.def("knn_merge_rows", &merge_rows, py::arg("tile").noconvert(), py::arg("row0"),
        py::arg("col0"), py::arg("exclude").noconvert().none(true),
        py::arg("heap_sims").noconvert(), py::arg("heap_idx").noconvert(),
        py::arg("heap_size").noconvert(), py::arg("n_threads"),
        "Merge one query × database similarity tile into the heaps of its query rows only; "
        "exclude[i] (or None) is a database row never offered to query i.");
  m.def("knn_finalize", &finalize, py::arg("heap_sims").noconvert(),
        py::arg("heap_idx").noconvert(), py::arg("heap_size").noconvert(), py::arg("include_self"),
        py::arg("out_idx").noconvert(), py::arg("out_sims").noconvert(), py::arg("n_threads"),
        "Sort the heaps into the final (n, k) graph.");
  m.def("_similarity_tile_emulated", &tile_emulated, py::arg("A").noconvert(),
        py::arg("B").noconvert(), py::arg("reference") = false,
        "Tests only: the GPU's fp32 tile kernel on the host (reference=True: dot_fma).");
  m.def("_lp_tile_emulated", &lp_tile, py::arg("Xr").noconvert(), py::arg("r0"), py::arg("c0"),
        py::arg("rows"), py::arg("cols"),
        "Tests only: the GPU's tensor-core tile kernel on the host (fragments as arrays).");
  m.def("_knn_emulated", &knn_emulated, py::arg("X").noconvert(), py::arg("k"),
        py::arg("include_self"), py::arg("bits"), py::arg("cand_cap"), py::arg("input_bits") = 0,
        "Tests only: the GPU's exact kNN on the host; bits=24: fp32 tiles, else inputs rounded "
        "to `bits` bits, candidates, re-rank, certificate, fallback. (idx, sims, fallback rows)");
  m.def("knn_graph_bf16", &knn_bf16, py::arg("X").noconvert(), py::arg("k"),
        py::arg("include_self"), py::arg("cand_cap"), py::arg("kernel"),
        py::arg("force_fallback"), py::arg("n_threads"),
        "The exact kNN (top-k by dot_fma) through bf16 candidates on the CPU, re-ranked in fp32 "
        "and certified; kernel 'avx512' (AVX512-BF16), 'amx' (AMX tiles), 'amx_emulated' or "
        "'portable' (C++, any CPU). (idx, sims, rows the first certificate left (-1: the "
        "bound broke, all recomputed), rows recomputed from every row after the second "
        "chance)");
  m.def("knn_graph_fp32_rerank", &knn_fp32_rerank, py::arg("X").noconvert(), py::arg("k"),
        py::arg("include_self"), py::arg("heap_sims").noconvert(),
        py::arg("heap_idx").noconvert(), py::arg("heap_size").noconvert(),
        py::arg("force_fallback"), py::arg("n_threads"),
        "The exact kNN (top-k by dot_fma) from BLAS candidate heaps (knn_merge_tile's, "
        "capacity >= k): re-ranked by dot_fma, certified by the fp32 rounding bound, "
        "uncertified rows recomputed. (idx, sims, fallback rows; -1: all)");
  m.def("_bf16_tile", &bf16_tile, py::arg("A").noconvert(), py::arg("B").noconvert(),
        py::arg("kernel"), "Tests only: the CPU's bf16 similarity tile A B^T ('avx512' or "
        "'portable').");
  m.def("cpu_has_avx512_bf16", &aas::cpu_has_avx512_bf16,
        "True when this CPU and OS run the AVX512-BF16 kernel.");
  m.def("cpu_amx_ready", &aas::cpu_amx_ready,
        "True when this CPU has AMX-BF16 tiles, the OS granted them to this process and the "
        "tile kernel matched its C++ emulation (checked once).");
}

}  // namespace aas_py
