#include "aas/constrained.hpp"

#include <algorithm>
#include <bitset>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace aas {
namespace {

std::string pair_text(const index_t* pairs, index_t k) {
  return "(" + std::to_string(pairs[2 * k]) + ", " + std::to_string(pairs[2 * k + 1]) + ")";
}

/// Sorted, duplicate-free neighbour lists (CSR) of an undirected graph.
struct Adjacency {
  std::vector<index_t> start;  // (n + 1,)
  std::vector<index_t> nbr;
  index_t degree(index_t v) const { return start[v + 1] - start[v]; }
};

Adjacency build_adjacency(index_t n, const index_t* edges, index_t n_edges) {
  std::vector<std::pair<index_t, index_t>> arcs;
  arcs.reserve(static_cast<std::size_t>(2 * n_edges));
  for (index_t k = 0; k < n_edges; ++k) {
    const index_t a = edges[2 * k], b = edges[2 * k + 1];
    AAS_REQUIRE(a >= 0 && a < n && b >= 0 && b < n,
            "colour_graph: edge " + std::to_string(k) + " " + pair_text(edges, k) +
                " has a node outside [0, " + std::to_string(n) + ")");
    AAS_REQUIRE(a != b, "colour_graph: edge " + std::to_string(k) + " is a self-loop on node " +
                        std::to_string(a) + "; it cannot be coloured");
    arcs.emplace_back(a, b);
    arcs.emplace_back(b, a);
  }
  std::sort(arcs.begin(), arcs.end());
  arcs.erase(std::unique(arcs.begin(), arcs.end()), arcs.end());
  Adjacency g;
  g.start.assign(static_cast<std::size_t>(n) + 1, 0);
  for (const auto& a : arcs) ++g.start[a.first + 1];
  for (index_t v = 0; v < n; ++v) g.start[v + 1] += g.start[v];
  g.nbr.reserve(arcs.size());
  for (const auto& a : arcs) g.nbr.push_back(a.second);
  return g;
}

/// Greedy DSatur; returns the number of colours.
index_t dsatur(const Adjacency& g, index_t n, index_t* col) {
  // Queue key (-saturation, -degree, id): the front is the next node to colour.
  using Key = std::tuple<index_t, index_t, index_t>;
  std::set<Key> queue;
  std::vector<std::vector<index_t>> seen(static_cast<std::size_t>(n));  // sorted neighbour colours
  for (index_t v = 0; v < n; ++v) {
    col[v] = -1;
    queue.emplace(0, -g.degree(v), v);
  }
  index_t k = 0;
  while (!queue.empty()) {
    const index_t v = std::get<2>(*queue.begin());
    queue.erase(queue.begin());
    index_t c = 0;
    for (index_t s : seen[v]) {
      if (s != c) break;
      ++c;
    }
    col[v] = c;
    k = std::max(k, c + 1);
    for (index_t p = g.start[v]; p < g.start[v + 1]; ++p) {
      const index_t u = g.nbr[p];
      if (col[u] >= 0) continue;
      auto& su = seen[u];
      auto it = std::lower_bound(su.begin(), su.end(), c);
      if (it != su.end() && *it == c) continue;
      queue.erase(Key(-static_cast<index_t>(su.size()), -g.degree(u), u));
      su.insert(it, c);
      queue.emplace(-static_cast<index_t>(su.size()), -g.degree(u), u);
    }
  }
  return k;
}

/// DSatur-ordered branch and bound on a graph of at most 64 nodes (one
/// 64-bit adjacency word per node), started from a known colouring.
class ExactColouring {
 public:
  ExactColouring(const Adjacency& g, index_t n, index_t budget) : n_(static_cast<int>(n)) {
    adj_.assign(n, 0);
    deg_.resize(n);
    for (index_t v = 0; v < n; ++v) {
      for (index_t p = g.start[v]; p < g.start[v + 1]; ++p) adj_[v] |= std::uint64_t{1} << g.nbr[p];
      deg_[v] = static_cast<int>(g.degree(v));
    }
    budget_ = budget;
  }

