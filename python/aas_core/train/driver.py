"""SpCL training with active-learning cycles (paper §3.2 and §4).

One epoch:

1. pseudo-labels from the memory bank: kNN graph → k-reciprocal Jaccard →
   SpCL's self-paced DBSCAN (reliable clusters kept, the rest un-clustered
   instances), all with aas-core's kernels on one shared graph;
2. when a cycle is due, the sampler proposes pairs from the same graph and
   clusterings (DBSCAN A and FINCH B), the oracle answers and the answers
   join the constraints (saved at once);
3. NP3 folds every answer so far into the pseudo-labels;
4. ``iters`` iterations of P x K batches through the backbone, the hybrid
   memory loss, Adam; the memory bank follows the batch features;
5. evaluation (when due), a checkpoint and one line of metrics.

A cycle runs before epochs 0, al_every, 2 al_every, ... (``al_cycles`` of
them), so the answers of every cycle shape the pseudo-labels of the epochs
that follow it. The run directory holds ``config.json`` (the resolved
config), ``constraints.npz`` (every answer), ``cycles.jsonl``,
``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (everything to
resume), ``model.pt`` (the final model, for ``aas embed --model``) and
``progress.png``.

This module runs the loop; each stage has its own: the config and the model it names
(:mod:`._config`), the data and who answers (:mod:`._data`), one epoch's steps
(:mod:`._epoch`) and the run directory with its checkpoints (:mod:`._rundir`).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..constraints import PairConstraints
from ..oracle import LabelOracle
from . import _caches, _dist
from . import frozen as _frozen
from ._config import (
    CHECKPOINT,
    DATA_FORMATS,
    RUNTIME_FIELDS,  # noqa: F401 (importable from here)
    SAMPLERS,
    TrainConfig,
    _build_model,
    _resolved,
)
from ._data import (
    _ask_store,
    _files_of,
    _make_sampler,
    _open_store,
    _oracle_labels,
    _waiting,
    load_datasets,
    sampler_needed,
)
from ._epoch import (
    _Bar,
    _budget_pairs,
    _cached_batches,
    _evaluate,
    _fold_answers,
    _pseudo_label_metrics,
    _pseudo_labels,
    _train_epoch,
)
from ._keep import KeepGuard
from ._rundir import (
    _append_jsonl,
    _check_run_dir,
    _load_checkpoint,
    _plot,
    _recover_records,
    _save_checkpoint,
    _save_constraints,
    _write_config,
)
from ._runtime import autocast as _autocast
from ._runtime import loader_workers, resolve_precision
from .batches import identity_batches
from .memory import HybridMemory
from .models import save_model
from .transforms import ImageTensors, train_transform

__all__ = ["TrainConfig", "train", "load_datasets", "SAMPLERS", "DATA_FORMATS"]


def train(
    config: TrainConfig, run_dir, *, resume=False, force=False, proceed=False, log=None
) -> dict:
    """Runs (or resumes) SpCL training with AL cycles; returns a summary dict.

    Parameters
    ----------
    config : TrainConfig
    run_dir : str or Path
        Created if missing; must be empty unless ``resume``.
    resume : bool
        Continue from ``run_dir/checkpoint.pt`` (start afresh in the same
        directory when there is none yet). The stored config must equal
        ``config`` except for the runtime fields (device, num_workers,
        threads, progress, epochs), unless ``force``.
    proceed : bool
        With ``config.store``: go on although some pairs of the pending
        cycle are still unanswered (they stay queued for later).
    log : callable(str) or None
        Where one line per epoch goes (default: print on rank 0).

    With ``config.store`` a person answers instead of the labels: at a
    cycle the proposed pairs are queued in that annotation store (created
    from the training images if missing) and the run stops, returning
    ``{"waiting": {...}}`` with what to do; answer with ``aas annotate``
    and call again with ``resume=True``. Every answer in the store, in or
    out of a cycle, becomes a constraint.

    Under ``torchrun`` every process calls this with the same arguments;
    rank 0 clusters, asks, evaluates and writes, and every rank trains its
    share of each batch (DistributedDataParallel).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: 'config' must be a TrainConfig; got {type(config).__name__}.")
    config.check()
    config = _resolved(config)
    run_dir = Path(run_dir)
    dd = _dist.setup(config.device)
    try:
        return _train(config, run_dir, resume, force, proceed, log, dd)
    finally:
        dd.close()


