"""The run directory: its config, answers, records (JSON lines), checkpoints and plot."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from .._files import write_atomic
from ..cluster.spcl import SpclState
from ..constraints import PairConstraints
from ._config import CHECKPOINT, RUNTIME_FIELDS, TrainConfig
from .memory import HybridMemory
from .models import save_model


def _write_json_atomic(path: Path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _append_jsonl(path: Path, obj):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_jsonl(path: Path) -> list:
    """The records of a JSON-lines file; a last line cut off by a crash is dropped."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # no newline after it: the write was interrupted
                break
            raise ValueError(
                f"train: {str(path)!r} line {number} is not JSON; the run directory is "
                "damaged (fix or remove that line to resume)."
            ) from None
    return out


def _write_jsonl_atomic(path: Path, records: list):
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as exc:
        raise ValueError(f"train: {what} {str(path)!r} is not valid JSON ({exc}).") from None


def _save_constraints(path: Path, constraints: PairConstraints):
    tmp = path.with_name("constraints.tmp.npz")
    constraints.save(tmp)
    os.replace(tmp, path)


def _backbone_identity(info):
    """What must not change on resume: the weights' sha256 and the preprocessing (the file's
    path and the package's name may move with the installation)."""
    if not isinstance(info, dict):
        return info
    return {k: info.get(k) for k in ("arch", "weights_sha256", "last_stride", "preprocess")}


def _config_differences(old: dict, new: dict) -> list:
    keys = sorted((set(old) | set(new)) - set(RUNTIME_FIELDS))
    # a field added since the run started differs only when set to other than its default
    fields = dataclasses.fields(TrainConfig)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    out = []
    for k in keys:
        if k not in old and k in defaults and new.get(k) == defaults[k]:
            continue
        a, b = old.get(k), new.get(k)
        if k == "backbone_info":
            a, b = _backbone_identity(a), _backbone_identity(b)
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


def _check_run_dir(run_dir: Path, config: TrainConfig, resume: bool, force: bool) -> bool:
    """Checks the run directory (writes nothing); returns True when resuming from a checkpoint.

    The directory is created and ``config.json`` written by :func:`_write_config`
    only once the data and the model have loaded, so a run that cannot start
    leaves no directory behind that a corrected command would call "not empty".
    """
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"train: the run directory {str(run_dir)!r} is a file, not a folder.")
    if not resume:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(
                f"train: the run directory {str(run_dir)!r} is not empty; resume it with "
                "--resume or choose another --out (nothing is overwritten)."
            )
        return False
    if not cfg_path.exists():
        raise ValueError(f"train: cannot resume {str(run_dir)!r}: it has no config.json.")
    old = _read_json(cfg_path, "the run's config")
    diffs = _config_differences(old, config.to_json())
    if diffs and not force:
        raise ValueError(
            f"train: {str(run_dir)!r} was run with another config; refusing to resume (use "
            "--force to resume anyway with the new one). Differences: " + "; ".join(diffs)
        )
    return (run_dir / CHECKPOINT).exists()


def _write_config(run_dir: Path, config: TrainConfig):
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(run_dir / "config.json", config.to_json())


def _plot(run_dir: Path, metrics: list, cycles: list) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ev = [m for m in metrics if "mAP" in m]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if ev:
        ax.plot([m["epoch"] + 1 for m in ev], [100 * m["mAP"] for m in ev], "o-", label="mAP")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP (%)")
    ax2 = ax.twinx()
    if cycles:
        # the budget stays at its last value until the last epoch run so far
        end = max([c["epoch"] for c in cycles] + [m["epoch"] + 1 for m in metrics])
        ax2.step(
            [c["epoch"] for c in cycles] + [end],
            [c["budget_used_pct"] for c in cycles] + [cycles[-1]["budget_used_pct"]],
            where="post",
            color="tab:orange",
            label="budget used",
        )
    ax2.set_ylabel("budget used (% of all pairs)")
    ax.set_title("mAP and annotation budget")
    if ev or cycles:  # a legend with no labelled line warns
        fig.legend(loc="upper left", bbox_to_anchor=(0, 1), bbox_transform=ax.transAxes)
    fig.tight_layout()
    path = run_dir / "progress.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plain(d: dict) -> dict:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in d.items()}


