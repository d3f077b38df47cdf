// Bindings of the AAS sampling kernels (regions, medoids, closest pairs).
#include "aas/sampling.hpp"

#include "bindings.hpp"

namespace aas_py {
namespace {

void check_same_length(const CArray<std::int64_t>& a, py::ssize_t n, const char* name) {
  check_ndim(a, 1, name);
  if (a.shape(0) != n)
    throw std::invalid_argument(std::string(name) + " must have " + std::to_string(n) +
                                " entries; got " + std::to_string(a.shape(0)));
}

py::tuple uncertainty_regions(const CArray<std::int64_t>& labels_a,
                              const CArray<std::int64_t>& labels_b) {
  check_ndim(labels_a, 1, "labels_a");
  const auto n = labels_a.shape(0);
  check_same_length(labels_b, n, "labels_b");
  CArray<std::int64_t> region({n});
  std::int64_t* out = region.mutable_data();
  std::int64_t n_regions = 0;
  {
    py::gil_scoped_release release;
    n_regions = aas::uncertainty_regions(labels_a.data(), labels_b.data(), n, out);
  }
  return py::make_tuple(region, n_regions);
}

CArray<std::int64_t> region_medoids(const CArray<float>& x, const CArray<std::int64_t>& region,
                                    std::int64_t n_regions, int n_threads) {
  check_ndim(x, 2, "x");
  check_same_length(region, x.shape(0), "region");
  if (n_regions < 0) throw std::invalid_argument("n_regions must be >= 0");
  CArray<std::int64_t> medoids({static_cast<py::ssize_t>(n_regions)});
  std::int64_t* out = medoids.mutable_data();
  {
    py::gil_scoped_release release;
    aas::region_medoids(x.data(), x.shape(0), x.shape(1), region.data(), n_regions, out, n_threads);
  }
  return medoids;
}

py::tuple closest_inconsistent_pairs(const CArray<float>& x, const CArray<std::int64_t>& labels_a,
                                     const CArray<std::int64_t>& labels_b,
                                     const CArray<std::int64_t>& region, int n_threads) {
  check_ndim(x, 2, "x");
  const auto n = x.shape(0);
  check_same_length(labels_a, n, "labels_a");
  check_same_length(labels_b, n, "labels_b");
  check_same_length(region, n, "region");
  std::vector<std::int64_t> pairs;
  std::vector<std::int8_t> via;
  {
    py::gil_scoped_release release;
    aas::closest_inconsistent_pairs(x.data(), n, x.shape(1), labels_a.data(), labels_b.data(),
                                    region.data(), n_threads, pairs, via);
  }
  const auto m = static_cast<py::ssize_t>(via.size());
  return py::make_tuple(to_numpy(std::move(pairs)).reshape({m, py::ssize_t{2}}),
                        to_numpy(std::move(via)));
}

CArray<std::int64_t> closest_cluster_pairs(const CArray<float>& x, const CArray<std::int64_t>& starts,
                                           const CArray<std::int64_t>& rows,
                                           const CArray<std::int64_t>& pairs, int n_threads) {
  check_ndim(x, 2, "x");
  check_ndim(starts, 1, "starts");
  check_ndim(rows, 1, "rows");
  check_ndim(pairs, 2, "pairs");
  if (pairs.shape(1) != 2) throw std::invalid_argument("pairs must have shape (m, 2)");
  if (starts.shape(0) < 1) throw std::invalid_argument("starts must hold n_clusters + 1 >= 1 entries");
  const auto n_clusters = starts.shape(0) - 1;
  if (starts.at(n_clusters) != rows.shape(0))
    throw std::invalid_argument("starts must end at len(rows) = " + std::to_string(rows.shape(0)));
  const auto m = pairs.shape(0);
  CArray<std::int64_t> out({m, py::ssize_t{2}});
  std::int64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    aas::closest_cluster_pairs(x.data(), x.shape(0), x.shape(1), starts.data(), rows.data(),
                               n_clusters, pairs.data(), m, n_threads, o);
  }
  return out;
}

void check_csr(const CArray<std::int64_t>& indptr, const CArray<std::int32_t>& indices,
               const CArray<float>& data) {
  check_ndim(indptr, 1, "indptr");
  check_ndim(indices, 1, "indices");
  check_ndim(data, 1, "data");
  if (indptr.shape(0) < 1) throw std::invalid_argument("indptr must hold n + 1 >= 1 entries");
  const auto nnz = indptr.at(indptr.shape(0) - 1);
  if (indices.shape(0) != data.shape(0) || nnz < 0 || nnz > indices.shape(0))
    throw std::invalid_argument("indptr, indices and data do not describe a CSR graph");
}

CArray<std::int64_t> stored_pairs_within(const CArray<std::int64_t>& indptr,
                                         const CArray<std::int32_t>& indices,
                                         const CArray<float>& data,
                                         const CArray<std::int64_t>& points,
                                         double min_similarity) {
  check_csr(indptr, indices, data);
  check_ndim(points, 1, "points");
  std::vector<std::int64_t> pairs;
  {
    py::gil_scoped_release release;
    aas::stored_pairs_within(indptr.data(), indices.data(), data.data(), indptr.shape(0) - 1,
                             points.data(), points.shape(0), min_similarity, pairs);
  }
  const auto m = static_cast<py::ssize_t>(pairs.size() / 2);
  return to_numpy(std::move(pairs)).reshape({m, py::ssize_t{2}});
}

py::tuple csr_lookup(const CArray<std::int64_t>& indptr, const CArray<std::int32_t>& indices,
                     const CArray<float>& data, const CArray<std::int64_t>& pairs, int n_threads) {
  check_csr(indptr, indices, data);
  check_ndim(pairs, 2, "pairs");
  if (pairs.shape(1) != 2) throw std::invalid_argument("pairs must have shape (m, 2)");
  const auto m = pairs.shape(0);
  py::array_t<bool> found({m});
  CArray<float> value({m});
  static_assert(sizeof(bool) == sizeof(std::uint8_t), "bool must be one byte");
  auto* of = reinterpret_cast<std::uint8_t*>(found.mutable_data());
  float* ov = value.mutable_data();
  {
    py::gil_scoped_release release;
    aas::csr_lookup(indptr.data(), indices.data(), data.data(), indptr.shape(0) - 1, pairs.data(),
                    m, of, ov, n_threads);
  }
  return py::make_tuple(found, value);
}

}  // namespace

