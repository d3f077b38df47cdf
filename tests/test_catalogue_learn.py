"""A catalogue's answers as training data (CPU, tiny backbone): ``aas train --store``,
``aas_core.catalogue.learn`` and ``aas catalogue --reembed --model/--backbone``."""

import csv
import json

import numpy as np
import pytest

from _torch import importorskip
from _train import read_lines

torch = importorskip("torch")
pytest.importorskip("PIL")

from aas_core.annotate import AnnotationStore  # noqa: E402
from aas_core.catalogue import learn, photo_files  # noqa: E402
from aas_core.cli import main  # noqa: E402
from aas_core.constraints import PairConstraints  # noqa: E402
from aas_core.datasets import make_reid_images  # noqa: E402
from aas_core.train import frozen  # noqa: E402
from aas_core.train.embed import embed_images  # noqa: E402
from aas_core.train.models import build_backbone, load_model  # noqa: E402

SIZE = ["--size", "32", "16"]
SMALL = ["--k1", "10", "--k2", "3", "--num-workers", "0", "--device", "cpu"]


def _photos(root):
    """(paths relative to root/images, identity of each) of a make_reid_images folder."""
    rows = list(csv.DictReader((root / "labels.csv").read_text().splitlines()))
    return [r["path"][len("images/") :] for r in rows], np.array([int(r["identity"]) for r in rows])


