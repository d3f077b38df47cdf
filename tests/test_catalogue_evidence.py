"""What a catalogue's identities rest on (:mod:`aas_core.catalogue.evidence`): the answers and
their origins, mixed clusters dissolved by pair questions only, merge edits, splits that follow
the kNN graph only once the answers show it separates the animals, reference photos and the
verified photos."""

import sqlite3
from contextlib import closing

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core.annotate import AnnotationStore
from aas_core.catalogue import build_catalogue
from aas_core.catalogue.estimate import separation_of
from aas_core.catalogue.evidence import (
    Answers,
    must_link_components,
    read_answers,
    reference_photos,
    refine_identities,
    verified_mask,
)
from aas_core.loop import ClusterState, cluster_features
from aas_core.refine import mixed_clusters
from conftest import assert_same_partition

# ---------------------------------------------------------------- helpers


def _angles(deg):
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _clusters(X, labels, k=3):
    """A ClusterState with the given clustering (both A and B) and X's kNN graph."""
    labels = np.asarray(labels, np.int64)
    return ClusterState(X, None, labels, labels, {}, aas.knn_graph(X, k))


def _answers(n, rows, stays=None):
    """Answers from rows (i, j, same, origin[, operation]) in the order given."""
    rows = [tuple(r) + (0,) * (5 - len(r)) for r in rows]
    m = len(rows)
    return Answers(
        np.array([r[:2] for r in rows], np.int64).reshape(-1, 2),
        np.array([r[2] for r in rows], bool),
        np.array([r[3] for r in rows], object),
        np.array([r[3] if r[3] != "pair" else "aas" for r in rows], object),
        np.arange(1, m + 1, dtype=np.int64),
        np.array([r[4] for r in rows], np.int64),
        np.array([""] * m, object),
        {} if stays is None else {k: np.asarray(v, np.int64) for k, v in stays.items()},
        n,
    )


def _store(tmp_path, n):
    return AnnotationStore.create(tmp_path / "run.sqlite", [f"{k}.jpg" for k in range(n)])


def _arc_and_twins(n_twins=16):
    """One cluster along an arc (photos 0..7 at 0, 15, ..., 60, 75, 88, 100 degrees; the
    toy of tests/test_np3.py) and ``n_twins`` pairs of near-duplicates (8 + 2t, 9 + 2t),
    each its own cluster, in dimensions orthogonal to the arc: answers about the twins are
    answers about nearest neighbours that do not touch the arc."""
    X = np.zeros((8 + 2 * n_twins, 2 + n_twins), np.float32)
    X[:8, :2] = _angles([0, 15, 30, 45, 60, 75, 88, 100])
    for t in range(n_twins):
        X[8 + 2 * t, 2 + t] = X[9 + 2 * t, 2 + t] = 1.0
        X[9 + 2 * t, 0] = 0.05
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.r_[np.zeros(8, np.int64), 1 + np.repeat(np.arange(n_twins), 2)]
    return _clusters(X, labels, k=3)


TWINS = [(8 + 2 * t, 9 + 2 * t) for t in range(16)]


# ---------------------------------------------------------------- read_answers