void register_sampling(py::module_& m) {
  m.def("uncertainty_regions", &uncertainty_regions, py::arg("labels_a").noconvert(),
        py::arg("labels_b").noconvert(),
        "Regions of uncertainty of two clusterings (labels >= 0, outliers made singletons): "
        "(region (n,) int64, -1 = none, numbered by smallest member; number of regions).");
  m.def("region_medoids", &region_medoids, py::arg("x").noconvert(), py::arg("region").noconvert(),
        py::arg("n_regions"), py::arg("n_threads"),
        "Medoid of every region: the member with the largest dot product with the region's "
        "sum (float64), ties to the smaller index; (n_regions,) int64.");
  m.def("closest_inconsistent_pairs", &closest_inconsistent_pairs, py::arg("x").noconvert(),
        py::arg("labels_a").noconvert(), py::arg("labels_b").noconvert(),
        py::arg("region").noconvert(), py::arg("n_threads"),
        "U_us: exact closest pairs of cluster pairs inside regions, kept when inconsistent: "
        "(pairs (m, 2) int64 i < j sorted, via (m,) int8: 0 = A-clusters, 1 = B-clusters).");
  m.def("closest_cluster_pairs", &closest_cluster_pairs, py::arg("x").noconvert(),
        py::arg("starts").noconvert(), py::arg("rows").noconvert(), py::arg("pairs").noconvert(),
        py::arg("n_threads"),
        "Exact closest pair (u in c1, v in c2; ties to the smallest u, then v) of each given "
        "cluster pair (c1, c2); cluster c's rows are rows[starts[c]:starts[c + 1]]: (m, 2) int64.");
  m.def("stored_pairs_within", &stored_pairs_within, py::arg("indptr").noconvert(),
        py::arg("indices").noconvert(), py::arg("data").noconvert(), py::arg("points").noconvert(),
        py::arg("min_similarity"),
        "Stored CSR entries (i, j), i < j, both in points, with 1 - D[i, j] >= min_similarity: "
        "(m, 2) int64, sorted.");
  m.def("csr_lookup", &csr_lookup, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
        py::arg("data").noconvert(), py::arg("pairs").noconvert(), py::arg("n_threads"),
        "D[i, j] for (m, 2) pairs of a CSR graph with sorted rows: (found (m,) bool, "
        "value (m,) float32, 1 where absent).");
}

}  // namespace aas_py
