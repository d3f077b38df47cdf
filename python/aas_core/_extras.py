"""How to install an optional part of aas-core: from its source folder (it is not on PyPI)."""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, one of pyproject.toml's optional dependencies.

    Examples
    --------
    >>> install_hint("torch")
    'pip install ".[torch]" in the aas-core source folder'
    """
    return f'pip install ".[{extra}]" in the aas-core source folder'