def test_read_answers_tells_pair_questions_from_catalogue_edits(tmp_path):
    with _store(tmp_path, 8) as s:
        s.add_pairs(
            [[0, 1], [3, 2]],
            sampler="aas",
            cycle=0,
            kind=["audit-member", "aas"],
            pool=["size 2", "p"],
        )
        s.answer(1, "same")
        s.answer(2, "different")
        s.apply_operation("merge", [[4, 5]], ["same"])
        split = s.apply_operation(
            "split", [[6, 0], [7, 0], [6, 7]], ["different", "different", "same"], stay=[1, 2]
        )["operation"]
        s.apply_operation("merge", [[2, 3]], ["same"])  # replaces the pair question's answer
        s.apply_operation("new_individual", [[5, 7]], ["different"])
        a = read_answers(s)
        assert a.n == 8 and len(a) == 7
        assert a.pairs.tolist() == [[0, 1], [4, 5], [0, 6], [0, 7], [6, 7], [2, 3], [5, 7]]
        assert a.same.tolist() == [True, True, False, False, True, True, False]
        assert a.origin.tolist() == [
            "pair",
            "merge",
            "split",
            "split",
            "split",
            "merge",
            "new_individual",
        ]
        # the kind is the queue's: a pair question's answer replaced by an edit keeps it
        assert a.kind.tolist() == [
            "audit-member",
            "merge",
            "split",
            "split",
            "split",
            "aas",
            "new_individual",
        ]
        assert a.operation.tolist() == [0, 1, 2, 2, 2, 3, 4]
        assert a.pool.tolist() == ["size 2", "", "", "", "", "p", ""]
        assert a.questions.tolist() == [True] + [False] * 6
        assert list(a.stays) == [split] and a.stays[split].tolist() == [1, 2]
        c = a.constraints(a.questions)
        assert c.pairs.tolist() == [[0, 1]] and c.is_must_link.tolist() == [True]
        # undoing the edit that replaced it gives the pair question's answer back
        s.undo()
        s.undo()
        a = read_answers(s)
        assert a.origin.tolist() == ["pair", "pair", "merge", "split", "split", "split"]
        assert a.pairs[1].tolist() == [2, 3] and not a.same[1] and a.operation[1] == 0


def test_read_answers_of_an_empty_store(tmp_path):
    with _store(tmp_path, 3) as s:
        a = read_answers(s)
        assert len(a) == 0 and a.pairs.shape == (0, 2) and a.stays == {} and a.n == 3
        assert len(a.constraints()) == 0


# ---------------------------------------------------------------- mixed clusters


@pytest.mark.parametrize(
    "n_questions, n_split, dissolved",
    [
        (20, 0, True),  # 20 pair-question answers inside, none "same": a mix
        (19, 0, False),  # too few answers to tell
        (19, 9, False),  # a person's split does not make up the rest
        (0, 28, False),  # nor does a split alone, however many answers it holds
        (20, 8, True),
    ],
)
def test_only_pair_questions_dissolve_a_mixed_cluster(n_questions, n_split, dissolved):
    # cluster 0: photos 0..7, every answer inside "different"; cluster 1: photos 8..15,
    # answers "same" (so dissolving cluster 0 raises the F1 the answers let us estimate)
    X = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    labels = np.repeat([0, 1], 8)
    inside = [(i, j) for i in range(8) for j in range(i + 1, 8)]  # 28 pairs
    rows = [(i, j, False, "pair") for i, j in inside[:n_questions]]
    rows += [(i, j, False, "split", 1) for i, j in inside[n_questions : n_questions + n_split]]
    rows += [(8, 9, True, "pair"), (8, 10, True, "pair")]
    a = _answers(16, rows)
    part = refine_identities(_clusters(X, labels), a)
    want = np.isin(labels, mixed_clusters(labels, a.constraints(a.questions)))
    assert np.array_equal(part.dissolved, want)
    assert part.dissolved.tolist() == [dissolved] * 8 + [False] * 8
    # every answer holds either way
    got = part.labels
    assert all((got[i] == got[j]) == s for (i, j), s in zip(a.pairs.tolist(), a.same))
    if dissolved:  # the dissolved photos answered only "different": each alone
        assert len(np.unique(got[:8])) == 8 and not np.isin(got[:8], got[8:]).any()


# ---------------------------------------------------------------- merge edits


