"""A better embedding under an existing catalogue: ``--reembed`` and ``catalogue.learn``.

Targets: with the backbone's features cached, ``aas catalogue --reembed`` of 3,000
photos takes <= 10 s plus the embedding itself; one ``learn`` retraining of 3,000
photos <= 30 s on 2 cores.

The photos are placeholder files (a feature cache is keyed by each file's path, size and
modification time, so no image is decoded) and the backbone's features are synthetic:
1280-d views (image, mirror) of ``make_reid_blobs`` identities plus a strong per-camera
offset (4 cameras), the kind of nuisance answers can teach a head to ignore. They are
written as ``RUN/features.npz`` for efficientnet-lite0, exactly as ``learn`` would cache
them. The run has ``--answers`` answers: half "same" pairs across cameras, half
"different" pairs within one camera. Three JSON lines, each timed in this process
after the imports (start-up and ``import torch`` are not counted):

- ``reembed-file``: ``aas catalogue RUN --reembed --embeddings Y.npy --no-serve``
  (Y: the first views, rows shuffled; reading the file is the embedding);
- ``reembed-cached``: ``--reembed --model model.pt`` (a frozen efficientnet-lite0 head):
  the head runs on the cached features, the backbone never;
- ``learn``: ``aas_core.catalogue.learn(RUN, store)``: seconds (features read from the
  cache), held-out AUC of the new and the current embedding.

    python benchmarks/bench_reembed.py --n 3000
    python benchmarks/bench_reembed.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import emit, header


def _features(n, seed):
    from aas_core.datasets import make_reid_blobs

    X, y = make_reid_blobs(n, d=1280, seed=seed)
    rng = np.random.default_rng(seed)
    cam = rng.integers(0, 4, n)
    offsets = rng.normal(size=(4, 1280)).astype(np.float32)
    offsets *= 1.5 / np.linalg.norm(offsets, axis=1, keepdims=True)
    base = X + offsets[cam]
    mirror = base + 0.05 * rng.normal(size=base.shape).astype(np.float32)
    return np.stack([base, mirror], axis=1).astype(np.float32), y, cam


def _answers(y, cam, m, seed):
    rng = np.random.default_rng(seed)
    pairs = set()
    ids = np.unique(y[y >= 0])
    while len(pairs) < m // 2:  # same animal, other camera
        members = np.flatnonzero(y == rng.choice(ids))
        if len(members) > 1:
            i, j = rng.choice(members, 2, replace=False)
            pairs.add((min(i, j), max(i, j)))
    while len(pairs) < m:  # other animal, same camera
        i = int(rng.integers(len(y)))
        others = np.flatnonzero((cam == cam[i]) & (y != y[i]))
        j = int(rng.choice(others))
        pairs.add((min(i, j), max(i, j)))
    pairs = np.array(sorted(pairs), np.int64)
    return pairs, y[pairs[:, 0]] == y[pairs[:, 1]]


def _write_rows(npy, X, paths):
    np.save(npy, X)
    with open(npy.with_name(npy.stem + ".rows.csv"), "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )


def _quiet(fn, *a, **k):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = fn(*a, **k)
    return rc, out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="photos")
    ap.add_argument("--answers", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=8, help="learn's epochs (its default)")
    ap.add_argument("--smoke", action="store_true", help="300 photos, 60 answers, 2 epochs")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.answers, args.epochs = 300, 60, 2
    import torch

    from aas_core.annotate import AnnotationStore
    from aas_core.catalogue import learn, photo_files
    from aas_core.cli import main as aas
    from aas_core.train import frozen
    from aas_core.train.driver import TrainConfig, _build_model
    from aas_core.train.models import save_model

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    views, y, cam = _features(args.n, seed=0)
    pairs, same = _answers(y, cam, args.answers, seed=1)
    base = header("reembed", args.n, 1280, 30, torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos, run = tmp / "photos", tmp / "run"
        paths = [f"cam{c}/{k:05d}.jpg" for k, c in enumerate(cam.tolist())]
        for p in paths:
            (photos / p).parent.mkdir(parents=True, exist_ok=True)
            (photos / p).write_bytes(b"\xff\xd8 placeholder")
        X0 = views[:, 0] / np.linalg.norm(views[:, 0], axis=1, keepdims=True)
        _write_rows(tmp / "X.npy", X0, paths)
        rc, _ = _quiet(
            aas,
            [
                "catalogue",
                str(photos),
                "--out",
                str(run),
                "--embeddings",
                str(tmp / "X.npy"),
                "--no-serve",
            ],
        )
        assert rc == 0
        store_path = run / "run.sqlite"
        with AnnotationStore.open(store_path) as s:
            s.add_pairs(pairs, sampler="bench", cycle=0)
            for p in s.pairs():
                s.answer(p["pair_id"], "same" if same[p["pair_id"] - 1] else "different")
            files = photo_files(s)
        # the cache learn would write, for efficientnet-lite0
        model, cfg = _build_model(
            TrainConfig(data=str(store_path), data_format="store", freeze_backbone=True)
        )
        size = (cfg.height, cfg.width)
        key = frozen._cache_key(cfg.backbone_info, size, {"train": files})
        np.savez(
            run / frozen.FEATURE_CACHE, key=np.array(json.dumps(key, sort_keys=True)), train=views
        )
        frozen.init_head(model, views)
        save_model(tmp / "model.pt", model, extra={"config": cfg.to_json()})

        perm = np.random.default_rng(2).permutation(args.n)
        _write_rows(tmp / "Y.npy", X0[perm], [paths[k] for k in perm])
        argv = ["catalogue", str(photos), "--out", str(run), "--reembed", "--no-serve"]
        t = time.perf_counter()
        rc, out = _quiet(aas, [*argv, "--embeddings", str(tmp / "Y.npy")])
        seconds = time.perf_counter() - t
        assert rc == 0, out
        emit(
            {
                **base,
                "part": "reembed-file",
                "seconds": round(seconds, 2),
                "report": out.splitlines()[0],
            }
        )

        t = time.perf_counter()
        rc, out = _quiet(aas, [*argv, "--model", str(tmp / "model.pt")])
        seconds = time.perf_counter() - t
        assert rc == 0, out
        with AnnotationStore.open(store_path) as s:
            detail = json.loads(s.embeddings_history()[-1]["detail"])
        assert detail["feature_cache"], "the cache did not fit"
        emit(
            {
                **base,
                "part": "reembed-cached",
                "seconds": round(seconds, 2),
                "seconds_embedding": detail["seconds_embedding"],
                "seconds_rest": round(seconds - detail["seconds_embedding"], 2),
                "report": out.splitlines()[0],
            }
        )

        with AnnotationStore.open(store_path) as s:
            X_now = np.load(s.embeddings_path)
            t = time.perf_counter()
            r = learn(run, s, current=X0, epochs=args.epochs)
            seconds = time.perf_counter() - t
            assert np.array_equal(np.load(s.embeddings_path), X_now)  # nothing replaced
        emit(
            {
                **base,
                "part": "learn",
                "seconds": round(seconds, 2),
                "seconds_features": round(r.seconds_features, 2),
                "epochs": args.epochs,
                "answers_trained": r.n_train,
                "answers_held_out": r.n_heldout,
                "auc_new": round(r.auc, 4),
                "auc_current": round(r.auc_current, 4),
                "better": r.better,
            }
        )


if __name__ == "__main__":
    main()
