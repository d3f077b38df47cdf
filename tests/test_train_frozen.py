"""``aas train --freeze-backbone``: a head trained on cached backbone features (CPU, tiny)."""

import json
import os

import numpy as np
import pytest

from _torch import importorskip
from _train import read_lines, tiny_config, tiny_reid_csv

torch = importorskip("torch")
pytest.importorskip("PIL")

from aas_core.cli import main  # noqa: E402
from aas_core.datasets import image_folder_csv  # noqa: E402
from aas_core.train import frozen  # noqa: E402
from aas_core.train.driver import TrainConfig, train  # noqa: E402
from aas_core.train.embed import embed_images  # noqa: E402
from aas_core.train.models import ProjectedBackbone, ReIDModel, load_model  # noqa: E402


@pytest.fixture()
def data(tmp_path):
    return tiny_reid_csv(tmp_path)


def _config(data, **kw):
    return tiny_config(data, **{"freeze_backbone": True, "iters": None, "al_cycles": 2, **kw})


_lines = read_lines


def _trunk_state(model):
    return {k: v.clone() for k, v in model.backbone.trunk.state_dict().items()}


def test_head_trains_on_cached_features_and_the_backbone_stays(data, tmp_path):
    run = tmp_path / "run"
    logs = []
    summary = train(_config(data), run, log=logs.append)
    assert (run / frozen.FEATURE_CACHE).is_file()
    assert any("caching backbone features of 72 train images" in line for line in logs)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["freeze_backbone"] is True and cfg["head_dim"] == 64  # min(512, tiny's 64)
    metrics = _lines(run / "metrics.jsonl")
    cycles = _lines(run / "cycles.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1] and len(cycles) == 2
    assert summary["answers"] == sum(c["pairs"] for c in cycles) > 0
    assert all(np.isfinite(m["loss"]) for m in metrics) and "mAP" in metrics[-1]

    model = load_model(run / "model.pt")
    assert isinstance(model.backbone, ProjectedBackbone) and model.feat_dim == 64
    # the trunk is the one the run started from (same seed, untouched by training) ...
    torch.manual_seed(0)
    start = ReIDModel.from_spec("tiny")
    for k, v in start.backbone.state_dict().items():
        assert torch.equal(model.backbone.trunk.state_dict()[k], v), k
    # ... the head is not the PCA start any more
    cache = np.load(run / frozen.FEATURE_CACHE)
    fresh = ReIDModel(ProjectedBackbone(start.backbone, 64))
    frozen.init_head(fresh, cache["train"])
    assert not torch.allclose(fresh.backbone.proj.weight, model.backbone.proj.weight)
    # the cached path and the image path give the same embeddings
    ds = image_folder_csv(data).select_split("train")
    X_images = embed_images(model, ds.files, size=(32, 16), device="cpu", flip=True)
    X_cached = frozen.embed_cached(model, cache["train"], "cpu")
    assert np.abs(X_images - X_cached).max() < 1e-5


def test_resume_repeats_the_uninterrupted_run(data, tmp_path):
    whole = tmp_path / "whole"
    train(_config(data, epochs=3), whole, log=lambda s: None)
    part = tmp_path / "part"
    train(_config(data, epochs=1), part, log=lambda s: None)
    train(_config(data, epochs=3), part, resume=True, log=lambda s: None)
    a, b = _lines(whole / "metrics.jsonl"), _lines(part / "metrics.jsonl")
    assert [m["epoch"] for m in b] == [0, 1, 2]
    for x, y in zip(a, b):
        assert x["clusters"] == y["clusters"] and x["loss"] == pytest.approx(y["loss"], abs=1e-4)
    sa = load_model(whole / "model.pt").state_dict()
    sb = load_model(part / "model.pt").state_dict()
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-4) for k in sa)


def test_a_stale_cache_is_recomputed_and_said(data, tmp_path):
    run = tmp_path / "run"
    train(_config(data, epochs=1, al_cycles=0), run, log=lambda s: None)
    before = np.load(run / frozen.FEATURE_CACHE)["train"].copy()
    img = image_folder_csv(data).select_split("train").files[0]
    from PIL import Image

    Image.new("RGB", (16, 32), (255, 0, 0)).save(img)  # another picture under the same name
    os.utime(img, ns=(1, 1))
    logs = []
    train(_config(data, epochs=2, al_cycles=0), run, resume=True, log=logs.append)
    assert any("recomputing the feature cache" in line for line in logs)
    after = np.load(run / frozen.FEATURE_CACHE)["train"]
    assert not np.allclose(before[0], after[0]) and np.allclose(before[1:], after[1:], atol=1e-5)
    (run / frozen.FEATURE_CACHE).write_bytes(b"garbage")
    logs = []
    train(_config(data, epochs=3, al_cycles=0), run, resume=True, log=logs.append)
    assert any("cannot be read" in line for line in logs)