def _recover_records(run_dir: Path, constraints, start_epoch: int, n: int):
    """(cycles, metrics) of a run directory being resumed at ``start_epoch``, its files
    rewritten whole (a line cut off by a crash is dropped)."""
    cycles = _read_jsonl(run_dir / "cycles.jsonl")
    if cycles:  # drops a line cut off by a crash, so that appends stay well formed
        _write_jsonl_atomic(run_dir / "cycles.jsonl", cycles)
    metrics = [m for m in _read_jsonl(run_dir / "metrics.jsonl") if m["epoch"] < start_epoch]
    # Lines of epochs after the checkpoint are redone: rewrite the file without them.
    _write_jsonl_atomic(run_dir / "metrics.jsonl", metrics)
    # Answers saved by a cycle whose record was not written yet are kept, and
    # the cycle counts as done (its pairs are in the constraints).
    known = cycles[-1]["answers_total"] if cycles else 0
    if len(constraints) > known:
        rec = {
            "cycle": len(cycles),
            "epoch": start_epoch,
            "pairs": len(constraints) - known,
            "same": int(constraints.is_must_link[known:].sum()),
            "answers_total": len(constraints),
            "budget_used_pct": 100.0 * len(constraints) / max(n * (n - 1) // 2, 1),
            "recovered": True,
        }
        cycles.append(rec)
        _append_jsonl(run_dir / "cycles.jsonl", rec)
    return cycles, metrics


def _load_checkpoint(ckpt_path: Path, model, optimizer, scheduler, config, n: int):
    """Loads a training checkpoint into the model, optimizer and scheduler; returns the
    memory bank, SpCL's state, the epoch to continue at, the held-out answers' reference
    and the sampler's state (None in checkpoints of before either). ValueError when the file is
    damaged, not a training checkpoint, or of other data or another model."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        raise ValueError(
            f"train: cannot read the checkpoint {str(ckpt_path)!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it is damaged. Restore it, or "
            "start a new run directory."
        ) from None
    if (
        not isinstance(ckpt, dict)
        or ckpt.get("format") != "aas-core-reid-model"
        or "train_state" not in ckpt.get("extra", {})
    ):
        raise ValueError(f"train: {str(ckpt_path)!r} is not a training checkpoint.")
    st = ckpt["extra"]["train_state"]
    if int(st["n_train"]) != n:
        raise ValueError(
            f"train: the checkpoint was made with {st['n_train']} training images; the "
            f"data now has {n}."
        )
    try:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(st["optimizer"])
    except (RuntimeError, ValueError) as exc:  # e.g. --force with another --arch
        raise ValueError(
            f"train: the checkpoint {str(ckpt_path)!r} does not fit the model "
            f"{config.backbone or config.arch!r} ({str(exc).splitlines()[0]})."
        ) from None
    scheduler.load_state_dict(st["scheduler"])
    memory = HybridMemory(
        st["memory_features"], temperature=config.temperature, momentum=config.momentum
    )
    spcl_state = None if st["spcl_state"] is None else SpclState(**st["spcl_state"])
    start_epoch = int(st["epoch"])
    return memory, spcl_state, start_epoch, st.get("kept"), st.get("sampler")


def _save_checkpoint(
    ckpt_path,
    model,
    optimizer,
    scheduler,
    memory,
    spcl_state,
    epoch,
    n,
    config,
    kept=None,
    sampler=None,
):
    """Writes the model and everything to resume after ``epoch`` epochs (``kept``: the
    weights and embedding the held-out answers judge against; ``sampler``: what the
    sampler learnt from its proposals, PairSampler.get_state)."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "memory_features": memory.features.detach().cpu(),
        # plain Python values: checkpoints are read with weights_only=True
        "spcl_state": None if spcl_state is None else _plain(dataclasses.asdict(spcl_state)),
        "epoch": epoch,
        "n_train": n,
        "kept": kept,
        "sampler": sampler,
    }
    # The config too, so that 'aas evaluate --model checkpoint.pt' knows the image size.
    save_model(ckpt_path, model, extra={"train_state": state, "config": config.to_json()})
