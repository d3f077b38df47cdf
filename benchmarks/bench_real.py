"""Real photos: every sampler on fixed features, and --freeze-backbone SpCL with each (issue 13).

``--data DIR`` is a folder with ``manifest.csv`` (``path,identity,split``,
paths relative to DIR) holding a ``train`` and a ``test`` split with disjoint
individuals -- for example the lion development set built by the project's
lion manifest tool from a fetched copy of tvanzyl/wildlife_reidentification.
Such data is never committed and never used by CI.

1. **Embed** the images once with ``--backbone`` (default efficientnet-lite0):
   the backbone's features of every image and its mirror, cached under
   ``$AAS_BENCH_CACHE`` (the same file ``--freeze-backbone`` runs read).
2. **Fixed features** (``part="fixed"``): the training images' embeddings
   (flip-averaged, L2-normalised) go through ``ActiveLoop`` with a perfect
   oracle for ``--cycles`` cycles of each ``--budget``, every sampler, each
   ``--seeds``; pairwise F1 of the refined clustering per cycle.
3. **Training** (``part="train"``): ``aas train --freeze-backbone`` on the
   train split, SpCL alone and SpCL + each sampler at the same budget per
   cycle, ``--epochs`` epochs with a cycle every ``--al-every``; test-split
   mAP and rank-1 (test images against each other) at every evaluation, the
   pseudo-label pairwise F1 after NP3, pairs used, seconds per stage.

4. **Blocks** (``--train-blocks N ...``, ``part="blocks"``): ``aas train
   --train-blocks N`` (0: the head alone; ``all``: the whole network) with
   ``--method`` (default aas), for each N and each ``--precision``; test mAP
   at every evaluation, seconds per epoch (training, and the whole epoch),
   the caching time, the keep rule's verdict per cycle and the peak resident
   memory of the run (each run in a fresh process, so the peaks do not mix).

One JSON line per (part, budget, method) with per-seed values and their
means; the untrained backbone's test mAP is in every training line
(``untrained``); a plot goes to ``--plot``.

    python benchmarks/bench_real.py --data /path/to/lion --budget 0.0002 0.005
    python benchmarks/bench_real.py --data /path/to/lion --part blocks --train-blocks 0 1 2 \
        --precision fp32 bf16 --epochs 4 --al-every 2 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CACHE, emit, header
from _real_blocks import part_blocks, part_steps, train_kwargs

SAMPLERS = ("aas", "nis", "lbas", "gbas", "random")
NAMES = {
    "none": "SpCL",
    "aas": "AAS",
    "nis": "NIS",
    "lbas": "LBAS",
    "gbas": "GBAS",
    "random": "Random",
}


def read_manifest(data: Path):
    path = data / "manifest.csv"
    if not path.is_file():
        raise SystemExit(f"bench_real: --data {data}: no manifest.csv (path,identity,split)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "split" not in rows[0]:
        raise SystemExit(f"bench_real: {path} has no split column (need train and test)")
    splits = sorted({r["split"] for r in rows})
    if not {"train", "test"} <= set(splits):
        raise SystemExit(f"bench_real: {path} needs splits train and test; it has {splits}")
    return path, rows


def feature_cache(data: Path, manifest: Path, backbone: str, args):
    """(config for the runs, path of a features.npz the runs can start from)."""
    from aas_core.train import frozen
    from aas_core.train.driver import TrainConfig, _build_model, load_datasets

    config = TrainConfig(
        data=str(manifest),
        backbone=backbone,
        freeze_backbone=True,
        device="cpu",
        num_workers=args.workers,
        progress=False,
    )
    model, config = _build_model(config)
    _, train, query, _ = load_datasets(config)
    key = f"real_{data.name}_{backbone.replace(':', '_').replace('/', '_')}"
    cache_path = CACHE / f"{key}_{config.backbone_info['weights_sha256'][:12]}.npz"
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache = frozen.load_or_compute(
        cache_path,
        model.backbone.trunk,
        {"train": train.files, "query": query.files},
        backbone_info=config.backbone_info,
        size=(config.height, config.width),
        batch_size=16,
        device="cpu",
        num_workers=args.workers,
        say=lambda s: print("#", s, flush=True),
    )
    print(f"# features ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return config, cache_path, cache, train, query


def untrained_map(cache, query) -> dict:
    from aas_core.metrics import retrieval

    v = cache["query"]
    X = v.mean(axis=1)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    r = retrieval.evaluate(X, X, query.identity, query.identity, exclude_self=True)
    return {"mAP": round(float(r.mean_ap), 4), "top1": round(float(r.cmc[1]), 4)}


def part_fixed(cache, train, args, budget) -> list:
    import aas_core as aas
    from aas_core.loop import cluster_features

    X = cache["train"].mean(axis=1)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    y = train.identity
    cs = cluster_features(X, eps=args.eps)
    lines = []
    for name in SAMPLERS:
        runs = []
        for seed in args.seeds:
            sampler = _sampler(name)
            loop = aas.ActiveLoop(
                X,
                sampler,
                aas.LabelOracle(y),
                budget_per_cycle=budget,
                cycles=args.cycles,
                seed=seed,
                clusters=cs,
                merge=args.merge,
            )
            recs = loop.run()
            runs.append(
                {
                    "f1": [round(r["pairwise_f1"], 4) for r in recs],
                    "pairs": [r["pairs_total"] for r in recs],
                    "seconds": round(sum(sum(r["seconds"].values()) for r in recs), 3),
                }
            )
        f1 = np.mean([r["f1"] for r in runs], axis=0)
        lines.append(
            {
                "part": "fixed",
                "method": NAMES[name],
                "budget": budget,
                "merge": args.merge,
                "eps": round(cs.eps.eps, 4),
                "f1_mean": [round(float(v), 4) for v in f1],
                "never_below_cycle0": bool(all(min(r["f1"]) >= r["f1"][0] - 1e-9 for r in runs)),
                "per_seed": runs,
            }
        )
    return lines


def _sampler(name):
    import aas_core as aas

    return {
        "aas": aas.sampling.AmbiguityAwareSampler,
        "nis": aas.sampling.NISSampler,
        "lbas": aas.sampling.LBAS,
        "gbas": aas.sampling.GBAS,
        "random": aas.sampling.RandomPairSampler,
    }[name]()


def part_train(manifest, backbone, cache_path, args, budget, untrained) -> list:
    from aas_core.train.driver import TrainConfig, train

    lines = []
    for name in args.methods or ("none", *SAMPLERS):
        runs = []
        for seed in args.seeds:
            run = Path(tempfile.mkdtemp(prefix="bench_real_")) / "run"
            try:
                config = TrainConfig(
                    **train_kwargs(
                        args,
                        manifest,
                        budget,
                        name,
                        seed,
                        backbone=backbone,
                        freeze_backbone=True,
                        head_dim=args.head_dim,
                        feature_cache=str(cache_path),
                    )
                )
                t0 = time.perf_counter()
                summary = train(config, run, log=lambda s: None)
                wall = time.perf_counter() - t0
            finally:
                shutil.rmtree(run.parent, ignore_errors=True)
            ev = [m for m in summary["metrics"] if "mAP" in m]
            stages = {}
            for m in summary["metrics"]:
                for k, v in m.items():
                    if k.startswith("seconds_") and k != "seconds_epoch":
                        stages[k[8:]] = round(stages.get(k[8:], 0.0) + v, 2)
            runs.append(
                {
                    "seed": seed,
                    "epochs": [m["epoch"] + 1 for m in ev],
                    "mAP": [round(m["mAP"], 4) for m in ev],
                    "top1": [round(m["top1"], 4) for m in ev],
                    "pl_f1": [round(m.get("pl_f1", float("nan")), 4) for m in ev],
                    "answers": [m.get("answers_total", 0) for m in ev],
                    "eps": [m.get("eps") for m in ev],
                    "seconds": round(wall, 1),
                    "seconds_per_stage": stages,
                }
            )
        lines.append(
            {
                "part": "train",
                "method": NAMES[name],
                "budget": budget,
                "mAP_mean": [round(float(v), 4) for v in np.mean([r["mAP"] for r in runs], axis=0)],
                "top1_mean": [
                    round(float(v), 4) for v in np.mean([r["top1"] for r in runs], axis=0)
                ],
                "pl_f1_mean": [
                    round(float(v), 4) for v in np.mean([r["pl_f1"] for r in runs], axis=0)
                ],
                "final_mAP_per_seed": [r["mAP"][-1] for r in runs],
                "untrained": untrained,
                "per_seed": runs,
            }
        )
    return lines


def plot(lines, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# no matplotlib: no plot", file=sys.stderr)
        return
    budgets = sorted({ln["budget"] for ln in lines})
    fig, axes = plt.subplots(2, len(budgets), figsize=(5.5 * len(budgets), 8), squeeze=False)
    styles = {
        "SpCL": "k--",
        "AAS": "C3o-",
        "NIS": "C0s-",
        "LBAS": "C2^-",
        "GBAS": "C1v:",
        "Random": "C7x-.",
    }
    for col, b in enumerate(budgets):
        for ln in lines:
            if ln["budget"] != b:
                continue
            if ln["part"] == "fixed":
                ax = axes[0, col]
                ax.plot(
                    range(len(ln["f1_mean"])),
                    ln["f1_mean"],
                    styles[ln["method"]],
                    label=ln["method"],
                )
            else:
                ax = axes[1, col]
                ax.plot(
                    ln["per_seed"][0]["epochs"],
                    [100 * v for v in ln["mAP_mean"]],
                    styles[ln["method"]],
                    label=ln["method"],
                )
        axes[0, col].set(
            title=f"fixed features, {100 * b:.2f}% per cycle",
            xlabel="cycle",
            ylabel="pairwise F1 (refined)",
        )
        axes[1, col].set(
            title=f"--freeze-backbone, {100 * b:.2f}% per cycle",
            xlabel="epoch",
            ylabel="test mAP (%)",
        )
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"# wrote {path}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--budget", type=float, nargs="+", default=[0.0002])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--al-every", type=int, default=10)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--head-dim", type=int, default=None)
    p.add_argument("--iters", type=int, default=None, help="per epoch (default: one pass)")
    p.add_argument("--eps", default="auto")
    p.add_argument("--k1", type=int, default=30)
    p.add_argument(
        "--merge",
        choices=("auto", "clusters", "nearest"),
        default="auto",
        help="NP3's merge on a must-link (ActiveLoop's and the driver's default: auto)",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--part", choices=("fixed", "train", "both", "blocks", "steps"), default="both")
    p.add_argument("--batch", type=int, default=64, help="part steps: images a step")
    p.add_argument("--reps", type=int, default=7, help="part steps: steps per precision")
    p.add_argument(
        "--train-blocks",
        nargs="+",
        default=["0", "1", "2", "all"],
        help="part blocks: numbers of last blocks to train (0: the head; all: everything)",
    )
    p.add_argument("--precision", nargs="+", default=["auto"], choices=("auto", "bf16", "fp32"))
    p.add_argument("--method", choices=("none", *SAMPLERS), default="aas", help="part blocks")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("none", *SAMPLERS),
        default=None,
        help="part train: only these (default: SpCL alone and every sampler)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (part blocks)")
    p.add_argument(
        "--holdout", type=float, default=0.2, help="part blocks: share of answers held out"
    )
    p.add_argument("--plot", type=Path, default=Path("bench_real.png"))
    args = p.parse_args()
    if args.eps != "auto":
        args.eps = float(args.eps)
    if args.epochs < args.al_every * args.cycles:
        args.cycles = max(1, args.epochs // args.al_every)
    if args.part == "steps":  # no data: one batch of random images
        part_steps(args, {"bench": "real", "date": time.strftime("%Y-%m-%d")})
        return
    manifest, rows = read_manifest(args.data)
    config, cache_path, cache, train, query = feature_cache(
        args.data, manifest, args.backbone, args
    )
    untrained = untrained_map(cache, query)
    base = header("real", len(train), cache["train"].shape[2], args.k1, 2)
    base.update(
        data=str(args.data),
        backbone=args.backbone,
        test_images=len(query),
        train_identities=int(len(np.unique(train.identity[train.identity >= 0]))),
        seeds=args.seeds,
    )
    out = []
    for budget in args.budget:
        lines = []
        if args.part in ("fixed", "both"):
            lines += part_fixed(cache, train, args, budget)
        if args.part in ("train", "both"):
            lines += part_train(manifest, args.backbone, cache_path, args, budget, untrained)
        if args.part == "blocks":
            # its lines are emitted as they come
            part_blocks(manifest, cache_path, args, budget, untrained, base, NAMES)
            continue
        for ln in lines:
            emit({**base, **ln})
        out += lines
    if out:  # part blocks has no plot
        plot(out, args.plot)


if __name__ == "__main__":
    main()
