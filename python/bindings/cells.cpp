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

CArray<std::uint8_t> top_k_per_group(const CArray<std::int64_t>& group, const CArray<float>& score,
                                     const CArray<std::int64_t>& tie, std::int64_t n_groups,
                                     std::int64_t k, int n_threads) {
  check_ndim(group, 1, "group");
  check_ndim(score, 1, "score");
  check_ndim(tie, 1, "tie");
  const auto m = group.shape(0);
  if (score.shape(0) != m || tie.shape(0) != m)
    throw std::invalid_argument("group, score and tie must have the same length");
  CArray<std::uint8_t> keep({m});
  std::uint8_t* out = keep.mutable_data();
  {
    py::gil_scoped_release release;
    aas::top_k_per_group(group.data(), score.data(), tie.data(), m, n_groups, k, out, n_threads);
  }
  return keep;
}

}  // namespace

void register_cells(py::module_& m) {
  m.def("pair_dots", &pair_dots, py::arg("a").noconvert(), py::arg("b").noconvert(),
        py::arg("pairs").noconvert(), py::arg("n_threads"),
        "Dot products a[i] · b[j] for every row (i, j) of pairs: (m,) float32.");
  m.def("top_k_per_group", &top_k_per_group, py::arg("group").noconvert(),
        py::arg("score").noconvert(), py::arg("tie").noconvert(), py::arg("n_groups"), py::arg("k"),
        py::arg("n_threads"),
        "uint8 mask of the k highest scores in every group (ties: smaller tie, then index).");
}

}  // namespace aas_py
