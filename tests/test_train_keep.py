"""Never worse than where it started (held-out answers judge each cycle's weights), and
bf16 training tracking fp32."""

import numpy as np
import pytest

from _torch import importorskip
from _train import read_lines, tiny_config, tiny_reid_csv

torch = importorskip("torch")
pytest.importorskip("PIL")

from aas_core.catalogue.embedding import (  # noqa: E402
    answer_auc,
    compare_auc,
    heldout_mask,
    keep_decision,
)
from aas_core.constraints import PairConstraints  # noqa: E402
from aas_core.train import driver  # noqa: E402
from aas_core.train._keep import KeepGuard  # noqa: E402
from aas_core.train._runtime import resolve_precision  # noqa: E402
from aas_core.train.driver import train  # noqa: E402
from aas_core.train.models import ReIDModel, load_model  # noqa: E402


@pytest.fixture()
def data(tmp_path):
    return tiny_reid_csv(tmp_path)


def _answers(y, n_pairs, seed=0):
    """Random answered pairs of images labelled ``y``, about half of them "same"."""
    rng = np.random.default_rng(seed)
    n = len(y)
    pairs, seen = [], set()
    while len(pairs) < n_pairs:
        i = int(rng.integers(n))
        same_ids = np.flatnonzero(y == y[i])
        j = int(rng.choice(same_ids)) if len(pairs) % 2 else int(rng.integers(n))
        if i != j and (min(i, j), max(i, j)) not in seen:
            seen.add((min(i, j), max(i, j)))
            pairs.append((i, j))
    pairs = np.array(pairs)
    c = PairConstraints(n=n)
    c.add(pairs, y[pairs[:, 0]] == y[pairs[:, 1]])
    return c


def _clustered(y, noise, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(y.max() + 1, 16))
    return (centres[y] + noise * rng.normal(size=(len(y), 16))).astype(np.float32)


def test_a_worse_update_is_rejected_and_a_better_one_kept():
    y = np.repeat(np.arange(20), 10)  # 900 "same" pairs to draw 100 from
    answers = _answers(y, 200)
    held = heldout_mask(answers.pairs, 0.3, seed=0)
    assert (answers.is_must_link[held]).sum() >= 10 and (~answers.is_must_link[held]).sum() >= 10
    torch.manual_seed(0)
    model = ReIDModel.from_spec("tiny")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    guard = KeepGuard.start(0.3, 0, model, _clustered(y, 1.0, 0), unsure=True)
    # the held-out answers never reach the pseudo-labels; the others all do, in order
    kept = guard.training_answers(answers)
    assert len(kept) == (~held).sum() and np.array_equal(kept.pairs, answers.pairs[~held])

    with torch.no_grad():  # a worse update: other weights, an embedding blind to identity
        for p in model.parameters():
            p.add_(1.0)
    rec = guard.judge(model, np.random.default_rng(1).normal(size=(200, 16)), answers)
    assert rec["kept"] is False and rec["auc_new"] < rec["auc_kept"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())

    with torch.no_grad():  # a better one: tighter identities
        for p in model.parameters():
            p.mul_(0.5)
    better = {k: v.clone() for k, v in model.state_dict().items()}
    rec = guard.judge(model, _clustered(y, 0.1, 0), answers)
    assert rec["kept"] is True and rec["auc_new"] > rec["auc_kept"]
    assert all(torch.equal(guard.state[k], v) for k, v in better.items())
    # the next update is judged against the kept one, not the start
    rec = guard.judge(model, _clustered(y, 1.0, 0), answers)
    assert rec["kept"] is False and rec["auc_kept"] == pytest.approx(1.0, abs=0.05)


