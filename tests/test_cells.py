"""U_os over cells: cells, medoids, linked and nearest cell pairs vs brute force."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core.sampling.cells import cell_medoids, cells, linked_cell_pairs, nearest_cell_pairs


def unit_rows(rng, n, d=6):
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def random_graph(rng, n, density=0.3):
    dense = rng.random((n, n))
    dense = np.triu(np.where(rng.random((n, n)) < density, dense, 0), 1)
    dense = dense + dense.T
    return sp.csr_array(dense.astype(np.float32))


def test_cells_are_the_atoms_of_both_clusterings():
    a = np.array([0, 0, 0, 1, 1, 2])
    b = np.array([5, 5, 7, 7, 7, 5])
    cell, count = cells(a, b)
    assert cell.tolist() == [0, 0, 1, 2, 2, 3] and count == 4


def test_medoid_minimises_summed_cosine_distance():
    rng = np.random.default_rng(0)
    X = unit_rows(rng, 40)
    cell = rng.integers(0, 5, 40)
    _, cell = np.unique(cell, return_inverse=True)
    med, dirs = cell_medoids(X, cell, cell.max() + 1)
    for c in range(cell.max() + 1):
        m = np.flatnonzero(cell == c)
        cost = [(1 - X[m] @ X[u]).sum() for u in m]
        assert med[c] == m[int(np.argmin(cost))]
        s = X[m].sum(axis=0)
        np.testing.assert_allclose(dirs[c], s / np.linalg.norm(s), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_linked_pairs_match_brute_force(n, seed, s_min):
    rng = np.random.default_rng(seed)
    D = random_graph(rng, n)
    cell = rng.integers(0, 4, n)
    pairs, sim = linked_cell_pairs(cell, D, s_min)
    dense, stored = D.toarray(), D.toarray() > 0
    best = {}
    for i, j in itertools.combinations(range(n), 2):
        if stored[i, j] and cell[i] != cell[j] and dense[i, j] <= 1 - s_min:
            key = (min(cell[i], cell[j]), max(cell[i], cell[j]))
            if key not in best or dense[i, j] < best[key][0]:
                best[key] = (dense[i, j], i, j)
    want = sorted((i, j) for _, i, j in best.values())
    assert sorted(map(tuple, pairs.tolist())) == want
    for (i, j), s in zip(pairs.tolist(), sim):
        assert abs(s - (1 - dense[i, j])) < 1e-6 and s >= s_min - 1e-6


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 30), st.integers(0, 10_000), st.integers(1, 3))
def test_nearest_pairs_match_brute_force(n, seed, k_max):
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n)
    _, cell = np.unique(rng.integers(0, 6, n), return_inverse=True)
    nc = cell.max() + 1
    med, dirs = cell_medoids(X, cell, nc)
    k = min(3, n - 1)
    nb = aas.knn_graph(X, k, include_self=False).indices
    c = aas.PairConstraints(n=n)
    if nc > 2:  # rule out one medoid pair: it must not come back
        c.add_cannot_link([[med[0], med[1]]])
    pairs, cos = nearest_cell_pairs(cell, med, dirs, nb, c, k_max)
    adjacent = {
        (min(cell[i], cell[j]), max(cell[i], cell[j]))
        for i in range(n)
        for j in nb[i]
        if cell[i] != cell[j]
    }
    adjacent = {p for p in adjacent if not c.is_known(med[p[0]], med[p[1]])}
    want = set()
    for x in range(nc):
        mine = sorted((p for p in adjacent if x in p), key=lambda p: (-dirs[p[0]] @ dirs[p[1]], p))
        want |= set(mine[:k_max])
    want = {(min(med[p], med[q]), max(med[p], med[q])) for p, q in want}
    assert set(map(tuple, pairs.tolist())) == want
    assert not c.is_known(pairs).any() if len(pairs) else True
    assert (cos >= 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(1, 6), st.integers(0, 4), st.integers(0, 10_000))
def test_top_k_per_group_matches_a_sort(m, n_groups, k, seed):
    from aas_core import _core

    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, m)
    score = rng.integers(0, 4, m).astype(np.float32)  # many ties
    tie = rng.integers(0, 5, m)
    keep = _core.top_k_per_group(group, score, tie, n_groups, k, 2).astype(bool)
    want = np.zeros(m, bool)
    for g in range(n_groups):
        idx = [t for t in range(m) if group[t] == g]
        idx.sort(key=lambda t: (-score[t], tie[t], t))
        want[idx[:k]] = True
    np.testing.assert_array_equal(keep, want)


def test_pair_dots_and_top_k_reject_bad_indices():
    from aas_core import _core

    a = np.eye(3, dtype=np.float32)
    got = _core.pair_dots(a, a, np.array([[0, 0], [1, 2]], np.int64), 1)
    np.testing.assert_allclose(got, [1.0, 0.0])
    with pytest.raises(ValueError, match="outside the row ranges"):
        _core.pair_dots(a, a, np.array([[0, 3]], np.int64), 1)
    with pytest.raises(ValueError, match="outside"):
        _core.top_k_per_group(
            np.array([0, 5]), np.zeros(2, np.float32), np.zeros(2, np.int64), 2, 1, 1
        )
