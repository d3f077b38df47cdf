"""The SpCL driver end to end on a tiny generated image dataset (CPU, tiny backbone)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _torch import importorskip

torch = importorskip("torch")
pytest.importorskip("PIL")

from aas_core.cli import main  # noqa: E402
from aas_core.constraints import PairConstraints  # noqa: E402
from aas_core.datasets import make_reid_images  # noqa: E402
from aas_core.train.driver import TrainConfig, train  # noqa: E402
from aas_core.train.models import load_model  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    make_reid_images(root, 16, 6, size=(32, 16), test_fraction=0.25, seed=0)
    return root / "labels.csv"


def _config(data, **kw):
    base = dict(
        data=str(data),
        arch="tiny",
        height=32,
        width=16,
        epochs=2,
        iters=3,
        batch_size=16,
        k1=10,
        k2=3,
        budget=30,
        al_every=1,
        al_cycles=1,
        num_workers=0,
        progress=False,
        device="cpu",
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _lines(path):
    return [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]


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