@pytest.mark.parametrize("origin", ["pair", "merge"])
def test_a_merge_edit_joins_two_whole_identities_where_auto_merges_nearest(origin):
    # A = 0..2 near 0 degrees, C = 3..5 near 45, B = 6..8 near 90: A and B are each
    # other's nearest cluster neither, so a "same" pair question between them moves only
    # the photos answered (merge "nearest", which "auto" chooses with so few answers)
    X = _angles([0, 5, 10, 40, 45, 50, 80, 85, 90])
    cs = _clusters(X, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    part = refine_identities(cs, _answers(9, [(2, 6, True, origin, int(origin == "merge"))]))
    assert part.merge == "nearest"
    got = part.labels
    assert got[2] == got[6]
    assert (got[3:6] == got[3]).all() and got[3] != got[2]  # C is untouched
    if origin == "merge":
        assert (got[[0, 1, 2, 6, 7, 8]] == got[0]).all()
    else:
        assert got[0] == got[1] != got[2] and got[7] == got[8] != got[6]


# ---------------------------------------------------------------- splits: graph or together


@pytest.mark.parametrize(
    "twins, separates, arc",
    [
        # no answer about neighbours yet: not known; photo 7 moves alone
        (None, None, [0, 0, 0, 0, 0, 0, 0, 1]),
        # 16 neighbour pairs, all the same animal: the graph means something, and the
        # unanswered photos follow it (where the chain of neighbours is thinnest)
        (True, True, [0, 0, 0, 0, 0, 1, 1, 1]),
        # 16 neighbour pairs, none the same animal: still only the answered photo moves
        (False, False, [0, 0, 0, 0, 0, 0, 0, 1]),
    ],
)
def test_unanswered_photos_of_a_split_cluster_follow_the_graph_once_it_separates(
    twins, separates, arc
):
    cs = _arc_and_twins()
    rows = [(0, 7, False, "pair")]
    if twins is not None:
        rows += [(i, j, twins, "pair") for i, j in TWINS]
    a = _answers(len(cs.X), rows)
    assert separation_of(a, cs.graph)["separates"] is separates
    part = refine_identities(cs, a)
    assert part.follow_graph is bool(separates)
    assert_same_partition(part.labels[:8], arc)
    assert not np.isin(part.labels[:8], part.labels[8:]).any()


def test_the_photos_a_split_left_in_place_do_not_follow_the_photos_taken_out():
    cs = _arc_and_twins()
    n = len(cs.X)
    twins = [(i, j, True, "pair") for i, j in TWINS]  # the graph separates the animals
    # a person takes 7 out (anchor 0); 1..6 stay: 5 and 6 do not follow 7 along the graph
    split = [(7, 0, False, "split", 1)]
    stays = {1: range(1, 7)}
    part = refine_identities(cs, _answers(n, split + twins, stays))
    assert part.follow_graph
    assert_same_partition(part.labels[:8], [0, 0, 0, 0, 0, 0, 0, 1])
    # the same answer to a pair question has no photos that stayed: they follow the graph
    part = refine_identities(cs, _answers(n, [(7, 0, False, "pair")] + twins))
    assert_same_partition(part.labels[:8], [0, 0, 0, 0, 0, 1, 1, 1])
    # a later answer joining a photo that stayed to the one taken out takes it along
    later = [(6, 7, True, "pair")]
    part = refine_identities(cs, _answers(n, split + twins + later, stays))
    got = part.labels
    assert got[6] == got[7] != got[0] and (got[1:5] == got[0]).all()
    # ... and a "different" answer between a photo that stayed and the anchor keeps it out
    later = [(5, 0, False, "pair")]
    part = refine_identities(cs, _answers(n, split + twins + later, stays))
    got = part.labels
    assert got[5] != got[0] and got[7] != got[0] and (got[1:5] == got[0]).all()


@pytest.mark.parametrize("out", [0, 2, 7, [0, 7], [2, 5, 7], 1, [0, 1]])
def test_a_split_takes_out_exactly_the_photos_chosen_whatever_their_rows(tmp_path, out):
    # regression: with one photo taken out, whose row is below the anchor's (photo 0 out of
    # an identity whose reference is photo 1), the photo taken out was read as the anchor
    # and every photo that stayed was moved to it
    X = _angles([0, 17, 5, 10, 25, 30, 35, 20, 90, 92, 94, 96])  # 1 is the medoid of 0..7
    cs = _clusters(X, np.repeat([0, 1], [8, 4]), k=4)
    with _store(tmp_path, 12) as s:
        cat = build_catalogue(s, cs)
        big = cat.identity(cat.numbers[0])
        assert big.images.tolist() == list(range(8)) and big.reference == 1
        cat.split(big.number, out)
        after = build_catalogue(s, cs)
        out = np.atleast_1d(out)
        stay = np.setdiff1d(np.arange(8), out)
        assert after.identity(after.numbers[stay[0]]).images.tolist() == stay.tolist()
        assert after.identity(after.numbers[out[0]]).images.tolist() == out.tolist()
        assert after.numbers[stay[0]] == big.number  # what stays keeps the number
        assert (after.numbers[8:] == cat.numbers[8:]).all()


# ---------------------------------------------------------------- evidence


def test_reference_photo_is_the_medoid_of_the_largest_answer_joined_group():
    # identity 0: photos 0..4 at 0, 10, 50, 60, 90 degrees; answers join {0, 1} and
    # {2, 3, 4}: the larger group's medoid is 3 (60 degrees), though 2 is the medoid of all
    # identity 1: photos 5..7 at 100, 140, 150, nothing joined: the medoid of all, 6
    # identity 2: photo 8 alone
    # identity 3: photos 9..14, {9, 10, 11} at 200, 205, 210 degrees and {12, 13, 14} at
    # 250, 265, 270 joined: of two groups of three the one with the smaller component
    # number wins (12..14, component 3 against 8), and its medoid is 13
    X = _angles([0, 10, 50, 60, 90, 100, 140, 150, 0, 200, 205, 210, 250, 265, 270])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3])
    comps = np.array([1, 1, 7, 7, 7, 4, 5, 6, 0, 8, 8, 8, 3, 3, 3])
    refs = reference_photos(labels, X, comps)
    assert refs.dtype == np.int64 and refs.tolist() == [3, 6, 8, 13]
    none = np.arange(15)  # no answer: the medoid of every identity
    assert reference_photos(labels, X, none).tolist() == [2, 6, 8, 12]
    assert reference_photos(labels, X, np.where(comps == 8, 2, comps)).tolist() == [3, 6, 8, 10]


