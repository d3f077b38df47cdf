import csv
import json

import numpy as np
import pytest

import aas_core as aas
from aas_core import cli

SMALL = ["--n", "400", "--d", "64", "--k1", "20", "--threads", "1"]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_demo_compares_every_sampler_and_writes_results_and_plot(tmp_path, capsys):
    rc = cli.main(["demo", *SMALL, "--seed", "3", "--cycles", "2", "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("AAS", "LBAS", "GBAS", "NIS", "Random"):
        assert f"\n{name} " in printed
    assert "budget used" in printed and "best final pairwise F1" in printed
    res = json.loads((tmp_path / "demo_results.json").read_text())
    assert res["n"] == 400 and res["cycles"] == 2 and res["true_identities"] > 1
    # default budget: 0.02% of all pairs per cycle
    assert res["budget_per_cycle_pairs"] == round(0.0002 * 400 * 399 / 2)
    assert set(res["methods"]) == {"AAS", "LBAS", "GBAS", "NIS", "Random"}
    for records in res["methods"].values():
        assert [r["cycle"] for r in records] == [0, 1, 2]
        assert all(0.0 <= r["pairwise_f1"] <= 1.0 for r in records)
        assert all(r["pairs_asked"] <= res["budget_per_cycle_pairs"] for r in records)
        assert records[0]["pairwise_f1"] == res["methods"]["AAS"][0]["pairwise_f1"]
    png = tmp_path / "demo_f1_vs_budget.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_is_deterministic(tmp_path):
    outs = []
    for run in range(2):
        out = tmp_path / str(run)
        args = ["demo", "--n", "300", "--d", "32", "--k1", "15", "--cycles", "2", "--no-plot"]
        assert cli.main([*args, "--methods", "aas,random", "--out", str(out)]) == 0
        res = json.loads((out / "demo_results.json").read_text())
        for records in res["methods"].values():
            for r in records:
                r.pop("seconds")
        outs.append((res["methods"], res["clustering"]["dbscan"]))
    assert outs[0] == outs[1]


def test_demo_calibrates_out_of_the_first_cycle(tmp_path, capsys):
    args = ["demo", *SMALL, "--cycles", "2", "--budget", "60", "--methods", "aas,random"]
    args.append("--no-plot")
    rc = cli.main([*args, "--calibrate", "30", "--out", str(tmp_path)])
    assert rc == 0
    assert "calibration (30 near pairs): " in capsys.readouterr().out
    res = json.loads((tmp_path / "demo_results.json").read_text())
    budget = res["budget_per_cycle_pairs"]
    assert res["calibrate"] == 30 and budget > 30
    for records in res["methods"].values():
        assert [r["pairs_total"] for r in records] == [0, budget, 2 * budget]
        assert records[1]["message"].startswith("calibration: eps ")
    rc = cli.main([*args, "--calibrate", "30", "--eps", "0.6", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "--calibrate 30 chooses eps from the answers" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    X, y = aas.datasets.make_reid_blobs(300, d=48, seed=5)
    path = tmp_path_factory.mktemp("emb") / "X.npy"
    np.save(path, X)
    return path, y


def test_propose_then_answer_then_refine(embeddings, tmp_path, capsys):
    path, y = embeddings
    pairs_csv = tmp_path / "pairs.csv"
    rc = cli.main(["propose", str(path), "--budget", "25", "--k1", "15", "--out", str(pairs_csv)])
    assert rc == 0
    rows = _read_csv(pairs_csv)
    assert 0 < len(rows) <= 25
    assert list(rows[0]) == ["i", "j", "same", "probability", "pool", "kind", "region"]
    pairs = np.array([[int(r["i"]), int(r["j"])] for r in rows])
    assert (pairs[:, 0] < pairs[:, 1]).all()
    # a person answers in a CSV (i, j, same); the next proposal avoids what is known
    answers = tmp_path / "answers.csv"
    with open(answers, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["i", "j", "same"])
        for i, j in pairs.tolist():
            w.writerow([i, j, "same" if y[i] == y[j] else "different"])
    nxt = tmp_path / "next.csv"
    args = ["--k1", "15", "--constraints", str(answers)]
    assert cli.main(["propose", str(path), "--budget", "25", *args, "--out", str(nxt)]) == 0
    again = {(int(r["i"]), int(r["j"])) for r in _read_csv(nxt)}
    assert not again & {tuple(p) for p in pairs.tolist()}
    # refine: every answer holds in the written identities
    ids_csv = tmp_path / "ids.csv"
    assert cli.main(["refine", str(path), *args, "--out", str(ids_csv)]) == 0
    ids = np.array([int(r["identity"]) for r in _read_csv(ids_csv)])
    assert len(ids) == len(y) and (ids >= 0).all()
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    assert (ids[pairs[same, 0]] == ids[pairs[same, 1]]).all()
    assert (ids[pairs[~same, 0]] != ids[pairs[~same, 1]]).all()
    assert "identities" in capsys.readouterr().out


def test_refine_reads_saved_constraint_files_and_keeps_outliers_on_request(embeddings, tmp_path):
    path, y = embeddings
    c = aas.PairConstraints(must_link=[[0, 1]], cannot_link=[[0, 2]], n=len(y))
    store = c.save(tmp_path / "answers.jsonl")
    out = tmp_path / "ids.csv"
    rc = cli.main(
        [
            "refine",
            str(path),
            "--k1",
            "15",
            "--constraints",
            str(store),
            "--keep-outliers",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    ids = np.array([int(r["identity"]) for r in _read_csv(out)])
    assert ids[0] == ids[1] != ids[2] and ids[0] >= 0


def test_contradictory_answers_stop_refine_unless_told_to_drop(embeddings, tmp_path, capsys):
    path, _ = embeddings
    c = aas.PairConstraints(must_link=[[0, 1], [1, 2]], cannot_link=[[0, 2]])
    store = c.save(tmp_path / "answers.npz")
    args = ["refine", str(path), "--k1", "15", "--constraints", str(store)]
    assert cli.main([*args, "--out", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "inconsistent" in err and "--on-conflict drop_oldest" in err
    rc = cli.main([*args, "--on-conflict", "drop_oldest", "--out", str(tmp_path / "b.csv")])
    assert rc == 0
    assert "1 contradictory answer ignored" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--n", "0"], "must be a positive integer"),
        (["demo", "--eps", "-1"], "--eps: must be 'auto' or a distance in (0, 1)"),
        (["demo", "--budget", "1.5"], "must be a count of pairs"),
        (["demo", "--methods", "aas,bogus"], "must be a comma-separated list"),
        (["propose", "x.npy", "--sampler", "bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_usage_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_files_are_reported_not_raised(embeddings, tmp_path, capsys):
    path, y = embeddings
    missing = tmp_path / "nope.npy"
    assert cli.main(["propose", str(missing), "--out", str(tmp_path / "p.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something else"}\n')
    assert cli.main(["refine", str(path), "--constraints", str(bad)]) == 2
    assert "not an aas-core constraint file" in capsys.readouterr().err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("i,j,same\n0,1,maybe\n")
    assert cli.main(["refine", str(path), "--constraints", str(wrong)]) == 2
    assert "line 2" in capsys.readouterr().err
    far = aas.PairConstraints(must_link=[[0, 5000]]).save(tmp_path / "far.npz")
    assert cli.main(["refine", str(path), "--constraints", str(far)]) == 2
    assert "mentions image 5000" in capsys.readouterr().err


def test_demo_with_two_images_runs(tmp_path):
    assert cli.main(["demo", "--n", "2", "--d", "8", "--no-plot", "--out", str(tmp_path)]) == 0


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "propose", "refine"):
        assert command in out


def test_refine_says_when_answers_dissolve_a_mixed_cluster(tmp_path, capsys):
    X, y = aas.datasets.make_reid_blobs(600, d=1024, seed=1)  # many clusters (300: one giant)
    path = tmp_path / "X.npy"
    np.save(path, X)
    labels = aas.cluster_features(X, k1=15).labels_a
    big = np.flatnonzero(labels == np.bincount(labels[labels >= 0]).argmax())
    assert len(big) >= 8
    pairs = [(int(i), int(j)) for i in big[:8] for j in big[:8] if i < j][:21]
    # "same" inside five other clusters, "different" inside the largest: a mix among pure ones
    sizes = np.bincount(labels[labels >= 0])
    same = [tuple(np.flatnonzero(labels == k)[:2].tolist()) for k in np.argsort(-sizes)[1:6]]
    c = aas.PairConstraints(must_link=same, cannot_link=pairs, n=len(y))
    store = c.save(tmp_path / "answers.jsonl")
    out = tmp_path / "ids.csv"
    args = ["refine", str(path), "--k1", "15", "--constraints", str(store), "--keep-outliers"]
    assert cli.main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 cluster dissolved: 20 or more answers inside, under 10% 'same'" in printed
    ids = np.array([int(r["identity"]) for r in _read_csv(out)])
    assert (ids[big[8:]] == -1).all()  # the unanswered rest of the mix: unknown
    assert cli.main([*args, "--merge", "clusters", "--out", str(out)]) == 0
    assert "dissolved" not in capsys.readouterr().out
    ids = np.array([int(r["identity"]) for r in _read_csv(out)])
    assert (ids[big[8:]] >= 0).all()
