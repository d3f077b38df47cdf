"""Fuzzing the public API: any argument gives a result or a one-line ValueError/TypeError.

Hypothesis draws batches of calls (a public function, arguments from pools of
odd values: huge and negative ints, NaN and inf, strings, None, ragged lists,
NaN inside a KNNGraph, ...); each batch runs in a fresh Python process
(``tests/_fuzz_worker.py``), so a crash of the interpreter fails the test
instead of killing pytest. A failure lists the calls that misbehaved.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import aas_core

WORKER = Path(__file__).with_name("_fuzz_worker.py")
sys.path.insert(0, str(WORKER.parent))
from _fuzz_worker import FUNCTIONS  # noqa: E402


def _case():
    def build(name):
        _, kinds, kw_kinds = FUNCTIONS[name]
        return st.tuples(
            st.just(name),
            st.lists(st.integers(0, 40), min_size=len(kinds), max_size=len(kinds)),
            st.dictionaries(st.sampled_from(sorted(kw_kinds) or ["_"]), st.integers(0, 40)),
        )

    return st.sampled_from(sorted(FUNCTIONS)).flatmap(build)


# no shrinking: every example costs a process start; the failure lists the bad calls anyway
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(_case(), min_size=30, max_size=30))
def test_public_functions_never_crash_or_dump_signatures(batch):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(Path(aas_core.__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    proc = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(batch)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, f"the worker died ({proc.returncode}): {proc.stderr[-2000:]}"
    bad = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert not bad, "\n".join(f"{b['case']}: {b['error']}" for b in bad)