def test_verified_photos_are_the_ones_joined_to_the_reference():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3])
    comps = np.array([0, 0, 1, 1, 2, 3, 4, 5, 5])
    refs = np.array([1, 4, 6, 7])
    got = verified_mask(labels, refs, comps)
    # 0 and 1 joined to the reference 1; 2 and 3 joined to each other, not to it; identity
    # 1's reference joined to nothing (so not verified itself); a single; 7, 8 joined
    assert got.tolist() == [True, True, False, False, False, False, False, True, True]


def test_must_link_components_read_the_kept_same_answers():
    a = _answers(6, [(0, 1, True, "pair"), (1, 2, True, "merge", 1), (3, 4, False, "pair")])
    assert_same_partition(must_link_components(6, a), [0, 0, 0, 1, 2, 3])
    kept = np.array([False, True, True])
    assert_same_partition(must_link_components(6, a, kept), [0, 1, 1, 2, 3, 4])


# ---------------------------------------------------------------- every answer holds


def _truth_answers(rng, truth, graph, n_answers, near):
    """Answers consistent with ``truth``: pair questions (random pairs, and ``near``
    nearest-neighbour pairs), merge edits ("same" between photos of one animal) and splits
    (photos of one animal taken out against an anchor of another, with photos that stayed)."""
    n = len(truth)
    rows, stays, seen, op = [], {}, set(), 1

    def add(i, j, origin, operation=0):
        key = (min(i, j), max(i, j))
        if i == j or key in seen:
            return False
        seen.add(key)
        rows.append((key[0], key[1], bool(truth[i] == truth[j]), origin, operation))
        return True

    for i in rng.permutation(n)[:near]:
        add(int(i), int(graph.indices[i, 1]), "pair")
    for _ in range(n_answers):
        r = rng.random()
        if r < 0.7:
            i, j = rng.integers(0, n, 2)
            add(int(i), int(j), "pair")
        elif r < 0.85:
            i = int(rng.integers(n))
            op += add(i, int(rng.choice(np.flatnonzero(truth == truth[i]))), "merge", op)
        else:
            a = int(rng.integers(n))
            others = np.flatnonzero(truth != truth[a])
            if not len(others):
                continue
            moved = rng.permutation(np.flatnonzero(truth == truth[rng.choice(others)]))
            moved = moved[: int(rng.integers(1, 4))].tolist()
            for m in moved:
                add(m, a, "split", op)
            for m in moved[1:]:
                add(moved[0], m, "split", op)
            rest = np.setdiff1d(np.arange(n), moved + [a])
            stays[op] = np.sort(rng.choice(rest, int(rng.integers(0, len(rest) + 1)), False))
            op += 1
    return _answers(n, rows, stays)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(6, 40),
    structured=st.booleans(),
    n_ids=st.sampled_from([1, 3, 12, 40]),
)
def test_every_answer_holds_in_the_identities(seed, n, structured, n_ids):
    # structured: photos near their animal's centre and 20 answers about nearest neighbours
    # (the graph usually separates the animals and splits follow it); else random features
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_ids, n)
    X = rng.normal(size=(n, 8))
    if structured:
        X = 3 * rng.normal(size=(n_ids, 8))[truth] + X
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(-1, int(rng.integers(1, 5)), n)  # few clusters: many inside answers
    cs = _clusters(X, labels, k=min(n, 5))
    a = _truth_answers(rng, truth, cs.graph, int(rng.integers(0, 3 * n)), 20 * structured)
    part = refine_identities(cs, a)
    got = part.labels
    assert part.kept.all()  # consistent answers: none dropped
    assert got.dtype == np.int64 and (got >= 0).all()  # outliers are identities of one
    i, j = a.pairs[:, 0], a.pairs[:, 1]
    assert np.array_equal(got[i] == got[j], a.same)
    # the same answers, the same identities (a rebuild with no new answer changes nothing)
    again = refine_identities(cs, a)
    assert np.array_equal(again.labels, got) and again.merge == part.merge


