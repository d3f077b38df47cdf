import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aas_core.constraints import FORMAT_VERSION, PairConstraints


def brute_known(n, ml, cl):
    """Closure by repeated relabelling, then the pairs each answer implies."""
    comp = list(range(n))
    changed = True
    while changed:
        changed = False
        for i, j in ml:
            a, b = comp[i], comp[j]
            if a != b:
                comp = [min(a, b) if c in (a, b) else c for c in comp]
                changed = True
    cl_closures = {frozenset((comp[i], comp[j])) for i, j in cl}
    known = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            known[i, j] = comp[i] == comp[j] or frozenset((comp[i], comp[j])) in cl_closures
    return np.array(comp), known


def test_hand_worked_closure_and_derived_cannot_links():
    c = PairConstraints(must_link=[[0, 1], [1, 2], [5, 6]], cannot_link=[[2, 3]], n=8)
    assert c.closures().tolist() == [0, 0, 0, 1, 2, 3, 3, 4]
    assert c.is_known(0, 2)  # transitive must-link
    assert c.is_known(3, 0) and c.is_known(1, 3)  # CL 2-3 extends to 2's closure
    assert not c.is_known(3, 5) and not c.is_known(4, 7)
    pairs = np.array([[0, 2], [5, 6], [6, 7], [1, 3]])
    assert c.is_known(pairs).tolist() == [True, True, False, True]
    assert c.is_consistent and len(c) == 4
    assert c.must_link.tolist() == [[0, 1], [1, 2], [5, 6]] and c.cannot_link.tolist() == [[2, 3]]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_is_known_matches_a_brute_force_closure(data):
    n = data.draw(st.integers(2, 12))
    pair = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1])
    raw = data.draw(st.lists(st.tuples(pair, st.booleans()), max_size=15))
    seen, ml, cl = set(), [], []
    for (i, j), same in raw:
        key = (min(i, j), max(i, j), same)
        if key not in seen:
            seen.add(key)
            (ml if same else cl).append((i, j))
    c = PairConstraints(must_link=ml or None, cannot_link=cl or None, n=n)
    comp, known = brute_known(n, ml, cl)
    # same closures up to renaming
    ours = c.closures()
    assert len(set(zip(ours.tolist(), comp.tolist()))) == len(set(ours.tolist()))
    assert len(set(ours.tolist())) == len(set(comp.tolist()))
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    got = c.is_known(np.stack([ii.ravel(), jj.ravel()], axis=1)).reshape(n, n)
    np.testing.assert_array_equal(got, known)
    conflict = any(comp[i] == comp[j] for i, j in cl)
    assert c.is_consistent == (not conflict)


def test_contradictions_name_the_pairs_and_keep_every_answer():
    c = PairConstraints(must_link=[[0, 1], [1, 2]])
    c.add_cannot_link([[2, 0]])
    c.add_must_link([[7, 8]])
    assert len(c) == 4  # the contradicting answer is stored, not dropped
    # the path walks from 2 to 0: answer 1 (1, 2), then answer 0 (0, 1)
    assert c.conflicts() == [{"cannot_link": 2, "must_link_path": [1, 0]}]
    with pytest.raises(ValueError, match=r"cannot-link \(2, 0\).*\(1, 2\) - \(0, 1\)"):
        c.check()
    # the opposite answer for the same pair is kept too
    c.add_cannot_link([[7, 8]])
    assert len(c.conflicts()) == 2


def test_add_in_order_and_duplicates_are_refused():
    c = PairConstraints()
    assert c.add(np.array([[3, 4], [4, 5]]), np.array([True, False])) == 2
    assert c.pairs.tolist() == [[3, 4], [4, 5]] and c.is_must_link.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"must-link pair \(4, 3\) is already stored"):
        c.add_must_link([[4, 3]])
    with pytest.raises(ValueError, match="twice in this call"):
        c.add_cannot_link([[0, 1], [1, 0]])
    assert len(c) == 2  # a refused call adds nothing


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"must_link": [[0, 0]]}, ValueError, "pairs 0 with itself"),
        ({"must_link": [[0, -1]]}, ValueError, "must be in >= 0"),
        ({"cannot_link": [[0, 5]], "n": 5}, ValueError, r"'cannot_link' row 0 is \(0, 5\)"),
        ({"must_link": [[0.0, 1.0]]}, TypeError, "integer indices"),
        ({"must_link": [0, 1]}, ValueError, r"shape \(m, 2\)"),
        ({"n": 1}, ValueError, "'n' must be an int >= 2"),
    ],
)
def test_bad_input_is_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PairConstraints(**kwargs)


