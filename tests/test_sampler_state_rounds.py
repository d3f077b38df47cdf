"""What AAS learns from round to round (its split by yield) survives rounds run in
separate processes: the served Proposer and ``aas propose --store`` keep the sampler's
state in the store's meta."""

import contextlib
import io
import json

import numpy as np
import pytest

import aas_core as aas
from aas_core import cli
from aas_core.annotate import AnnotationStore
from aas_core.annotate._pools import SAMPLER_STATE_KEY
from aas_core.annotate.server import Proposer
from aas_core.loop import cluster_features
from aas_core.sampling import AmbiguityAwareSampler

K1 = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, y = aas.datasets.make_suite_member("many-singletons", n=400, seed=0)[:2]
    path = tmp_path_factory.mktemp("state") / "X.npy"
    np.save(path, X)
    return X, np.asarray(y), path


def _answer_all(store, y):
    done = {a["pair_id"] for a in store.answers()}
    for p in store.pairs():
        if p["pair_id"] not in done:
            store.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")


def _proposer(X):
    return Proposer(
        X, AmbiguityAwareSampler(), name="aas", budget=20, clusters=cluster_features(X, k1=K1)
    )


def test_a_restarted_proposer_goes_on_from_the_stored_state(data, tmp_path):
    X, y, _ = data
    path = tmp_path / "s.sqlite"
    AnnotationStore.create(path, [f"{k}.png" for k in range(len(X))]).close()
    with AnnotationStore.open(path) as store:
        first = _proposer(X)
        first(store)
        assert "split by yield" not in first.message
        saved = json.loads(store.meta[SAMPLER_STATE_KEY])
        assert saved["sampler"] == "AmbiguityAwareSampler" and saved["state"]["images"] == len(X)
        _answer_all(store, y)
    with AnnotationStore.open(path) as store:  # a new process: a new sampler
        again = _proposer(X)
        again(store)
        assert "split by yield" in again.message
        # a state that does not fit is passed over, not an error
        store.set_meta(SAMPLER_STATE_KEY, "{not json")
        _answer_all(store, y)
        third = _proposer(X)
        third(store)
        assert "split by yield" not in third.message
        assert json.loads(store.meta[SAMPLER_STATE_KEY])["state"] is not None


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = cli.main(argv)
    return rc, out.getvalue()


def test_propose_rounds_with_a_store_carry_the_split(data, tmp_path):
    X, y, path = data
    store = tmp_path / "run.sqlite"
    AnnotationStore.create(store, [f"{k}.png" for k in range(len(X))], embeddings_path=path).close()
    argv = ["propose", "--store", str(store), "--k1", str(K1), "--budget", "20"]
    rc, out = _run(argv)
    assert rc == 0 and "split by yield" not in out
    with AnnotationStore.open(store) as s:
        _answer_all(s, y)
    rc, out = _run(argv)
    assert rc == 0 and "split by yield" in out
    # another sampler's round neither reads nor breaks it
    rc, out = _run([*argv, "--sampler", "lbas"])
    assert rc == 0
    with AnnotationStore.open(store) as s:
        assert json.loads(s.meta[SAMPLER_STATE_KEY])["sampler"] == "AmbiguityAwareSampler"