  /// Size of a clique found greedily (nodes by degree, then id): a lower bound.
  int clique_bound() const {
    std::vector<int> order(n_);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return deg_[a] > deg_[b]; });
    std::uint64_t clique = 0;
    for (int v : order)
      if ((adj_[v] & clique) == clique) clique |= std::uint64_t{1} << v;
    return static_cast<int>(std::bitset<64>(clique).count());
  }

  /// Improves `colours` (k colours) if the search finds fewer; returns the new k.
  index_t improve(index_t* colours, index_t k) {
    lower_ = clique_bound();
    if (k <= lower_) return k;
    best_k_ = static_cast<int>(k);
    best_.assign(colours, colours + n_);
    col_.assign(n_, -1);
    classes_.assign(n_, 0);
    steps_ = 0;
    stop_ = false;
    search(0, 0);
    for (int v = 0; v < n_; ++v) colours[v] = best_[v];
    return best_k_;
  }

 private:
  void search(int n_coloured, int k_used) {
    if (stop_) return;
    if (++steps_ > budget_) {
      stop_ = true;
      return;
    }
    if (n_coloured == n_) {
      best_k_ = k_used;
      std::copy(col_.begin(), col_.end(), best_.begin());
      if (best_k_ <= lower_) stop_ = true;
      return;
    }
    int v = -1, v_sat = -1;
    std::uint64_t v_used = 0;
    for (int u = 0; u < n_; ++u) {
      if (col_[u] >= 0) continue;
      std::uint64_t used = 0;
      for (int c = 0; c < k_used; ++c)
        if (adj_[u] & classes_[c]) used |= std::uint64_t{1} << c;
      const int sat = static_cast<int>(std::bitset<64>(used).count());
      if (sat > v_sat || (sat == v_sat && deg_[u] > deg_[v])) {
        v = u;
        v_sat = sat;
        v_used = used;
      }
    }
    for (int c = 0; c <= k_used; ++c) {
      if (std::max(k_used, c + 1) >= best_k_) break;
      if ((v_used >> c) & 1) continue;
      col_[v] = c;
      classes_[c] |= std::uint64_t{1} << v;
      search(n_coloured + 1, std::max(k_used, c + 1));
      classes_[c] &= ~(std::uint64_t{1} << v);
      col_[v] = -1;
      if (stop_) return;
    }
  }

  int n_;
  std::vector<std::uint64_t> adj_;
  std::vector<int> deg_;
  index_t budget_ = 0;
  int lower_ = 0, best_k_ = 0;
  std::vector<index_t> best_, col_;
  std::vector<std::uint64_t> classes_;  // nodes of each colour
  index_t steps_ = 0;
  bool stop_ = false;
};

/// Lexicographic order of feature rows, then row index (only for identical
/// rows): an order of the points that does not depend on the row order.
std::vector<index_t> canonical_order(std::vector<index_t> points, const float* x, index_t d) {
  std::vector<std::pair<float, index_t>> keyed;
  keyed.reserve(points.size());
  for (index_t i : points) keyed.emplace_back(x[i * d], i);
  std::sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    const float* ra = x + a.second * d;
    const float* rb = x + b.second * d;
    for (index_t j = 1; j < d; ++j)
      if (ra[j] != rb[j]) return ra[j] < rb[j];
    return a.second < b.second;
  });
  for (std::size_t k = 0; k < keyed.size(); ++k) points[k] = keyed[k].second;
  return points;
}

/// 0 when the row is finite and not all zeros, 1 when it holds a NaN or
/// an inf (exponent bits all set), 2 when every entry is ±0.
inline std::uint8_t check_row(const float* row, index_t d) {
  std::uint32_t magnitude = 0, special = 0;
  for (index_t j = 0; j < d; ++j) {
    std::uint32_t u;
    std::memcpy(&u, row + j, sizeof u);
    magnitude |= u & 0x7fffffffu;
    special |= static_cast<std::uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return special ? 1 : (magnitude == 0 ? 2 : 0);
}

/// 1 / |row| in double (four partial sums: a single sum is latency-bound).
inline double inverse_norm(const float* row, index_t d) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  index_t j = 0;
  for (; j + 4 <= d; j += 4)
    for (int t = 0; t < 4; ++t) s[t] += static_cast<double>(row[j + t]) * row[j + t];
  for (; j < d; ++j) s[0] += static_cast<double>(row[j]) * row[j];
  return 1.0 / std::sqrt((s[0] + s[1]) + (s[2] + s[3]));
}