def _train(config, run_dir, resume, force, proceed, log, dd):
    if log is None:
        log = print
    say = log if dd.main else (lambda *_: None)
    device = dd.device
    if config.batch_size % dd.world:
        raise ValueError(
            f"train: 'batch_size' ({config.batch_size}) must be a multiple of the number of "
            f"processes ({dd.world})."
        )
    if (config.freeze_backbone or config.train_blocks is not None) and dd.world > 1:
        raise ValueError(
            "train: 'freeze_backbone' and 'train_blocks' train on cached features in one "
            f"process; run them without torchrun (got {dd.world} processes)."
        )
    # The model first: its backbone decides the input size and preprocessing that the
    # config records (and that a resumed run must match).
    model, config = _build_model(config)
    precision = resolve_precision(config.precision, device)
    if config.precision == "auto" and config.freeze_backbone:
        # the head is one small matrix: casting to bf16 costs more than it saves (lions,
        # 594 images: 1.9 s an epoch in bf16, 0.12 s in fp32; benchmarks/README.md)
        precision = "fp32"
    autocast = lambda: _autocast(precision, device)  # noqa: E731
    from_checkpoint = False
    if dd.main:
        from_checkpoint = _check_run_dir(run_dir, config, resume, force)
    from_checkpoint = dd.broadcast_object(from_checkpoint)
    dd.barrier()

    _, train_set, query, gallery = load_datasets(config)
    n = len(train_set)
    y_true = train_set.identity
    files = _files_of(train_set)
    size = (config.height, config.width)
    if dd.main:
        n_ids = len(np.unique(y_true[y_true >= 0]))
        if config.data_format == "store":
            say(f"train: the {n} photos of {config.data}, device {device}")
        else:
            say(f"train: {n} training images of {n_ids} identities, device {device}")
        if train_set.skipped:
            say(f"train: skipped {len(train_set.skipped)} unreadable images (see on_error)")

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, gamma=config.gamma)

    constraints = PairConstraints(n=n)
    cycles = []
    metrics = []
    spcl_state = sampler_state = None
    start_epoch = 0
    ckpt_path = run_dir / CHECKPOINT
    guard = None
    # with too few held-out answers to judge, the head goes on and trained blocks go back;
    # a run without answers (sampler "none": SpCL alone) has nothing to judge by at all
    unsure = bool(config.freeze_backbone)
    judged = config.holdout > 0 and sampler_needed(config)
    if from_checkpoint:
        memory, spcl_state, start_epoch, kept, sampler_state = _load_checkpoint(
            ckpt_path, model, optimizer, scheduler, config, n
        )
        if judged:
            if kept is not None:
                guard = KeepGuard.from_state(config.holdout, config.seed, kept, unsure=unsure)
            else:  # a checkpoint of before the rule: what it holds is the reference
                X0 = memory.features.numpy()
                guard = KeepGuard.start(config.holdout, config.seed, model, X0, unsure=unsure)
    if dd.main:  # data, model and checkpoint loaded: only now is the run directory written
        _write_config(run_dir, config)
    dd.barrier()
    memory_init_seconds = 0.0
    cache = None
    say(f"train: computing in {precision} (precision={config.precision!r})")
    if judged and not config.freeze_backbone:
        # measured: the check passed (z 1.84-3.74) cycles that cost 3-4 points on new dogs
        say(
            "train: note: the held-out answers are pairs of the training animals, so the "
            "check cannot see a loss on new animals; in our measurements on lion and dog "
            "photos, training backbone blocks lowered new animals' mAP and the frozen head "
            "(--freeze-backbone) did not (docs/training.md, 'What the check cannot see')"
        )
    if config.freeze_backbone or config.train_blocks is not None:
        t = time.perf_counter()
        cache = _caches.load_cache(
            config, model, run_dir, files, query, gallery, precision, device, say
        )
        memory_init_seconds = time.perf_counter() - t
        if config.freeze_backbone and not from_checkpoint:
            _frozen.init_head(model, cache["train"])
    if dd.main and (run_dir / "constraints.npz").exists():
        constraints = PairConstraints.load(run_dir / "constraints.npz")
    if dd.main:
        cycles, metrics = _recover_records(run_dir, constraints, start_epoch, n)
    if not from_checkpoint:
        t = time.perf_counter()
        feats = _caches.embed_train(model, cache, files, config, device, autocast)
        memory_init_seconds += time.perf_counter() - t
        memory = HybridMemory(feats, temperature=config.temperature, momentum=config.momentum)
        if judged:  # the untrained model is the first reference
            guard = KeepGuard.start(config.holdout, config.seed, model, feats, unsure=unsure)
    memory.to(device)
    dd.broadcast_tensor(memory.features)

    ddp_model = model
    if dd.active:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    oracle = LabelOracle(_oracle_labels(y_true), noise=config.oracle_noise, seed=config.seed)
    store = None
    if config.store is not None and dd.main and sampler_needed(config):
        store = _open_store(config.store, train_set)
        constraints = store.constraints()  # every answer the person gave, cycles or not
    answers = None  # a catalogue's store as the data: its answers, read again each epoch
    if config.data_format == "store" and dd.main:
        same_file = store is not None and Path(config.store) == Path(config.data)
        answers = store if same_file else _open_store(config.data, train_set, reading=True)
    sampler = None if not sampler_needed(config) else _make_sampler(config.sampler)
    if sampler is not None and from_checkpoint:
        # what it learnt from the cycles before: the resumed run asks what the whole would
        try:
            sampler.set_state(sampler_state)
        except ValueError as exc:  # it only steers the split of the budget: go on without
            say(f"train: the checkpoint's sampler state is passed over ({exc})")
    total_pairs = n * (n - 1) // 2
    per_cycle = _budget_pairs(config.budget, n)
    eval_every = config.eval_every or config.al_every
    can_eval = query is not None and len(query) > 0 and len(gallery) > 0
    pre = model.preprocess
    dataset = ImageTensors(
        files,
        train_transform(size, mean=pre.mean, std=pre.std, interpolation=pre.interpolation),
        seed=config.seed,
    )
    iters = config.iters
    if iters is None:  # one pass over the images with cached features, else SpCL's 400
        iters = -(-n // config.batch_size) if cache is not None else 400
    progress = config.progress if config.progress is not None else sys.stderr.isatty()

    for epoch in range(start_epoch, config.epochs):
        t_epoch = time.perf_counter()
        rec = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        labels_t = torch.empty(n, dtype=torch.int64)
        waiting = None
        if dd.main:
            if answers is not None:
                latest = answers.constraints()
                if not np.array_equal(latest.pairs, constraints.pairs) or not np.array_equal(
                    latest.is_must_link, constraints.is_must_link
                ):
                    constraints = latest
                    _save_constraints(run_dir / "constraints.npz", constraints)
            t = time.perf_counter()
            X = memory.features.detach().cpu().numpy()
            # the held-out answers judge the weights: the pseudo-labels never see them
            learn_from = constraints if guard is None else guard.training_answers(constraints)
            cs, labels, spcl_state = _pseudo_labels(X, learn_from, config, spcl_state)
            rec["eps"] = round(cs.eps.eps, 4)
            rec["seconds_cluster"] = time.perf_counter() - t
            cycle_due = (
                sampler is not None
                and epoch % config.al_every == 0
                and epoch // config.al_every < config.al_cycles
                and not any(c["epoch"] == epoch for c in cycles)
            )
            if cycle_due:
                t = time.perf_counter()
                proposal = sampler.propose(
                    X,
                    constraints,
                    per_cycle,
                    rng=np.random.default_rng([config.seed, 7919, epoch]),
                    clusters=cs,
                    n_threads=config.threads,
                )
                if store is None:
                    same = oracle.answer(proposal.pairs)
                    constraints.add(proposal.pairs, same)
                    asked, extra = len(proposal.pairs), {}
                else:
                    got = _ask_store(store, run_dir, epoch, proposal, config, proceed)
                    if got["waiting"]:  # the person has not answered yet
                        waiting = _waiting(got, store, run_dir, train_set)
                    else:
                        constraints, asked, extra = got["constraints"], got["pairs"], got["extra"]
                if waiting is None:
                    _save_constraints(run_dir / "constraints.npz", constraints)
                    c = {
                        "cycle": len(cycles),
                        "epoch": epoch,
                        "pairs": int(asked),
                        "same": int(constraints.is_must_link[-asked:].sum()) if asked else 0,
                        "answers_total": len(constraints),
                        "budget_used_pct": 100.0 * len(constraints) / max(total_pairs, 1),
                        "message": proposal.message,
                        "seconds": time.perf_counter() - t,
                        **extra,
                    }
                    cycles.append(c)
                    _append_jsonl(run_dir / "cycles.jsonl", c)
                    rec["seconds_al"] = c["seconds"]
                    say(
                        f"cycle {c['cycle']} (epoch {epoch}): {c['pairs']} pairs asked, "
                        f"{c['same']} same; {c['answers_total']} answers "
                        f"({c['budget_used_pct']:.4f}% of all pairs)"
                    )
            # with this cycle's answers (a person's store gives a new PairConstraints)
            learn_from = constraints if guard is None else guard.training_answers(constraints)
            if len(learn_from):
                t = time.perf_counter()
                labels = _fold_answers(labels, learn_from, X, config.merge)
                rec["seconds_np3"] = time.perf_counter() - t
            labels_t = torch.as_tensor(np.ascontiguousarray(labels, dtype=np.int64))
            sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
            rec["clusters"] = int((sizes > 1).sum())
            rec["unclustered"] = int((sizes == 1).sum())
            rec["answers_total"] = len(constraints)
            rec["budget_used_pct"] = 100.0 * len(constraints) / max(total_pairs, 1)
            if (y_true >= 0).any():
                rec.update(_pseudo_label_metrics(labels, y_true))
        waiting = dd.broadcast_object(waiting)
        if waiting is not None:
            say(waiting["message"])
            for s in {id(x): x for x in (store, answers) if x is not None}.values():
                s.close()
            return {"run_dir": str(run_dir), "waiting": waiting, "cycles": len(cycles)}
        dd.broadcast_tensor(labels_t)
        memory.set_labels(labels_t.numpy())

        batches = identity_batches(
            labels_t.numpy(),
            batch_size=config.batch_size,
            num_instances=config.num_instances,
            iters=iters,
            seed=config.seed,
            epoch=epoch,
        )
        share = batches.shape[1] // dd.world
        local = batches[:, dd.rank * share : (dd.rank + 1) * share]
        if cache is None:
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=local.tolist(),
                num_workers=loader_workers(config.num_workers),
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
        else:
            loader = _cached_batches(cache["train"], local, config.seed, epoch)
        ddp_model.train()
        if model.tail is not None:  # the stem's BatchNorm statistics stay as pretrained
            model.tail.set_train(True)
        elif cache is not None:
            model.backbone.trunk.eval()  # frozen: its BatchNorm statistics stay as pretrained
        t = time.perf_counter()
        bar = _Bar(len(local), f"epoch {epoch + 1}/{config.epochs}", progress and dd.main)
        losses = _train_epoch(
            ddp_model,
            memory,
            optimizer,
            loader,
            device,
            cached=cache is not None,
            gather=dd.all_gather,
            bar=bar,
            autocast=autocast,
        )
        scheduler.step()
        rec["seconds_train"] = time.perf_counter() - t
        rec["loss"] = float(np.mean(losses)) if losses else float("nan")

        rec["precision"] = precision
        last = epoch + 1 == config.epochs
        if guard is not None and ((epoch + 1) % config.al_every == 0 or last):
            t = time.perf_counter()
            verdict = None
            if dd.main:
                X_new = _caches.embed_train(model, cache, files, config, device, autocast)
                verdict = guard.judge(model, X_new, constraints)
            verdict = dd.broadcast_object(verdict)
            if not dd.main:  # the other processes follow rank 0's verdict
                guard.follow(model, verdict["kept"])
            if not verdict["kept"]:
                guard.reset_memory(memory)
                dd.broadcast_tensor(memory.features)
            rec.update(verdict, seconds_keep=time.perf_counter() - t)
            say(f"train: end of cycle at epoch {epoch + 1}: {verdict['keep_reason']}")
        if dd.main:
            if can_eval and ((epoch + 1) % eval_every == 0 or last):
                t = time.perf_counter()
                rec.update(_evaluate(model, query, gallery, config, device, cache, autocast))
                rec["seconds_eval"] = time.perf_counter() - t
            if epoch == start_epoch and memory_init_seconds:
                rec["seconds_memory_init"] = memory_init_seconds
            rec["seconds_epoch"] = time.perf_counter() - t_epoch
            _save_checkpoint(
                ckpt_path,
                model,
                optimizer,
                scheduler,
                memory,
                spcl_state,
                epoch + 1,
                n,
                config,
                kept=None if guard is None else guard.to_state(),
                sampler=None if sampler is None else sampler.get_state(),
            )
            metrics.append(rec)
            _append_jsonl(run_dir / "metrics.jsonl", rec)
            _plot(run_dir, metrics, cycles)
            say(_epoch_line(rec, config.epochs))
        dd.barrier()

    for s in {id(x): x for x in (store, answers) if x is not None}.values():
        s.close()
    summary = {"run_dir": str(run_dir), "epochs": config.epochs, "cycles": len(cycles)}
    if dd.main:
        verdicts = [m for m in metrics if "kept" in m]
        if verdicts and not any(m["kept"] for m in verdicts):
            # say it once more at the end: the saved model is the one the run started from
            say(
                "train: no cycle's weights were kept, so the model saved is the one the run "
                "started from; more answers (--budget, --al-cycles) or a larger --holdout give "
                "the held-out check more to judge by, and --holdout 0 keeps every update."
            )
        save_model(run_dir / "model.pt", model, extra={"config": config.to_json()})
        summary["answers"] = len(constraints)
        summary["metrics"] = metrics
        summary["cycle_records"] = cycles
    dd.barrier()
    return summary


def _epoch_line(rec, epochs) -> str:
    parts = [f"epoch {rec['epoch'] + 1}/{epochs}", f"loss {rec['loss']:.3f}"]
    parts.append(f"{rec['clusters']} clusters + {rec['unclustered']} un-clustered")
    if "eps" in rec:
        parts.append(f"eps {rec['eps']:.3f}")
    if "pl_f1" in rec:
        parts.append(f"pseudo-label F1 {rec['pl_f1']:.3f}")
    if "mAP" in rec:
        parts.append(f"mAP {100 * rec['mAP']:.1f}% top-1 {100 * rec.get('top1', math.nan):.1f}%")
    parts.append(f"{rec['seconds_epoch']:.1f} s")
    return ", ".join(parts)
