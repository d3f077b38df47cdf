"""A pytest plugin for .ci/run: stage 2 runs again only what stage 1 did not settle.

Stage 1 runs the README's test command in a fresh environment without the optional
packages; stage 2 adds some (torch, the reference EfficientNet-Lite) to that same
environment and runs the suite again. A test that passed in stage 1, where none of the
modules it asked for and did not find has been installed since, runs the same code on the
same installed package in stage 2: running it again tests nothing new, and on 2 cores it
costs minutes. So:

- ``AAS_CI_RECORD=FILE`` (stage 1) writes to FILE (JSON) the tests whose every phase
  passed, and each missing top-level module that was asked for, with whom it is charged
  to. A finder placed last on ``sys.meta_path`` is asked only when no other finder knows
  a module, so it sees exactly those imports (``importorskip`` and
  ``importlib.util.find_spec`` included). A miss is charged to the test that was running;
  to the whole test file when it happened while the file was collected or a fixture of
  module or class scope was set up; and to every test ("*") when it happened in a session
  fixture, at start-up, or in the module-level code of a module that loaded all the same
  (the package, a test helper, a library: it handled the miss and keeps the result for
  every later importer). A module that failed to load is tried again by each importer.
- ``AAS_CI_SETTLED=FILE`` (stage 2) deselects the tests that passed in stage 1 and were
  charged no module that can be found now, and says how many. When a module charged to
  every test can be found now, nothing is deselected. One exception: what another
  library asks for as it loads (hypothesis tries typing_extensions, joblib psutil) is
  that library's own business unless it is one of the packages stage 2 adds on purpose,
  listed in ``AAS_CI_ADDED`` (torch pulls in typing_extensions, sympy and more, which
  neither aas-core nor its tests ask for).

Without either variable the plugin does nothing. It changes no test's outcome.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

RECORD = os.environ.get("AAS_CI_RECORD")
SETTLED = os.environ.get("AAS_CI_SETTLED")
EVERYTHING = "*"  # charged to every test
LIBRARIES = "*lib"  # charged to every test, asked for by another library as it loads


def _file(nodeid):
    return nodeid.split("::", 1)[0]


class _Recorder:
    def __init__(self):
        spec = importlib.util.find_spec("aas_core")
        ours = [Path(__file__).resolve().parent.parent]  # the repository
        if spec is not None and spec.origin:
            ours.append(Path(spec.origin).resolve().parent)  # the installed package
        self.ours = tuple(str(p) + os.sep for p in ours)
        self.context = EVERYTHING  # a node id, a test file, or EVERYTHING
        self.collecting = None  # the test file being collected (resolved path)
        self.asked = []  # (context, missing module, files whose module-level code asked)
        self.passed = {}  # node id -> every phase so far passed

    # sys.meta_path protocol: asked only for modules no other finder has
    def find_spec(self, fullname, path=None, target=None):
        if "." not in fullname:
            chain = [f for f in self._modules_being_imported() if f != self.collecting]
            self.asked.append((self.context, fullname, chain))
        return None

    @staticmethod
    def _modules_being_imported():
        """The files whose module-level code is running, as they are imported, innermost
        first (a test function's frames, pytest's own and ``python -m pytest``'s module,
        run by runpy, are not among them)."""
        files = []
        frame = sys._getframe(2)
        while frame is not None:
            outer = frame.f_back
            if (
                frame.f_code.co_name == "<module>"
                and outer is not None
                and (
                    outer.f_code.co_filename.startswith("<frozen importlib")
                    or outer.f_code.co_name == "exec_module"  # pytest's assertion rewriter
                )
            ):
                files.append(str(Path(frame.f_code.co_filename).resolve()))
            frame = outer
        return files

    def missing(self):
        """context -> the missing modules charged to it.

        A module whose module-level code asked and which loaded all the same handled the
        miss, and keeps what it made of it for every later importer: the miss is charged
        to every test (EVERYTHING when the module is the package's or a test helper,
        LIBRARIES for another library's). A module that failed to load is tried again by
        each importer, which is charged in turn."""
        loaded = set()
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if file:
                loaded.add(str(Path(file).resolve()))
        charged = {}
        for context, name, chain in self.asked:
            kept = [f for f in chain if f in loaded]
            if kept:  # the innermost module that loaded is the one that handled the miss
                context = EVERYTHING if kept[0].startswith(self.ours) else LIBRARIES
            charged.setdefault(context, set()).add(name)
        return {c: sorted(names) for c, names in sorted(charged.items())}


if RECORD:
    _recorder = _Recorder()
    sys.meta_path.append(_recorder)  # now, before the conftest files are imported

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(collector):
        previous = (_recorder.context, _recorder.collecting)
        if isinstance(collector, pytest.Module):
            _recorder.context = _file(collector.nodeid)
            _recorder.collecting = str(Path(collector.path).resolve())
        yield
        _recorder.context, _recorder.collecting = previous

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        _recorder.context = item.nodeid
        _recorder.passed[item.nodeid] = True
        yield
        _recorder.context = EVERYTHING

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(fixturedef, request):
        previous = _recorder.context
        if fixturedef.scope in ("module", "class"):
            _recorder.context = _file(request.node.nodeid)
        elif fixturedef.scope != "function":
            _recorder.context = EVERYTHING
        yield
        _recorder.context = previous

    def pytest_runtest_logreport(report):
        if not report.passed:
            _recorder.passed[report.nodeid] = False

    def pytest_sessionfinish(session):
        record = {
            "passed": sorted(n for n, ok in _recorder.passed.items() if ok),
            "missing": _recorder.missing(),
        }
        Path(RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")


if SETTLED:

    def pytest_collection_modifyitems(config, items):
        record = json.loads(Path(SETTLED).read_text(encoding="utf-8"))
        found = {}  # missing in stage 1 -> can be found now

        added = set(os.environ.get("AAS_CI_ADDED", "").split())

        def tainted(context):
            names = record["missing"].get(context, ())
            if context == LIBRARIES:
                names = [name for name in names if name in added]
            for name in names:
                if name not in found:
                    found[name] = importlib.util.find_spec(name) is not None
            return [name for name in names if found[name]]

        everything = tainted(EVERYTHING) + tainted(LIBRARIES)
        if everything:
            line = f"every test runs again: {', '.join(everything)} can be found now"
        else:
            done = {n for n in record["passed"] if not tainted(n) and not tainted(_file(n))}
            gone = [item for item in items if item.nodeid in done]
            if gone:
                config.hook.pytest_deselected(items=gone)
                items[:] = [item for item in items if item.nodeid not in done]
            line = (
                f"{len(gone)} tests passed in stage 1 and asked for no module that was "
                f"missing there and can be found now: not run again"
            )
        config._ci_settled_line = f"ci_settled: {line}"

    def pytest_terminal_summary(terminalreporter, config):
        terminalreporter.write_line(getattr(config, "_ci_settled_line", ""))
