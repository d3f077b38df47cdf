"""``aas catalogue --learn``: the background learner keeps a new embedding only when it
separates held-out answers better, and switches the catalogue, the questions and the store
to it; the server starts it after answers; without torch the option says what to install."""

import csv

import numpy as np
import pytest

import aas_core as aas
from aas_core.annotate import AnnotationStore
from aas_core.annotate.server import Proposer
from aas_core.catalogue import LiveCatalogue, embedding
from aas_core.catalogue.embedding import LearnResult
from aas_core.catalogue.learner import Learner
from aas_core.loop import cluster_features


@pytest.fixture
def run(tmp_path):
    X, y = aas.datasets.make_reid_blobs(120, d=16, seed=3)
    photos = tmp_path / "photos"
    paths = [f"cam0/{k}.png" for k in range(len(X))]
    for k, p in enumerate(paths):
        (photos / p).parent.mkdir(parents=True, exist_ok=True)
        (photos / p).write_bytes(b"png %d" % k)
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "run").mkdir()
    store = AnnotationStore.create(tmp_path / "run" / "run.sqlite", paths)
    store.set_meta("images_root", photos)
    store.use_embeddings(tmp_path / "X.npy", source="file:X.npy")
    cs = cluster_features(X, k1=8, n_threads=1)
    live = LiveCatalogue(store, cs)
    sampler = Proposer(
        cs.X, aas.sampling.RandomPairSampler(), name="random", budget=10, clusters=cs
    )
    yield store, live, sampler, X, y, tmp_path
    store.close()


def _answer(store, y, k):
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(y), (3 * k, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]][:k]
    store.add_pairs(pairs, sampler="t", cycle=store.next_cycle())
    for p in store.pairs():
        if p.get("answer") is None and store.pair(p["pair_id"])["answer"] is None:
            store.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")


def _fake_learn(better, X_new):
    def learn(run_dir, store, *, current, **kw):
        assert np.array_equal(current, store_current[0])  # the embedding in use is compared
        return LearnResult(
            embeddings=X_new,
            auc=0.9 if better else 0.6,
            auc_current=0.7,
            better=better,
            seconds=1.5,
            seconds_features=0.5,
            n_train=40,
            n_heldout=10,
        )

    store_current = [None]
    return learn, store_current


@pytest.mark.parametrize("better", [True, False])
def test_a_retraining_is_kept_only_when_it_separates_held_out_answers_better(
    run, monkeypatch, better
):
    store, live, sampler, X, y, tmp_path = run
    rng = np.random.default_rng(1)
    X_new = (X + 0.05 * rng.normal(size=X.shape)).astype(np.float32)
    X_new /= np.linalg.norm(X_new, axis=1, keepdims=True)
    fake, current = _fake_learn(better, X_new)
    monkeypatch.setattr(embedding, "learn", fake)
    learner = Learner(
        tmp_path / "run",
        store,
        live,
        proposer=sampler,
        cluster=lambda Y: cluster_features(Y, k1=8, n_threads=1),
        every=20,
    )
    assert learner.answers_until_next() == 20 and not learner.maybe_start()
    _answer(store, y, 20)
    before_path, before_version = store.embeddings_path, store.version()
    current[0] = live.clusters.X
    record = learner.run_now()
    assert record["auc_current"] == 0.7 and record["kept"] is better
    assert record["seconds_training"] == 1.0 and record["answers"] == 20
    state = learner.state()
    assert state["attempts"] == [record] and not state["running"] and state["next_in"] == 20
    if better:  # the store, the catalogue and the questions all use the new embedding
        assert store.embeddings_path != before_path and store.version() != before_version
        assert np.allclose(np.load(store.embeddings_path), X_new)
        assert state["source"] == "learned" and state["auc"] == pytest.approx(0.9)
        assert np.allclose(live.clusters.X, X_new) and np.allclose(sampler.X, X_new)
        assert live().clusters is live.clusters
        assert "the catalogue now uses it" in record["message"]
        # the status keeps reading similarities in the first embedding, so the calibration
        # checks drawn in it keep counting
        cat = live()
        assert cat.embedding == 2 and cat.calibration_id == 1
        assert np.allclose(cat.calibration_X, X / np.linalg.norm(X, axis=1, keepdims=True))
    else:  # nothing changed
        assert store.embeddings_path == before_path and store.version() == before_version
        assert np.allclose(live.clusters.X, X / np.linalg.norm(X, axis=1, keepdims=True))
        assert state["source"] == "file:X.npy" and state["auc"] is None
        assert "current embedding stays" in record["message"]


def test_a_failed_retraining_is_reported_and_changes_nothing(run, monkeypatch):
    store, live, sampler, X, y, tmp_path = run

    def broken(*a, **kw):
        raise ValueError("learn: 3 of the 120 photos are missing")

    monkeypatch.setattr(embedding, "learn", broken)
    learner = Learner(tmp_path / "run", store, live, proposer=sampler, cluster=None, every=5)
    before = store.embeddings_path
    assert learner.run_now() == {"error": learner.error}
    assert "learning from the answers failed: learn: 3 of the 120" in learner.state()["error"]
    assert store.embeddings_path == before


def test_the_server_starts_a_retraining_after_enough_answers(run, monkeypatch):
    pytest.importorskip("flask")
    from aas_core.annotate.server import create_app

    store, live, sampler, X, y, tmp_path = run
    started = []

    class Recording(Learner):
        def maybe_start(self):
            started.append(len(self.store.constraints()))
            return False

    learner = Recording(tmp_path / "run", store, live, proposer=sampler, cluster=None, every=3)
    store.add_pairs([[0, 1], [2, 3]], sampler="t", cycle=0)
    app = create_app(store, tmp_path / "photos", catalogue=live, learner=learner)
    with app.test_client() as client:
        r = client.post("/api/answer", json={"pair_id": 1, "answer": "different"})
        assert r.status_code == 200 and started == [1]
        learning = r.get_json()["progress"]["learning"]
        assert learning["next_in"] == 2 and learning["attempts"] == []  # 3 - 1 answer
        assert client.get("/api/progress").get_json()["learning"]["source"] == "file:X.npy"


def test_learn_without_torch_or_with_status_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    from aas_core.cli import main

    X, _ = aas.datasets.make_reid_blobs(40, d=8, seed=0)
    photos = tmp_path / "photos"
    paths = [f"{k}.png" for k in range(len(X))]
    for k, p in enumerate(paths):
        (photos / p).parent.mkdir(parents=True, exist_ok=True)
        (photos / p).write_bytes(b"png %d" % k)
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows([["index", "path"], *enumerate(paths)])
    argv = ["catalogue", str(photos), "--out", str(tmp_path / "run")]
    argv += ["--embeddings", str(tmp_path / "X.npy"), "--k1", "8"]
    assert main([*argv, "--learn", "--status"]) == 2
    err = capsys.readouterr().err
    assert "--learn learns while serving" in err and "Traceback" not in err
    real_import = builtins.__import__

    def no_torch(name, *a, **kw):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    pytest.importorskip("flask")
    assert main([*argv, "--learn", "50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aas catalogue: error: --learn needs PyTorch") and "pretrained" in err
    assert not (tmp_path / "run").exists()  # refused before anything was made
    with pytest.raises(SystemExit) as stop:  # argparse's usage error
        main([*argv, "--learn", "0"])
    assert stop.value.code == 2 and "--learn: must be a positive integer" in capsys.readouterr().err
