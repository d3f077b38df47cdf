"""What ``aas catalogue`` asks (:mod:`aas_core.catalogue.questions`): member and calibration
checks, split questions, the sampler's pairs, queued in one shuffled batch per round."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core.annotate import AnnotationStore
from aas_core.catalogue import CatalogueProposer, build_catalogue
from aas_core.catalogue.estimate import size_stratum
from aas_core.catalogue.questions import (
    calibration_checks,
    member_checks,
    split_question,
    split_questions,
)
from aas_core.loop import ClusterState, cluster_features


def _angles(deg):
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _key(i, j):
    return (min(int(i), int(j)), max(int(i), int(j)))


@pytest.fixture(scope="module")
def blobs():
    """Well-separated blobs (see test_catalogue_status): about 60 identities of 2+."""
    X, y = aas.datasets.make_reid_blobs(400, d=2048, seed=0)
    return X, y, cluster_features(X, k1=10, n_threads=1)


@pytest.fixture
def store(tmp_path, blobs):
    _, y, _ = blobs
    s = AnnotationStore.create(tmp_path / "run.sqlite", [f"{a}/{k}.jpg" for k, a in enumerate(y)])
    yield s
    s.close()


class NearestSampler:
    """The sampler's part: a random photo against one of its kNN neighbours, kind "nearest".
    With ``extra``, it also proposes those pairs (already queued, or this round's checks)."""

    name = "nearest"

    def __init__(self, graph, extra=()):
        self.graph, self.extra = graph, list(extra)

    def propose(self, store, budget, cycle):
        rng = np.random.default_rng([7, cycle])
        out = [(j, i) for i, j in self.extra]  # in the other order
        queued = {(p["i"], p["j"]) for p in store.pairs()} | {_key(*p) for p in out}
        idx = self.graph.indices
        for i in rng.permutation(len(idx)).tolist():
            p = _key(i, idx[i, rng.integers(1, idx.shape[1])])
            if p[0] != p[1] and p not in queued and len(out) < budget + len(self.extra):
                queued.add(p)
                out.append(p)
        m = len(out)
        return {
            "pairs": np.array(out, np.int64).reshape(-1, 2),
            "prob": np.full(m, 0.5),
            "pool": np.array(["near"] * m, object),
            "kind": np.array(["nearest"] * m, object),
            "message": f"{m} neighbours",
        }


class Spy:
    """A store whose add_pairs calls are recorded."""

    def __init__(self, store):
        self._store, self.calls = store, []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def add_pairs(self, pairs, **kw):
        self.calls.append((np.asarray(pairs).tolist(), kw))
        return self._store.add_pairs(pairs, **kw)


def _answer_all(store, y):
    told = {a["pair_id"] for a in store.answers()}
    for p in store.pairs():
        if p["pair_id"] not in told:
            store.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")


# ---------------------------------------------------------------- a round


def test_a_round_is_one_shuffled_batch_of_checks_split_questions_and_the_sampler(store, blobs):
    _, y, cs = blobs
    spy = Spy(store)
    proposer = CatalogueProposer(
        lambda: build_catalogue(store, cs), NearestSampler(cs.graph), budget=40
    )
    seen = set()
    for cycle in range(3):
        n_calls = len(spy.calls)
        cat = build_catalogue(store, cs)  # what the proposer sees
        added = proposer(spy)
        assert len(spy.calls) == n_calls + 1  # one batch
        pairs, kw = spy.calls[-1]
        keys = [_key(i, j) for i, j in pairs]
        # nothing twice, all new (a sampler's pair that is one of the round's checks is
        # dropped, so a round may fall a pair or two short of the budget)
        assert len(set(keys)) == len(keys) == added and 36 <= added <= 40
        assert not seen & set(keys)  # nothing queued in an earlier round
        seen |= set(keys)
        kinds = list(kw["kind"])
        assert kw["cycle"] == cycle and kw["sampler"] == "nearest"
        assert kinds.count("audit-member") == 4 and kinds.count("audit-calibration") == 4
        assert kinds.count("split") >= 1
        assert kinds.count("nearest") == added - 8 - kinds.count("split")
        # the kinds are shuffled together: the checks are not asked in a block
        first = [k for k in kinds if k != "nearest"]
        where = [t for t, k in enumerate(kinds) if k != "nearest"]
        assert where != list(range(len(first)))
        # a member check is a photo and its identity's reference, its pool the identity's
        # size stratum; a calibration check's pool is the embedding its strata were drawn in
        for (i, j), k, pool in zip(pairs, kinds, kw["pool"]):
            if k == "audit-member":
                ident = cat.identity(cat.numbers[i])
                assert cat.numbers[j] == ident.number and ident.reference in (i, j)
                assert pool == size_stratum(len(ident.images))
            elif k == "audit-calibration":
                assert pool == f"embedding {cat.embedding}"
            else:
                assert pool == ("near" if k == "nearest" else "")
        assert proposer.message == (
            f"cycle {cycle}: {added} new pairs queued ({kinds.count('split')} to split large "
            "identities, 8 checks, the rest from the sampler: "
            f"{40 - 8 - kinds.count('split')} neighbours)"
        )
        _answer_all(store, y)
    rows = store.pairs()
    assert len({(p["i"], p["j"]) for p in rows}) == len(rows) == len(seen)


def test_the_sampler_cannot_queue_a_pair_twice(store, blobs):
    # a sampler that proposes every member check and calibration check a round could ask
    # (in the other order) and every pair already queued: only its new pairs are kept
    _, y, cs = blobs
    cat = build_catalogue(store, cs)
    refs = {i.number: i.reference for i in cat.identities}
    every = [(int(k), refs[int(cat.numbers[k])]) for k in range(400)]
    every = [p for p in every if p[0] != p[1]]
    big = [i.reference for i in cat.identities if len(i.images) > 1]
    every += [(a, b) for a in big for b in big if a < b]
    spy = Spy(store)
    live = lambda: build_catalogue(store, cs)  # noqa: E731
    CatalogueProposer(live, NearestSampler(cs.graph, every), budget=40)(spy)
    _answer_all(store, y)
    queued = [(p["i"], p["j"]) for p in store.pairs()]
    CatalogueProposer(live, NearestSampler(cs.graph, every + queued), budget=40)(spy)
    for pairs, kw in spy.calls:
        keys = [_key(i, j) for i, j in pairs]
        assert len(set(keys)) == len(keys)
        assert "audit-member" in kw["kind"] and "audit-calibration" in kw["kind"]
    assert not {_key(*p) for p in spy.calls[1][0]} & set(queued)
    by_pair = {(p["i"], p["j"]): p["kind"] for p in store.pairs()}
    for pairs, kw in spy.calls:  # each pair keeps the kind it was asked as
        for (i, j), k in zip(pairs, kw["kind"]):
            assert by_pair[_key(i, j)] == k


def test_nothing_left_to_ask(tmp_path):
    X = _angles([0, 90])
    cs = ClusterState(X, None, np.array([-1, -1]), np.array([-1, -1]), {}, None)

    class Empty:
        name = "none"

        def propose(self, store, budget, cycle):
            return None

    with AnnotationStore.create(tmp_path / "s.sqlite", ["a.jpg", "b.jpg"]) as s:
        s.add_pairs([[0, 1]], sampler="t", cycle=0)
        proposer = CatalogueProposer(lambda: build_catalogue(s, cs), Empty(), budget=4)
        assert proposer(s) == 0 and proposer.message == "cycle 1: nothing left to ask"


# ---------------------------------------------------------------- member checks


def test_member_checks_ask_unverified_photos_against_their_reference(store, blobs):
    _, y, cs = blobs
    cat = build_catalogue(store, cs)
    # verify a few photos: "same" answers to the reference of the largest identities
    top = sorted(cat.identities, key=lambda i: -len(i.images))[:3]
    pairs = [(i.reference, int(k)) for i in top for k in i.images[:3] if k != i.reference]
    store.add_pairs(pairs, sampler="t", cycle=0)
    _answer_all(store, y)
    cat = build_catalogue(store, cs)
    assert cat.verified.sum() >= 3
    sizes = np.zeros(400, np.int64)
    ref = np.zeros(400, np.int64)
    for ident in cat.identities:
        sizes[ident.images], ref[ident.images] = len(ident.images), ident.reference
    eligible = {k for k in range(400) if sizes[k] > 1 and not cat.verified[k] and k != ref[k]}
    got = member_checks(cat, 10**6, np.random.default_rng(0), set())
    asked = {i if j == ref[i] and i != j else j for i, j, _ in got}
    assert len(got) == len(eligible) and asked == eligible  # every one, once
    for i, j, stratum in got:
        k = i if ref[i] == j else j
        assert i < j and ref[k] in (i, j) and stratum == size_stratum(sizes[k])
    # k of them, never one already taken (the set gains the new ones)
    taken = {_key(i, j) for i, j, _ in got[:10]}
    some = member_checks(cat, 5, np.random.default_rng(1), taken)
    assert len(some) == 5 and len(taken) == 15
    assert all((i, j) not in {_key(a, b) for a, b, _ in got[:10]} for i, j, _ in some)
    assert {(i, j) for i, j, _ in some} <= {(i, j) for i, j, _ in got}


# ---------------------------------------------------------------- calibration checks


def test_calibration_checks_never_pair_identities_an_answer_says_differ(store, blobs):
    _, y, cs = blobs
    cat = build_catalogue(store, cs)
    big = [i for i in cat.identities if len(i.images) > 1]
    refs = np.array([i.reference for i in big])
    S = cs.X[refs] @ cs.X[refs].T
    np.fill_diagonal(S, -np.inf)
    # the 30 most similar pairs of identities: the strata drawn most often
    top = np.dstack(np.unravel_index(np.argsort(-S, axis=None)[:60], S.shape))[0]
    differ = {_key(big[a].number, big[b].number) for a, b in top}

    def identity_pairs(c, seed):
        got = calibration_checks(c, 200, np.random.default_rng(seed), set())
        assert len(set(got)) == len(got) and all(i < j for i, j in got)
        for i, j in got:  # two identities' reference photos
            a, b = c.identity(c.numbers[i]), c.identity(c.numbers[j])
            assert a is not b and {a.reference, b.reference} == {i, j}
        return {_key(c.numbers[i], c.numbers[j]) for i, j in got}

    before = set().union(*(identity_pairs(cat, seed) for seed in range(3)))
    assert before & differ  # without the answers they are asked
    # a "different" answer between any two photos of each pair (not the reference photos)
    pairs = []
    for a, b in top[::2]:
        ia, ib = big[a], big[b]
        pairs.append((int(ia.images[ia.images != ia.reference][0]), int(ib.images[-1])))
    store.add_pairs(pairs, sampler="t", cycle=0)
    for p in store.pairs():
        store.answer(p["pair_id"], "different")
    after = build_catalogue(store, cs)
    assert np.array_equal(after.numbers, cat.numbers)  # they were apart already
    got = set().union(*(identity_pairs(after, seed) for seed in range(3)))
    assert got and not got & differ
    # taken pairs are skipped, and the set gains the new ones
    taken = set()
    first = calibration_checks(after, 10, np.random.default_rng(5), taken)
    assert len(first) == 10 and taken == set(first)
    again = calibration_checks(after, 10, np.random.default_rng(5), taken)
    assert not set(again) & set(first)


# ---------------------------------------------------------------- split questions


def test_split_question_asks_the_centres_of_two_groups_joined_by_a_weak_link():
    # 0..4 at 0..8 degrees, 5..9 at 40..48: each photo's 5 neighbours are its group and the
    # nearest photo of the other, so the groups are joined, and the weakest link of the
    # maximum spanning tree is 4 - 5; the central photos are 2 (4 degrees) and 7 (44)
    X = _angles([0, 2, 4, 6, 8, 40, 42, 44, 46, 48])
    graph = aas.knn_graph(X, 6)
    assert split_question(np.arange(10), graph, X) == (2, 7)
    # the members' order does not matter
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(10)
        assert split_question(perm, graph, X) == (2, 7)


def test_split_question_never_cuts_off_fewer_than_a_fifth():
    # 0..2 at 0, 2, 4 degrees, 3..6 at 20..26, 7 far at 80: the weakest link cuts 7 off
    # alone (fewer than 2), so the next one, 2 - 3, is cut; the far photo pulls the second
    # side's centre to 26 degrees (6)
    X = _angles([0, 2, 4, 20, 22, 24, 26, 80])
    assert split_question(np.arange(8), aas.knn_graph(X, 4), X) == (1, 6)


def test_split_question_asks_the_two_largest_parts_when_the_graph_does_not_join_them():
    # three groups (5, 4 and 3 photos) no neighbour joins: the centres of the two largest
    X = _angles([0, 2, 4, 6, 8, 120, 122, 124, 140, 240, 242, 244])
    assert split_question(np.arange(12), aas.knn_graph(X, 3), X) == (2, 7)


def test_split_question_of_too_few_photos_or_no_graph():
    X = _angles([0, 2, 40, 42, 80])
    graph = aas.knn_graph(X, 3)
    assert split_question(np.arange(3), graph, X) is None
    assert split_question(np.arange(5), None, X) is None
    assert split_question(np.arange(4), graph, X) == (0, 2)  # two and two


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(4, 30))
def test_split_question_pairs_two_members(seed, m):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    members = np.sort(rng.choice(40, m, replace=False))
    graph = aas.knn_graph(X, 4)
    got = split_question(members, graph, X)
    if got is not None:
        assert got[0] < got[1] and set(got) <= set(members.tolist())
    assert split_question(members, graph, X) == got  # deterministic


