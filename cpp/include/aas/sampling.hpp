// Kernels of Ambiguity-Aware Sampling (paper §3.1 A–C):
// regions of uncertainty between two clusterings, region medoids, and the
// exact closest pair between clusters inside a region.
//
// Labels here are the caller's clusterings with every outlier already made its
// own singleton cluster, so they are all >= 0 (any values: they are compacted
// internally, keeping their order).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "aas/common.hpp"

namespace aas {

/// Regions of uncertainty (paper §3.1 A).
/// labels_a, labels_b: (n,) int64 >= 0, clusterings A and B.
/// Clusters of A and of B are the nodes of a bipartite graph with an edge
/// where their IoU is in (0, 1); a region is a connected component with at
/// least one edge and its points are the union of its clusters. A point whose
/// A-cluster and B-cluster are the same set (IoU = 1) is in no region.
/// out_region: (n,) int64, the region of every point, -1 for none, regions
/// numbered 0.. in order of their smallest member. Returns the number of
/// regions. O(n) (union-find over the contingency table) when the label
/// values are below 4n + 1024, O(n log n) otherwise.
index_t uncertainty_regions(const index_t* labels_a, const index_t* labels_b, index_t n,
                            index_t* out_region);

/// Medoid of every region (paper §3.1 B): the member i with the largest
/// <x_i, s - x_i>, s the region's sum, i.e. the largest summed dot product
/// with the other members, which for unit rows minimises the summed cosine
/// distance to them (the same order as <x_i, s>, without the rounding of
/// |x_i|² = 1, so equally central members tie exactly). The sum and the dot
/// products are accumulated in double over members in ascending order, so
/// the result does not depend on n_threads; ties go to the smaller index. O(n·d).
/// x: (n, d) row-major float32. region: (n,) int64 in [-1, n_regions).
/// out_medoids: (n_regions,) int64. Throws std::invalid_argument if a region
/// has no member.
void region_medoids(const float* x, index_t n, index_t d, const index_t* region, index_t n_regions,
                    index_t* out_medoids, int n_threads);

/// The closest pairs of both sides as closest_inconsistent_pairs returns them: sorted,
/// a pair found both ways listed once, as found through A (via 0; through B: 1).
void merge_closest_sides(const std::vector<std::pair<index_t, index_t>>& via_a,
                         const std::vector<std::pair<index_t, index_t>>& via_b,
                         std::vector<index_t>& out_pairs, std::vector<std::int8_t>& out_via);

/// Label values mapped to 0..c-1 keeping their order (out: (n,)); returns c.
/// Throws std::invalid_argument naming `name` on a negative label (outliers must be
/// made singletons first).
index_t compact_labels(const index_t* labels, index_t n, const char* name,
                       std::vector<index_t>& out);

/// U_us, the inconsistent closest pairs inside regions (paper Eqs. 1–3).
/// For ζ in {A, B} and every pair of distinct ζ-clusters c1 < c2 (by label
/// value) that share a cluster of the other clustering, among points inside
/// a region (region >= 0), finds the exact closest pair (u, v), u in c1,
/// v in c2, by the largest dot product; ties go to the smallest u, then the
/// smallest v. The pair is kept when u and v share the other clustering's
/// cluster (inconsistent: together in exactly one clustering). Only those
/// cluster pairs can yield an inconsistent closest pair, so the search is
/// exact and costs Σ |c1|·|c2|·d over them. Dot products are blocked
/// (register tiles, AVX2+FMA where the CPU has it) and every dot product is
/// accumulated in the same order wherever it falls in a block, so the result
/// does not depend on n_threads.
/// x: (n, d) row-major float32; labels_a, labels_b: (n,) int64 >= 0;
/// region: (n,) int64 (-1: outside every region).
/// out_pairs: 2·m entries (i, j), i < j, sorted; out_via: m entries, 0 when
/// the pair is the closest pair of two A-clusters, 1 of two B-clusters only.
void closest_inconsistent_pairs(const float* x, index_t n, index_t d, const index_t* labels_a,
                                const index_t* labels_b, const index_t* region, int n_threads,
                                std::vector<index_t>& out_pairs, std::vector<std::int8_t>& out_via);

/// The exact closest pair of each of m given cluster pairs (the merge questions
/// between nearest clusters): for pairs[k] = (c1, c2), the (u, v), u in c1 and
/// v in c2, with the largest dot product; ties go to the smallest u, then the
/// smallest v. Dot products as in closest_inconsistent_pairs (the result does
/// not depend on n_threads); costs Σ |c1|·|c2|·d.
/// x: (n, d) row-major float32. Cluster c's rows: rows[starts[c] .. starts[c + 1]),
/// starts: (n_clusters + 1,) from 0, strictly increasing (no empty cluster);
/// pairs: (m, 2) int64, two distinct clusters each. out_pairs: (m, 2) int64.
/// Throws std::invalid_argument on bad input or when x holds NaN or inf.
void closest_cluster_pairs(const float* x, index_t n, index_t d, const index_t* starts,
                           const index_t* rows, index_t n_clusters, const index_t* pairs,
                           index_t m, int n_threads, index_t* out_pairs);

/// Whether closest_inconsistent_pairs fuses its dot products (AVX2+FMA, chosen at run
/// time on this CPU); a device search must round the same way to return its pairs.
bool closest_pairs_fused();

/// Stored entries of a CSR distance graph between given points (U_os
/// candidates): every (i, j) with i < j both in `points`, D[i, j] stored in
/// row i, and 1 - D[i, j] >= min_similarity, both sides in float32 (the
/// dtype of the distances, as numpy compares them).
/// indptr: (n+1,) int64; indices: (nnz,) int32, sorted within each row;
/// data: (nnz,) float32. points: (r,) int64 in [0, n), distinct.
/// out_pairs: 2·m entries (i, j), sorted. O(Σ row lengths of the points).
void stored_pairs_within(const std::int64_t* indptr, const std::int32_t* indices, const float* data,
                         index_t n, const index_t* points, index_t r, double min_similarity,
                         std::vector<index_t>& out_pairs);

/// D[i, j] for m pairs of a CSR distance graph whose rows are sorted (binary
/// search in row i). pairs: (m, 2) int64 in [0, n). out_found: (m,) uint8, 1
/// where the entry is stored (a stored 0 is distance 0, not absent);
/// out_value: (m,) float32, the stored distance, or 1 where absent.
void csr_lookup(const std::int64_t* indptr, const std::int32_t* indices, const float* data,
                index_t n, const index_t* pairs, index_t m, std::uint8_t* out_found,
                float* out_value, int n_threads);

}  // namespace aas
