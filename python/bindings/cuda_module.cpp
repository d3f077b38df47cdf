// aas_core._cuda: the CUDA kernels for Python. Importable without a GPU (the CUDA
// runtime is linked statically and looks for the driver only when called):
// device_count() is then 0 and every kernel call raises RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "device_input_cuda.hpp"
#include "knn_cuda.hpp"

namespace py = pybind11;
using aas::cuda::index_t;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "CUDA kernels of aas-core (see aas_core.gpu)";
  m.def("device_count", &aas::cuda::device_count, "CUDA devices visible (0 without GPU/driver)");
  m.def(
      "knn_graph",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> X, index_t k,
         bool include_self, index_t block) {
        if (X.ndim() != 2) throw std::invalid_argument("_cuda.knn_graph: X must be 2-D");
        const index_t n = X.shape(0), d = X.shape(1);
        py::array_t<index_t> idx({n, k});
        py::array_t<float> sims({n, k});
        const float* x = X.data();
        index_t* oi = idx.mutable_data();
        float* os = sims.mutable_data();
        {
          py::gil_scoped_release release;
          aas::cuda::knn_graph(x, n, d, k, include_self, oi, os, block);
        }
        return py::make_tuple(idx, sims);
      },
      py::arg("X"), py::arg("k"), py::arg("include_self") = true, py::arg("block") = 4096);

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
         py::object norms, index_t block, bool features, std::int64_t stream) {
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
                                           include_self, scale, oi, os, of, block);
        }
        return py::make_tuple(idx, sims, features ? py::object(feats) : py::none());
      },
      py::arg("ptr"), py::arg("n"), py::arg("d"), py::arg("k"), py::arg("include_self") = true,
      py::arg("norms") = py::none(), py::arg("block") = 4096, py::arg("features") = true,
      py::arg("stream") = 0);
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
