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
