"""The configuration of a training run (:class:`TrainConfig`), resolved against the files
and the model it names."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch

from .backbones import DEFAULT_BACKBONE, file_sha256, load_backbone, resolve_name
from .models import ProjectedBackbone, ReIDModel, build_backbone
from .transforms import DEFAULT_SIZE

SAMPLERS = ("aas", "random", "gbas", "lbas", "nis", "none")
DATA_FORMATS = ("csv", "wildlife", "market1501", "store")
# Fields that may change on --resume: where and how fast it runs, and how long.
RUNTIME_FIELDS = ("device", "num_workers", "threads", "epochs", "progress", "precision")
PRECISIONS = ("auto", "bf16", "fp32")
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
    does not match), so that runs comparing samplers embed only once; with
    ``train_blocks`` >= 1, the ``activations`` folder of an earlier run instead.

    ``train_blocks``: how much of the backbone trains. ``"all"`` (or None,
    the default) the whole network, on images; 0 is ``freeze_backbone``; N >= 1
    trains the backbone's last N blocks (:mod:`aas_core.train.blocks`) and the
    neck on the activations that enter them, computed once for every image and
    its mirror and memory-mapped in the run directory
    (:mod:`aas_core.train.activations`); ``iters`` then defaults to one pass
    over the training images, as with a frozen backbone.

    ``precision``: ``"bf16"`` runs the forward passes (training, caching,
    embedding) under bfloat16 autocast, ``"fp32"`` does not, ``"auto"`` (the
    default) is bf16 on a CPU with native bfloat16 (AVX512-BF16 or AMX) and
    fp32 elsewhere and for the head of ``freeze_backbone`` (too small to gain);
    what ran is recorded in ``metrics.jsonl``.

    ``holdout``: the share of the answers held out of training (by a stable
    hash of the pair and ``seed``) to judge the weights: at the end of every
    cycle (every ``al_every`` epochs, and the last epoch) the new weights are
    kept only when their embedding separates the held-out "same" from
    "different" answers better (AUC) than the weights kept before (at first
    the untrained model), by DeLong's paired test at the one-sided 5% level;
    otherwise the model goes back to those. A run without a sampler
    (``sampler="none"``: SpCL alone) has no answers and is not judged. With fewer
    than 10 held-out answers of either kind the AUC says little: the head of
    ``freeze_backbone`` goes on with its new weights, trained blocks go back
    to the kept ones (an update of the backbone is kept only when shown
    better), and the record says so. 0 turns this off.

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
    train_blocks: int | str | None = None
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
    holdout: float = 0.2
    # runtime
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    progress: bool | None = None
    precision: str = "auto"
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
        self._canonical_blocks()
        self.check()

    def _canonical_blocks(self):
        """One spelling per setting: "all" is None, 0 is freeze_backbone (as config.json
        recorded them before train_blocks existed, so old runs still resume)."""
        n = self.train_blocks
        if isinstance(n, str) and n.strip().lower() == "all":
            self.train_blocks = None
        elif n == 0 and not isinstance(n, bool) and isinstance(n, int):
            if self.freeze_backbone is not True and self.freeze_backbone is not False:
                return  # check() names the bad freeze_backbone
            self.freeze_backbone, self.train_blocks = True, None

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
        n = self.train_blocks
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            bad("train_blocks", "'all', or an integer >= 0 (0: the head on a frozen backbone)")
        if n is not None and self.freeze_backbone:
            bad("train_blocks", "'all' or 0 with freeze_backbone (which trains no block)")
        if self.precision not in PRECISIONS:
            bad("precision", f"one of {PRECISIONS}")
        if isinstance(self.holdout, bool) or not (
            isinstance(self.holdout, (int, float)) and 0 <= self.holdout < 1
        ):
            bad("holdout", "a share in [0, 1) of the answers (0: keep every update)")
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


def _resolved(config: TrainConfig) -> TrainConfig:
    """The config with absolute file paths, so that a run resumes from any folder."""
    paths = {}
    for name in ("data", "root", "weights", "store", "feature_cache"):
        value = getattr(config, name)
        if value is not None and "://" not in str(value):  # a URL is refused later, as given
            paths[name] = os.path.abspath(os.fspath(value))
    return dataclasses.replace(config, **paths)


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
    elif config.train_blocks is not None:
        from .blocks import split_backbone

        split = split_backbone(trunk, config.train_blocks)  # checks N against the backbone
        split.freeze_stem()
        model = ReIDModel(trunk)
        model.tail = split  # not a Module: its layers are the trunk's own
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
