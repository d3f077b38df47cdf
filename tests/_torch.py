"""Importing torch (or another optional module) in tests: skip when missing, unless required.

    from _torch import importorskip
    torch = importorskip("torch")

Without torch the test module is skipped with the reason. With the
environment variable ``AAS_REQUIRE_TORCH=1`` (a CI that installs the
``[torch]`` extra sets it) a missing module fails the run instead, so a broken
install cannot pass as "skipped".
"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRED = os.environ.get("AAS_REQUIRE_TORCH") == "1"


def importorskip(name: str = "torch"):
    """The module ``name``; skips the calling test module if it cannot be imported.

    With ``AAS_REQUIRE_TORCH=1`` a missing module is a failure, not a skip.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"{name} cannot be imported ({type(exc).__name__}: {exc})"
        if REQUIRED:
            pytest.fail(f"AAS_REQUIRE_TORCH=1 but {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def hide_module(monkeypatch, name: str) -> None:
    """Makes ``import name`` (and its submodules) fail for the rest of the test."""
    import builtins

    real_import = builtins.__import__

    def hidden(module, *args, **kwargs):
        if module == name or module.startswith(name + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", hidden)
