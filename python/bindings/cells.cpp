// Bindings of the cell kernels (U_os over cells).
#include "aas/cells.hpp"

#include "bindings.hpp"

namespace aas_py {
namespace {

CArray<float> pair_dots(const CArray<float>& a, const CArray<float>& b,
                        const CArray<std::int64_t>& pairs, int n_threads) {
  check_ndim(a, 2, "a");
  check_ndim(b, 2, "b");
  check_ndim(pairs, 2, "pairs");
  if (a.shape(1) != b.shape(1))
    throw std::invalid_argument("a and b must have the same number of columns; got " +
                                std::to_string(a.shape(1)) + " and " + std::to_string(b.shape(1)));
  if (pairs.shape(1) != 2)
    throw std::invalid_argument("pairs must have shape (m, 2); got (" +
                                std::to_string(pairs.shape(0)) + ", " +
                                std::to_string(pairs.shape(1)) + ")");
  const auto m = pairs.shape(0);
  CArray<float> out({m});
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    aas::pair_dots(a.data(), a.shape(0), b.data(), b.shape(0), a.shape(1), pairs.data(), m, o,
                   n_threads);
  }
  return out;
}

}  // namespace

void register_cells(py::module_& m) {
  m.def("pair_dots", &pair_dots, py::arg("a").noconvert(), py::arg("b").noconvert(),
        py::arg("pairs").noconvert(), py::arg("n_threads"),
        "Dot products a[i] · b[j] for every row (i, j) of pairs: (m,) float32.");
}

}  // namespace aas_py
