// Bindings of NP3 constrained refinement and its two solvers.
#include "aas/constrained.hpp"

#include "bindings.hpp"

namespace aas_py {
namespace {

void check_pairs(const CArray<std::int64_t>& pairs, const char* name) {
  check_ndim(pairs, 2, name);
  if (pairs.shape(1) != 2)
    throw std::invalid_argument(std::string(name) + " must have shape (m, 2); got (" +
                                std::to_string(pairs.shape(0)) + ", " +
                                std::to_string(pairs.shape(1)) + ")");
}

py::array_t<std::int64_t> np3(const CArray<std::int64_t>& labels, const CArray<float>& x,
                              const CArray<std::int64_t>& must_link,
                              const CArray<std::int64_t>& cannot_link, int n_threads) {
  check_ndim(labels, 1, "labels");
  check_ndim(x, 2, "x");
  check_pairs(must_link, "must_link");
  check_pairs(cannot_link, "cannot_link");
  if (labels.shape(0) != x.shape(0))
    throw std::invalid_argument("labels must have one entry per row of x (" +
                                std::to_string(x.shape(0)) + "); got " +
                                std::to_string(labels.shape(0)));
  const auto n = x.shape(0);
  py::array_t<std::int64_t> out({n});
  std::int64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    aas::np3(labels.data(), n, x.data(), x.shape(1), must_link.data(), must_link.shape(0),
             cannot_link.data(), cannot_link.shape(0), n_threads, o);
  }
  return out;
}

py::tuple colour_graph(std::int64_t n_nodes, const CArray<std::int64_t>& edges,
                       std::int64_t search_budget) {
  check_pairs(edges, "edges");
  if (n_nodes < 0) throw std::invalid_argument("n_nodes must be >= 0");
  std::vector<std::int64_t> colours(static_cast<std::size_t>(n_nodes));
  std::int64_t k = 0;
  {
    py::gil_scoped_release release;
    k = aas::colour_graph(n_nodes, edges.data(), edges.shape(0), search_budget, colours.data());
  }
  return py::make_tuple(to_numpy(std::move(colours)), k);
}

py::tuple linear_assignment(const CArray<double>& cost) {
  check_ndim(cost, 2, "cost");
  std::vector<std::int64_t> cols(static_cast<std::size_t>(cost.shape(0)));
  double total = 0.0;
  {
    py::gil_scoped_release release;
    total = aas::linear_assignment(cost.data(), cost.shape(0), cost.shape(1), cols.data());
  }
  return py::make_tuple(to_numpy(std::move(cols)), total);
}

py::tuple split_along_graph(const CArray<std::int64_t>& group, const CArray<std::int64_t>& seed,
                            const CArray<std::int64_t>& unions, const CArray<std::int64_t>& nbr,
                            const CArray<float>& sim) {
  check_ndim(group, 1, "group");
  check_ndim(seed, 1, "seed");
  check_pairs(unions, "unions");
  check_ndim(nbr, 2, "nbr");
  check_ndim(sim, 2, "sim");
  const auto n = group.shape(0);
  if (seed.shape(0) != n || nbr.shape(0) != n || sim.shape(0) != n || sim.shape(1) != nbr.shape(1))
    throw std::invalid_argument(
        "group, seed, nbr and sim must have one row per point, and nbr and sim one shape");
  py::array_t<std::int64_t> out_seed({n}), out_component({n});
  {
    py::gil_scoped_release release;
    aas::split_along_graph(group.data(), seed.data(), n, unions.data(), unions.shape(0),
                           nbr.data(), sim.data(), nbr.shape(1), out_seed.mutable_data(),
                           out_component.mutable_data());
  }
  return py::make_tuple(out_seed, out_component);
}

}  // namespace

void register_constrained(py::module_& m) {
  m.def("np3", &np3, py::arg("labels").noconvert(), py::arg("x").noconvert(),
        py::arg("must_link").noconvert(), py::arg("cannot_link").noconvert(), py::arg("n_threads"),
        "NP3 refinement of labels (n,) int64 with consistent must-link / cannot-link pairs "
        "(m, 2) int64 and features x (n, d) float32; returns the refined labels (n,) int64.");
  m.def("colour_graph", &colour_graph, py::arg("n_nodes"), py::arg("edges").noconvert(),
        py::arg("search_budget"),
        "Proper colouring (DSatur, exact search for <= 64 nodes within the step budget): "
        "(colours (n_nodes,) int64, number of colours).");
  m.def("split_along_graph", &split_along_graph, py::arg("group").noconvert(),
        py::arg("seed").noconvert(), py::arg("unions").noconvert(), py::arg("nbr").noconvert(),
        py::arg("sim").noconvert(),
        "Seeded Kruskal inside groups over a kNN graph (n, k): (seed of each point or -1, "
        "smallest point of its component), both (n,) int64.");
  m.def("linear_assignment", &linear_assignment, py::arg("cost").noconvert(),
        "Hungarian assignment of the rows of cost (r, c) float64, r <= c: "
        "(column of each row (r,) int64, total cost).");
}

}  // namespace aas_py