def _delong_brute(s_new, s_kept, same):
    """DeLong's z from the pairwise comparison matrices (O(m n)), the textbook way."""
    out = []
    for s in (s_new, s_kept):
        pos, neg = s[same], s[~same]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (a1, v10a, v01a), (a2, v10b, v01b) = out
    m, n = len(v10a), len(v01a)
    s10, s01 = np.cov(np.stack([v10a, v10b])), np.cov(np.stack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return a1, a2, (a1 - a2) / np.sqrt(var)


def test_compare_auc_is_delongs_paired_test():
    y = np.repeat(np.arange(15), 6)
    answers = _answers(y, 120, seed=3)
    pairs, same = answers.pairs, answers.is_must_link
    # one embedding with ties (rounded), one without: the mid-ranks handle both
    A = np.round(_clustered(y, 1.2, 1), 1)
    B = _clustered(y, 1.5, 2)
    got = compare_auc(A, B, pairs, same)
    cos = [
        np.einsum("ij,ij->i", X[pairs[:, 0]], X[pairs[:, 1]])
        / (np.linalg.norm(X[pairs[:, 0]], axis=1) * np.linalg.norm(X[pairs[:, 1]], axis=1))
        for X in (A.astype(np.float64), B.astype(np.float64))
    ]
    assert np.allclose(got, _delong_brute(cos[0], cos[1], same), rtol=1e-9, atol=1e-12)
    assert got[0] == pytest.approx(answer_auc(A, pairs, same))
    # swapped: the same z, negated; one embedding against itself: no gain, z 0
    assert compare_auc(B, A, pairs, same)[2] == pytest.approx(-got[2])
    assert compare_auc(A, A, pairs, same)[2] == 0.0
    assert np.isnan(compare_auc(A, B, pairs[same], same[same])[2])  # one kind only
    # a clearly better embedding is surely better; a hair better is not
    assert compare_auc(_clustered(y, 0.3, 1), B, pairs, same)[2] > 3


def test_a_hair_better_held_out_auc_is_not_kept():
    keep, reason = keep_decision(0.6609, 0.6593, 40, 300, z=0.3)
    assert not keep and "(z 0.30 < 1.645): not surely better, the previous stay" in reason
    keep, reason = keep_decision(0.80, 0.74, 40, 300, z=2.5)
    assert keep and reason.endswith("(z 2.50): kept")
    assert keep_decision(0.80, 0.74, 40, 300)[0] is True  # without z: the plain comparison
    assert keep_decision(0.70, 0.74, 40, 300, z=-2.0)[0] is False


def test_too_few_held_out_answers_keep_the_update_and_say_so():
    keep, reason = keep_decision(0.4, 0.9, 9, 50)
    assert keep and "too few held-out answers to judge (9 same, 50 different" in reason
    assert keep_decision(0.4, 0.9, 10, 10)[0] is False
    assert keep_decision(0.91, 0.9, 10, 10)[0] is True
    assert keep_decision(float("nan"), 0.9, 10, 10)[0] is False
    # the catalogue keeps the embedding a person's catalogue is built on when unsure
    keep, reason = keep_decision(0.99, 0.5, 50, 3, unsure=False)
    assert not keep and reason.endswith("3 different; 10 of each needed): the previous stay")


def test_the_driver_rejects_a_cycle_that_made_the_model_worse(data, tmp_path, monkeypatch):
    real = driver._train_epoch

    def ruin(model, *args, **kw):  # trains, then blinds the last blocks: every image alike
        losses = real(model, *args, **kw)
        with torch.no_grad():
            for p in model.tail.parameters():
                p.zero_()
        return losses

    monkeypatch.setattr(driver, "_train_epoch", ruin)
    cfg = tiny_config(
        data,
        train_blocks=2,
        iters=None,
        budget=200,
        holdout=0.5,
        al_cycles=2,
        epochs=2,
        precision="fp32",
    )
    run = tmp_path / "run"
    logs = []
    train(cfg, run, log=logs.append)
    metrics = read_lines(run / "metrics.jsonl")
    assert all(m["kept"] is False for m in metrics), [m["keep_reason"] for m in metrics]
    assert all(m["auc_new"] == 0.5 and m["auc_kept"] > 0.55 for m in metrics)
    assert all(m["heldout_same"] >= 10 and m["heldout_different"] >= 10 for m in metrics)
    assert any("not better, the previous stay" in s for s in logs)
    torch.manual_seed(0)
    start = ReIDModel.from_spec("tiny")
    final = load_model(run / "model.pt")  # the untrained backbone, as no update was kept
    for k, v in start.backbone.state_dict().items():
        assert torch.equal(final.backbone.state_dict()[k], v), k


def test_with_too_few_held_out_answers_blocks_go_back_and_the_head_goes_on(data, tmp_path):
    # 12 answers a cycle, a fifth held out: never 10 of each kind to judge by
    logs = {}
    for name, kw in {"blocks": dict(train_blocks=2), "head": dict(freeze_backbone=True)}.items():
        cfg = tiny_config(
            data, iters=None, budget=12, al_cycles=2, epochs=2, precision="fp32", **kw
        )
        logs[name] = []
        train(cfg, tmp_path / name, log=logs[name].append)
        metrics = read_lines(tmp_path / name / "metrics.jsonl")
        assert all("too few held-out answers to judge" in m["keep_reason"] for m in metrics)
        assert all(m["kept"] is (name == "head") for m in metrics), name
    assert any(s.endswith("needed): the previous stay") for s in logs["blocks"])
    assert any("no cycle's weights were kept" in s for s in logs["blocks"])
    assert any("check cannot see a loss on new animals" in s for s in logs["blocks"])
    assert not any("check cannot see" in s for s in logs["head"])
    assert not any("no cycle's weights were kept" in s for s in logs["head"])
    torch.manual_seed(0)
    start = ReIDModel.from_spec("tiny")
    final = load_model(tmp_path / "blocks" / "model.pt")  # no backbone update was kept
    for k, v in start.backbone.state_dict().items():
        assert torch.equal(final.backbone.state_dict()[k], v), k


def test_spcl_alone_has_no_answers_to_judge_by_and_trains_its_blocks(data, tmp_path):
    cfg = tiny_config(data, train_blocks=2, sampler="none", iters=None, precision="fp32")
    train(cfg, tmp_path / "run", log=lambda s: None)
    assert all("kept" not in m for m in read_lines(tmp_path / "run" / "metrics.jsonl"))
    torch.manual_seed(0)
    start = ReIDModel.from_spec("tiny")
    final = load_model(tmp_path / "run" / "model.pt")
    assert any(
        not torch.equal(final.backbone.state_dict()[k], v)
        for k, v in start.backbone.state_dict().items()
    )


def test_holdout_zero_keeps_every_update(data, tmp_path):
    cfg = tiny_config(data, train_blocks=2, iters=None, holdout=0.0, precision="fp32")
    train(cfg, tmp_path / "run", log=lambda s: None)
    assert all("kept" not in m for m in read_lines(tmp_path / "run" / "metrics.jsonl"))


def test_precision_auto_is_fp32_for_the_head_alone(data, tmp_path):
    train(tiny_config(data, freeze_backbone=True, iters=None), tmp_path / "r", log=lambda s: None)
    assert read_lines(tmp_path / "r" / "metrics.jsonl")[0]["precision"] == "fp32"


def test_precision_auto_follows_the_cpu():
    from aas_core.train._runtime import cpu_has_bf16

    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="'precision' must be one of"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("blocks", [2, None])
def test_a_short_bf16_run_tracks_fp32(data, tmp_path, blocks):
    # one epoch: later epochs cluster again, and a small change may move a cluster
    runs = {}
    for p in ("fp32", "bf16"):
        cfg = tiny_config(data, train_blocks=blocks, epochs=1, iters=6, precision=p)
        train(cfg, tmp_path / p, log=lambda s: None)
        runs[p] = read_lines(tmp_path / p / "metrics.jsonl")[0]
    assert runs["bf16"]["precision"] == "bf16" and runs["fp32"]["precision"] == "fp32"
    assert runs["fp32"]["loss"] != runs["bf16"]["loss"]  # bf16 did run
    assert runs["bf16"]["loss"] == pytest.approx(runs["fp32"]["loss"], rel=0.05)
    assert abs(runs["fp32"]["mAP"] - runs["bf16"]["mAP"]) < 0.1


def test_bf16_steps_track_fp32_steps():
    from aas_core.train._epoch import _train_epoch
    from aas_core.train._runtime import autocast
    from aas_core.train.memory import HybridMemory

    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 3, 32, 16, generator=g)
    labels = np.repeat(np.arange(8), 4)
    batches = [np.random.default_rng(k).permutation(32)[:16] for k in range(5)]
    out = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = ReIDModel.from_spec("tiny")
        memory = HybridMemory(torch.randn(32, 64, generator=torch.Generator().manual_seed(1)))
        memory.set_labels(labels)
        opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
        loader = [(images[b], torch.from_numpy(b)) for b in batches]
        model.train()
        losses = _train_epoch(
            model, memory, opt, loader, "cpu", cached=False, autocast=lambda p=p: autocast(p, "cpu")
        )
        out[p] = (np.array(losses), memory.features.clone())
    assert not np.array_equal(out["fp32"][0], out["bf16"][0])
    assert np.allclose(out["bf16"][0], out["fp32"][0], rtol=0.02)
    cos = (out["fp32"][1] * out["bf16"][1]).sum(dim=1)
    assert cos.min() > 0.98
