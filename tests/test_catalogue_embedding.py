"""A catalogue's embedding without torch: held-out answers, their AUC, switching embeddings,
the photos' files, and learn's message when PyTorch is missing."""

import json
import subprocess
import sys

import numpy as np
import pytest

from aas_core.annotate import AnnotationStore
from aas_core.catalogue.embedding import (
    answer_auc,
    heldout_mask,
    photo_files,
    switch_embeddings,
)


def test_the_held_out_answers_stay_held_out_as_more_arrive():
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 5000, size=(4000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    mask = heldout_mask(pairs, 0.2, seed=3)
    assert 0.17 < mask.mean() < 0.23
    # a pair's place depends on the pair alone: not on the others, their order, or i/j
    assert np.array_equal(heldout_mask(pairs[:100], 0.2, seed=3), mask[:100])
    assert np.array_equal(heldout_mask(pairs[::-1], 0.2, seed=3), mask[::-1])
    assert np.array_equal(heldout_mask(pairs[:, ::-1], 0.2, seed=3), mask)
    assert not np.array_equal(heldout_mask(pairs, 0.2, seed=4), mask)
    # a larger share holds out every pair a smaller one did
    assert (heldout_mask(pairs, 0.5, seed=3) >= mask).all()
    assert heldout_mask(np.empty((0, 2), np.int64), 0.2).shape == (0,)


@pytest.mark.parametrize(
    "kw, message",
    [({"share": 0.0}, "'share' parameter"), ({"share": 1.5}, "'share'"), ({"seed": -1}, "'seed'")],
)
def test_bad_held_out_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        heldout_mask([[0, 1]], **{"share": 0.2, **kw})


def test_answer_auc_by_hand():
    X = np.array([[1, 0], [1, 0.1], [0, 1], [0.2, 1], [1, 1]], np.float32)
    pairs = [[0, 1], [2, 3], [0, 2], [0, 4]]
    assert answer_auc(X, pairs, [True, True, False, False]) == 1.0
    # the "same" pair (0, 4) is less similar than the "same" (0, 1) but more than (0, 2)
    assert answer_auc(X, pairs, [True, False, False, True]) == pytest.approx(0.75)
    assert np.isnan(answer_auc(X, pairs[:2], [True, True]))  # no "different" answer


@pytest.fixture
def run(tmp_path):
    photos = tmp_path / "photos"
    paths = [f"cam{k % 2}/{k}.png" for k in range(6)]
    for p in paths:
        (photos / p).parent.mkdir(parents=True, exist_ok=True)
        (photos / p).write_bytes(b"\x89PNG")
    X = np.eye(6, 4, dtype=np.float32) + 0.1
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "run").mkdir()
    store = AnnotationStore.create(tmp_path / "run" / "run.sqlite", paths, embeddings_path=None)
    store.set_meta("images_root", photos.resolve())
    store.use_embeddings(tmp_path / "X.npy", source="file:X.npy")
    yield store, photos, X
    store.close()


def test_switch_writes_the_file_then_points_the_store_at_it(run, tmp_path):
    store, _, X = run
    new = X[:, :3] * 2
    path = switch_embeddings(
        store,
        new,
        tmp_path / "run",
        source="backbone:x",
        auc=0.8,
        detail={"sha256": "ab"},
        provenance={"model": {"backbone": "x"}},
        cameras=["0", "1"] * 3,
    )
    assert path.name == "embeddings-v2.npy" and store.embeddings_path == path
    assert np.array_equal(np.load(path), new.astype(np.float32))
    rows = path.with_name("embeddings-v2.rows.csv").read_text().splitlines()
    assert rows[:2] == ["index,path,identity,camera", "0,cam0/0.png,,0"]
    prov = json.loads(path.with_name("embeddings-v2.provenance.json").read_text())
    assert prov["model"]["backbone"] == "x" and prov["n"] == 6 and prov["dim"] == 3
    history = store.embeddings_history()
    assert [h["source"] for h in history] == ["file:X.npy", "backbone:x"]
    assert history[1]["auc"] == 0.8 and json.loads(history[1]["detail"]) == {"sha256": "ab"}
    with pytest.raises(ValueError, match="shape"):
        switch_embeddings(store, new[:5], tmp_path / "run", source="s")
    with pytest.raises(ValueError, match="non-empty"):
        store.use_embeddings(path, source=" ")


def test_an_interrupted_switch_leaves_the_old_embeddings_in_use(run, tmp_path, monkeypatch):
    store, _, X = run
    before = (store.embeddings_path, store.embeddings_history())

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "use_embeddings", interrupted)  # after the files, before the row
    with pytest.raises(KeyboardInterrupt):
        switch_embeddings(store, X * 2, tmp_path / "run", source="s")
    monkeypatch.setattr(np, "save", interrupted)  # while the array is written
    with pytest.raises(KeyboardInterrupt):
        switch_embeddings(store, X * 2, tmp_path / "run", source="s")
    assert (store.embeddings_path, store.embeddings_history()) == before
    assert not list((tmp_path / "run").glob("*embeddings*"))  # nothing half written left


def test_photo_files_find_a_new_season_under_its_own_folder(run, tmp_path):
    store, photos, _ = run
    season = tmp_path / "2025"
    (season / "a").mkdir(parents=True)
    (season / "a" / "1.png").write_bytes(b"\x89PNG")
    store.add_images(["a/1.png"], root=season, tag="2025")
    files = photo_files(store)
    assert files[0] == photos.resolve() / "cam0/0.png"
    assert files[-1] == season.resolve() / "a/1.png"
    other = AnnotationStore.create(tmp_path / "plain.sqlite", ["a.png", "b.png"])
    with other, pytest.raises(ValueError, match="not the store of a catalogue"):
        photo_files(other)


_WITHOUT_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")

sys.meta_path.insert(0, NoTorch())
from aas_core.annotate import AnnotationStore
from aas_core.catalogue import learn

with AnnotationStore.open(sys.argv[1]) as store:
    try:
        learn(sys.argv[2], store)
    except ImportError as exc:
        print(exc)
"""


def test_learn_without_torch_says_what_to_install(run, tmp_path):
    # in a fresh process, where torch cannot be imported (this one may have it loaded)
    store, _, _ = run
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, str(store.path), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.strip()
    assert "\n" not in text and 'pip install ".[pretrained]"' in text and "PyTorch" in text
