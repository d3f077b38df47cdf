"""The SpCL driver end to end on a tiny generated image dataset (CPU, tiny backbone)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _torch import importorskip
from _train import read_lines, tiny_config

torch = importorskip("torch")
pytest.importorskip("PIL")

from aas_core.cli import main  # noqa: E402
from aas_core.constraints import PairConstraints  # noqa: E402
from aas_core.datasets import make_reid_images  # noqa: E402
from aas_core.train.driver import train  # noqa: E402
from aas_core.train.models import load_model  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    make_reid_images(root, 16, 6, size=(32, 16), test_fraction=0.25, seed=0)
    return root / "labels.csv"


_config = tiny_config
_lines = read_lines


def test_two_epochs_one_cycle_with_aas(data, tmp_path):
    run = tmp_path / "run"
    logs = []
    summary = train(_config(data), run, log=logs.append)
    for name in (
        "config.json",
        "constraints.npz",
        "cycles.jsonl",
        "metrics.jsonl",
        "checkpoint.pt",
        "model.pt",
        "progress.png",
    ):
        assert (run / name).is_file(), name
    metrics = _lines(run / "metrics.jsonl")
    cycles = _lines(run / "cycles.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert len(cycles) == 1 and cycles[0]["epoch"] == 0 and 0 < cycles[0]["pairs"] <= 30
    c = PairConstraints.load(run / "constraints.npz")
    assert len(c) == cycles[0]["pairs"] == summary["answers"]
    # The simulated person answered from the training identities.
    from aas_core.datasets import image_folder_csv

    y = image_folder_csv(data).select_split("train").identity
    same = y[c.pairs[:, 0]] == y[c.pairs[:, 1]]
    np.testing.assert_array_equal(same, c.is_must_link)
    last = metrics[-1]
    assert 0 <= last["mAP"] <= 1 and "top1" in last and np.isfinite(last["loss"])
    assert last["answers_total"] == len(c) and 0 < last["pl_f1"] <= 1
    assert any("cycle 0" in s for s in logs) and any("epoch 2/2" in s for s in logs)
    model = load_model(run / "model.pt")
    assert model.arch == "tiny"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["sampler"] == "aas" and cfg["budget"] == 30


def test_loaders_start_no_more_workers_than_the_process_may_use(data, tmp_path, monkeypatch):
    # 4 workers asked for (the CLI's default) where the process may use 2 CPUs: torch's
    # "will create 4 worker processes ... suggests 2" warning is never raised
    import warnings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(_config(data, epochs=1, sampler="none", num_workers=4), tmp_path / "run")
    assert not [w for w in caught if "worker processes" in str(w.message)]


def test_resume_repeats_the_uninterrupted_run(data, tmp_path):
    full = tmp_path / "full"
    train(_config(data, epochs=2), full, log=lambda s: None)
    part = tmp_path / "part"
    train(_config(data, epochs=1), part, log=lambda s: None)
    assert len(_lines(part / "metrics.jsonl")) == 1
    train(_config(data, epochs=2), part, resume=True, log=lambda s: None)
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    for k in a["state_dict"]:
        # equal up to float rounding (a few ulp from reordered reductions)
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-4, atol=1e-6)
    ma, mb = _lines(full / "metrics.jsonl"), _lines(part / "metrics.jsonl")
    assert [m["epoch"] for m in mb] == [0, 1]
    assert ma[-1]["mAP"] == pytest.approx(mb[-1]["mAP"], abs=1e-3)
    assert ma[-1]["loss"] == pytest.approx(mb[-1]["loss"], rel=1e-4)
    assert ma[-1]["clusters"] == mb[-1]["clusters"]
    assert len(_lines(part / "cycles.jsonl")) == 1  # the cycle was not asked again


def test_resume_refuses_another_config_unless_forced(data, tmp_path):
    run = tmp_path / "run"
    train(_config(data, epochs=1), run, log=lambda s: None)
    with pytest.raises(ValueError, match=r"another config.*lr"):
        train(_config(data, epochs=2, lr=1e-3), run, resume=True, log=lambda s: None)
    with pytest.raises(ValueError, match="not empty"):
        train(_config(data, epochs=1), run, log=lambda s: None)
    train(_config(data, epochs=2, lr=1e-3), run, resume=True, force=True, log=lambda s: None)
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3
    assert len(_lines(run / "metrics.jsonl")) == 2


def test_answers_saved_before_a_crash_are_kept(data, tmp_path):
    """A cycle whose answers were saved but whose epoch did not finish is not asked again."""
    run = tmp_path / "run"
    train(_config(data, epochs=1, al_cycles=0), run, log=lambda s: None)
    # Simulate: the next run's cycle saved its answers, then the process died.
    y_pairs = np.array([[0, 1], [2, 3]])
    c = PairConstraints()
    c.add(y_pairs, [True, False])
    c.save(run / "constraints.npz")
    train(_config(data, epochs=2, al_cycles=0), run, resume=True, force=True, log=lambda s: None)
    kept = PairConstraints.load(run / "constraints.npz")
    assert len(kept) == 2
    cycles = _lines(run / "cycles.jsonl")
    assert cycles[-1]["recovered"] and cycles[-1]["answers_total"] == 2


def test_spcl_alone_and_other_samplers(data, tmp_path):
    summary = train(_config(data, sampler="none", epochs=1), tmp_path / "a", log=lambda s: None)
    assert summary["answers"] == 0 and summary["cycles"] == 0
    summary = train(_config(data, sampler="random", epochs=1), tmp_path / "b", log=lambda s: None)
    assert summary["answers"] == 30


def test_bad_config_and_devices(data, tmp_path):
    with pytest.raises(ValueError, match="sampler"):
        _config(data, sampler="best")
    with pytest.raises(ValueError, match="budget"):
        _config(data, budget=1.5)
    with pytest.raises(ValueError, match="data_format"):
        _config(data, data_format="zip")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            train(_config(data, device="cuda"), tmp_path / "gpu", log=lambda s: None)


def test_missing_image_is_reported_or_skipped(tmp_path):
    root = tmp_path / "d"
    make_reid_images(root, 6, 4, size=(32, 16), test_fraction=0.0, seed=1)
    first = sorted((root / "images").rglob("*.png"))[0]
    first.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=first.name):
        train(_config(root / "labels.csv", epochs=1, budget=5), tmp_path / "r1", log=print)
    s = train(
        _config(root / "labels.csv", epochs=1, budget=5, on_error="skip"),
        tmp_path / "r2",
        log=lambda s: None,
    )
    assert s["epochs"] == 1


def test_cli_train_and_evaluate(data, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--csv",
        str(data),
        "--out",
        str(run),
        "--arch",
        "tiny",
        "--size",
        "32",
        "16",
        "--epochs",
        "1",
        "--iters",
        "2",
        "--batch-size",
        "16",
        "--k1",
        "10",
        "--k2",
        "3",
        "--budget",
        "20",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "done" in capsys.readouterr().out
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--out",
                str(run),
                "--resume",
                "--epochs",
                "2",
                "--device",
                "cpu",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    assert len(_lines(run / "metrics.jsonl")) == 2
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--csv",
                str(data),
                "--model",
                str(run / "model.pt"),
                "--device",
                "cpu",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    assert 0 <= m["mAP"] <= 1 and m["n_query"] == 4
    assert (
        main(
            [
                "evaluate",
                "--csv",
                str(data),
                "--model",
                str(run / "model.pt"),
                "--device",
                "cpu",
                "--protocol",
                "open-set",
            ]
        )
        == 0
    )


def test_torchrun_two_processes_gloo(data, tmp_path):
    """The same command under torchrun: 2 CPU processes (gloo) train one run together."""
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The workers import the aas_core this test imported (installed or the dev tree).
    import aas_core

    here = str(Path(aas_core.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "aas_core.cli",
        "train",
        "--csv",
        str(data),
        "--out",
        str(run),
        "--arch",
        "tiny",
        "--size",
        "32",
        "16",
        "--epochs",
        "2",
        "--iters",
        "2",
        "--batch-size",
        "16",
        "--k1",
        "10",
        "--k2",
        "3",
        "--budget",
        "20",
        "--al-every",
        "1",
        "--al-cycles",
        "1",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _lines(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1]  # rank 0 alone writes
    assert len(_lines(run / "cycles.jsonl")) == 1
    assert load_model(run / "model.pt").arch == "tiny"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run_matches_the_cpu_run_closely(data, tmp_path):
    gpu = train(_config(data, device="cuda", epochs=1), tmp_path / "gpu", log=lambda s: None)
    cpu = train(_config(data, device="cpu", epochs=1), tmp_path / "cpu", log=lambda s: None)
    assert gpu["answers"] == cpu["answers"]  # the cycle saw the same initial features
    assert gpu["metrics"][0]["clusters"] == cpu["metrics"][0]["clusters"]
    assert np.isfinite(gpu["metrics"][0]["loss"])


def test_a_person_answers_through_the_annotation_store(data, tmp_path):
    from aas_core.annotate.store import AnnotationStore
    from aas_core.datasets import image_folder_csv

    train_set = image_folder_csv(data).select_split("train")
    y = train_set.identity
    run, db = tmp_path / "run", tmp_path / "answers.sqlite"
    cfg = _config(data, epochs=2, store=str(db))
    out = train(cfg, run, log=lambda s: None)
    w = out["waiting"]
    assert w["unanswered"] == w["pairs"] > 0 and "aas annotate --store" in w["message"]
    assert not (run / "metrics.jsonl").exists() or _lines(run / "metrics.jsonl") == []

    with AnnotationStore.open(db) as store:
        assert store.image_paths() == list(train_set.paths)
        queued = store.pairs()
        assert len(queued) == w["pairs"] and {p["cycle"] for p in queued} == {0}
        first = queued[0]
        store.answer(first["pair_id"], "skip")
        # an answer given outside any cycle is a constraint too
        store.add_pairs([[0, 1]], sampler="by hand", cycle=5)
        extra = [p for p in store.pairs() if p["sampler"] == "by hand"][0]
        store.answer(extra["pair_id"], "same" if y[0] == y[1] else "different")

    out = train(cfg, run, resume=True, log=lambda s: None)  # still waiting for the rest
    assert out["waiting"]["unanswered"] == w["pairs"] - 1

    with AnnotationStore.open(db) as store:
        for p in store.pairs():
            if store.pair(p["pair_id"])["answer"] is None:
                store.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
        want = store.constraints()
    out = train(cfg, run, resume=True, log=lambda s: None)
    assert "waiting" not in out and [m["epoch"] for m in _lines(run / "metrics.jsonl")] == [0, 1]
    got = PairConstraints.load(run / "constraints.npz")
    np.testing.assert_array_equal(got.pairs, want.pairs)
    np.testing.assert_array_equal(got.is_must_link, want.is_must_link)
    (cycle,) = _lines(run / "cycles.jsonl")
    assert cycle["skipped"] == 1 and cycle["unanswered"] == 0
    assert cycle["same"] + cycle["different"] + 1 == cycle["pairs"] == w["pairs"]
    assert not (run / "pending_cycle.json").exists()


def test_store_cli_exit_code_proceed_and_foreign_store(data, tmp_path, capsys):
    run, db = tmp_path / "run", tmp_path / "a.sqlite"
    args = [
        "train",
        "--csv",
        str(data),
        "--out",
        str(run),
        "--arch",
        "tiny",
        "--size",
        "32",
        "16",
        "--epochs",
        "1",
        "--iters",
        "2",
        "--batch-size",
        "16",
        "--k1",
        "10",
        "--k2",
        "3",
        "--budget",
        "10",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--store",
        str(db),
    ]
    assert main(args) == 3
    assert "waiting for a person" in capsys.readouterr().out
    resume = ["train", "--out", str(run), "--resume", "--device", "cpu", "--num-workers", "0"]
    assert main(resume) == 3
    assert main(resume + ["--proceed"]) == 0  # nothing answered: train on without answers
    (cycle,) = _lines(run / "cycles.jsonl")
    assert cycle["unanswered"] == cycle["pairs"] > 0 and cycle["answers_total"] == 0

    from aas_core.annotate.store import AnnotationStore

    other = tmp_path / "other.sqlite"
    AnnotationStore.create(other, ["x.png", "y.png"]).close()
    with pytest.raises(ValueError, match="other images"):
        train(_config(data, store=str(other)), tmp_path / "r2", log=lambda s: None)


def _cli_train_args(data, run, *extra):
    args = ["train", "--csv", str(data), "--out", str(run), "--arch", "tiny", "--size", "32"]
    args += ["16", "--iters", "2", "--batch-size", "16", "--k1", "10", "--k2", "3"]
    return args + ["--budget", "10", "--num-workers", "0", "--device", "cpu", *extra]


def test_a_run_that_cannot_start_leaves_no_directory(data, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="arch"):
        train(_config(data, arch="resnet5"), run, log=lambda s: None)
    assert not run.exists()  # so the corrected command is not refused as "not empty"
    with pytest.raises(FileNotFoundError):
        train(_config(data, weights=str(tmp_path / "none.pth")), run, log=lambda s: None)
    assert not run.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(_cli_train_args(data, a_file, "--epochs", "1")) == 2
    assert "is a file" in capsys.readouterr().err


def test_paths_are_resolved_so_a_run_resumes_from_anywhere(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data.parent)
    run = tmp_path / "run"
    train(_config("labels.csv", epochs=1, al_cycles=0), run, log=lambda s: None)
    assert json.loads((run / "config.json").read_text())["data"] == str(data.resolve())
    monkeypatch.chdir(tmp_path)
    resume = ["train", "--out", str(run), "--resume", "--epochs", "2", "--device", "cpu"]
    assert main(resume + ["--num-workers", "0"]) == 0
    assert len(_lines(run / "metrics.jsonl")) == 2


def test_damaged_run_files_give_clear_errors_or_are_repaired(data, tmp_path):
    run = tmp_path / "run"
    train(_config(data, epochs=1), run, log=lambda s: None)
    # A crash in the middle of appending a line leaves it cut off: resuming drops it.
    with open(run / "cycles.jsonl", "a", encoding="utf-8") as f:
        f.write('{"cycle": 1, "epo')
    train(_config(data, epochs=2), run, resume=True, log=lambda s: None)
    assert len(_lines(run / "cycles.jsonl")) == 1 and len(_lines(run / "metrics.jsonl")) == 2
    with pytest.raises(ValueError, match="does not fit the model 'resnet18'"):
        train(_config(data, epochs=3, arch="resnet18"), run, resume=True, force=True)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot read the checkpoint.*damaged"):
        train(_config(data, epochs=3, lr=1e-3), run, resume=True, force=True, log=print)
    # A resume that failed leaves the stored config as it was.
    assert json.loads((run / "config.json").read_text())["lr"] == 3.5e-4
    (run / "config.json").write_text('{"lr": 1')
    with pytest.raises(ValueError, match="config.json.*not valid JSON"):
        train(_config(data, epochs=3), run, resume=True, log=lambda s: None)


def test_evaluate_a_checkpoint_at_the_training_size(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(_config(data, epochs=1, al_cycles=0), run, log=lambda s: None)
    got = {}
    for name in ("model.pt", "checkpoint.pt"):
        out = tmp_path / f"{name}.json"
        args = ["evaluate", "--csv", str(data), "--model", str(run / name), "--device", "cpu"]
        assert main(args + ["--json", str(out)]) == 0
        got[name] = json.loads(out.read_text())
    # Both hold the same weights; the checkpoint records the 32 x 16 training size too.
    assert got["checkpoint.pt"]["mAP"] == pytest.approx(got["model.pt"]["mAP"], abs=1e-6)
    args = ["evaluate", "--csv", str(data), "--model", str(run / "model.pt"), "--device", "cpu"]
    assert main(args + ["--protocol", "open-set"]) == 0
    assert "no query identity is in the open-set gallery" in capsys.readouterr().err


def test_embed_a_trained_model_at_its_training_size(data, tmp_path):
    run = tmp_path / "run"
    train(_config(data, epochs=1, al_cycles=0), run, log=lambda s: None)
    args = ["embed", "--csv", str(data), "--device", "cpu"]
    for name in ("model.pt", "checkpoint.pt"):
        assert load_model(run / name).input_size == (32, 16)
        assert main(args + ["--model", str(run / name), "--out", str(tmp_path / "a.npy")]) == 0
        given = ["--size", "32", "16", "--out", str(tmp_path / "b.npy")]
        assert main(args + ["--model", str(run / name), *given]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


@pytest.mark.parametrize(
    "option, value", [("--oracle-noise", "2"), ("--lr", "-1"), ("--lr", "nan")]
)
def test_cli_bad_numbers_name_the_option(data, tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(_cli_train_args(data, tmp_path / "run", option, value))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_resume_with_the_data_keeps_the_stored_epochs(data, tmp_path, monkeypatch):
    import aas_core.train.driver as driver

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(_config(data, epochs=3).to_json()))
    seen = {}

    def fake_train(config, out, **kw):
        seen["config"] = config
        return {"metrics": None}

    monkeypatch.setattr(driver, "train", fake_train)
    assert main(_cli_train_args(data, run, "--resume")) == 0
    assert seen["config"].epochs == 3  # "--epochs: default 50 (with --resume: as stored)"
    assert main(_cli_train_args(data, run, "--resume", "--epochs", "5")) == 0
    assert seen["config"].epochs == 5
