"""The README a newcomer reads first: short, its set-up commands the ones CI runs, its links
alive, and PyTorch's CPU build reachable without the CUDA packages."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

if not README.is_file():  # pragma: no cover - a run from an unpacked sdist without the docs
    pytest.skip("README.md is not beside tests/", allow_module_level=True)


def _readme_command():
    spec = importlib.util.spec_from_file_location("readme_command", ROOT / ".ci/readme_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_stays_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 250


def test_the_first_commands_are_the_two_set_up_commands_that_ci_runs():
    text = README.read_text(encoding="utf-8")
    assert _readme_command().setup_commands(text) == [
        'pip install ".[demo]" && aas demo',
        'pip install ".[test]" && python -m pytest',
    ]
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "python .ci/readme_command.py 2" in ci


def test_the_readme_says_how_to_install_the_cpu_build_of_torch_first():
    text = README.read_text(encoding="utf-8")
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in text
    assert text.index(cpu) < text.index('pip install ".[pretrained,web]"')


def test_no_extra_pins_torch_or_asks_for_torchvision():
    """An installed CPU torch satisfies every extra: no upper bound or exact pin on torch (pip
    would replace it with PyPI's CUDA build), and no torchvision/torchaudio, whose PyPI
    releases each pin one torch."""
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    for name, reqs in extras.items():
        for req in reqs:
            base = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()
            assert base not in ("torchvision", "torchaudio"), (name, req)
            if base == "torch":
                assert re.fullmatch(r"torch>=[\d.]+", req.replace(" ", "")), (name, req)


def _pages():
    return [README, *sorted(DOCS.glob("*.md"))]


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file():
    bad = []
    for page in _pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                bad.append(f"{page.relative_to(ROOT)}: {target}")
    assert not bad, bad


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    assert [p.name for p in DOCS.glob("*.md") if f"](docs/{p.name})" not in text] == []


def test_no_page_cites_files_outside_the_repository():
    bad = [p.name for p in _pages() if "../shared" in p.read_text(encoding="utf-8")]
    assert not bad