def test_a_verified_identity_gets_no_split_question(tmp_path):
    rng = np.random.default_rng(0)
    group = np.repeat([0, 1, 2], [8, 6, 5])  # 0..7, 8..13, 14..18 (too small to split)
    X = np.eye(8, dtype=np.float32)[group] + 0.3 * rng.normal(size=(19, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    cs = ClusterState(X, None, group, group, {}, aas.knn_graph(X, 4))
    with AnnotationStore.create(tmp_path / "s.sqlite", [f"{k}.jpg" for k in range(19)]) as s:
        cat = build_catalogue(s, cs)
        got = split_questions(cat, 5, set())
        assert len(got) == 2
        assert {0 if i < 8 else 1 for i, _ in got} == {0, 1}  # largest first, one each
        assert all((i < 8) == (j < 8) and i < 14 and j < 14 for i, j in got)
        assert split_questions(cat, 1, set()) == got[:1]
        assert split_questions(cat, 5, {got[0]}) == got[1:]  # a taken pair is not asked
        # "same" answers join 0..7 to one another: verified, no question; 8..13 partly
        s.add_pairs([(k, k + 1) for k in range(7)] + [(8, 9)], sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same")
        cat = build_catalogue(s, cs)
        assert cat.identity(1).status == "verified"
        assert cat.identity(2).status == "partly verified"
        assert split_questions(cat, 5, set()) == got[1:]
