"""``aas catalogue``: set-up from embeddings, resume, --status, --export, bad input."""

import csv

import numpy as np
import pytest

import aas_core as aas
from aas_core.annotate import AnnotationStore
from aas_core.cli import main

pytest.importorskip("flask", reason="aas catalogue serves the [web] page")


@pytest.fixture
def photos(tmp_path):
    X, y = aas.datasets.make_reid_blobs(120, d=16, seed=2)
    root = tmp_path / "photos"
    paths = []
    for k, ident in enumerate(y.tolist()):
        p = f"cam{k % 2}/{ident}_{k}.png"
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"\x89PNG")
        paths.append(p)
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    return root, tmp_path / "X.npy", y


def _run(*argv):
    return main(["catalogue", *map(str, argv)])


def test_set_up_resume_status_and_export(tmp_path, photos, capsys):
    root, emb, y = photos
    run = tmp_path / "run"
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "created" in out and "120 photos" in out and "too few answers" in out
    with AnnotationStore.open(run / "run.sqlite") as s:  # answer like a person would
        s.add_pairs([[i, j] for i in range(0, 60, 2) for j in (i + 1,)], sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "created" not in out and "30 answers" in out
    assert "probably one individual" in out or "unlikely to change" in out

    assert _run(root, "--out", run, "--export", tmp_path / "exp", "--k1", 8) == 0
    exp = tmp_path / "exp"
    rows = list(csv.reader((exp / "catalogue.csv").read_text().splitlines()))
    assert rows[0] == ["image_path", "identity", "identity_name"] and len(rows) == 121
    assert {r[0] for r in rows[1:]} == {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert (exp / "contact_sheet.html").is_file() and (exp / "identities").is_dir()
    linked = sum(1 for f in (exp / "identities").rglob("*.png"))
    assert linked == 120
    assert not list(tmp_path.glob(".exp*"))  # nothing half-written left


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--media", "m.csv"], "--media goes with --export"),
        (["--export", "{tmp}"], "already exists; name a new folder"),
        (["--backbone", "resnet9000"], "--backbone"),
    ],
)
def test_bad_options_are_one_line(tmp_path, photos, capsys, extra, message):
    root, emb, _ = photos
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert _run(root, "--out", tmp_path / "run", "--embeddings", emb, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("aas catalogue: error:") and message in err and "Traceback" not in err


def test_embeddings_without_rows_or_from_elsewhere_are_refused(tmp_path, photos, capsys):
    root, emb, _ = photos
    (tmp_path / "X.rows.csv").unlink()
    assert _run(root, "--out", tmp_path / "run", "--embeddings", emb, "--no-serve") == 2
    assert "no X.rows.csv beside it" in capsys.readouterr().err
    assert _run(tmp_path / "nope", "--out", tmp_path / "run") == 2
    assert "PHOTOS" in capsys.readouterr().err and not (tmp_path / "run").exists()


def _season(tmp_path, name, X, start):
    root = tmp_path / name
    paths = []
    for k in range(len(X)):
        p = f"cam{k % 2}/IMG_{k:04d}.png"  # the same file names as another season's
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"\x89PNG%d" % (start + k))
        paths.append(p)
    emb = tmp_path / f"{name}.npy"
    np.save(emb, X)
    with open(tmp_path / f"{name}.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    return root, emb


def test_a_new_season_is_added_and_linked_to_the_known_identities_first(tmp_path, capsys):
    rng = np.random.default_rng(6)  # 20 well-apart animals, 8 photos each
    y = np.repeat(np.arange(20), 8)
    X = (rng.normal(size=(20, 16))[y] + 0.15 * rng.normal(size=(160, 16))).astype(np.float32)
    first, second = np.arange(0, 160, 2), np.arange(1, 160, 2)  # both seasons see every animal
    root_a, emb_a = _season(tmp_path, "2024", X[first], 0)
    root_b, emb_b = _season(tmp_path, "2025", X[second], 1000)
    run = tmp_path / "run"
    assert _run(root_a, "--out", run, "--embeddings", emb_a, "--no-serve", "--k1", 8) == 0
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs([[0, 1]], sampler="t", cycle=0)
        s.answer(1, "different")
    capsys.readouterr()
    assert _run(root_b, "--add-to", run, "--embeddings", emb_b, "--no-serve", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "added 80 photos" in out and "questions link the new photos" in out
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.n_images == 160 and len(s.answers()) == 1  # nothing lost
        assert s.image_paths()[80] == "2025/cam0/IMG_0000.png"
        assert s.image_file(80, root_a) == root_b.resolve() / "cam0/IMG_0000.png"
        links = [p for p in s.pairs() if p["sampler"] == "season"]
        assert len(links) == 80 and all(p["i"] < 80 <= p["j"] for p in links)
        truth = np.r_[y[first], y[second]]
        right = np.mean([truth[p["i"]] == truth[p["j"]] for p in links])
        assert right > 0.8, right  # the nearest known identity is mostly the right animal
        probs = [p["prob"] for p in links]
        assert probs == sorted(probs, reverse=True)  # most similar first (none named yet)
    # the export finds each season's files in its own folder
    assert _run(root_b, "--add-to", run, "--embeddings", emb_b, "--no-serve") == 2
    assert "were these photos added before" in capsys.readouterr().err
    assert _run(root_a, "--out", run, "--export", tmp_path / "exp", "--k1", 8) == 0
    files = [f for f in (tmp_path / "exp" / "identities").rglob("*.png")]
    assert len(files) == 160
    assert {f.resolve().read_bytes() for f in files} == {
        b"\x89PNG%d" % k for k in [*range(80), *range(1000, 1080)]
    }
    assert _run(root_a, "--add-to", run, "--no-serve") == 2
    assert "is the run's own folder" in capsys.readouterr().err


def test_without_the_web_extra_it_says_so_before_embedding(tmp_path, photos, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "waitress" else real(name, *a)
    )
    root, emb, _ = photos
    assert _run(root, "--out", tmp_path / "run", "--embeddings", emb) == 2
    err = capsys.readouterr().err
    assert "needs waitress" in err and 'pip install ".[web]"' in err
    assert not (tmp_path / "run").exists()


def test_no_photos_and_a_new_season_from_another_backbone_are_refused(tmp_path, photos, capsys):
    import json

    root, emb, _ = photos
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    assert _run(empty, "--out", tmp_path / "r0", "--no-serve") == 2
    assert "PHOTOS" in capsys.readouterr().err and not (tmp_path / "r0").exists()
    run = tmp_path / "run"
    (tmp_path / "X.provenance.json").write_text(
        json.dumps({"model": {"backbone": "efficientnet-lite0"}})
    )
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    new = tmp_path / "2025"
    (new / "a").mkdir(parents=True)
    (new / "a" / "1.png").write_bytes(b"\x89PNG")
    np.save(tmp_path / "Y.npy", np.ones((1, 16), np.float32))
    (tmp_path / "Y.rows.csv").write_text("index,path,identity\n0,a/1.png,\n")
    (tmp_path / "Y.provenance.json").write_text(json.dumps({"model": {"backbone": "dinov2-s"}}))
    capsys.readouterr()
    assert _run(new, "--add-to", run, "--embeddings", tmp_path / "Y.npy", "--no-serve") == 2
    assert "made with dinov2-s but the run's with efficientnet-lite0" in capsys.readouterr().err
    assert _run(new, "--add-to", run, "--backbone", "efficientnet-lite2", "--no-serve") == 2
    assert "differs from the run's efficientnet-lite0" in capsys.readouterr().err
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.n_images == 120  # nothing was added


def test_cameras_come_from_a_camera_or_station_column_else_the_folder(tmp_path):
    from aas_core.cli.catalogue import _cameras
    from aas_core.train.embed import save_embeddings

    X = np.ones((3, 4), np.float32)
    out, rows, _ = save_embeddings(
        tmp_path / "X.npy",
        X,
        ["a/1.png", "a/2.png", "b/3.png"],
        ["", "", ""],
        {},
        cameras=[7, 7, 9],
    )
    assert rows.read_text().splitlines()[:2] == ["index,path,identity,camera", "0,a/1.png,,7"]
    assert _cameras(out) == {0: "7", 1: "7", 2: "9"}
    (tmp_path / "Y.rows.csv").write_text("index,path,identity,station\n0,a.png,,\n1,b.png,,North\n")
    assert _cameras(tmp_path / "Y.npy") == {1: "North"}
    assert _cameras(tmp_path / "none.npy") == {}
