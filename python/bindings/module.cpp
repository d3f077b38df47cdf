// The _core extension: one registration function per area.
#include "aas/common.hpp"
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "aas-core compiled kernels (C++, OpenMP)";
  m.attr("has_openmp") = aas::has_openmp();
  aas_py::register_neighbors(m);
  aas_py::register_rerank(m);
  aas_py::register_cluster(m);
  aas_py::register_finch(m);
  aas_py::register_cells(m);
  aas_py::register_constrained(m);
  aas_py::register_sampling(m);
  aas_py::register_gpu_exec(m);
}
