"""Backbones and the Re-ID model: ResNet-18/34/50, EfficientNet-Lite, a tiny test net,
timm and TorchScript.

- :func:`build_backbone` makes a feature extractor, ``(B, 3, H, W)`` float ->
  ``(B, feat_dim)`` globally average-pooled features (not normalised).
- :class:`ReIDModel` adds SpCL's BatchNorm "neck" on top of a backbone.
- :func:`save_model` / :func:`load_model` write and read a self-describing
  checkpoint.

The ResNets are our own code, written so that their ``state_dict()`` has
exactly torchvision's key names and shapes (ResNet v1.5: the stride of a
bottleneck sits on its 3x3 convolution; ``downsample.0`` is the 1x1
convolution and ``downsample.1`` its BatchNorm). A state dict saved from
``torchvision.models.resnet50(...)`` (ImageNet weights, say) therefore loads
without torchvision being installed. The classifier ``fc`` is left out.

Weights are only ever read from local files: nothing here downloads (for
pretrained backbones by name, including hub models, see
:mod:`aas_core.train.backbones`). Every backbone carries the preprocessing
its weights expect as ``.preprocess``
(:class:`~aas_core.train.transforms.Preprocess`).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from ._runtime import require_torch
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

_MAX_LISTED = 10  # offending keys listed in an error message
# blocks per stage, and whether the stage uses bottlenecks
_RESNETS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
}
_EFFICIENTNETS = ("efficientnet-lite0", "efficientnet-lite2")
_ARCHS = (*_RESNETS, *_EFFICIENTNETS, "tiny", "timm:<model name>", "torchscript")
# Top-level module names of classifiers, dropped from a weights file when the
# backbone has no such keys (torchvision: fc; timm: head / classifier / fc;
# efficientnet_lite_pytorch: _fc).
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "_fc.")
# EfficientNet-Lite's release normalises inputs to [-1, 1]: (x - 127) / 128 on 0..255.
_EFFICIENTNET_MEAN = (127.0 / 255.0,) * 3
_EFFICIENTNET_STD = (128.0 / 255.0,) * 3


# ---- ResNet (torchvision layout) -------------------------------------------------


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: ResNet v1.5), 1x1 expand (ResNet-50)."""

    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet trunk without classifier; ``forward`` returns pooled features.

    ``last_stride`` is the stride of ``layer4``: 2 as in ImageNet models
    (a 256x128 input gives an 8x4 map), 1 for Re-ID (16x8), as SpCL and
    fast-reid do. Parameters are initialised as torchvision does (Kaiming
    normal, fan-out, for convolutions; BatchNorm weight 1, bias 0).
    """

    channels_last_ok = True  # no .view() of a map: channels-last input is safe

    def __init__(self, layers, bottleneck, *, last_stride=1):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._cin = 64
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], last_stride)
        del self._cin
        self.feat_dim = 512 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, block, planes, n_blocks, stride):
        cout = planes * block.expansion
        downsample = None
        if stride != 1 or self._cin != cout:
            downsample = nn.Sequential(_conv1x1(self._cin, cout, stride), nn.BatchNorm2d(cout))
        blocks = [block(self._cin, planes, stride, downsample)]
        self._cin = cout
        blocks.extend(block(cout, planes) for _ in range(1, n_blocks))
        return nn.Sequential(*blocks)

    def feature_map(self, x):
        """The ``(B, feat_dim, H/16, W/16)`` map of layer4 (``H/32, W/32`` with last_stride 2)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


