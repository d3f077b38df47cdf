"""evaluate_embeddings and `aas evaluate --embeddings` (no torch needed)."""

from pathlib import Path

import numpy as np
import pytest

import aas_core as aas
from aas_core.cli import main
from aas_core.datasets import ImageDataset
from aas_core.metrics import open_set, retrieval
from aas_core.train.evaluate import evaluate_embeddings


def _dataset(n=240, seed=0):
    X, y = aas.datasets.make_reid_blobs(n, d=32, seed=seed)
    ids = np.unique(y)
    test_ids = ids[ids % 3 == 0]
    rng = np.random.default_rng(seed)
    split = np.where(np.isin(y, test_ids), "gallery", "train").astype(object)
    for i in test_ids:  # the first image of each test identity is its query
        split[np.flatnonzero(y == i)[0]] = "query"
    cam = rng.integers(0, 3, n)
    names = tuple(str(i) for i in range(y.max() + 1))
    ds = ImageDataset(
        tuple(f"{i}.png" for i in range(n)),
        y,
        names,
        Path("/nowhere"),
        camera=cam,
        split=split.astype(str),
    )
    return X, ds


def test_reid_protocol_equals_direct_retrieval():
    X, ds = _dataset()
    got = evaluate_embeddings(X, ds)
    q, g = ds.split == "query", ds.split == "gallery"
    r = retrieval.evaluate(
        X[q],
        X[g],
        ds.identity[q],
        ds.identity[g],
        query_cameras=ds.camera[q],
        gallery_cameras=ds.camera[g],
    )
    assert got["mAP"] == r.mean_ap and got["mINP"] == r.mean_inp
    assert got["top1"] == r.cmc[1] and got["n_query"] == q.sum()


def test_reid_protocol_on_a_test_split_queries_each_image_against_the_others():
    X, ds = _dataset()
    split = np.where(ds.split == "train", "train", "test")
    ds2 = ImageDataset(ds.paths, ds.identity, ds.identity_names, ds.root, split=split)
    got = evaluate_embeddings(X, ds2)
    t = split == "test"
    r = retrieval.evaluate(X[t], X[t], ds.identity[t], ds.identity[t], exclude_self=True)
    assert got["mAP"] == pytest.approx(r.mean_ap)


def test_open_set_protocol_follows_protocol_split():
    X, ds = _dataset()
    # Identities shared by train and test make some queries "known".
    split = ds.split.copy()
    tr = np.flatnonzero(split == "train")
    split[tr[::4]] = "test"
    split[split == "query"] = "test"
    split[split == "gallery"] = "test"
    ds2 = ImageDataset(ds.paths, ds.identity, ds.identity_names, ds.root, split=split)
    got = evaluate_embeddings(X, ds2, protocol="open-set", threshold=0.5, seed=1)
    trr, te = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    s = open_set.protocol_split(ds.identity[trr], X[trr], seed=1)
    g = trr[s.gallery]
    qid = np.where(np.isin(ds.identity[te], ds.identity[g]), ds.identity[te], -1)
    o = open_set.evaluate(X[te], X[g], qid, ds.identity[g], threshold=0.5)
    assert got["BAKS"] == o.baks and got["AUC_ROC"] == o.auc_roc and got["BAUS"] == o.baus
    assert got["n_known_queries"] == o.n_known > 0 and got["n_unknown_queries"] == o.n_unknown > 0
    assert 0 <= got["mAP"] <= 1


def test_bad_input():
    X, ds = _dataset()
    with pytest.raises(ValueError, match="one row per image"):
        evaluate_embeddings(X[:-1], ds)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_embeddings(X, ds, protocol="closed")
    nosplit = ImageDataset(ds.paths, ds.identity, ds.identity_names, ds.root)
    with pytest.raises(ValueError, match="split"):
        evaluate_embeddings(X, nosplit)


def test_cli_evaluate_embeddings(tmp_path, capsys):
    X, ds = _dataset()
    lines = ["path,identity,camera,split"]
    lines += [f"{p},{i},{c},{s}" for p, i, c, s in zip(ds.paths, ds.identity, ds.camera, ds.split)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "m.json"
    rc = main(
        [
            "evaluate",
            "--csv",
            str(tmp_path / "labels.csv"),
            "--embeddings",
            str(tmp_path / "X.npy"),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    import json

    m = json.loads(out.read_text())
    assert m["mAP"] == pytest.approx(evaluate_embeddings(X, ds)["mAP"])
    assert "mAP" in capsys.readouterr().out
    np.save(tmp_path / "short.npy", X[:5])
    rc = main(
        [
            "evaluate",
            "--csv",
            str(tmp_path / "labels.csv"),
            "--embeddings",
            str(tmp_path / "short.npy"),
        ]
    )
    assert rc == 2 and "rows" in capsys.readouterr().err
