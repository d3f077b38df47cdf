// aas_core._cuda: the CUDA kernels for Python. Importable without a GPU (the CUDA
// runtime is linked statically and looks for the driver only when called):
// device_count() is then 0 and every kernel call raises RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

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
}