/// acc[0..d) += w · row, in double.
inline void add_row(double* acc, const float* row, double w, index_t d) {
  for (index_t j = 0; j < d; ++j) acc[j] += w * static_cast<double>(row[j]);
}

inline double dot(const double* a, const double* b, index_t d) {
  double s = 0.0;
  for (index_t j = 0; j < d; ++j) s += a[j] * b[j];
  return s;
}

inline float dot(const float* a, const float* b, index_t d) {
  float s = 0.0f;
#ifdef AAS_HAVE_OPENMP
#pragma omp simd reduction(+ : s)
#endif
  for (index_t j = 0; j < d; ++j) s += a[j] * b[j];
  return s;
}

/// Everything np3 knows about the points once the ML closures are built.
struct Groups {
  // ML groups of the constrained points, numbered in canonical order of
  // their first member; members listed in canonical order.
  std::vector<index_t> of_point;  // (n,), -1 for unconstrained points
  std::vector<index_t> start;     // (G + 1,)
  std::vector<index_t> members;
  index_t count() const { return static_cast<index_t>(start.size()) - 1; }
  index_t size(index_t g) const { return start[g + 1] - start[g]; }
};

/// Sub-clusters of one impure cluster after the CL groups are placed.
struct Split {
  index_t q = 0;           // number of sub-clusters
  std::vector<float> dir;  // (q, d) unit mean directions (zero row for a zero sum)
};