def test_caller_arrays_are_not_kept_or_modified():
    ml = np.array([[1, 0], [2, 1]], dtype=np.int32)
    before = ml.copy()
    c = PairConstraints(must_link=ml)
    ml[0] = [5, 6]
    np.testing.assert_array_equal(c.must_link, before.astype(np.int64))
    out = c.pairs
    out[0] = [9, 9]
    assert c.pairs.tolist() == before.tolist()


@pytest.mark.parametrize("suffix", [".npz", ".jsonl"])
def test_save_load_round_trip(tmp_path, suffix):
    c = PairConstraints(must_link=[[0, 1]], cannot_link=[[1, 2], [3, 0]], n=10)
    c.add_must_link([[4, 5]])
    path = c.save(tmp_path / f"answers{suffix}")
    assert path.exists() and path.name == f"answers{suffix}"
    back = PairConstraints.load(path)
    assert back.n == 10
    np.testing.assert_array_equal(back.pairs, c.pairs)
    np.testing.assert_array_equal(back.is_must_link, c.is_must_link)


def test_foreign_corrupt_and_future_files_fail_clearly(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a readable constraint file"):
        PairConstraints.load(bad)
    foreign = tmp_path / "y.npz"
    with open(foreign, "wb") as f:
        np.savez(f, pairs=np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="not a readable constraint file"):
        PairConstraints.load(foreign)
    other = tmp_path / "z.jsonl"
    other.write_text(json.dumps({"format": "something-else"}) + "\n")
    with pytest.raises(ValueError, match="not an aas-core constraint file"):
        PairConstraints.load(other)
    future = tmp_path / "f.jsonl"
    meta = {"format": "aas-core/pair-constraints", "version": FORMAT_VERSION + 1, "n": None}
    future.write_text(json.dumps(meta) + "\n")
    with pytest.raises(ValueError, match="format version 2"):
        PairConstraints.load(future)
    with pytest.raises(FileNotFoundError):
        PairConstraints.load(tmp_path / "missing.npz")


def test_merge_keeps_order_and_drops_repeats():
    a = PairConstraints(must_link=[[0, 1]], cannot_link=[[1, 2]])
    b = PairConstraints(must_link=[[1, 0], [3, 4]], cannot_link=[[2, 5]])
    m = a.merge(b)
    assert m.pairs.tolist() == [[0, 1], [1, 2], [3, 4], [2, 5]]
    assert m.is_must_link.tolist() == [True, False, True, False]
    assert len(a) == 2 and len(b) == 3  # inputs untouched
    with pytest.raises(TypeError, match="'other' must be PairConstraints"):
        a.merge([[0, 1]])


def brute_contradictions(pairs, same):
    """Answer k contradicts when the closure of answers 0..k-1 implies the opposite."""
    out = []
    for k in range(len(pairs)):
        before = PairConstraints()
        if k:
            before.add(np.array(pairs[:k]), np.array(same[:k]))
        i, j = pairs[k]
        if not before.is_known(i, j):
            continue
        comp = before.closures(max(i, j) + 1)
        implied_same = bool(comp[i] == comp[j])
        if implied_same != same[k]:
            out.append((k, implied_same))
    return out


def test_contradictions_blame_the_later_answer_and_name_the_reasons():
    # 0~1, 1~2, then 0 != 2: the cannot-link contradicts the must-link path
    c = PairConstraints(must_link=[[0, 1], [1, 2]], cannot_link=[[0, 2]])
    assert c.contradictions() == [{"answer": 2, "implied_same": True, "because": [0, 1]}]
    # 0 != 3 first, then 0~1, 3~4, and 1~4 joins two closures kept apart
    c = PairConstraints()
    c.add([[0, 3], [0, 1], [3, 4], [5, 6], [1, 4]], np.array([False, True, True, True, True]))
    assert c.contradictions() == [{"answer": 4, "implied_same": False, "because": [0, 1, 2]}]
    # a consistent set has none, and a redundant repeat is no contradiction
    c = PairConstraints(must_link=[[0, 1], [1, 2], [0, 2]], cannot_link=[[2, 3], [0, 3]])
    assert c.contradictions() == [] and c.is_consistent


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_contradictions_match_a_prefix_by_prefix_check(data):
    n = data.draw(st.integers(2, 8))
    pair = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1])
    # no answer twice; the opposite answer for a stored pair may follow (both are kept)
    answer = st.tuples(pair, st.booleans())
    raw = data.draw(st.lists(answer, max_size=14, unique_by=lambda r: (min(r[0]), max(r[0]), r[1])))
    pairs = [list(p) for p, _ in raw]
    same = [s for _, s in raw]
    c = PairConstraints()
    if pairs:
        c.add(np.array(pairs), np.array(same))
    got = c.contradictions()
    assert [(g["answer"], g["implied_same"]) for g in got] == brute_contradictions(pairs, same)
    assert (not got) == c.is_consistent
    for g in got:
        # the reasons alone (earlier answers) imply what is claimed
        because = PairConstraints()
        rows = g["because"]
        assert rows and max(rows) < g["answer"]
        because.add(np.array([pairs[r] for r in rows]), np.array([same[r] for r in rows]))
        i, j = pairs[g["answer"]]
        assert because.is_known(i, j)
        comp = because.closures(n)
        assert bool(comp[i] == comp[j]) == g["implied_same"]


