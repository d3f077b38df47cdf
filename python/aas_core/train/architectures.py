"""Backbone architectures: ResNet-18/34/50, EfficientNet-Lite, a tiny test net, timm and
TorchScript, built by :func:`build_backbone` (also importable from
:mod:`aas_core.train.models`).

:func:`build_backbone` makes a feature extractor, ``(B, 3, H, W)`` float ->
``(B, feat_dim)`` globally average-pooled features (not normalised).

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
import warnings
from collections.abc import Mapping
from pathlib import Path

from ._runtime import require_torch
from .transforms import Preprocess

torch = require_torch("aas_core.train.architectures")
nn = torch.nn
F = torch.nn.functional

__all__ = ["build_backbone"]

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