/// Steps 3-4 of np3 for one impure cluster: colours its CL groups, matches
/// them onto sub-clusters, writes sub[i] for their points and returns the
/// sub-cluster directions.
Split split_cluster(const std::vector<std::pair<index_t, index_t>>& cl_groups, const Groups& groups,
                    const float* x, index_t d, index_t* sub) {
  // Nodes: the ML groups touched by a CL pair inside the cluster, in global
  // (canonical) group order.
  std::vector<index_t> nodes;
  nodes.reserve(2 * cl_groups.size());
  for (const auto& e : cl_groups) {
    nodes.push_back(e.first);
    nodes.push_back(e.second);
  }
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  const index_t n_nodes = static_cast<index_t>(nodes.size());
  auto local = [&](index_t g) {
    return static_cast<index_t>(std::lower_bound(nodes.begin(), nodes.end(), g) - nodes.begin());
  };
  std::vector<std::pair<index_t, index_t>> edges;
  edges.reserve(cl_groups.size());
  UnionFind comp(n_nodes);
  for (const auto& e : cl_groups) {
    index_t a = local(e.first), b = local(e.second);
    if (a > b) std::swap(a, b);
    edges.emplace_back(a, b);
    comp.unite(a, b);
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());

  // CL groups = components (each has an edge), numbered by smallest node;
  // node v is number pos[v] inside its component, nodes ascending.
  std::vector<index_t> comp_of(n_nodes);
  const index_t n_comp = comp.labels(comp_of.data());
  std::vector<std::vector<index_t>> comp_nodes(n_comp), comp_edges(n_comp);
  std::vector<index_t> pos(n_nodes);
  for (index_t v = 0; v < n_nodes; ++v) {
    auto& cn = comp_nodes[comp_of[v]];
    pos[v] = static_cast<index_t>(cn.size());
    cn.push_back(v);
  }
  for (const auto& e : edges) {
    auto& ce = comp_edges[comp_of[e.first]];
    ce.push_back(pos[e.first]);
    ce.push_back(pos[e.second]);
  }
  struct Info {
    index_t colours, points, first;
  };
  std::vector<Info> info(n_comp);
  std::vector<index_t> colour(n_nodes), tmp;  // colour of each node within its CL group
  for (index_t c = 0; c < n_comp; ++c) {
    const auto& cn = comp_nodes[c];
    const index_t size = static_cast<index_t>(cn.size());
    tmp.assign(size, 0);
    const index_t k =
        colour_graph(size, comp_edges[c].data(), static_cast<index_t>(comp_edges[c].size() / 2),
                     kColourSearchBudget, tmp.data());
    index_t points = 0;
    for (index_t p = 0; p < size; ++p) {
      colour[cn[p]] = tmp[p];
      points += groups.size(nodes[cn[p]]);
    }
    info[c] = {k, points, cn.front()};
  }
  // Most colours first, then more points, then the canonically first.
  std::vector<index_t> order(n_comp);
  std::iota(order.begin(), order.end(), index_t{0});
  std::sort(order.begin(), order.end(), [&](index_t a, index_t b) {
    const Info &ia = info[a], &ib = info[b];
    if (ia.colours != ib.colours) return ia.colours > ib.colours;
    if (ia.points != ib.points) return ia.points > ib.points;
    return ia.first < ib.first;
  });

  std::vector<double> sums;  // (q, d) sub-cluster sums of unit rows
  std::vector<double> norms;
  index_t q = 0;
  std::vector<double> cls, cost;
  std::vector<index_t> node_sub(n_nodes, -1), match;
  for (index_t c : order) {
    const index_t r = info[c].colours;
    cls.assign(static_cast<std::size_t>(r * d), 0.0);
    for (index_t v : comp_nodes[c]) {
      const index_t g = nodes[v];
      double* acc = cls.data() + colour[v] * d;
      for (index_t p = groups.start[g]; p < groups.start[g + 1]; ++p) {
        const index_t i = groups.members[p];
        add_row(acc, x + i * d, inverse_norm(x + i * d, d), d);
      }
    }
    match.assign(r, -1);
    if (q == 0) {
      for (index_t k = 0; k < r; ++k) match[k] = k;
    } else {
      // Cosine distance between mean directions; padding columns (only if a
      // group had more colours than sub-clusters, which the order above
      // rules out) cost 0 and open new sub-clusters.
      const index_t cols = std::max(q, r);
      cost.assign(static_cast<std::size_t>(r * cols), 0.0);
      for (index_t k = 0; k < r; ++k) {
        const double* a = cls.data() + k * d;
        const double na = std::sqrt(dot(a, a, d));
        for (index_t j = 0; j < q; ++j) {
          const double den = na * norms[j];
          const double cosine = den > 0.0 ? dot(a, sums.data() + j * d, d) / den : 0.0;
          cost[k * cols + j] = 1.0 - cosine;
        }
      }
      linear_assignment(cost.data(), r, cols, match.data());
    }
    index_t q_new = q;
    for (index_t k = 0; k < r; ++k) {
      if (match[k] >= q) match[k] = q_new++;
    }
    if (q_new > q) {
      sums.resize(static_cast<std::size_t>(q_new * d), 0.0);
      norms.resize(q_new, 0.0);
      q = q_new;
    }
    for (index_t k = 0; k < r; ++k) {
      double* s = sums.data() + match[k] * d;
      const double* a = cls.data() + k * d;
      for (index_t j = 0; j < d; ++j) s[j] += a[j];
    }
    for (index_t k = 0; k < r; ++k) {
      const index_t j = match[k];
      norms[j] = std::sqrt(dot(sums.data() + j * d, sums.data() + j * d, d));
    }
    for (index_t v : comp_nodes[c]) node_sub[v] = match[colour[v]];
  }
  for (index_t v = 0; v < n_nodes; ++v) {
    const index_t g = nodes[v];
    for (index_t p = groups.start[g]; p < groups.start[g + 1]; ++p)
      sub[groups.members[p]] = node_sub[v];
  }
  Split out;
  out.q = q;
  out.dir.assign(static_cast<std::size_t>(q * d), 0.0f);
  for (index_t j = 0; j < q; ++j) {
    const double inv = norms[j] > 0.0 ? 1.0 / norms[j] : 0.0;
    for (index_t t = 0; t < d; ++t) out.dir[j * d + t] = static_cast<float>(sums[j * d + t] * inv);
  }
  return out;
}

void check_pairs(const index_t* pairs, index_t m, index_t n, const char* what) {
  for (index_t k = 0; k < m; ++k) {
    const index_t a = pairs[2 * k], b = pairs[2 * k + 1];
    AAS_REQUIRE(a >= 0 && a < n && b >= 0 && b < n,
            std::string("np3: ") + what + " row " + std::to_string(k) + " " + pair_text(pairs, k) +
                " has an index outside [0, " + std::to_string(n) + ")");
    AAS_REQUIRE(a != b, std::string("np3: ") + what + " row " + std::to_string(k) +
                        " pairs a point with itself");
  }
}

}  // namespace

