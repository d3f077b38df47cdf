"""How to install an optional part of aas-core: from its source folder (it is not on PyPI)."""

from __future__ import annotations

__all__ = ["install_hint"]


CPU_TORCH = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
_NEEDS_TORCH = ("torch", "pretrained", "hub")


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, one of pyproject.toml's optional dependencies.

    Examples
    --------
    >>> install_hint("web")
    'pip install ".[web]" in the aas-core source folder'
    """
    hint = f'pip install ".[{extra}]" in the aas-core source folder'
    if extra in _NEEDS_TORCH:  # PyPI's Linux torch is the CUDA build: gigabytes, no use on a CPU
        hint += f" (without an NVIDIA GPU, first: {CPU_TORCH})"
    return hint