class _ConvBNReLU(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = _conv3x3(cin, cout, stride)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class TinyNet(nn.Module):
    """Four conv-BN-ReLU blocks, 64-d features: for CPU tests that must run in seconds.

    Strides 2, 2, 2 and ``last_stride``: a 64x32 input gives a 8x4 map with
    last_stride 1 (4x2 with 2). About 70k parameters.
    """

    channels_last_ok = True  # no .view() of a map: channels-last input is safe

    def __init__(self, *, last_stride=1):
        super().__init__()
        self.features = nn.Sequential(
            _ConvBNReLU(3, 16, 2),
            _ConvBNReLU(16, 32, 2),
            _ConvBNReLU(32, 64, 2),
            _ConvBNReLU(64, 64, last_stride),
        )
        self.feat_dim = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_map(self, x):
        """The ``(B, 64, h, w)`` map before pooling."""
        return self.features(x)

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


class _TorchScriptBackbone(nn.Module):
    """Holds a TorchScript module (as ``self.model``) that maps images to (B, d) features."""

    def __init__(self, scripted, feat_dim):
        super().__init__()
        self.model = scripted
        self.feat_dim = feat_dim

    def forward(self, x):
        return self.model(x)


# ---- building backbones --------------------------------------------------------------


def _check_arch(arch):
    if not isinstance(arch, str) or not (
        arch in _RESNETS
        or arch in _EFFICIENTNETS
        or arch in ("tiny", "torchscript")
        or (arch.startswith("timm:") and arch[5:].strip())
    ):
        raise ValueError(
            "The 'arch' parameter of build_backbone must be one of "
            f"{', '.join(repr(a) for a in _ARCHS)}; got {arch!r}."
        )


def _default_last_stride(arch):
    """1 for the ResNets and tiny (Re-ID practice), 2 for EfficientNet-Lite (as pretrained)."""
    return 2 if arch in _EFFICIENTNETS else 1


def _check_last_stride(last_stride, owner="build_backbone"):
    if isinstance(last_stride, bool) or last_stride not in (1, 2):
        raise ValueError(
            f"The 'last_stride' parameter of {owner} must be 1 or 2; got {last_stride!r}."
        )
    return int(last_stride)


def _weights_path(weights, owner="build_backbone"):
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"The 'weights' parameter of {owner} must be a local file path; got {weights!r}."
        )
    text = os.fspath(weights)
    if "://" in text:
        raise ValueError(
            f"The 'weights' parameter of {owner} must be a local file path (aas-core never "
            f"downloads); got the URL {text!r}. Download the file yourself and pass its path."
        )
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"The 'weights' file of {owner} does not exist: {path}")
    return path


def build_backbone(arch: str, *, weights=None, last_stride=None):
    """A feature extractor: ``(B, 3, H, W)`` float -> ``(B, feat_dim)`` pooled features.

    Parameters
    ----------
    arch : str
        ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` (torchvision's layout;
        512, 512 and 2048 features), ``"efficientnet-lite0"`` /
        ``"efficientnet-lite2"`` (1280 features; the layout of the
        efficientnet_lite_pytorch package, whose ImageNet files
        :func:`~aas_core.train.backbones.load_backbone` finds by name),
        ``"tiny"`` (64 features; tests),
        ``"timm:<name>"`` (``timm.create_model(name, pretrained=False,
        num_classes=0)``; needs timm) or ``"torchscript"`` (``weights`` is a
        TorchScript file whose module maps images to ``(B, d)`` features).
    weights : str or Path, optional
        A local file (never a URL). For ``"torchscript"``: the TorchScript
        file (required). Otherwise a state dict saved with ``torch.save``,
        possibly wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` and
        possibly with DDP's ``module.`` prefix; it is read with
        ``weights_only=True`` (no code is unpickled). Classifier keys
        (``fc.*``, ``classifier.*``, ``head.*``) that the backbone does not
        have are dropped; BatchNorm ``num_batches_tracked`` counters may be
        missing (old torchvision files lack them). Default: random
        initialisation.
    last_stride : {1, 2} or None
        Stride of the last strided stage of the ResNets, EfficientNet-Lite
        and ``tiny`` (1: the last map keeps twice the resolution, as Re-ID
        models do). None: 1 for the ResNets and ``tiny``, 2 for
        EfficientNet-Lite (the network as pretrained). Ignored by timm and
        TorchScript backbones.

    Returns
    -------
    torch.nn.Module
        With the attributes ``feat_dim`` (int), ``arch``, ``last_stride``,
        ``weights`` (as given), ``torchscript_path`` (str or None) and
        ``preprocess`` (:class:`~aas_core.train.transforms.Preprocess`:
        EfficientNet-Lite its native size and [-1, 1] scaling; timm models
        their pretrained config; the others ImageNet statistics and no size).

    Raises
    ------
    FileNotFoundError
        If ``weights`` names no file.
    ValueError
        If the file is not a state dict of this architecture: missing or
        unexpected keys and shape mismatches are listed (up to 10 of each).
    ImportError
        For ``"timm:..."`` when timm is not installed.

    Notes
    -----
    TorchScript files are read with ``torch.jit.load`` (torch's deprecation
    warning for TorchScript is silenced there). ``feat_dim`` of a TorchScript
    backbone is found by a dry run in eval mode on one zero image of 64x64
    pixels, then (if the module rejects that size) 256x128 and 224x224; the
    output must be ``(1, d)``.

    Examples
    --------
    >>> net = build_backbone("tiny")
    >>> net(torch.zeros(2, 3, 64, 32)).shape
    torch.Size([2, 64])
    """
    _check_arch(arch)
    if last_stride is None:
        last_stride = _default_last_stride(arch)
    last_stride = _check_last_stride(last_stride)
    torchscript_path = None
    preprocess = Preprocess()
    if arch in _RESNETS:
        layers, bottleneck = _RESNETS[arch]
        net = ResNet(layers, bottleneck, last_stride=last_stride)
    elif arch in _EFFICIENTNETS:
        from .efficientnet import EfficientNetLite

        net = EfficientNetLite(arch, last_stride=last_stride)
        size = (net.native_size, net.native_size)
        preprocess = Preprocess(size, _EFFICIENTNET_MEAN, _EFFICIENTNET_STD)
    elif arch == "tiny":
        net = TinyNet(last_stride=last_stride)
    elif arch == "torchscript":
        if weights is None:
            raise ValueError(
                "build_backbone(arch='torchscript') needs the TorchScript file as 'weights'."
            )
        path = _weights_path(weights)
        net = _load_torchscript(path)
        torchscript_path = str(path)
    else:
        from .hub import timm_model

        net = timm_model(arch[5:].strip(), pretrained=False)
        preprocess = net.preprocess
    if weights is not None and arch != "torchscript":
        _load_weights(net, _weights_path(weights), arch)
    net.arch = arch
    net.last_stride = last_stride
    net.weights = weights
    net.torchscript_path = torchscript_path
    net.preprocess = preprocess
    return net


