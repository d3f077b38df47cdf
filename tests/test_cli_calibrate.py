"""`aas propose --calibrate C` / `aas refine --calibrate C`: near pairs drawn at random
(pool "calibration"), asked out of the round's budget until C are answered or waiting,
and eps chosen from their answers once there are enough (CSV and store workflows)."""

import contextlib
import csv
import io
from collections import Counter

import numpy as np
import pytest

import aas_core as aas
from aas_core import cli
from aas_core.annotate import AnnotationStore
from aas_core.cluster import calibrated_eps
from aas_core.loop import cluster_features

K1 = 15


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # camera-trap bursts: the data's eps is far from the best (the calibration moves it)
    X, y = aas.datasets.make_suite_member("bursts", n=400, seed=0)[:2]
    path = tmp_path_factory.mktemp("cal") / "X.npy"
    np.save(path, X)
    return path, np.asarray(y)


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _answer(rows, y, path):
    """The rows written back with 'same' filled in by the true identities."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "same": "same" if y[int(r["i"])] == y[int(r["j"])] else "different"})


def _knn_edges(X):
    g = aas.knn_graph(X, K1)
    return {(min(i, j), max(i, j)) for i, row in enumerate(g.indices) for j in row if i != j}


def test_csv_rounds_ask_the_calibration_first_then_choose_eps_from_it(data, tmp_path):
    path, y = data
    X = np.load(path)
    base = ["--k1", str(K1), "--budget", "30", "--calibrate", "50"]
    # round 1: the whole budget goes to near pairs drawn at random
    rc, out, _ = _run(["propose", str(path), *base, "--out", str(tmp_path / "p1.csv")])
    assert rc == 0 and "30 near pairs drawn at random to ask now" in out
    assert "none this round (the calibration took its budget)" in out
    r1 = _rows(tmp_path / "p1.csv")
    assert len(r1) == 30 and {(r["pool"], r["kind"]) for r in r1} == {("calibration",) * 2}
    pairs1 = {(int(r["i"]), int(r["j"])) for r in r1}
    assert all(i < j for i, j in pairs1) and pairs1 <= _knn_edges(X)
    _answer(r1, y, tmp_path / "a1.csv")
    # round 2: the 20 the calibration still lacks, then the sampler; nothing asked twice
    argv = ["propose", str(path), *base, "--constraints", str(tmp_path / "a1.csv")]
    rc, out, _ = _run([*argv, "--out", str(tmp_path / "p2.csv")])
    assert rc == 0 and "(30 answered and 0 waiting of the 50 asked for)" in out
    r2 = _rows(tmp_path / "p2.csv")
    assert Counter(r["pool"] == "calibration" for r in r2) == {True: 20, False: 10}
    assert not pairs1 & {(int(r["i"]), int(r["j"])) for r in r2}
    _answer(r1 + r2, y, tmp_path / "a2.csv")
    # round 3: the calibration is complete (no more near pairs) and chooses eps
    argv = ["propose", str(path), *base, "--constraints", str(tmp_path / "a2.csv")]
    rc, out, _ = _run([*argv, "--out", str(tmp_path / "p3.csv")])
    assert rc == 0 and "0 near pairs drawn at random to ask now" in out
    assert {r["pool"] for r in _rows(tmp_path / "p3.csv")} <= {"us", "os", "check", "merge"}
    cal = [r for r in r1 + r2 if r["pool"] == "calibration"]
    cal_pairs = np.array([[int(r["i"]), int(r["j"])] for r in cal])
    same = y[cal_pairs[:, 0]] == y[cal_pairs[:, 1]]
    state = cluster_features(X, k1=K1)
    want = calibrated_eps(state.D, state.graph, cal_pairs, same, fallback=state.eps)
    assert f"calibration: {want.message}" in out
    # refine applies the same eps
    ids = tmp_path / "ids.csv"
    argv = ["refine", str(path), "--k1", str(K1), "--calibrate", "50"]
    rc, out, _ = _run([*argv, "--constraints", str(tmp_path / "a2.csv"), "--out", str(ids)])
    assert rc == 0 and f"calibration: {want.message}" in out


def test_without_the_pool_column_no_answer_counts_as_calibration(data, tmp_path):
    path, y = data
    rc, _, _ = _run(
        ["propose", str(path), "--k1", str(K1), "--budget", "20", "--calibrate", "20",
         "--out", str(tmp_path / "p.csv")]
    )  # fmt: skip
    rows = [{k: r[k] for k in ("i", "j", "same")} for r in _rows(tmp_path / "p.csv")]
    _answer(rows, y, tmp_path / "a.csv")
    argv = ["refine", str(path), "--k1", str(K1), "--calibrate", "20"]
    rc, out, _ = _run(
        [*argv, "--constraints", str(tmp_path / "a.csv"), "--out", str(tmp_path / "i.csv")]
    )
    assert rc == 0 and "none of the near pairs of pool 'calibration' is answered yet" in out


def test_store_rounds_count_waiting_calibration_pairs(data, tmp_path):
    path, y = data
    X = np.load(path)
    store = tmp_path / "run.sqlite"
    AnnotationStore.create(store, [f"{k}.png" for k in range(len(X))], embeddings_path=path).close()
    argv = ["propose", "--store", str(store), "--k1", str(K1), "--budget", "8", "--calibrate", "12"]
    rc, out, _ = _run(argv)
    assert rc == 0 and "queued 8 new pairs" in out
    rc, out, _ = _run(argv)  # 8 waiting: 4 more near pairs, then 4 of the sampler's
    assert rc == 0 and "(0 answered and 8 waiting of the 12 asked for)" in out
    with AnnotationStore.open(store) as s:
        queued = s.pairs()
        assert Counter(p["pool"] == "calibration" for p in queued)[True] == 12
        for p in queued:
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
    rc, out, _ = _run(argv)  # all 12 answered: none more, and eps from them
    assert rc == 0 and "0 near pairs drawn at random to ask now (12 answered" in out
    cal = np.array([[p["i"], p["j"]] for p in queued if p["pool"] == "calibration"])
    same = y[cal[:, 0]] == y[cal[:, 1]]
    state = cluster_features(X, k1=K1)
    want = calibrated_eps(state.D, state.graph, cal, same, fallback=state.eps)
    assert f"calibration: {want.message}" in out
    with AnnotationStore.open(store) as s:
        assert Counter(p["pool"] == "calibration" for p in s.pairs())[True] == 12


def test_store_rounds_replace_a_calibration_pair_answered_cant_tell(data, tmp_path):
    # the same rule as the served rounds (Proposer): "can't tell" settles a pair without
    # an answer to count, so a fresh near pair takes its place; nothing is asked twice
    path, y = data
    X = np.load(path)
    store = tmp_path / "run.sqlite"
    AnnotationStore.create(store, [f"{k}.png" for k in range(len(X))], embeddings_path=path).close()
    argv = ["propose", "--store", str(store), "--k1", str(K1), "--budget", "6", "--calibrate", "6"]
    rc, out, _ = _run(argv)
    assert rc == 0 and "queued 6 new pairs" in out
    with AnnotationStore.open(store) as s:
        first = s.pairs()
        s.answer(first[0]["pair_id"], "cant_tell")
        for p in first[1:]:
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
    rc, out, _ = _run(argv)
    assert rc == 0 and "1 near pairs drawn at random to ask now (5 answered and 0 waiting" in out
    with AnnotationStore.open(store) as s:
        cal = [(p["i"], p["j"]) for p in s.pairs() if p["pool"] == "calibration"]
    assert len(cal) == 7 and len(set(cal)) == 7


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eps", "0.5"], "--calibrate 10 chooses eps from the answers to near pairs"),
        (["--eps-from-answers"], "drop --eps-from-answers"),
    ],
)
@pytest.mark.parametrize("command", ["propose", "refine"])
def test_calibrate_beside_a_given_eps_is_refused_in_one_line(
    data, tmp_path, command, extra, message
):
    path, _ = data
    argv = [command, str(path), "--calibrate", "10", *extra, "--out", str(tmp_path / "o.csv")]
    rc, _, err = _run(argv)
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_a_negative_count_is_a_usage_error(data):
    path, _ = data
    with pytest.raises(SystemExit) as exc:
        _run(["propose", str(path), "--calibrate", "-3"])
    assert exc.value.code == 2
