// Shared helpers of the binding files: array aliases, shape checks and the
// hand-over of C++ vectors to numpy without a copy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace aas_py {

namespace py = pybind11;

template <class T>
using CArray = py::array_t<T, py::array::c_style>;  // used with .noconvert(): no hidden copies

/// Throws ValueError unless `a` has the given number of dimensions.
template <class A>
void check_ndim(const A& a, py::ssize_t ndim, const char* name) {
  if (a.ndim() != ndim)
    throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) +
                                "-D; got " + std::to_string(a.ndim()) + "-D");
}

/// Moves a std::vector into a 1-D numpy array that owns it (no copy).
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, {sizeof(T)}, heap->data(), owner);
}

void register_neighbors(py::module_& m);
void register_rerank(py::module_& m);
void register_cluster(py::module_& m);
void register_finch(py::module_& m);
void register_cells(py::module_& m);
void register_constrained(py::module_& m);
void register_sampling(py::module_& m);
void register_gpu_exec(py::module_& m);

}  // namespace aas_py