def test_the_property_reaches_both_ways_of_splitting():
    # the cases above are not vacuous: the structured ones follow the graph, the rest do not
    follow = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        truth = rng.integers(0, 3, 30)
        X = 3 * rng.normal(size=(3, 8))[truth] + rng.normal(size=(30, 8))
        X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
        cs = _clusters(X, np.zeros(30, np.int64), k=5)
        for near in (0, 20):
            a = _truth_answers(rng, truth, cs.graph, 40, near)
            follow.append(refine_identities(cs, a).follow_graph)
    assert follow[1::2] == [True] * 6 and follow[0::2] == [False] * 6


# ---------------------------------------------------------------- rebuilds


def test_a_rebuild_with_no_new_answer_changes_nothing(tmp_path):
    X, y = aas.datasets.make_reid_blobs(300, d=32, seed=0)
    cs = cluster_features(X, k1=10, n_threads=1)
    rng = np.random.default_rng(1)
    with _store(tmp_path, 300) as s:
        pairs = rng.integers(0, 300, (60, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        s.add_pairs(pairs, sampler="aas", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
        first = build_catalogue(s, cs)
        big = max(first.identities, key=lambda i: len(i.images))
        first.split(big.number, [int(k) for k in big.images if k != big.reference][:2])
        second = build_catalogue(s, cs)
        with closing(sqlite3.connect(s.path)) as c:
            anchors = c.execute("SELECT COUNT(*) FROM anchors").fetchone()
        third = build_catalogue(s, cs)
        assert np.array_equal(third.numbers, second.numbers)
        assert np.array_equal(third.verified, second.verified)
        assert [i.reference for i in third.identities] == [i.reference for i in second.identities]
        with closing(sqlite3.connect(s.path)) as c:  # nothing new to record
            assert c.execute("SELECT COUNT(*) FROM anchors").fetchone() == anchors
        part = refine_identities(cs, read_answers(s))
        assert_same_partition(part.labels, third.numbers)