# ---- any index below 2**63 (no packing of two indices into one integer) -------------------


def test_large_indices_are_distinct_pairs_and_closures():
    c = PairConstraints(must_link=[[0, 2**32], [1, 2**31]])  # once "twice in this call"
    assert len(c) == 2
    assert c.is_known(0, 2**32) and c.is_known(2**31, 1)
    assert not c.is_known(0, 2**31) and not c.is_known(0, 1)
    c = PairConstraints(must_link=[[2**62, 2**63 - 1]], cannot_link=[[2**63 - 1, 5]])
    assert c.is_known(2**62, 5) and c.check() is None
    assert c.is_known(np.array([[2**62, 5], [5, 6]])).tolist() == [True, False]
    c.add_cannot_link([[2**62, 2**63 - 1]])  # contradicts the must-link
    assert c.conflicts() == [{"cannot_link": 2, "must_link_path": [0]}]
    with pytest.raises(ValueError, match="already stored"):
        c.add_must_link([[2**63 - 1, 2**62]])


def test_is_known_does_not_grow_with_the_index_value():
    # the closure used to be an array over 0..max index: 2**32 entries here
    c = PairConstraints(must_link=[[1, 2**31]])
    assert c.is_known(0, 2**32) is False
    assert c.is_known(np.array([[0, 2**40], [1, 2**31]])).tolist() == [False, True]
    with pytest.raises(ValueError, match="indices must be < 2\\*\\*63"):
        c.is_known(0, 2**63)


@pytest.mark.parametrize(
    "pairs, error, match",
    [
        ([[0, 1], [2]], ValueError, "'must_link' must be an \\(m, 2\\) array"),
        ([[0, [1]]], ValueError, "'must_link' must be an \\(m, 2\\) array"),
        ([[0, 2**64]], ValueError, "'must_link' holds an index >= 2\\*\\*63"),
        (np.array([[0, 2**63]], np.uint64), ValueError, "'must_link' holds an index >= 2\\*\\*63"),
        ([["a", "b"]], TypeError, "'must_link' must hold integer indices"),
    ],
)
def test_bad_pair_containers_name_the_argument(pairs, error, match):
    with pytest.raises(error, match=match):
        PairConstraints(must_link=pairs)