def _load_torchscript(path):
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates TorchScript in favour of torch.export; the user asked
            # for a TorchScript file, so the warning would only be noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.14
            scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure means "not a TorchScript file"
        raise ValueError(
            f"build_backbone: the 'weights' file {path} is not a TorchScript module "
            f"({type(exc).__name__}: {exc})."
        ) from None
    was_training = scripted.training
    scripted.eval()
    errors = []
    feat_dim = None
    try:
        with torch.inference_mode():
            for h, w in ((64, 64), (256, 128), (224, 224)):
                try:
                    out = scripted(torch.zeros(1, 3, h, w))
                except Exception as exc:  # noqa: BLE001 - try the next size
                    errors.append(f"{h}x{w}: {type(exc).__name__}: {str(exc).strip()[:200]}")
                    continue
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
                    raise ValueError(
                        f"build_backbone: the TorchScript module in {path} must map a (B, 3, H, "
                        f"W) batch to (B, d) features; for a 1x3x{h}x{w} input it returned "
                        f"{shape}."
                    )
                feat_dim = int(out.shape[1])
                break
    finally:
        scripted.train(was_training)
    if feat_dim is None:
        raise ValueError(
            f"build_backbone: the TorchScript module in {path} failed on every test input: "
            + "; ".join(errors)
        )
    return _TorchScriptBackbone(scripted, feat_dim)


def _read_state_dict(path, owner):
    """A flat {key: tensor} from a torch.save file, unwrapped; raises ValueError if not one."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - foreign pickle, truncated zip, ...
        raise ValueError(
            f"{owner}: the 'weights' file {path} cannot be read as a state dict "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]})."
        ) from None
    for _ in range(3):  # {"state_dict": ...}, {"model": ...}, or both nested
        if not isinstance(obj, Mapping):
            break
        inner = next(
            (obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"{owner}: the 'weights' file {path} holds {type(obj).__name__}, not a state dict "
            "(a mapping of parameter names to tensors)."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{owner}: the 'weights' file {path} is not a state dict: entries that are not "
            f"tensors: {_listed(map(str, bad))}."
        )
    if all(k.startswith("module.") for k in obj):  # DistributedDataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _listed(items):
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _load_weights(net, path, arch):
    owner = "build_backbone"
    state = _read_state_dict(path, owner)
    own = net.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_CLASSIFIER_PREFIXES)}
    missing = [k for k in own if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listed(mismatched)}")
        raise ValueError(
            f"{owner}: the 'weights' file {path} does not fit arch={arch!r}: "
            + "; ".join(parts)
            + "."
        )
    net.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent


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
        :class:`ProjectedBackbone` already computed, and only the head runs."""
        if cached:
            if not isinstance(self.backbone, ProjectedBackbone):
                raise TypeError("ReIDModel(cached=True) needs a ProjectedBackbone backbone.")
            f = self.neck(self.backbone.project(x))
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