index_t colour_graph(index_t n_nodes, const index_t* edges, index_t n_edges, index_t search_budget,
                     index_t* out_colours) {
  AAS_REQUIRE(n_nodes >= 0 && n_edges >= 0 && search_budget >= 0, "colour_graph: bad sizes");
  AAS_REQUIRE(n_edges == 0 || edges != nullptr, "colour_graph: null edges");
  AAS_REQUIRE(n_nodes == 0 || out_colours != nullptr, "colour_graph: null output");
  const Adjacency g = build_adjacency(n_nodes, edges, n_edges);
  index_t k = dsatur(g, n_nodes, out_colours);
  if (n_nodes <= 64 && search_budget > 0 && k > 2) {
    ExactColouring exact(g, n_nodes, search_budget);
    k = exact.improve(out_colours, k);
  }
  return k;
}

double linear_assignment(const double* cost, index_t rows, index_t cols, index_t* out_row_to_col) {
  AAS_REQUIRE(rows >= 0 && cols >= 0, "linear_assignment: bad sizes");
  AAS_REQUIRE(rows <= cols, "linear_assignment: needs rows <= cols; got " + std::to_string(rows) +
                            " rows and " + std::to_string(cols) + " columns");
  AAS_REQUIRE(rows == 0 || (cost != nullptr && out_row_to_col != nullptr),
          "linear_assignment: null pointer");
  for (index_t k = 0; k < rows * cols; ++k)
    AAS_REQUIRE(std::isfinite(cost[k]),
            "linear_assignment: cost entry " + std::to_string(k) + " is not finite");
  if (rows == 0) return 0.0;
  // Shortest augmenting paths with row/column potentials u, v (1-based;
  // column 0 is the virtual start). p[j]: row matched to column j.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(rows + 1, 0.0), v(cols + 1, 0.0), minv(cols + 1);
  std::vector<index_t> p(cols + 1, 0), way(cols + 1, 0);
  std::vector<char> used(cols + 1);
  for (index_t i = 1; i <= rows; ++i) {
    p[0] = i;
    index_t j0 = 0;
    std::fill(minv.begin(), minv.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const index_t i0 = p[j0];
      double delta = inf;
      index_t j1 = 0;
      for (index_t j = 1; j <= cols; ++j) {
        if (used[j]) continue;
        const double cur = cost[(i0 - 1) * cols + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (index_t j = 0; j <= cols; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const index_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  for (index_t j = 1; j <= cols; ++j)
    if (p[j] != 0) out_row_to_col[p[j] - 1] = j - 1;
  double total = 0.0;
  for (index_t i = 0; i < rows; ++i) total += cost[i * cols + out_row_to_col[i]];
  return total;
}

void np3(const index_t* labels, index_t n, const float* x, index_t d, const index_t* ml,
         index_t n_ml, const index_t* cl, index_t n_cl, int n_threads, index_t* out_labels) {
  AAS_REQUIRE(n >= 0 && d >= 1 && n_ml >= 0 && n_cl >= 0, "np3: bad sizes");
  AAS_REQUIRE(n == 0 || (labels != nullptr && x != nullptr && out_labels != nullptr),
          "np3: null pointer");
  AAS_REQUIRE((n_ml == 0 || ml != nullptr) && (n_cl == 0 || cl != nullptr), "np3: null pairs");
  AAS_REQUIRE(out_labels != labels || n == 0, "np3: out_labels must not alias labels");
  index_t max_label = -1;
  for (index_t i = 0; i < n; ++i) {
    AAS_REQUIRE(labels[i] >= -1, "np3: labels[" + std::to_string(i) + "] is " +
                                 std::to_string(labels[i]) +
                                 "; labels must be >= -1 (-1 = outlier)");
    max_label = std::max(max_label, labels[i]);
  }
  AAS_REQUIRE(max_label < std::numeric_limits<index_t>::max() - n,
          "np3: labels up to " + std::to_string(max_label) +
              " leave no room for new labels after them");
  check_pairs(ml, n_ml, n, "must-link");
  check_pairs(cl, n_cl, n, "cannot-link");

  // Every row finite and non-zero: one pass over x with integer tests on
  // the bits (they vectorise; a floating-point sum would not without
  // -ffast-math, and costs 3-4× as much here). Norms are computed later, only
  // for the rows that need one.
  std::vector<std::uint8_t> row_state(static_cast<std::size_t>(n));  // 0 ok, 1 non-finite, 2 zero
  parallel_for(n, n_threads, [&](index_t i) { row_state[i] = check_row(x + i * d, d); }, 1024);
  for (index_t i = 0; i < n; ++i) {
    AAS_REQUIRE(row_state[i] != 1,
            "np3: 'X' contains NaN or inf (first in row " + std::to_string(i) + ").");
    AAS_REQUIRE(row_state[i] != 2, "np3: row " + std::to_string(i) +
                                   " of 'X' is all zeros; cosine similarity is undefined.");
  }

  // Cluster ids 0..K-1 for the labels >= 0, then one per outlier.
  std::vector<index_t> cid(static_cast<std::size_t>(n));
  std::vector<index_t> orig;  // input label of each cluster id, -1 for outliers
  if (max_label < 4 * n + 1024) {
    std::vector<index_t> table(static_cast<std::size_t>(max_label + 1), -1);
    for (index_t i = 0; i < n; ++i)
      if (labels[i] >= 0) table[labels[i]] = 0;
    for (index_t v = 0; v <= max_label; ++v)
      if (table[v] == 0) {
        table[v] = static_cast<index_t>(orig.size());
        orig.push_back(v);
      }
    for (index_t i = 0; i < n; ++i) cid[i] = labels[i] >= 0 ? table[labels[i]] : -1;
  } else {
    for (index_t i = 0; i < n; ++i)
      if (labels[i] >= 0) orig.push_back(labels[i]);
    std::sort(orig.begin(), orig.end());
    orig.erase(std::unique(orig.begin(), orig.end()), orig.end());
    for (index_t i = 0; i < n; ++i)
      cid[i] = labels[i] >= 0
                   ? static_cast<index_t>(std::lower_bound(orig.begin(), orig.end(), labels[i]) -
                                          orig.begin())
                   : -1;
  }
  for (index_t i = 0; i < n; ++i)
    if (cid[i] < 0) {
      cid[i] = static_cast<index_t>(orig.size());
      orig.push_back(-1);
    }
  const index_t n_clusters = static_cast<index_t>(orig.size());
  std::vector<index_t> cluster_size(n_clusters, 0);
  for (index_t i = 0; i < n; ++i) ++cluster_size[cid[i]];

  // Step 1: ML closures of points, and clusters merged along ML pairs.
  std::vector<char> touched(static_cast<std::size_t>(n), 0);
  UnionFind closure(n), merged(n_clusters);
  for (index_t k = 0; k < n_ml; ++k) {
    const index_t a = ml[2 * k], b = ml[2 * k + 1];
    closure.unite(a, b);
    merged.unite(cid[a], cid[b]);
    touched[a] = touched[b] = 1;
  }
  for (index_t k = 0; k < n_cl; ++k) {
    const index_t a = cl[2 * k], b = cl[2 * k + 1];
    AAS_REQUIRE(closure.find(a) != closure.find(b),
            "np3: cannot-link row " + std::to_string(k) + " " + pair_text(cl, k) +
                " joins two points of one must-link closure; the constraints are inconsistent");
    touched[a] = touched[b] = 1;
  }
  std::vector<index_t> root(n_clusters);  // merged cluster of each cluster id
  for (index_t c = 0; c < n_clusters; ++c) root[c] = merged.find(c);

  // Step 2: impure merged clusters and the CL pairs inside each.
  std::vector<index_t> impure(n_clusters, -1);  // merged root -> impure index
  index_t n_impure = 0;
  for (index_t k = 0; k < n_cl; ++k) {
    const index_t r = root[cid[cl[2 * k]]];
    if (r == root[cid[cl[2 * k + 1]]] && impure[r] < 0) impure[r] = n_impure++;
  }

  std::vector<index_t> sub(static_cast<std::size_t>(n), -1);  // sub-cluster in its impure cluster
  std::vector<index_t> sub_offset(n_impure + 1, 0);
  if (n_impure > 0) {
    // ML groups of the constrained points, in canonical order.
    std::vector<index_t> constrained;
    for (index_t i = 0; i < n; ++i)
      if (touched[i]) constrained.push_back(i);
    constrained = canonical_order(std::move(constrained), x, d);
    Groups groups;
    groups.of_point.assign(static_cast<std::size_t>(n), -1);
    std::vector<index_t> group_of_root(static_cast<std::size_t>(n), -1);
    groups.start.assign(1, 0);
    for (index_t i : constrained) {
      index_t& g = group_of_root[closure.find(i)];
      if (g < 0) {
        g = groups.count();
        groups.start.push_back(0);
      }
      groups.of_point[i] = g;
      ++groups.start[g + 1];
    }
    const index_t n_groups = groups.count();
    for (index_t g = 0; g < n_groups; ++g) groups.start[g + 1] += groups.start[g];
    groups.members.resize(constrained.size());
    {
      std::vector<index_t> fill(groups.start.begin(), groups.start.end() - 1);
      for (index_t i : constrained) groups.members[fill[groups.of_point[i]]++] = i;
    }
    // CL pairs inside each impure cluster, as ML-group pairs.
    std::vector<std::vector<std::pair<index_t, index_t>>> inside(n_impure);
    for (index_t k = 0; k < n_cl; ++k) {
      const index_t a = cl[2 * k], b = cl[2 * k + 1];
      const index_t r = root[cid[a]];
      if (r == root[cid[b]]) inside[impure[r]].emplace_back(groups.of_point[a], groups.of_point[b]);
    }
    // Steps 3-4: colour and match the CL groups of each impure cluster.
    std::vector<Split> splits(n_impure);
    parallel_for(
        n_impure, n_threads,
        [&](index_t t) { splits[t] = split_cluster(inside[t], groups, x, d, sub.data()); }, 1);
    for (index_t t = 0; t < n_impure; ++t) sub_offset[t + 1] = sub_offset[t] + splits[t].q;

    // Step 5: the other ML groups and points of impure clusters join the
    // nearest sub-cluster as units; a unit is a point or an ML group.
    std::vector<index_t> units;  // >= 0: a point, < 0: ML group -1 - g
    std::vector<char> group_listed(n_groups, 0);
    for (index_t i = 0; i < n; ++i) {
      if (impure[root[cid[i]]] < 0 || sub[i] >= 0) continue;
      const index_t g = groups.of_point[i];
      if (g >= 0 && groups.size(g) > 1) {
        if (!group_listed[g]) units.push_back(-1 - g);
        group_listed[g] = 1;
      } else {
        units.push_back(i);
      }
    }
    parallel_for(
        static_cast<index_t>(units.size()), n_threads,
        [&](index_t u) {
          const index_t unit = units[u];
          const index_t first = unit >= 0 ? unit : groups.members[groups.start[-1 - unit]];
          const Split& s = splits[impure[root[cid[first]]]];
          index_t best = 0;
          double best_score = -std::numeric_limits<double>::infinity();
          for (index_t j = 0; j < s.q; ++j) {
            const float* dir = s.dir.data() + j * d;
            double score = 0.0;
            if (unit >= 0) {
              score = dot(x + unit * d, dir, d);
            } else {
              const index_t g = -1 - unit;
              for (index_t p = groups.start[g]; p < groups.start[g + 1]; ++p) {
                const index_t i = groups.members[p];
                score += inverse_norm(x + i * d, d) * static_cast<double>(dot(x + i * d, dir, d));
              }
            }
            if (score > best_score) {
              best_score = score;
              best = j;
            }
          }
          if (unit >= 0) {
            sub[unit] = best;
          } else {
            const index_t g = -1 - unit;
            for (index_t p = groups.start[g]; p < groups.start[g + 1]; ++p)
              sub[groups.members[p]] = best;
          }
        },
        64);
  }

  // Output numbering. Refined clusters: merged roots in [0, n_clusters), then
  // the sub-clusters of each impure cluster.
  const index_t n_final = n_clusters + sub_offset[n_impure];
  std::vector<index_t> final_id(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const index_t r = root[cid[i]];
    final_id[i] = impure[r] < 0 ? r : n_clusters + sub_offset[impure[r]] + sub[i];
  }
  // A refined cluster keeps an input label when it holds all of that
  // cluster's points and no point of another labelled cluster.
  std::vector<index_t> source(n_final, -1), n_labelled(n_final, 0);
  std::vector<char> mixed(n_final, 0);
  for (index_t i = 0; i < n; ++i) {
    const index_t f = final_id[i], c = cid[i];
    if (orig[c] < 0) continue;
    if (source[f] < 0)
      source[f] = c;
    else if (source[f] != c)
      mixed[f] = 1;
    ++n_labelled[f];
  }
  constexpr index_t kUnset = std::numeric_limits<index_t>::min();
  std::vector<index_t> out_of(n_final, kUnset);
  for (index_t f = 0; f < n_final; ++f)
    if (source[f] >= 0 && !mixed[f] && n_labelled[f] == cluster_size[source[f]])
      out_of[f] = orig[source[f]];
  index_t next = max_label + 1;
  for (index_t i = 0; i < n; ++i) {
    const index_t f = final_id[i];
    if (out_of[f] == kUnset) {
      if (orig[cid[i]] < 0 && !touched[i]) {  // an untouched outlier is its own cluster
        out_labels[i] = -1;
        continue;
      }
      out_of[f] = next++;
    }
    out_labels[i] = out_of[f];
  }
}

void split_along_graph(const index_t* group, const index_t* seed, index_t n, const index_t* unions,
                       index_t n_unions, const index_t* nbr, const float* sim, index_t k,
                       index_t* out_seed, index_t* out_component) {
  AAS_REQUIRE(n >= 0 && k >= 0 && n_unions >= 0, "split_along_graph: negative size");
  for (index_t i = 0; i < n; ++i)
    AAS_REQUIRE(group[i] >= -1 && seed[i] >= -1,
            "split_along_graph: group and seed entries must be >= -1 (row " + std::to_string(i) +
                ")");
  UnionFind uf(n);
  std::vector<index_t> label(seed, seed + n);  // a root's seed, -1 if none
  const auto join = [&](index_t a, index_t b) {
    a = uf.find(a);
    b = uf.find(b);
    if (a == b) return true;
    if (label[a] >= 0 && label[b] >= 0 && label[a] != label[b]) return false;
    const index_t s = label[a] >= 0 ? label[a] : label[b];
    uf.unite(a, b);
    label[uf.find(a)] = s;
    return true;
  };
  for (index_t u = 0; u < n_unions; ++u) {
    const index_t a = unions[2 * u], b = unions[2 * u + 1];
    AAS_REQUIRE(a >= 0 && a < n && b >= 0 && b < n,
            "split_along_graph: unions row " + std::to_string(u) + " is out of range");
    AAS_REQUIRE(group[a] >= 0 && group[a] == group[b],
            "split_along_graph: unions row " + std::to_string(u) + " joins points of two groups");
    AAS_REQUIRE(join(a, b),
            "split_along_graph: unions row " + std::to_string(u) + " joins two different seeds");
  }
  struct Edge {
    float s;
    index_t a, b;
  };
  std::vector<Edge> edges;
  for (index_t i = 0; i < n; ++i) {
    if (group[i] < 0) continue;
    for (index_t t = 0; t < k; ++t) {
      const index_t j = nbr[i * k + t];
      if (j < 0 || j == i) continue;
      AAS_REQUIRE(j < n, "split_along_graph: a neighbour index is out of range (row " +
                         std::to_string(i) + ")");
      if (group[j] != group[i]) continue;
      const float s = sim[i * k + t];
      AAS_REQUIRE(std::isfinite(s), "split_along_graph: a similarity is not finite (row " +
                                    std::to_string(i) + ")");
      edges.push_back({s, std::min(i, j), std::max(i, j)});
    }
  }
  std::sort(edges.begin(), edges.end(), [](const Edge& x, const Edge& y) {
    if (x.s != y.s) return x.s > y.s;
    if (x.a != y.a) return x.a < y.a;
    return x.b < y.b;
  });
  for (const Edge& e : edges) join(e.a, e.b);
  for (index_t i = 0; i < n; ++i) {
    if (group[i] < 0) {
      out_seed[i] = out_component[i] = -1;
      continue;
    }
    const index_t r = uf.find(i);
    out_seed[i] = label[r];
    out_component[i] = r;  // union by index: the root is the component's smallest point
  }
}

}  // namespace aas
