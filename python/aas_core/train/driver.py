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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import datasets as _datasets
from .._files import write_atomic
from .._labels import outliers_to_singletons
from ..cluster.spcl import SpclState, spcl_pseudo_labels
from ..constraints import PairConstraints
from ..loop import cluster_features
from ..metrics import clustering as _clustering
from ..metrics import retrieval as _retrieval
from ..oracle import LabelOracle
from ..refine import np3
from . import _dist
from . import frozen as _frozen
from ._runtime import loader_workers
from .backbones import DEFAULT_BACKBONE, file_sha256, load_backbone, resolve_name
from .batches import identity_batches
from .embed import embed_images
from .memory import HybridMemory
from .models import ProjectedBackbone, ReIDModel, build_backbone, save_model
from .transforms import DEFAULT_SIZE, ImageTensors, train_transform

__all__ = ["TrainConfig", "train", "load_datasets", "SAMPLERS", "DATA_FORMATS"]

SAMPLERS = ("aas", "random", "gbas", "lbas", "nis", "none")
DATA_FORMATS = ("csv", "wildlife", "market1501", "store")
# Fields that may change on --resume: where and how fast it runs, and how long.
RUNTIME_FIELDS = ("device", "num_workers", "threads", "epochs", "progress")
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything a run depends on; written to ``config.json``.

    Training defaults are the paper's: Adam 3.5e-4 with weight decay 5e-4,
    lr x 0.1 every 20 epochs, 50 epochs of 400 iterations, batches of 64 =
    16 pseudo-identities x 4 images, memory momentum 0.2 and temperature
    0.05, Jaccard k1 = 30, k2 = 6, DBSCAN eps fitted to the memory bank's
    features each epoch (``eps="auto"``, :mod:`aas_core.cluster.eps`; SpCL
    fixes 0.6, give a number to do the same; self-paced gap 0.02), and
    5 AL cycles, one every 10 epochs, of 0.02% of all pairs each.

    The network: ``backbone`` names a pretrained one
    (:func:`~aas_core.train.backbones.load_backbone`; ``efficientnet-lite0``
    when neither ``backbone`` nor ``arch`` is given, as it needs no
    download), or ``arch`` + ``weights`` build one from a local file (the
    paper's setup: ``arch="resnet50"`` with torchvision's ImageNet file,
    at 256 x 128). ``height``/``width`` default to the backbone's own input
    size (256 x 128 for ``arch``), ``last_stride`` to the architecture's
    (1 for ResNets, 2 for EfficientNet-Lite). :func:`train` fills these in,
    and ``backbone_info`` (the weights file, its sha256 and the
    preprocessing), before writing ``config.json``.

    ``freeze_backbone``: the backbone stays as pretrained; its features of
    every image and its mirror are computed once and cached
    (``features.npz``, :mod:`aas_core.train.frozen`), and only a head --
    a projection to ``head_dim`` (default min(512, the backbone's size),
    started at the features' principal directions) and the BN neck -- is
    trained, with the same memory, pseudo-labels, AL cycles and NP3. An
    epoch then takes seconds on a CPU. ``iters`` defaults to 400 per epoch,
    or to one pass over the training images (n / batch_size) with a frozen
    backbone. ``feature_cache``: the ``features.npz`` of an earlier run on
    the same images and backbone to start from (copied in; recomputed if it
    does not match), so that runs comparing samplers embed only once.

    ``data`` is a CSV with ``path,identity[,camera][,split]``
    (``data_format="csv"``), a wildlife-datasets metadata CSV
    (``"wildlife"``, images under ``root``), a Market-1501 folder
    (``"market1501"``) or the annotation store of ``aas catalogue``
    (``"store"``: its photos in store order, identities unknown, every
    current same/different answer a constraint, read again each epoch).
    Training uses the ``train_split`` images (all images when the table
    has no split column); the ``query_split`` and
    ``gallery_split`` images, when present, are used for evaluation
    (otherwise the ``eval_split`` images are queries against each other).
    Identities of the training images are read only by the simulated
    oracle and by the pseudo-label metrics.

    ``store``: the path of an annotation store (``aas annotate``); when
    given, a person answers the pairs there instead of the labels.

    ``budget``: an int is a number of pairs per cycle, a float in [0, 1] a
    fraction of all n(n-1)/2 pairs of the training set. ``sampler="none"``
    is SpCL alone.
    """

    data: str
    data_format: str = "csv"
    root: str | None = None
    train_split: str = "train"
    query_split: str = "query"
    gallery_split: str = "gallery"
    eval_split: str = "test"
    on_error: str = "raise"
    # model
    backbone: str | None = None
    arch: str | None = None
    weights: str | None = None
    last_stride: int | None = None
    height: int | None = None
    width: int | None = None
    backbone_info: dict | None = None
    freeze_backbone: bool = False
    head_dim: int | None = None
    feature_cache: str | None = None
    # optimisation
    epochs: int = 50
    iters: int | None = None
    batch_size: int = 64
    num_instances: int = 4
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1
    momentum: float = 0.2
    temperature: float = 0.05
    # pseudo-labels
    k1: int = 30
    k2: int = 6
    eps: float | str = "auto"
    eps_from_answers: bool = False
    merge: str = "auto"
    eps_gap: float = 0.02
    min_samples: int = 4
    # active learning
    sampler: str = "aas"
    budget: float | int = 0.0002
    al_every: int = 10
    al_cycles: int = 5
    oracle_noise: float = 0.0
    store: str | None = None
    eval_every: int | None = None
    seed: int = 0
    # runtime
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    progress: bool | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.backbone is None and self.arch is None:
            if self.weights is not None:
                raise ValueError(
                    "TrainConfig: 'weights' needs 'arch' (which network the file is for)."
                )
            self.backbone = DEFAULT_BACKBONE
        if self.backbone is not None:
            if self.arch is not None or self.weights is not None:
                raise ValueError(
                    "TrainConfig: give either 'backbone' (a pretrained network by name) or "
                    f"'arch' + 'weights' (a local file), not both; got backbone={self.backbone!r}"
                    f", arch={self.arch!r}, weights={self.weights!r}."
                )
            self.backbone = resolve_name(self.backbone, "TrainConfig")
        self.check()

    def check(self):
        """Raises ValueError naming the first bad field."""

        def bad(name, want):
            raise ValueError(f"TrainConfig: {name!r} must be {want}; got {getattr(self, name)!r}.")

        if self.data_format not in DATA_FORMATS:
            bad("data_format", f"one of {DATA_FORMATS}")
        if self.sampler not in SAMPLERS:
            bad("sampler", f"one of {SAMPLERS}")
        if self.on_error not in ("raise", "skip"):
            bad("on_error", "'raise' or 'skip'")
        if self.merge not in ("clusters", "nearest", "auto"):
            bad("merge", "'clusters', 'nearest' or 'auto' (what NP3 merges on a must-link)")
        positive = ("epochs", "batch_size", "num_instances", "step_size")
        positive += ("al_every", "k1", "k2", "min_samples")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "an integer >= 1")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                bad(name, "an integer >= 1 or None (the backbone's own size)")
        if (self.height is None) != (self.width is None):
            bad("height", "given together with 'width'")
        if self.arch is not None and not isinstance(self.arch, str):
            bad("arch", "a string")
        if self.backbone_info is not None and not isinstance(self.backbone_info, dict):
            bad("backbone_info", "a dict or None")
        for name in ("iters", "al_cycles", "num_workers", "seed"):
            v = getattr(self, name)
            if name == "iters" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(name, "an integer >= 0")
        if not isinstance(self.freeze_backbone, bool):
            bad("freeze_backbone", "True or False")
        if self.head_dim is not None:
            if not self.freeze_backbone:
                bad("head_dim", "None unless freeze_backbone (the head's projection size)")
            if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int):
                bad("head_dim", "an integer >= 1 or None")
            if self.head_dim < 1:
                bad("head_dim", "an integer >= 1 or None")
        if self.last_stride is not None and (
            isinstance(self.last_stride, bool) or self.last_stride not in (1, 2)
        ):
            bad("last_stride", "1, 2 or None (the architecture's default)")
        for name in ("lr", "temperature"):
            if not float(getattr(self, name)) > 0:
                bad(name, "> 0")
        if not 0 <= self.weight_decay:
            bad("weight_decay", ">= 0")
        if not 0 < self.gamma <= 1:
            bad("gamma", "in (0, 1]")
        if not 0 <= self.momentum < 1:
            bad("momentum", "in [0, 1)")
        if self.eps == "auto":
            if not 0 <= self.eps_gap <= 0.05:
                bad("eps_gap", "in [0, 0.05] with eps='auto'")
        else:
            if isinstance(self.eps, (bool, str)) or not 0 < self.eps < 1:
                bad("eps", "'auto' or in (0, 1)")
            if not 0 <= self.eps_gap < min(self.eps, 1 - self.eps):
                bad("eps_gap", "in [0, min(eps, 1 - eps))")
        if not isinstance(self.eps_from_answers, bool):
            bad("eps_from_answers", "True or False")
        if not 0 <= self.oracle_noise <= 0.5:
            bad("oracle_noise", "in [0, 0.5]")
        b = self.budget
        if isinstance(b, bool) or not (
            (isinstance(b, int) and b >= 0) or (isinstance(b, float) and 0 <= b <= 1)
        ):
            bad("budget", "a pair count (int >= 0) or a fraction of all pairs (float in [0, 1])")
        if self.eval_every is not None and (
            isinstance(self.eval_every, bool)
            or not isinstance(self.eval_every, int)
            or self.eval_every < 1
        ):
            bad("eval_every", "an integer >= 1 or None")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}.")
        return cls(**d)


# ---- data -----------------------------------------------------------------------------


def load_datasets(config: TrainConfig):
    """(all, train, query, gallery) ImageDatasets; query and gallery may be None."""
    kw = dict(on_error=config.on_error, verify_images=True)
    if config.data_format == "store":
        ds = _store_photos(config.data)
    elif config.data_format == "csv":
        ds = _datasets.image_folder_csv(config.data, config.root, **kw)
    elif config.data_format == "wildlife":
        ds = _datasets.wildlife_metadata(config.data, config.root, **kw)
    else:
        ds = _datasets.market1501(config.data, **kw)
    if ds.split is None:
        train = ds
        query = gallery = None
    else:
        splits = set(ds.split.tolist())
        if config.train_split not in splits:
            raise ValueError(
                f"train: no images of split {config.train_split!r} (train_split) in "
                f"{config.data}; the splits are {sorted(splits)}."
            )
        train = ds.select_split(config.train_split)
        if config.query_split in splits and config.gallery_split in splits:
            query = ds.select_split(config.query_split)
            gallery = ds.select_split(config.gallery_split)
        elif config.eval_split in splits:
            query = gallery = ds.select_split(config.eval_split)
        else:
            query = gallery = None
    if len(train) < 2:
        raise ValueError(f"train: need at least 2 training images; got {len(train)}.")
    return ds, train, query, gallery


def _store_photos(path):
    """The photos of a catalogue's store (``aas catalogue``) as an ImageDataset.

    Paths and order are the store's, identities unknown (-1); ``extra["file"]``
    holds each photo's file (a new season's photos lie under their own folder).
    """
    from ..annotate.photos import missing_photos, photo_files
    from ..annotate.store import AnnotationStore

    with AnnotationStore.open(path) as store:
        files = photo_files(store)
        paths = store.image_paths()
        root = store.meta.get("images_root", "")
    missing = missing_photos(files)
    if missing:
        k = missing[0]
        raise ValueError(
            f"train: {len(missing)} of the {len(files)} photos of the store {str(path)!r} are "
            f"missing, the first {paths[k]!r} (expected at {str(files[k])!r}); bring them back "
            "or run the catalogue where they are."
        )
    return _datasets.ImageDataset(
        paths=tuple(paths),
        identity=np.full(len(paths), -1, np.int64),
        identity_names=(),
        root=Path(root),
        extra={"file": np.array([str(f) for f in files])},
    )


def _files_of(dataset) -> list:
    """The image files of a dataset (a store's photos keep their own, see _store_photos)."""
    if "file" in dataset.extra:
        return [Path(f) for f in dataset.extra["file"].tolist()]
    return dataset.files


def _oracle_labels(identity: np.ndarray) -> np.ndarray:
    """Identity codes for the oracle: an unknown (-1) image matches no other."""
    return outliers_to_singletons(identity)


def _make_sampler(name):
    from .. import sampling

    return {
        "aas": sampling.AmbiguityAwareSampler,
        "random": sampling.RandomPairSampler,
        "gbas": sampling.GBAS,
        "lbas": sampling.LBAS,
        "nis": sampling.NISSampler,
    }[name]()


# ---- the run directory ----------------------------------------------------------------


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
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if k == "backbone_info":
            a, b = _backbone_identity(a), _backbone_identity(b)
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


def _build_model(config: TrainConfig):
    """The ReIDModel of ``config``, and the config with its input size, last stride,
    head size and ``backbone_info`` (weights file, sha256, preprocessing) filled in."""
    torch.manual_seed(config.seed)  # the random parts (neck, an untrained arch) follow the seed
    if config.backbone is not None:
        trunk = load_backbone(config.backbone, last_stride=config.last_stride)
    else:
        trunk = build_backbone(config.arch, weights=config.weights, last_stride=config.last_stride)
    head_dim = None
    if config.freeze_backbone:
        head_dim = config.head_dim or min(512, trunk.feat_dim)
        if head_dim > trunk.feat_dim:
            raise ValueError(
                f"TrainConfig: 'head_dim' ({head_dim}) must be at most the backbone's feature "
                f"size ({trunk.feat_dim})."
            )
        for param in trunk.parameters():
            param.requires_grad_(False)
        trunk.eval()
        model = ReIDModel(ProjectedBackbone(trunk, head_dim))
    else:
        model = ReIDModel(trunk)
    if config.height is not None:
        size = (config.height, config.width)
    else:
        size = model.preprocess.size or DEFAULT_SIZE
    provenance = model.provenance or {}
    weights = provenance.get("weights") or (
        None if config.weights is None else os.fspath(config.weights)
    )
    sha = provenance.get("weights_sha256")
    if sha is None and weights is not None and os.path.isfile(weights):
        sha = file_sha256(weights)
    info = {
        "backbone": config.backbone,
        "arch": model.arch,
        "source": provenance.get("source"),
        "weights": weights,
        "weights_sha256": sha,
        "last_stride": model.last_stride,
        "feat_dim": getattr(model.backbone, "trunk", model.backbone).feat_dim,
        "preprocess": None,
    }
    model.preprocess = model.preprocess.with_size(size)
    info["preprocess"] = model.preprocess.to_json()
    config = dataclasses.replace(
        config,
        height=size[0],
        width=size[1],
        last_stride=model.last_stride,
        backbone_info=info,
        head_dim=head_dim,
    )
    return model, config


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


def _resolved(config: TrainConfig) -> TrainConfig:
    """The config with absolute file paths, so that a run resumes from any folder."""
    paths = {}
    for name in ("data", "root", "weights", "store", "feature_cache"):
        value = getattr(config, name)
        if value is not None and "://" not in str(value):  # a URL is refused later, as given
            paths[name] = os.path.abspath(os.fspath(value))
    return dataclasses.replace(config, **paths)


# ---- progress -------------------------------------------------------------------------


class _Bar:
    def __init__(self, total, label, enabled):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.live = enabled
        self.t0 = time.perf_counter()

    def step(self, text=""):
        self.done += 1
        if self.live:
            width = 30
            filled = int(width * self.done / self.total)
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            sys.stderr.write(
                f"\r  {self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} {rate:.1f} it/s {text:<20}"
            )
            sys.stderr.flush()

    def close(self):
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---- a person as the oracle: the annotation store ------------------------------------


def sampler_needed(config) -> bool:
    return config.sampler != "none"


def _open_store(path, train_set):
    """The annotation store of the run: created from the training images if missing."""
    from ..annotate.store import AnnotationStore

    path = Path(path)
    if not path.exists():
        return AnnotationStore.create(path, list(train_set.paths))
    store = AnnotationStore.open(path)
    if list(store.image_paths()) != list(train_set.paths):
        raise ValueError(
            f"train: the store {str(path)!r} lists other images than the training set "
            f"({store.n_images} vs {len(train_set)}); give a new store path or the data it "
            "was made for."
        )
    return store


def _ask_store(store, run_dir: Path, epoch: int, proposal, config, proceed: bool) -> dict:
    """Queues the cycle's pairs once, then reads what the person answered.

    The pending cycle (its epoch and pair ids) is kept in ``pending_cycle.json``
    so that a resumed run asks about the same pairs instead of proposing anew.
    """
    pending_path = run_dir / "pending_cycle.json"
    pending = None
    if pending_path.exists():
        with open(pending_path, encoding="utf-8") as f:
            pending = json.load(f)
    if pending is None or pending["epoch"] != epoch:
        cycle = store.next_cycle()
        store.add_pairs(
            proposal.pairs,
            sampler=f"{config.sampler} (aas train)",
            cycle=cycle,
            prob=proposal.prob,
            pool=proposal.pool,
            kind=proposal.kind,
        )
        ids = {}
        for p in store.pairs():  # a pair queued earlier keeps its old id and cycle
            ids[(p["i"], p["j"])] = ids[(p["j"], p["i"])] = p["pair_id"]
        pending = {
            "epoch": epoch,
            "store_cycle": cycle,
            "pair_ids": [ids[(int(i), int(j))] for i, j in proposal.pairs],
        }
        _write_json_atomic(pending_path, pending)
    current = {a["pair_id"]: a["answer"] for a in store.answers()}
    told = [current.get(pid) for pid in pending["pair_ids"]]
    unanswered = sum(t is None for t in told)
    out = {"waiting": bool(unanswered) and not proceed, "pairs": len(told)}
    out["unanswered"] = unanswered
    if out["waiting"]:
        return out
    pending_path.unlink()
    out["constraints"] = store.constraints()
    out["extra"] = {
        "store_cycle": pending["store_cycle"],
        "same": sum(t == "same" for t in told),
        "different": sum(t == "different" for t in told),
        "cant_tell": sum(t == "cant_tell" for t in told),
        "skipped": sum(t == "skip" for t in told),
        "unanswered": unanswered,
    }
    return out


def _waiting(got, store, run_dir: Path, train_set) -> dict:
    message = (
        f"waiting for a person: {got['unanswered']} of the cycle's {got['pairs']} pairs are "
        f"unanswered in {store.path}. Answer them with\n"
        f"  aas annotate --store {store.path} --images {train_set.root}\n"
        f"then continue with\n"
        f"  aas train --out {run_dir} --resume        (--proceed: go on without the rest)"
    )
    return {
        "message": message,
        "store": str(store.path),
        "images": str(train_set.root),
        "pairs": got["pairs"],
        "unanswered": got["unanswered"],
    }


# ---- the driver ----------------------------------------------------------------------


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _budget_pairs(budget, n) -> int:
    if isinstance(budget, int):
        return budget
    return int(round(budget * (n * (n - 1) // 2)))


def _cached_batches(views, batches, seed, epoch):
    """(features, index) batches from a feature cache: each image in one of its two views
    (image or mirror), drawn from (seed, epoch, iteration) as the image transforms are."""
    for it, index in enumerate(batches):
        rng = np.random.default_rng([seed, epoch, it, 31])
        view = rng.integers(0, 2, size=len(index))
        yield torch.from_numpy(views[index, view]), torch.from_numpy(np.asarray(index))


# ---- one epoch's steps (shared with aas_core.train.learn) ------------------------------


def _pseudo_labels(X, constraints, config, spcl_state):
    """SpCL's self-paced pseudo-labels of the memory bank's features ``X``.

    kNN graph -> Jaccard -> DBSCAN with eps fitted (or fixed) as ``config``
    says; returns the :class:`~aas_core.ClusterState` (the samplers use its
    graph and clusterings), the labels and SpCL's state for the next epoch.
    """
    cs = cluster_features(
        X,
        constraints=constraints,
        n_threads=config.threads,
        k1=config.k1,
        k2=config.k2,
        eps=config.eps,
        min_samples=config.min_samples,
        eps_from_answers=config.eps_from_answers,
    )
    if spcl_state is not None and spcl_state.eps != cs.eps.eps:
        # eps follows the bank's features epoch by epoch; SpCL's independence
        # threshold, fixed at the first epoch, carries over to the new eps
        spcl_state = dataclasses.replace(spcl_state, eps=cs.eps.eps)
    labels, spcl_state = spcl_pseudo_labels(
        cs.D,
        eps=cs.eps.eps,
        eps_gap=config.eps_gap,
        min_samples=config.min_samples,
        state=spcl_state,
        n_threads=config.threads,
    )
    return cs, labels, spcl_state


def _fold_answers(labels, constraints, X, merge):
    """NP3 with every answer; an image it leaves out is an instance of its own."""
    labels = np3(labels, constraints, X, on_conflict="drop_oldest", merge=merge)
    # merge="auto" returns the images of a mixed cluster it dissolved as
    # outliers (-1); SpCL keeps an unclustered image as an instance of its own
    return outliers_to_singletons(labels)


def _train_epoch(model, memory, optimizer, loader, device, *, cached, gather=None, bar=None):
    """One pass over ``loader``'s (inputs, index) batches with the hybrid-memory loss;
    the bank follows the batch features (``gather``: those of every process). Returns the
    losses."""
    losses = []
    for inputs, index in loader:
        inputs = inputs.to(device, non_blocking=True)
        index = index.to(device)
        feats = model(inputs, cached=cached)
        loss = memory(feats, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if gather is None:
            memory.update(feats.detach(), index)
        else:
            memory.update(gather(feats.detach()), gather(index))
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.step(f"loss {losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    return losses


def _evaluate(model, query, gallery, config, device, cache=None) -> dict:
    size = (config.height, config.width)
    m = _unwrap(model)
    same = gallery is query
    if cache is not None:
        Q = _frozen.embed_cached(m, cache["query"], device)
        G = Q if same else _frozen.embed_cached(m, cache["gallery"], device)
    else:
        Q = embed_images(m, query.files, size=size, batch_size=config.batch_size, device=device)
        G = (
            Q
            if same
            else embed_images(
                m, gallery.files, size=size, batch_size=config.batch_size, device=device
            )
        )
    cams = query.camera is not None and gallery.camera is not None and not same
    r = _retrieval.evaluate(
        Q,
        G,
        query.identity,
        gallery.identity,
        query_cameras=query.camera if cams else None,
        gallery_cameras=gallery.camera if cams else None,
        exclude_self=same,
    )
    out = {"mAP": float(r.mean_ap), "mINP": float(r.mean_inp)}
    for k, v in r.cmc.items():
        out[f"top{k}"] = float(v)
    return out


def _pseudo_label_metrics(labels, y) -> dict:
    # Unknown identities (-1) count as singletons: linking one to anything is a mistake.
    p, r, f = _clustering.pairwise_scores(y, labels)
    return {"pl_precision": float(p), "pl_recall": float(r), "pl_f1": float(f)}


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
    if config.freeze_backbone and dd.world > 1:
        raise ValueError(
            "train: 'freeze_backbone' trains a small head in one process; run it without "
            f"torchrun (got {dd.world} processes)."
        )
    # The model first: its backbone decides the input size and preprocessing that the
    # config records (and that a resumed run must match).
    model, config = _build_model(config)
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
    spcl_state = None
    start_epoch = 0
    ckpt_path = run_dir / CHECKPOINT
    if from_checkpoint:
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
        if st["spcl_state"] is not None:
            spcl_state = SpclState(**st["spcl_state"])
        start_epoch = int(st["epoch"])
    if dd.main:  # data, model and checkpoint loaded: only now is the run directory written
        _write_config(run_dir, config)
    dd.barrier()
    memory_init_seconds = 0.0
    cache = None
    if config.freeze_backbone:
        t = time.perf_counter()
        sets = {"train": files}
        if query is not None:
            sets["query"] = query.files
            if gallery is not query:
                sets["gallery"] = gallery.files
        cache_path = run_dir / _frozen.FEATURE_CACHE
        if not cache_path.exists() and config.feature_cache is not None:
            if not Path(config.feature_cache).is_file():
                raise ValueError(f"train: 'feature_cache' {config.feature_cache!r} is not a file.")
            shutil.copyfile(config.feature_cache, cache_path)  # checked below like our own
        cache = _frozen.load_or_compute(
            cache_path,
            model.backbone.trunk,
            sets,
            backbone_info=config.backbone_info,
            size=size,
            batch_size=config.batch_size,
            device=device,
            num_workers=config.num_workers,
            say=say,
        )
        memory_init_seconds = time.perf_counter() - t
        if not from_checkpoint:
            _frozen.init_head(model, cache["train"])
    if dd.main and (run_dir / "constraints.npz").exists():
        constraints = PairConstraints.load(run_dir / "constraints.npz")
    if dd.main:
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
    if not from_checkpoint:
        t = time.perf_counter()
        if cache is not None:
            feats = _frozen.embed_cached(model, cache["train"], device)
        else:
            feats = embed_images(
                model, files, size=size, batch_size=config.batch_size, device=device, progress=False
            )
        memory_init_seconds += time.perf_counter() - t
        memory = HybridMemory(feats, temperature=config.temperature, momentum=config.momentum)
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
        answers = store if same_file else _open_store(config.data, train_set)
    sampler = None if not sampler_needed(config) else _make_sampler(config.sampler)
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
            cs, labels, spcl_state = _pseudo_labels(X, constraints, config, spcl_state)
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
            if len(constraints):
                t = time.perf_counter()
                labels = _fold_answers(labels, constraints, X, config.merge)
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
        if cache is not None:
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
        )
        scheduler.step()
        rec["seconds_train"] = time.perf_counter() - t
        rec["loss"] = float(np.mean(losses)) if losses else float("nan")

        last = epoch + 1 == config.epochs
        if dd.main:
            if can_eval and ((epoch + 1) % eval_every == 0 or last):
                t = time.perf_counter()
                rec.update(_evaluate(model, query, gallery, config, device, cache))
                rec["seconds_eval"] = time.perf_counter() - t
            if epoch == start_epoch and memory_init_seconds:
                rec["seconds_memory_init"] = memory_init_seconds
            rec["seconds_epoch"] = time.perf_counter() - t_epoch
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "memory_features": memory.features.detach().cpu(),
                # plain Python values: checkpoints are read with weights_only=True
                "spcl_state": None
                if spcl_state is None
                else _plain(dataclasses.asdict(spcl_state)),
                "epoch": epoch + 1,
                "n_train": n,
            }
            # The config too, so that 'aas evaluate --model checkpoint.pt' knows the image size.
            save_model(ckpt_path, model, extra={"train_state": state, "config": config.to_json()})
            metrics.append(rec)
            _append_jsonl(run_dir / "metrics.jsonl", rec)
            _plot(run_dir, metrics, cycles)
            say(_epoch_line(rec, config.epochs))
        dd.barrier()

    for s in {id(x): x for x in (store, answers) if x is not None}.values():
        s.close()
    summary = {"run_dir": str(run_dir), "epochs": config.epochs, "cycles": len(cycles)}
    if dd.main:
        save_model(run_dir / "model.pt", model, extra={"config": config.to_json()})
        summary["answers"] = len(constraints)
        summary["metrics"] = metrics
        summary["cycle_records"] = cycles
    dd.barrier()
    return summary


def _plain(d: dict) -> dict:
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in d.items()}


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