def _embeddings(path, paths, y, seed):
    """Identity-revealing but noisy embeddings (the catalogue's 'current' ones)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(y.max() + 1, 16))
    X = (centres[y] + 0.9 * rng.normal(size=(len(y), 16))).astype(np.float32)
    np.save(path, X)
    with open(path.with_name(path.stem + ".rows.csv"), "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )


@pytest.fixture
def catalogue(tmp_path):
    """A catalogue of 72 photos plus a season of 20 in its own folder, 60 answers, and a
    file of tiny-backbone weights."""
    make_reid_images(tmp_path / "a", 12, 6, size=(32, 16), test_fraction=0, seed=0)
    make_reid_images(tmp_path / "b", 4, 5, size=(32, 16), test_fraction=0, seed=1)
    paths_a, y_a = _photos(tmp_path / "a")
    paths_b, y_b = _photos(tmp_path / "b")
    _embeddings(tmp_path / "A.npy", paths_a, y_a, 0)
    _embeddings(tmp_path / "B.npy", paths_b, y_b, 1)
    run = tmp_path / "run"
    base = ["catalogue", "--no-serve", "--k1", "10"]
    assert (
        main(
            [
                *base,
                str(tmp_path / "a/images"),
                "--out",
                str(run),
                "--embeddings",
                str(tmp_path / "A.npy"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *base,
                str(tmp_path / "b/images"),
                "--add-to",
                str(run),
                "--embeddings",
                str(tmp_path / "B.npy"),
            ]
        )
        == 0
    )
    y = np.r_[y_a, 100 + y_b]
    rng = np.random.default_rng(3)
    with AnnotationStore.open(run / "run.sqlite") as s:
        same = [rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in np.unique(y)]
        diff = [rng.choice(len(y), 2, replace=False) for _ in range(60)]
        pairs = [p for p in [*same, *diff][:60] if p[0] != p[1]]
        s.add_pairs(pairs, sampler="t", cycle=s.next_cycle())
        for p in s.pairs():
            if s.pair(p["pair_id"])["answer"] is None:
                s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
        assert s.n_images == 92
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(build_backbone("tiny").state_dict(), weights)
    return run, weights, y


def _store_state(run):
    with AnnotationStore.open(run / "run.sqlite") as s:
        path = s.embeddings_path
        return {
            "path": path,
            "bytes": path.read_bytes(),
            "history": s.embeddings_history(),
            "answers": s.answers(history=True),
            "pairs": len(s.pairs()),
        }


def test_train_from_a_catalogue_store_uses_its_answers_and_asks_nothing(catalogue, capsys):
    run, weights, _ = catalogue
    before = _store_state(run)
    out = run.parent / "train"
    argv = [
        "train",
        "--store",
        str(run / "run.sqlite"),
        "--out",
        str(out),
        "--arch",
        "tiny",
        "--weights",
        str(weights),
        *SIZE,
        "--freeze-backbone",
        "--epochs",
        "2",
        *SMALL,
    ]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data_format"] == "store" and cfg["sampler"] == "none" and cfg["store"] is None
    with AnnotationStore.open(run / "run.sqlite") as s:
        want = s.constraints()
        files = photo_files(s)
    got = PairConstraints.load(out / "constraints.npz")
    assert np.array_equal(got.pairs, want.pairs) and len(got) == len(want) > 30
    metrics = read_lines(out / "metrics.jsonl")
    assert [m["answers_total"] for m in metrics] == [len(want)] * 2
    assert not any("mAP" in m for m in metrics)  # no query/gallery, no evaluation
    assert _store_state(run) == before  # nothing asked, nothing written to the store
    assert "done; " in capsys.readouterr().out

    # ... and its model.pt re-embeds the catalogue, season photos included, from the
    # feature cache the run kept (the backbone is not run again)
    model = load_model(out / "model.pt")
    expected = embed_images(model, files, size=(32, 16), device="cpu")

    def no_images(*a, **k):
        raise AssertionError("embedded the images although the feature cache fits")

    import aas_core.train.embed as embed_module

    real = embed_module.embed_images
    embed_module.embed_images = no_images
    try:
        argv = [
            "catalogue",
            str(run.parent / "a/images"),
            "--out",
            str(run),
            "--reembed",
            "--model",
            str(out / "model.pt"),
            "--no-serve",
            "--k1",
            "10",
        ]
        assert main(argv) == 0, capsys.readouterr().err
    finally:
        embed_module.embed_images = real
    text = capsys.readouterr().out
    assert "re-embedded 92 photos (model:" in text and "changed identity" in text
    after = _store_state(run)
    assert after["answers"] == before["answers"]
    assert np.abs(np.load(after["path"]) - expected).max() < 1e-5
    assert after["history"][-1]["source"] == f"model:{(out / 'model.pt').resolve()}"
    # a new season must come from the same model: the backbone's name alone would not do
    season = run.parent / "c"
    season.mkdir()
    (season / "x.png").write_bytes(files[0].read_bytes())
    argv = ["catalogue", str(season), "--add-to", str(run), "--no-serve", "--k1", "10"]
    assert main(argv) == 2
    assert "come from a model file" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "not a catalogue", "photo gone"])
def test_train_store_errors_name_the_option(catalogue, tmp_path, capsys, case):
    run, weights, _ = catalogue
    store = run / "run.sqlite"
    if case == "missing":
        store, message = tmp_path / "none.sqlite", "does not exist"
    elif case == "not a catalogue":
        store, message = tmp_path / "plain.sqlite", "is not the store of a catalogue"
        AnnotationStore.create(store, ["a.png", "b.png"]).close()
    else:
        with AnnotationStore.open(store) as s:
            photo_files(s)[80].unlink()  # a season photo
        message = "1 of its 92 photos are missing, the first 'images/"
    argv = [
        "train",
        "--store",
        str(store),
        "--out",
        str(tmp_path / "t"),
        "--arch",
        "tiny",
        *SIZE,
        "--freeze-backbone",
        "--epochs",
        "1",
        *SMALL,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aas train: error: --store") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "t").exists()


def test_learn_measures_both_embeddings_and_replaces_nothing(catalogue, capsys):
    run, weights, y = catalogue
    before = _store_state(run)
    logs = []
    kw = dict(arch="tiny", weights=weights, size=(32, 16), epochs=2, k1=10, k2=3, log=logs.append)
    with AnnotationStore.open(run / "run.sqlite") as s:
        r = learn(run, s, holdout=0.3, seed=1, **kw)
        assert np.isfinite(r.auc) and np.isfinite(r.auc_current) and 0 < r.n_heldout < 60
        n_diff = r.n_heldout - r.n_same_heldout
        assert r.better == (r.auc > r.auc_current and min(r.n_same_heldout, n_diff) >= 10)
        assert r.n_train + r.n_heldout == len(s.constraints())
        assert r.embeddings.shape == (92, 64) and r.embeddings.dtype == np.float32
        assert np.allclose(np.linalg.norm(r.embeddings, axis=1), 1, atol=1e-5)
        assert "held-out AUC" in r.message
        assert any("caching backbone features of 92" in line for line in logs)
        # the second retraining reads the features from the run folder
        logs.clear()
        again = learn(run, s, holdout=0.3, seed=1, **kw)
        assert not any("caching" in line for line in logs)
        assert np.allclose(again.embeddings, r.embeddings, atol=1e-5)
    assert (run / frozen.FEATURE_CACHE).is_file()
    assert _store_state(run) == before  # neither the store nor its embeddings were written

    # the caller keeps it: its model re-embeds from the run's cache, as learn embedded
    r.save_model(run.parent / "learnt.pt")
    argv = [
        "catalogue",
        str(run.parent / "a/images"),
        "--out",
        str(run),
        "--reembed",
        "--model",
        str(run.parent / "learnt.pt"),
        "--no-serve",
        "--k1",
        "10",
    ]
    assert main(argv) == 0
    assert "re-embedded 92 photos" in capsys.readouterr().out
    with AnnotationStore.open(run / "run.sqlite") as s:
        X = np.load(s.embeddings_path)
        assert X.shape == (92, 64)
        assert json_detail(s)["feature_cache"] is True
        files = photo_files(s)
    # as 'aas embed --model' gives them (learn's own average each photo with its mirror)
    expected = embed_images(load_model(run.parent / "learnt.pt"), files, device="cpu")
    assert np.abs(X - expected).max() < 1e-5


def json_detail(store):
    return json.loads(store.embeddings_history()[-1]["detail"])


def test_reembed_with_a_backbone_by_name(catalogue, capsys, monkeypatch):
    run, weights, _ = catalogue
    from aas_core.train import models

    def tiny_pretrained(cls, name, *, last_stride=None):  # no real weights in tests
        net = build_backbone("tiny", weights=weights)
        net.backbone = name
        net.preprocess = net.preprocess.with_size((32, 16))
        return cls(net)

    monkeypatch.setattr(models.ReIDModel, "pretrained", classmethod(tiny_pretrained))
    argv = [
        "catalogue",
        str(run.parent / "a/images"),
        "--out",
        str(run),
        "--reembed",
        "--backbone",
        "efficientnet-lite2",
        "--no-serve",
        "--k1",
        "10",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    with AnnotationStore.open(run / "run.sqlite") as s:
        files = photo_files(s)
        X = np.load(s.embeddings_path)
        assert s.embeddings_history()[-1]["source"] == "backbone:efficientnet-lite2"
    model = models.ReIDModel(build_backbone("tiny", weights=weights))
    assert np.abs(X - embed_images(model, files, size=(32, 16), device="cpu")).max() < 1e-5


def test_train_store_starts_from_learns_cache_and_asks_only_with_a_sampler(catalogue, capsys):
    run, weights, _ = catalogue
    with AnnotationStore.open(run / "run.sqlite") as s:
        learn(run, s, arch="tiny", weights=weights, size=(32, 16), epochs=1, k1=10, k2=3)
        n_pairs = len(s.pairs())
    capsys.readouterr()
    out = run.parent / "t"
    argv = [
        "train",
        "--store",
        str(run / "run.sqlite"),
        "--out",
        str(out),
        "--arch",
        "tiny",
        "--weights",
        str(weights),
        *SIZE,
        "--freeze-backbone",
        "--epochs",
        "1",
        *SMALL,
    ]
    # a sampler asked for explicitly: pairs are queued in the store and the run waits (today's
    # behaviour of --store); the backbone's features come from the catalogue's cache
    assert main([*argv, "--sampler", "random", "--budget", "5"]) == 3
    text = capsys.readouterr().out
    assert "caching backbone features" not in text and "waiting for a person" in text
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert len(s.pairs()) == n_pairs + 5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sampler"] == "random" and cfg["store"] == str((run / "run.sqlite").resolve())
