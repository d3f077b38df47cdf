"""The Re-ID model on a backbone, and its checkpoints.

- :func:`build_backbone` (from :mod:`aas_core.train.architectures`) makes a feature
  extractor, ``(B, 3, H, W)`` float -> ``(B, feat_dim)`` globally average-pooled features
  (not normalised): ResNet-18/34/50, EfficientNet-Lite, a tiny test net, timm and
  TorchScript; :func:`load_backbone` (from :mod:`aas_core.train.backbones`) one with
  pretrained weights by name.
- :class:`ReIDModel` adds SpCL's BatchNorm "neck" on top of a backbone.
- :func:`save_model` / :func:`load_model` write and read a self-describing
  checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ._runtime import require_torch
from .architectures import (  # noqa: F401 (the networks: importable from here, as before)
    BasicBlock,
    Bottleneck,
    ResNet,
    TinyNet,
    _check_arch,
    _check_last_stride,
    build_backbone,
)
from .backbones import load_backbone
from .transforms import Preprocess

torch = require_torch("aas_core.train.models")
nn = torch.nn
F = torch.nn.functional

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "ProjectedBackbone",
    "ReIDModel",
    "build_backbone",
    "load_backbone",
    "load_model",
    "save_model",
]

CHECKPOINT_FORMAT = "aas-core-reid-model"
CHECKPOINT_VERSION = 1


class ProjectedBackbone(nn.Module):
    """A (frozen) backbone followed by a linear projection: the trunk of ``--freeze-backbone``.

    ``forward(x) = proj(trunk(x))``; :meth:`project` applies the projection to
    features the trunk already computed (a cache). It carries the trunk's
    spec (``arch``, ``last_stride``, ``weights``, ``preprocess``, ...) so
    :func:`save_model` / :func:`load_model` rebuild it, with ``feat_dim`` the
    projection's output size.

    Parameters
    ----------
    trunk : torch.nn.Module
        A backbone from :func:`build_backbone` or :func:`load_backbone`.
    dim : int
        Output size of the projection (bias-free ``Linear(trunk.feat_dim, dim)``).
    """

    def __init__(self, trunk, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"The 'dim' parameter of ProjectedBackbone must be an int >= 1; got {dim!r}."
            )
        self.trunk = trunk
        self.proj = nn.Linear(trunk.feat_dim, dim, bias=False)
        self.feat_dim = dim
        for name in ("arch", "last_stride", "weights", "torchscript_path", "preprocess"):
            setattr(self, name, getattr(trunk, name, None))
        self.backbone = getattr(trunk, "backbone", None)
        self.provenance = getattr(trunk, "provenance", None)
        self.channels_last_ok = getattr(trunk, "channels_last_ok", False)

    def project(self, features):
        return self.proj(features)

    def forward(self, x):
        return self.proj(self.trunk(x))


# ---- the Re-ID model -----------------------------------------------------------------


class ReIDModel(nn.Module):
    """A backbone with SpCL's BatchNorm neck: the model that SpCL trains and we embed with.

    ``forward(x)`` maps ``(B, 3, H, W)`` images to ``BN(backbone(x))``,
    ``(B, feat_dim)``: unnormalised in ``train()`` mode, L2-normalised in
    ``eval()`` mode. The neck is ``BatchNorm1d(feat_dim)`` with weight 1 and
    bias 0, the bias frozen (``requires_grad=False``), as in SpCL's ResNet.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps images to ``(B, feat_dim)`` and has an int attribute
        ``feat_dim``. Models made by :func:`build_backbone` also carry the
        spec (``arch``, ``last_stride``, ``weights``) that :func:`save_model`
        records; other backbones work but cannot be saved.

    Attributes
    ----------
    backbone, neck : torch.nn.Module
    arch : str or None
    feat_dim : int
    last_stride : int or None
    weights : str, Path or None
        The weights file the backbone was initialised from, as given.
    input_size : (int, int) or None
        The (height, width) it was trained at, where :func:`load_model` found
        it in a checkpoint of ``aas train``; else None.
    preprocess : Preprocess
        How images are prepared for it (the backbone's; a checkpoint's
        training size where :func:`load_model` found one).
    backbone_name : str or None
        The name it was loaded by (:func:`~aas_core.train.backbones.load_backbone`).
    provenance : dict or None
        Where the backbone's pretrained weights came from (name, file,
        sha256, preprocessing), for the record.
    checkpoint : str or None
        The file :func:`load_model` read it from.

    Examples
    --------
    >>> model = ReIDModel.from_spec("tiny").eval()
    >>> f = model(torch.rand(3, 3, 64, 32))
    >>> f.shape, bool(torch.allclose(f.norm(dim=1), torch.ones(3)))
    (torch.Size([3, 64]), True)
    """

    def __init__(self, backbone):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(
                f"The 'backbone' parameter of ReIDModel must be a torch.nn.Module; got "
                f"{type(backbone).__name__}."
            )
        feat_dim = getattr(backbone, "feat_dim", None)
        if isinstance(feat_dim, bool) or not isinstance(feat_dim, int) or feat_dim < 1:
            raise ValueError(
                "The 'backbone' parameter of ReIDModel must have an int attribute 'feat_dim' "
                f">= 1 (the size of its output features); got {feat_dim!r}."
            )
        self.backbone = backbone
        self.neck = nn.BatchNorm1d(feat_dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)
        self.arch = getattr(backbone, "arch", None)
        self.feat_dim = feat_dim
        self.last_stride = getattr(backbone, "last_stride", None)
        self.weights = getattr(backbone, "weights", None)
        self.input_size = None
        preprocess = getattr(backbone, "preprocess", None)
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess()
        self.backbone_name = getattr(backbone, "backbone", None)
        self.provenance = getattr(backbone, "provenance", None)
        self.checkpoint = None  # the file load_model read it from
        self.tail = None  # a BlockSplit when only the last blocks train (aas train)

    @classmethod
    def from_spec(cls, arch: str, *, weights=None, last_stride=None) -> ReIDModel:
        """``ReIDModel(build_backbone(arch, weights=weights, last_stride=last_stride))``."""
        return cls(build_backbone(arch, weights=weights, last_stride=last_stride))

    @classmethod
    def pretrained(cls, name: str = "efficientnet-lite0", *, last_stride=None) -> ReIDModel:
        """``ReIDModel(load_backbone(name, last_stride=last_stride))``: a pretrained backbone
        by name (see :mod:`aas_core.train.backbones`)."""
        return cls(load_backbone(name, last_stride=last_stride))

    def forward(self, x, *, cached=False):
        """``BN(backbone(x))``; with ``cached=True`` ``x`` holds features the trunk of a
        :class:`ProjectedBackbone` already computed, and only the head runs (or, with a
        :class:`~aas_core.train.blocks.BlockSplit` as ``tail``, the activations entering
        its last blocks, and only those blocks and the neck run)."""
        if cached:
            tail = getattr(self, "tail", None)  # aas train --train-blocks: cached activations
            if tail is not None:
                f = self.neck(tail(x))
            elif isinstance(self.backbone, ProjectedBackbone):
                f = self.neck(self.backbone.project(x))
            else:
                raise TypeError(
                    "ReIDModel(cached=True) needs a ProjectedBackbone backbone or a block split."
                )
        else:
            f = self.neck(self.backbone(x))
        return f if self.training else F.normalize(f, dim=1)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, feat_dim={self.feat_dim}, last_stride={self.last_stride}"


# ---- checkpoints ---------------------------------------------------------------------


def _trained_input_size(extra):
    """(height, width) from the config 'aas train' records in a checkpoint's extra, or None."""
    cfg = extra.get("config") if isinstance(extra, Mapping) else None
    if not isinstance(cfg, Mapping):
        return None
    h, w = cfg.get("height"), cfg.get("width")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w))
    return (h, w) if ok else None


