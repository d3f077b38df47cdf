"""``aas catalogue --reembed --embeddings``: a new embedding under an existing catalogue
(no torch needed; --backbone and --model are in test_catalogue_learn.py)."""

import csv
import json
import re

import numpy as np
import pytest

import aas_core as aas
from aas_core.annotate import AnnotationStore
from aas_core.catalogue import build_catalogue
from aas_core.catalogue.records import load_records
from aas_core.cli import main

K1 = ["--k1", "8"]


def _write_embeddings(path, X, paths):
    np.save(path, X)
    with open(path.with_name(path.name[: -len(".npy")] + ".rows.csv"), "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )


@pytest.fixture
def catalogue(tmp_path):
    """A run of 120 photos of 24 animals with 40 answers, one name and one check."""
    X, y = aas.datasets.make_reid_blobs(120, d=16, seed=2)
    root = tmp_path / "photos"
    paths = []
    for k, ident in enumerate(y.tolist()):
        p = f"cam{k % 2}/{ident}_{k}.png"
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"\x89PNG")
        paths.append(p)
    _write_embeddings(tmp_path / "X.npy", X, paths)
    run = tmp_path / "run"
    assert (
        main(
            [
                "catalogue",
                str(root),
                "--out",
                str(run),
                "--embeddings",
                str(tmp_path / "X.npy"),
                "--no-serve",
                *K1,
            ]
        )
        == 0
    )
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs([[i, i + 1] for i in range(0, 80, 2)], sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
        cat = build_catalogue(s, aas.cluster_features(X, k1=8))
        first = cat.identities[0]
        cat.rename(first.number, "Luna")
        cat.mark_checked(first.number)
    return root, run, X, y, paths


def _state(run):
    """Everything a re-embed must keep: answers, names, checks, the current embedding."""
    with AnnotationStore.open(run / "run.sqlite") as s:
        rec = load_records(s)
        return {
            "answers": s.answers(history=True),
            "names": rec.names,
            "checked": rec.checked,
            "embeddings": s.embeddings_path,
            "history": s.embeddings_history(),
        }


def _numbers(run, X):
    with AnnotationStore.open(run / "run.sqlite") as s:
        return build_catalogue(s, aas.cluster_features(X, k1=8), record=False).numbers


def test_reembed_keeps_every_answer_name_and_check_and_reports_the_changes(
    tmp_path, catalogue, capsys
):
    root, run, X, y, paths = catalogue
    before = _state(run)
    numbers_before = _numbers(run, X)
    # the new embedding merges animals 0 and 1: their photos change identity
    X_new = X.copy()
    X_new[y == 1] = X[y == 0].mean(axis=0) + 0.01 * X_new[y == 1]
    _write_embeddings(tmp_path / "Y.npy", X_new, paths)
    capsys.readouterr()
    argv = ["catalogue", str(root), "--out", str(run), "--reembed", "--no-serve", *K1]
    assert main([*argv, "--embeddings", str(tmp_path / "Y.npy")]) == 0
    out = capsys.readouterr().out
    after = _state(run)
    for key in ("answers", "names", "checked"):
        assert after[key] == before[key], key
    assert "Luna" in after["names"].values() and any(after["checked"].values())
    assert after["embeddings"] == run.resolve() / "embeddings-v2.npy"
    assert np.array_equal(np.load(after["embeddings"]), X_new)
    assert np.array_equal(np.load(tmp_path / "X.npy"), X)  # the old file is left as it was
    history = after["history"]
    assert [h["source"].split(":")[0] for h in history] == ["file", "file"]
    assert json.loads(history[1]["detail"])["replaces"] == str(before["embeddings"])
    numbers_after = _numbers(run, X_new)
    changed = int((numbers_before != numbers_after).sum())
    m = re.search(r"(\d+) photos changed identity; (\d+) identities before, (\d+) after", out)
    assert m, out
    assert int(m[1]) == changed > 0
    assert int(m[2]) == len(np.unique(numbers_before)) and int(m[3]) == len(
        np.unique(numbers_after)
    )
    # the status line reads the new embedding from now on
    assert main(["catalogue", str(root), "--out", str(run), "--status", *K1]) == 0
    assert "40 answers" in capsys.readouterr().out


def test_reembed_rows_in_another_order_are_put_in_the_store_order(tmp_path, catalogue):
    root, run, X, _, paths = catalogue
    perm = np.random.default_rng(0).permutation(len(paths))
    X_new = X * 3
    _write_embeddings(tmp_path / "Y.npy", X_new[perm], [paths[k] for k in perm])
    argv = ["catalogue", str(root), "--out", str(run), "--reembed", "--no-serve", *K1]
    assert main([*argv, "--embeddings", str(tmp_path / "Y.npy")]) == 0
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert np.array_equal(np.load(s.embeddings_path), X_new)


@pytest.mark.parametrize(
    "case, message",
    [
        ("other photos", "row 1 is 'elsewhere/a.png' (line 2 of Y.rows.csv), which is not a photo"),
        ("extra row", "row 121 is 'cam0/extra.png'"),
        ("missing photo", "has no row for the photo 'cam1/"),
        ("twice", "lists the photo 'cam0/"),
        ("row count", "has 119 rows but Y.rows.csv lists 120 photos"),
        ("no rows file", "no Y.rows.csv beside it"),
    ],
)
def test_reembed_from_embeddings_of_other_photos_is_refused_and_nothing_changes(
    tmp_path, catalogue, capsys, case, message
):
    root, run, X, _, paths = catalogue
    rows, Y = list(paths), X * 2
    if case == "other photos":
        rows[0] = "elsewhere/a.png"
    elif case == "extra row":
        rows, Y = rows + ["cam0/extra.png"], np.concatenate([Y, Y[:1]])
    elif case == "missing photo":
        rows, Y = rows[:-1], Y[:-1]
    elif case == "twice":
        rows[5] = rows[4]
    _write_embeddings(tmp_path / "Y.npy", Y, rows)
    if case == "row count":
        np.save(tmp_path / "Y.npy", Y[:-1])
    if case == "no rows file":
        (tmp_path / "Y.rows.csv").unlink()
    before = _state(run)
    capsys.readouterr()
    argv = ["catalogue", str(root), "--out", str(run), "--reembed", "--no-serve"]
    assert main([*argv, "--embeddings", str(tmp_path / "Y.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aas catalogue: error: --embeddings") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _state(run) == before
    assert not list(run.glob("*embeddings-v*"))


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--reembed needs the new embedding: give --backbone NAME, --embeddings X.npy"),
        (["--backbone", "efficientnet-lite2", "--model", "m.pt"], "got --backbone and --model"),
    ],
)
def test_reembed_without_one_new_embedding_says_which_to_give(catalogue, capsys, extra, message):
    root, run, *_ = catalogue
    before = _state(run)
    assert main(["catalogue", str(root), "--out", str(run), "--reembed", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _state(run) == before


def test_reembed_and_model_where_they_do_not_apply(tmp_path, catalogue, capsys):
    root, run, *_ = catalogue
    argv = ["catalogue", str(root), "--no-serve"]
    assert main([*argv, "--out", str(tmp_path / "new"), "--reembed", "--backbone", "dinov2-s"]) == 2
    assert "holds no catalogue yet" in capsys.readouterr().err
    assert main([*argv, "--out", str(run), "--model", "m.pt"]) == 2
    assert "--model goes with --reembed" in capsys.readouterr().err
    assert main([*argv, "--out", str(run), "--embeddings", str(tmp_path / "X.npy"), *K1]) == 0
    assert "add --reembed to switch this run to them" in capsys.readouterr().err


def test_an_interrupted_reembed_leaves_the_old_embeddings_in_use(
    tmp_path, catalogue, capsys, monkeypatch
):
    root, run, X, _, paths = catalogue
    _write_embeddings(tmp_path / "Y.npy", X * 2, paths)
    before = _state(run)
    real_save = np.save

    def ctrl_c(file, arr, *a, **k):
        real_save(file, arr[: len(arr) // 2])  # half written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", ctrl_c)
    argv = ["catalogue", str(root), "--out", str(run), "--reembed", "--no-serve", *K1]
    assert main([*argv, "--embeddings", str(tmp_path / "Y.npy")]) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.undo()
    assert _state(run) == before
    assert not list(run.glob("*embeddings-v*"))  # no half-written file left behind
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert np.array_equal(np.load(s.embeddings_path), X)
    assert main(["catalogue", str(root), "--out", str(run), "--status", *K1]) == 0


def test_reembed_is_the_way_out_when_the_old_embeddings_are_gone(tmp_path, catalogue, capsys):
    root, run, X, _, paths = catalogue
    (tmp_path / "X.npy").unlink()  # the run's embeddings lay outside the run folder
    assert main(["catalogue", str(root), "--out", str(run), "--status", *K1]) == 2
    capsys.readouterr()
    _write_embeddings(tmp_path / "Y.npy", X * 2, paths)
    argv = ["catalogue", str(root), "--out", str(run), "--reembed", "--no-serve", *K1]
    assert main([*argv, "--embeddings", str(tmp_path / "Y.npy")]) == 0
    out = capsys.readouterr().out
    assert "identities now (the old embeddings could not be used:" in out
    assert main(["catalogue", str(root), "--out", str(run), "--status", *K1]) == 0
    assert main([*argv, "--model", str(tmp_path / "nope.pt")]) == 2
    assert "--model" in capsys.readouterr().err
