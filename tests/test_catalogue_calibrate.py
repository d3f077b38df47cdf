"""`aas catalogue --calibrate C` and ``Proposer(calibrate=C)``: near pairs drawn at random
(kind and pool "calibration") mixed into the first rounds until C are answered or waiting,
then eps chosen from their answers for the catalogue and the sampler alike."""

import numpy as np
import pytest

import aas_core as aas
from _annotate import photos_with_embeddings
from aas_core.annotate import AnnotationStore
from aas_core.annotate.server import Proposer
from aas_core.cli import main
from aas_core.cluster import calibrated_eps
from aas_core.loop import cluster_features
from aas_core.sampling import AmbiguityAwareSampler

K1 = 15


@pytest.fixture(scope="module")
def bursts():
    # camera-trap bursts: the data's eps is far from the best, so the calibration moves it
    X, y = aas.datasets.make_suite_member("bursts", n=300, seed=0)[:2]
    return X, np.asarray(y)


def _store(tmp_path, n):
    path = tmp_path / "s.sqlite"
    AnnotationStore.create(path, [f"{k}.png" for k in range(n)]).close()
    return AnnotationStore.open(path)


def _answer_all(store, y, pool=None, said=None):
    done = {a["pair_id"] for a in store.answers()}
    for p in store.pairs():
        if p["pair_id"] not in done and (pool is None or p["pool"] == pool):
            store.answer(p["pair_id"], said or ("same" if y[p["i"]] == y[p["j"]] else "different"))


def _calibration(store):
    return [p for p in store.pairs() if p["pool"] == "calibration"]


def test_rounds_ask_the_calibration_first_then_eps_comes_from_its_answers(bursts, tmp_path):
    X, y = bursts
    state = cluster_features(X, k1=K1)
    told = []
    proposer = Proposer(
        X,
        AmbiguityAwareSampler(),
        name="aas",
        budget=20,
        clusters=state,
        calibrate=30,
        on_calibrated=lambda s, c: told.append((s, c)),
    )
    with _store(tmp_path, len(X)) as store:
        assert proposer(store) == 20 and len(_calibration(store)) == 20  # all of round 1
        assert proposer(store) == 20 and len(_calibration(store)) == 30  # 10 more, 10 others
        assert all(p["kind"] == "calibration" for p in _calibration(store))
        assert not told  # none answered yet: the data's eps
        _answer_all(store, y, pool="calibration")
        assert proposer(store) == 20
        assert len(_calibration(store)) == 30  # C answered: no more asked
        assert len(told) == 1 and "calibration:" in proposer.message
        cal = np.array([[p["i"], p["j"]] for p in _calibration(store)])
        same = y[cal[:, 0]] == y[cal[:, 1]]
        want = calibrated_eps(state.D, state.graph, cal, same, fallback=state.eps)
        chosen, choice = told[0]
        assert choice.message == want.message and chosen.eps.eps == pytest.approx(want.eps)
        assert want.eps != pytest.approx(state.eps.eps)  # it moved, so the test can tell
        assert proposer._clusters is chosen
        proposer(store)  # no new calibration answer: nothing chosen again
        assert len(told) == 1
        # a new embedding of the same photos: chosen again from the same answers at once
        fresh = cluster_features(X, k1=K1)
        proposer.use(X, fresh, store=store)
        assert len(told) == 2 and told[1][1].message == want.message


def test_a_calibration_pair_answered_cant_tell_is_replaced(bursts, tmp_path):
    X, y = bursts
    proposer = Proposer(
        X,
        AmbiguityAwareSampler(),
        name="aas",
        budget=10,
        clusters=cluster_features(X, k1=K1),
        calibrate=10,
    )
    with _store(tmp_path, len(X)) as store:
        proposer(store)
        first = _calibration(store)
        assert len(first) == 10
        store.answer(first[0]["pair_id"], "cant_tell")  # settled, but no answer to count
        _answer_all(store, y, pool="calibration")
        proposer(store)
        again = _calibration(store)
        assert len(again) == 11  # one fresh near pair in place of the "can't tell"
        asked = {(p["i"], p["j"]) for p in again}
        assert len(asked) == 11


def test_without_calibrate_nothing_changes(bursts, tmp_path):
    X, _ = bursts
    proposer = Proposer(
        X, AmbiguityAwareSampler(), name="aas", budget=15, clusters=cluster_features(X, k1=K1)
    )
    with _store(tmp_path, len(X)) as store:
        assert proposer(store) == 15 and not _calibration(store)


@pytest.fixture
def photos(tmp_path, bursts):
    pytest.importorskip("flask", reason="aas catalogue serves the [web] page")
    X, y = bursts
    paths = [f"cam0/{k}.png" for k in range(len(X))]
    return (*photos_with_embeddings(tmp_path, X, paths), y)


def test_the_catalogue_uses_the_calibrated_eps_once_c_are_answered(tmp_path, photos, capsys):
    root, emb, y = photos
    run = tmp_path / "run"
    argv = ["catalogue", str(root), "--out", str(run), "--k1", str(K1), "--calibrate", "12"]
    assert main([*argv, "--embeddings", str(emb), "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert "calibration: 0 of the 12 near pairs answered; eps stays the data's" in out
    state = cluster_features(np.load(emb), k1=K1)
    cal = aas.cluster.calibration_pairs(state.graph, 12, np.random.default_rng(0))
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs(
            cal, sampler="aas", cycle=1, pool=["calibration"] * 12, kind=["calibration"] * 12
        )
        _answer_all(s, y)
    assert main([*argv, "--status"]) == 0
    out = capsys.readouterr().out
    same = y[cal[:, 0]] == y[cal[:, 1]]
    want = calibrated_eps(state.D, state.graph, cal, same, fallback=state.eps)
    assert f"calibration: {want.message}" in out


def test_calibrate_beside_a_given_eps_is_refused(tmp_path, photos, capsys):
    root, emb, _ = photos
    argv = ["catalogue", str(root), "--out", str(tmp_path / "run"), "--embeddings", str(emb)]
    assert main([*argv, "--calibrate", "5", "--eps", "0.5", "--no-serve"]) == 2
    err = capsys.readouterr().err
    assert "--calibrate 5 chooses eps from the answers to near pairs" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_annotate_propose_calibrate_builds_a_calibrating_proposer(bursts, tmp_path, capsys):
    from aas_core.cli import _build_parser
    from aas_core.cli.annotate import _proposer

    X, y = bursts
    emb = tmp_path / "X.npy"
    np.save(emb, X)
    argv = ["annotate", "--store", "s.sqlite", "--images", str(tmp_path), "--propose"]
    argv += ["--embeddings", str(emb)]
    args = _build_parser().parse_args([*argv, "--calibrate", "12", "--budget", "8", "--k1", "15"])
    with _store(tmp_path, len(X)) as store:
        proposer = _proposer(args, store, X)
        assert proposer.calibrate == 12
        proposer(store)
        proposer(store)
        assert len(_calibration(store)) == 12
        _answer_all(store, y)
        proposer(store)
    assert "aas annotate: calibration: " in capsys.readouterr().out