def save_model(path, model: ReIDModel, *, extra: dict | None = None) -> Path:
    """Writes ``model`` to a checkpoint that :func:`load_model` reads.

    The file (``torch.save``) holds a dict: ``format``
    ("aas-core-reid-model"), ``version`` (1), ``arch``, ``last_stride``,
    ``torchscript_path`` (None unless ``arch="torchscript"``), ``feat_dim``,
    ``weights`` (the initial weights file, as a string, for the record),
    ``backbone`` (the pretrained backbone's name, or None),
    ``projection_dim`` (the output size of a :class:`ProjectedBackbone`'s
    projection, else None), ``preprocess`` and ``provenance`` (plain
    dicts), ``state_dict`` (of the whole
    ReIDModel, on the CPU, without DDP's ``module.`` prefix) and ``extra``.
    It is written to a temporary file in the same folder, then renamed over
    ``path``: a crash never leaves a half written checkpoint. The folder is created if missing.

    Parameters
    ----------
    path : str or Path
    model : ReIDModel
        Or a DistributedDataParallel wrapping one.
    extra : dict, optional
        Anything else to keep (epoch, config, ...). :func:`load_model`
        reads with ``weights_only=True``, so keep to tensors and plain
        Python values (str, int, float, bool, None, lists, tuples, dicts).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    owner = "save_model"
    inner = getattr(model, "module", None)
    if isinstance(inner, ReIDModel):  # DistributedDataParallel / DataParallel
        model = inner
    if not isinstance(model, ReIDModel):
        raise TypeError(
            f"The 'model' parameter of {owner} must be a ReIDModel; got {type(model).__name__}."
        )
    if model.arch is None:
        raise ValueError(
            f"{owner}: the model's backbone was not made by build_backbone (its 'arch' is "
            "unknown), so load_model could not rebuild it."
        )
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"The 'extra' parameter of {owner} must be a dict; got {extra!r}.")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": model.arch,
        "last_stride": model.last_stride,
        "torchscript_path": getattr(model.backbone, "torchscript_path", None),
        "feat_dim": model.feat_dim,
        "weights": None if model.weights is None else os.fspath(model.weights),
        "backbone": model.backbone_name,
        "projection_dim": (
            model.backbone.feat_dim if isinstance(model.backbone, ProjectedBackbone) else None
        ),
        "preprocess": model.preprocess.to_json(),
        "provenance": model.provenance,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": {} if extra is None else extra,
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj, path) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_model(path, *, map_location="cpu") -> ReIDModel:
    """Rebuilds a :class:`ReIDModel` from a checkpoint of :func:`save_model` (or the trainer).

    The backbone is rebuilt from the recorded ``arch`` and ``last_stride``
    (its initial ``weights`` file is not read again: the checkpoint holds all
    parameters; a TorchScript backbone's file must still exist), then the
    state dict is loaded strictly. Other keys in the file (optimizer state,
    memory bank, ...) are ignored. The file is read with
    ``weights_only=True``. The model is returned in eval mode, on
    ``map_location``.

    Raises
    ------
    FileNotFoundError
        If ``path`` (or a TorchScript backbone's file) does not exist.
    ValueError
        If the file is not such a checkpoint (a foreign or truncated file, a
        wrong format or version, missing entries, or a state dict that does
        not fit), naming the path and the problem.

    Examples
    --------
    >>> import tempfile
    >>> model = ReIDModel.from_spec("tiny").eval()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_model(Path(tmp, "m.pt"), model, extra={"epoch": 3})
    ...     again = load_model(Path(tmp, "m.pt"))
    >>> x = torch.rand(2, 3, 64, 32)
    >>> bool(torch.equal(model(x), again(x)))
    True
    """
    owner = "load_model"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: checkpoint file not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - foreign pickle, truncated zip, ...
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ValueError(
            f"{owner}: {path} is not an aas-core model checkpoint, or it is damaged "
            f"({type(exc).__name__}: {first})."
        ) from None
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != CHECKPOINT_FORMAT:
        what = (
            f"its 'format' is {ckpt.get('format')!r}"
            if isinstance(ckpt, Mapping)
            else f"it holds {type(ckpt).__name__}"
        )
        raise ValueError(
            f"{owner}: {path} is not an aas-core model checkpoint ({what}; expected a dict "
            f"with format {CHECKPOINT_FORMAT!r}, as written by save_model)."
        )
    version = ckpt.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"{owner}: {path} has checkpoint format version {version!r}; this aas-core reads "
            f"version {CHECKPOINT_VERSION} (a newer aas-core may have written it)."
        )
    missing = [k for k in ("arch", "last_stride", "state_dict") if k not in ckpt]
    if missing:
        raise ValueError(f"{owner}: {path} lacks the entries {', '.join(missing)}.")
    arch, last_stride, state = ckpt["arch"], ckpt["last_stride"], ckpt["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{owner}: {path}: 'state_dict' is {type(state).__name__}, not a dict.")
    ts = ckpt.get("torchscript_path")
    try:
        _check_arch(arch)
        if last_stride is not None:  # None: a timm backbone, which has no such setting
            last_stride = _check_last_stride(last_stride, owner)
    except ValueError as exc:
        raise ValueError(f"{owner}: {path} records an unusable spec ({exc})") from None
    if arch == "torchscript":
        if not ts or not Path(ts).is_file():
            raise FileNotFoundError(
                f"{owner}: {path} has a TorchScript backbone whose file is missing: {ts}"
            )
        backbone = build_backbone(arch, weights=ts, last_stride=last_stride)
    else:
        backbone = build_backbone(arch, last_stride=last_stride)
    dim = ckpt.get("projection_dim")
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{owner}: {path} records an unusable projection_dim {dim!r}.")
        backbone = ProjectedBackbone(backbone, dim)
    model = ReIDModel(backbone)
    model.weights = ckpt.get("weights")
    model.input_size = _trained_input_size(ckpt.get("extra"))
    if ckpt.get("preprocess") is not None:  # absent in checkpoints of aas-core <= 0.1.0
        try:
            model.preprocess = Preprocess.from_json(ckpt["preprocess"])
        except ValueError as exc:
            raise ValueError(f"{owner}: {path} records an unusable preprocessing ({exc})") from None
    if model.input_size is not None:
        model.preprocess = model.preprocess.with_size(model.input_size)
    backbone_name = ckpt.get("backbone")
    model.backbone_name = backbone_name if isinstance(backbone_name, str) else None
    provenance = ckpt.get("provenance")
    model.provenance = dict(provenance) if isinstance(provenance, Mapping) else None
    model.checkpoint = str(path.resolve())
    state = dict(state)
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"{owner}: the state dict in {path} does not fit arch={arch!r} "
            f"({str(exc).strip()[:1000]})."
        ) from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval()