def test_another_backbone_on_resume_is_refused(data, tmp_path):
    run = tmp_path / "run"
    train(_config(data, epochs=1, al_cycles=0), run, log=lambda s: None)
    with pytest.raises(ValueError, match="another config"):
        train(_config(data, epochs=2, al_cycles=0, arch="resnet18"), run, resume=True)
    with pytest.raises(ValueError, match="another config.*freeze_backbone"):
        train(_config(data, epochs=2, al_cycles=0, freeze_backbone=False), run, resume=True)


def test_bad_head_options(data, tmp_path):
    with pytest.raises(ValueError, match="'head_dim' must be None unless freeze_backbone"):
        TrainConfig(data=str(data), arch="tiny", head_dim=8)
    with pytest.raises(ValueError, match="'merge' must be 'clusters', 'nearest' or 'auto'"):
        TrainConfig(data=str(data), arch="tiny", merge="all")
    with pytest.raises(ValueError, match="'eps' must be 'auto' or in"):
        TrainConfig(data=str(data), arch="tiny", eps="tight")
    with pytest.raises(ValueError, match="'head_dim' .* at most the backbone's feature size"):
        train(_config(data, head_dim=65), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start


def test_cli_freeze_backbone(data, tmp_path, capsys):
    run = tmp_path / "run"
    args = "--arch tiny --size 32 16 --freeze-backbone --head-dim 16 --merge nearest --epochs 1"
    args += " --k1 10 --k2 3 --budget 20 --num-workers 0 --device cpu"
    rc = main(["train", "--csv", str(data), "--out", str(run), *args.split()])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["head_dim"] == 16 and cfg["iters"] is None and cfg["merge"] == "nearest"
    assert cfg["eps"] == "auto"
    metrics = _lines(run / "metrics.jsonl")
    assert 0.2 <= metrics[0]["eps"] <= 0.8
    assert load_model(run / "model.pt").feat_dim == 16


def test_resume_keeps_the_samplers_state_and_passes_over_one_that_does_not_fit(data, tmp_path):
    part = tmp_path / "part"
    train(_config(data, epochs=1), part, log=lambda s: None)
    ckpt_path = part / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = ckpt["extra"]["train_state"]["sampler"]
    assert state["images"] == 72 and len(state["pairs"]) == len(state["arm"]) > 0
    ckpt["extra"]["train_state"]["sampler"] = {"images": 72, "pairs": [[0, 1]]}  # damaged
    torch.save(ckpt, ckpt_path)
    logs = []
    train(_config(data, epochs=3), part, resume=True, log=logs.append)
    assert any("the checkpoint's sampler state is passed over" in s for s in logs)
    assert [m["epoch"] for m in _lines(part / "metrics.jsonl")] == [0, 1, 2]


def test_clusters_the_answers_dissolve_train_as_instances(data, tmp_path, monkeypatch):
    # merge="auto" returns a dissolved cluster's images as outliers (-1); the driver must
    # give each its own pseudo-label (SpCL's instances), not crash or pool them
    from aas_core import refine
    from aas_core.sampling import AmbiguityAwareSampler
    from aas_core.train import driver

    # every answer in the pseudo-labels (none held out), fp32 and the AAS pool alone: the
    # numbers this test was tuned on (bf16 moves the clustering of so few images by a
    # cluster or two; the default's purity checks ask other pairs)
    def pool_only(name, device="cpu"):
        return AmbiguityAwareSampler(checks=0.0, merges=0.0, split="fixed")

    monkeypatch.setattr(driver, "_make_sampler", pool_only)
    train(_config(data, holdout=0.0, precision="fp32"), tmp_path / "plain", log=lambda s: None)
    plain = _lines(tmp_path / "plain" / "metrics.jsonl")
    monkeypatch.setattr(refine, "_AUTO_MIN_ANSWERS", 1)
    monkeypatch.setattr(refine, "_MIXED_SHARE", 1.01)  # a cluster with any inside answer is mixed
    train(_config(data, holdout=0.0, precision="fp32"), tmp_path / "mixed", log=lambda s: None)
    mixed = _lines(tmp_path / "mixed" / "metrics.jsonl")
    assert [m["epoch"] for m in mixed] == [0, 1] and all(np.isfinite(m["loss"]) for m in mixed)
    assert mixed[-1]["unclustered"] > plain[-1]["unclustered"]


def test_the_untrained_head_embeds_the_images_as_the_centred_features():
    # full-size projection: a rotation of the centred features, and a neck that only
    # centres (no whitening), so the cosines are those of the centred mean views
    torch.manual_seed(0)
    start = ReIDModel.from_spec("tiny")
    d = start.backbone.feat_dim
    model = ReIDModel(ProjectedBackbone(start.backbone, d))
    rng = np.random.default_rng(0)
    scales = np.geomspace(10.0, 0.01, d)  # a few strong directions, many weak ones
    views = (rng.normal(size=(60, 2, d)) * scales + 2.0).astype(np.float32)
    frozen.init_head(model, views)
    got = frozen.embed_cached(model, views, "cpu")
    v = views.astype(np.float64) - views.mean(axis=1).mean(axis=0)  # each view, centred
    v /= np.linalg.norm(v, axis=2, keepdims=True)
    x = v.sum(axis=1)  # as embed_cached: the unit views summed (the flip average)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(got @ got.T, x @ x.T, atol=1e-4)
