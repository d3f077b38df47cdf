import json

import numpy as np
import pytest

from aas_core import cli


def test_demo_runs_end_to_end_and_writes_its_results(tmp_path, capsys):
    rc = cli.main(
        ["demo", "--n", "400", "--d", "64", "--seed", "3", "--threads", "1", "--out", str(tmp_path)]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "true identities" in printed and "FINCH level" in printed
    res = json.loads((tmp_path / "demo_results.json").read_text())
    assert res["n"] == 400 and res["true_identities"] > 1
    for method in ("dbscan", "spcl_pseudo_labels", "finch"):
        assert 0.0 <= res[method]["pairwise_f1"] <= 1.0
        assert 1 <= res[method]["clusters"] <= 400
    levels = res["finch"]["levels"]
    assert levels == sorted(levels, reverse=True) and res["finch"]["level"] < len(levels)


def test_demo_is_deterministic(tmp_path):
    outs = []
    for run in range(2):
        out = tmp_path / str(run)
        assert cli.main(["demo", "--n", "300", "--d", "32", "--out", str(out)]) == 0
        res = json.loads((out / "demo_results.json").read_text())
        res.pop("seconds")
        outs.append(res)
    assert outs[0] == outs[1]


def test_bad_arguments_are_reported_not_raised(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--n", "0"])
    assert exc.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--eps", "-1"])
    assert "--eps: must be a distance in [0, 1)" in capsys.readouterr().err
    # errors from the library itself are printed, with exit code 2
    assert cli.main(["demo", "--n", "2", "--out", str(tmp_path)]) == 2
    assert "aas demo: error:" in capsys.readouterr().err


def test_help_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    assert np.__version__  # numpy importable alongside the CLI
