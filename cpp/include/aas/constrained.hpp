// NP3: non-parametric, plug-and-play refinement of any partition with
// must-link (ML) and cannot-link (CL) pairs (paper §3.1 E and Fig. 2;
// our reading of it), and the two small solvers it needs: graph colouring
// (DSatur, exact for small graphs) and a linear assignment (Hungarian).
#pragma once

#include <cstdint>

#include "aas/common.hpp"

namespace aas {

/// Proper colouring of an undirected graph: adjacent nodes get different
/// colours, and colours are 0..k-1.
///
/// Greedy DSatur (Brélaz, CACM 1979): repeatedly colour the uncoloured node
/// with the most distinct neighbour colours (saturation), ties by the larger
/// degree (distinct neighbours), then the smaller node id, with the smallest
/// colour its neighbours do not use. It is exact on bipartite graphs, cycles
/// and wheels. When the graph has at most 64 nodes and DSatur used more
/// colours than the largest clique it found, a DSatur-ordered branch and bound
/// looks for a colouring with fewer colours for at most `search_budget` steps
/// (a step count, not a time, so the result is deterministic); it keeps the
/// best colouring found. search_budget = 0 gives plain DSatur.
/// The result depends only on the graph and the node ids: node ids are the
/// tie-breaking order, and the order and repetition of edges do not matter.
///
/// edges: (n_edges, 2) int64 row-major, node ids in [0, n_nodes), either
///   orientation, repeats allowed. out_colours: (n_nodes,) int64, filled.
/// Returns k, the number of colours (0 when n_nodes == 0). Throws
/// std::invalid_argument on an id out of range or a self-loop.
index_t colour_graph(index_t n_nodes, const index_t* edges, index_t n_edges, index_t search_budget,
                     index_t* out_colours);

/// Minimum-cost assignment of every row to a distinct column (rows <= cols):
/// the Hungarian method with potentials (Kuhn 1955, Munkres 1957; the
/// O(rows²·cols) shortest-augmenting-path form). Among optimal assignments
/// the one found depends only on the cost values and their order.
///
/// cost: (rows, cols) float64 row-major, finite. out_row_to_col: (rows,) int64,
/// distinct columns. Returns the total cost. Throws std::invalid_argument if
/// rows > cols or a cost is not finite.
double linear_assignment(const double* cost, index_t rows, index_t cols, index_t* out_row_to_col);

/// NP3 (paper §3.1 E, Fig. 2): refines `labels` so that every ML pair ends in
/// one cluster and every CL pair in two.
///
/// labels: (n,) int64, each >= -1; -1 is an outlier (its own singleton).
/// x: (n, d) float32 row-major, finite, no zero rows (checked here, for every
///   row; rows are L2-normalised on the fly, x is never written).
/// ml, cl: (n_ml, 2) and (n_cl, 2) int64 row-major pairs i != j in [0, n).
///   They must be consistent: no CL pair inside one ML transitive closure
///   (throws std::invalid_argument naming the first one otherwise).
/// out_labels: (n,) int64, filled (may not alias labels).
///
/// 1. Merge clusters joined by an ML pair (union-find over cluster ids).
/// 2. A merged cluster holding a CL pair is impure. Inside it, ML groups are
///    the ML closures, CL groups the connected components of the conflict
///    graph (ML groups as nodes, CL pairs inside the cluster as edges).
/// 3. Each CL group is coloured (colour_graph, budget kColourSearchBudget).
///    The group with the most colours (ties: more points, then the smaller
///    canonical key) opens one sub-cluster per colour. The other groups
///    follow in the same order; each maps its colour classes one-to-one to
///    sub-clusters by linear_assignment on the cosine distance between the
///    class's mean direction and the sub-cluster's (its sum so far), and the
///    matched class is then added to that sub-cluster's sum (so later groups
///    see earlier ones). A group with more colours than sub-clusters opens
///    new ones for its unmatched classes.
/// 4. Every other ML group of the cluster (unconstrained points are singleton
///    groups) moves as one unit to the sub-cluster whose mean direction has
///    the largest dot product with the unit's sum of unit rows (ties: the
///    first sub-cluster). These units do not move the centroids, so they are
///    independent of each other.
/// Canonical key: points are ordered by their feature rows, compared
/// lexicographically (row index only for identical rows); an ML group's key
/// is its first member's. All ties above follow it and every sum runs in
/// that order (in double), so the partition does not depend on the order of
/// rows or of constraint pairs, nor on n_threads.
/// Output numbering: a refined cluster made of all points of one input
/// cluster, plus possibly outliers, keeps that cluster's label; an outlier
/// touched by no constraint stays -1; every other cluster gets a fresh label
/// max(labels) + 1, + 2, ... in order of its smallest row index.
/// Cost: O(n·d / n_threads) to check x, O(n + m·α) bookkeeping, and
/// O(p·q·d) centroid work for the p points of impure clusters with q
/// sub-clusters. Throws std::invalid_argument on bad input.
void np3(const index_t* labels, index_t n, const float* x, index_t d, const index_t* ml,
         index_t n_ml, const index_t* cl, index_t n_cl, int n_threads, index_t* out_labels);

/// Splits groups of points along a similarity graph around seeds: within each
/// group, the graph's edges are taken from the most to the least similar
/// (Kruskal's order) and join two components unless they hold different
/// seeds. So every free point ends with the seed it reaches through the most
/// similar chain of neighbours (the maximin path), and two different seeds
/// never meet. Used to purify a cluster that answers split: the seeds are the
/// sub-clusters the answers fix, and the rest follows the graph rather than
/// the nearest centroid.
///
/// group: (n,) int64; points with the same value >= 0 take part together,
///   -1 takes no part (its output is -1, -1).
/// seed: (n,) int64; >= 0 a fixed seed label, -1 free.
/// unions: (n_unions, 2) int64 pairs joined before any edge (must-link groups
///   of free points); both ends must be in one group and not hold two
///   different seeds.
/// nbr, sim: (n, k) int64 / float32 row-major, a kNN graph (entries < 0 or
///   == the row are skipped); an edge joins only points of one group.
/// out_seed: (n,) the seed each point ended with, or -1 when its component
///   reached none. out_component: (n,) the smallest point index of its final
///   component (so unseeded components can be told apart).
/// Ties in similarity are broken by (smaller endpoint, larger endpoint), so
/// the result depends only on the graph. O(E log E) for the E edges inside
/// groups. Throws std::invalid_argument on bad input.
void split_along_graph(const index_t* group, const index_t* seed, index_t n, const index_t* unions,
                       index_t n_unions, const index_t* nbr, const float* sim, index_t k,
                       index_t* out_seed, index_t* out_component);

/// Branch-and-bound steps np3 allows the exact colouring of one CL group.
constexpr index_t kColourSearchBudget = 20000;

}  // namespace aas
