"""Part "blocks" of bench_real.py: ``aas train --train-blocks N`` per N and precision,
each run in a fresh process (so that each peak memory is its own)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import emit


def train_kwargs(args, manifest, budget, sampler, seed, **kw) -> dict:
    """The TrainConfig arguments every training part of bench_real.py shares; ``kw`` adds."""
    return dict(
        data=str(manifest),
        epochs=args.epochs,
        lr=args.lr,
        iters=args.iters,
        step_size=max(1, int(0.4 * args.epochs)),
        sampler=sampler,
        budget=budget,
        al_every=args.al_every,
        al_cycles=args.cycles,
        eval_every=args.al_every,
        eps=args.eps,
        k1=args.k1,
        merge=args.merge,
        seed=seed,
        device="cpu",
        num_workers=args.workers,
        progress=False,
        **kw,
    )


def _blocks_run(queue, kw, threads, keep=None):
    """One run of part_blocks in a child process: its metrics and its own peak memory.
    ``keep``: where the run's activation cache is kept for the next runs (seeds) on the
    same blocks and precision, when it is not there yet."""
    import resource

    import torch

    from aas_core.train.activations import ACTIVATION_CACHE
    from aas_core.train.driver import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    run = Path(tempfile.mkdtemp(prefix="bench_real_blocks_")) / "run"
    try:
        t0 = time.perf_counter()
        summary = train(TrainConfig(**kw), run, log=lambda s: print("#", s, flush=True))
        wall = time.perf_counter() - t0
        if keep is not None and not keep.exists() and (run / ACTIVATION_CACHE).is_dir():
            shutil.move(str(run / ACTIVATION_CACHE), str(keep))
    finally:
        shutil.rmtree(run.parent, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    queue.put({"metrics": summary["metrics"], "seconds": wall, "peak_rss_mb": round(peak)})


def part_blocks(manifest, cache_path, args, budget, untrained, base, names) -> list:
    # the activations entering the last N blocks: cached by the first seed's run of each
    # N and precision, reused by the other seeds' (their caching seconds are then ~0)
    shared_dir = Path(tempfile.mkdtemp(prefix="bench_real_activations_"))
    lines = []
    try:
        for blocks in args.train_blocks:
            for precision in args.precision:
                for seed in args.seeds:
                    got, first = _one_blocks_run(
                        manifest, cache_path, args, budget, blocks, precision, seed, shared_dir
                    )
                    lines.append(
                        _blocks_line(got, args, budget, blocks, seed, first, untrained, names)
                    )
                    emit({**base, **lines[-1]})
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)
    return lines


def _one_blocks_run(manifest, cache_path, args, budget, blocks, precision, seed, shared_dir):
    import multiprocessing as mp

    shared = None if blocks in ("0", "all") else shared_dir / f"{blocks}_{precision}"
    first = shared is None or not shared.exists()
    if blocks == "0":  # the head alone starts from the features embedded once (not timed)
        start = str(cache_path)
    else:
        start = None if first else str(shared)
    kw = train_kwargs(
        args,
        manifest,
        budget,
        args.method,
        seed,
        backbone=args.backbone,
        train_blocks=0 if blocks == "0" else (None if blocks == "all" else int(blocks)),
        precision=precision,
        holdout=args.holdout,
        feature_cache=start,
    )
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_blocks_run, args=(queue, kw, args.threads, shared))
    child.start()
    got = queue.get()
    child.join()
    return got, first


def _blocks_line(got, args, budget, blocks, seed, first, untrained, names) -> dict:
    ms = got["metrics"]
    ev = [m for m in ms if "mAP" in m]
    return {
        "part": "blocks",
        "train_blocks": blocks,
        "precision": ms[0]["precision"],
        "method": names[args.method],
        "budget": budget,
        "seed": seed,
        "epochs": [m["epoch"] + 1 for m in ev],
        "mAP": [round(m["mAP"], 4) for m in ev],
        "top1": [round(m["top1"], 4) for m in ev],
        "kept": [m.get("kept") for m in ms if "keep_reason" in m],
        "auc_kept_new": [(m.get("auc_kept"), m.get("auc_new")) for m in ms if "keep_reason" in m],
        "iters": args.iters,  # None: one pass over the images (400 for all)
        "seconds_train_per_epoch": round(float(np.mean([m["seconds_train"] for m in ms])), 2),
        "seconds_epoch": [round(m["seconds_epoch"], 1) for m in ms],
        "seconds_cache": round(ms[0].get("seconds_memory_init", 0.0), 1),
        "cache_reused": not first,
        "seconds": round(got["seconds"], 1),
        "peak_rss_mb": got["peak_rss_mb"],
        "untrained": untrained,
    }


def part_steps(args, base) -> None:
    """Training steps of the last N blocks + neck on one batch of activations, fp32 and bf16
    interleaved (rep by rep, so a busy machine slows both alike); median seconds a step."""
    import torch

    from aas_core.train._runtime import autocast
    from aas_core.train.backbones import load_backbone
    from aas_core.train.blocks import split_backbone
    from aas_core.train.models import ReIDModel

    if args.threads:
        torch.set_num_threads(args.threads)
    for blocks in args.train_blocks:
        trunk = load_backbone(args.backbone)
        size = trunk.preprocess.size
        split = split_backbone(trunk, int(blocks))
        model = ReIDModel(trunk)
        split.freeze_stem()
        x = torch.rand(args.batch, 3, *size, generator=torch.Generator().manual_seed(0))
        a = split.stem(x)
        params = [p for p in model.parameters() if p.requires_grad]
        times = {p: [] for p in args.precision}
        for _ in range(args.reps):
            for p in args.precision:
                split.set_train(True)
                model.neck.train()
                t0 = time.perf_counter()
                with autocast(p, "cpu"):
                    f = model.neck(split.tail(a))
                loss = f.float().pow(2).mean()
                torch.autograd.grad(loss, params)
                times[p].append(time.perf_counter() - t0)
        for p, ts in times.items():
            emit(
                {
                    **base,
                    "part": "steps",
                    "train_blocks": blocks,
                    "precision": p,
                    "batch": args.batch,
                    "activations": list(a.shape[1:]),
                    "seconds_per_step_median": round(float(np.median(ts)), 4),
                    "seconds_per_step": [round(t, 4) for t in ts],
                }
            )
