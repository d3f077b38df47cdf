"""Runs the docstring examples of the installed package."""

import doctest
import importlib
import pkgutil

import pytest

import aas_core
from _torch import importorskip

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(aas_core.__path__, prefix="aas_core.")
    if not m.name.rsplit(".", 1)[-1].startswith("_")
    and m.name != "aas_core.cli"
    and not m.name.startswith("aas_core.cli.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.startswith("aas_core.train."):
        importorskip("torch")  # the torch parts; with AAS_REQUIRE_TORCH=1 a failure
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
