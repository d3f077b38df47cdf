"""``aas train --train-blocks N``: the last N blocks trained on cached activations (CPU, tiny)."""

import json

import numpy as np
import pytest

from _torch import importorskip
from _train import read_lines, tiny_config, tiny_reid_csv

torch = importorskip("torch")
pytest.importorskip("PIL")

from aas_core.cli import main  # noqa: E402
from aas_core.datasets import image_folder_csv  # noqa: E402
from aas_core.train import activations  # noqa: E402
from aas_core.train.architectures import build_backbone  # noqa: E402
from aas_core.train.blocks import count_blocks, split_backbone  # noqa: E402
from aas_core.train.driver import TrainConfig, train  # noqa: E402
from aas_core.train.embed import embed_images  # noqa: E402
from aas_core.train.frozen import embed_cached  # noqa: E402
from aas_core.train.models import ReIDModel, load_model  # noqa: E402
from aas_core.train.transforms import ImageTensors, test_transform  # noqa: E402

nn = torch.nn


@pytest.fixture()
def data(tmp_path):
    return tiny_reid_csv(tmp_path)


def _config(data, **kw):
    base = {"train_blocks": 2, "iters": None, "al_cycles": 2, "precision": "fp32"}
    return tiny_config(data, **{**base, **kw})


def _quiet(_):
    pass


@pytest.mark.parametrize(
    "arch, size, n",
    [("tiny", (32, 16), 2), ("resnet18", (64, 32), 2), ("efficientnet-lite0", (64, 64), 3)],
)
def test_the_tail_on_the_stem_is_the_backbone(arch, size, n):
    torch.manual_seed(0)
    net = build_backbone(arch).eval()
    split = split_backbone(net, n)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(split.tail(split.stem(x)), net(x), atol=1e-5)
    tail = {id(p) for p in split.parameters()}
    assert 0 < len(tail) < len(list(net.parameters()))
    split.freeze_stem()
    assert {id(p) for p in net.parameters() if p.requires_grad} == tail


class _TimmLike(nn.Module):
    """The shape of a timm model: forward_features (stem, blocks, norm) and forward_head."""

    def __init__(self, odd=False):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.blocks = nn.Sequential(*[nn.Conv2d(8, 8, 3, 1, 1) for _ in range(3)])
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 8)
        self.odd, self.feat_dim = odd, 8

    def forward_features(self, x):
        x = self.stem(x)
        for i, b in enumerate(self.blocks):
            x = b(x) * (2.0 if self.odd and i == 2 else 1.0)  # something the cut cannot see
        return self.norm(x)

    def forward_head(self, x):
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_a_timm_style_model_is_cut_generically_and_an_odd_one_refused():
    torch.manual_seed(0)
    net = _TimmLike()
    assert count_blocks(net) == 3
    split = split_backbone(net, 2)
    x = torch.rand(2, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(split.tail(split.stem(x)), net(x), atol=1e-6)
    # the norm after the blocks and the head are trained with the blocks
    tail = {id(p) for p in split.parameters()}
    want = [*net.blocks[1:], net.norm, net.head]
    assert tail == {id(p) for m in want for p in m.parameters()}
    with pytest.raises(ValueError, match="does not cut into a stem and its last blocks"):
        split_backbone(_TimmLike(odd=True), 1)


def test_the_cache_holds_the_stem_of_each_image_and_its_mirror(data, tmp_path):
    run = tmp_path / "run"
    logs = []
    train(_config(data, epochs=1), run, log=logs.append)
    assert any("caching the activations entering the last 2 blocks" in s for s in logs)
    assert any("GiB in" in s for s in logs)  # the size is said before caching
    key = json.loads((run / "activations" / "key.json").read_text())
    assert key["dtype"] == "fp16" and key["train_blocks"] == 2
    cache = activations._open(run / "activations", key)
    torch.manual_seed(0)
    split = split_backbone(build_backbone("tiny").eval(), 2)  # the run's untrained start
    files = image_folder_csv(data).select_split("train").files
    x = torch.stack([ImageTensors(files, test_transform((32, 16)))[i][0] for i in range(5)])
    with torch.no_grad():
        want = torch.stack([split.stem(x), split.stem(torch.flip(x, dims=[3]))], 1).numpy()
    got = cache["train"][np.arange(5)]
    assert got.shape == (5, 2, 32, 8, 4) and got.dtype == np.float32
    assert np.allclose(got, want, rtol=2e-3, atol=2e-3)
    assert not np.allclose(got[:, 0], got[:, 1], atol=1e-2)  # the mirror is another view


def test_only_the_last_blocks_train_and_the_model_embeds_images(data, tmp_path):
    run = tmp_path / "run"
    # every update kept (a few answers could not show one better: the blocks would go back)
    train(_config(data, epochs=2, holdout=0.0), run, log=_quiet)
    torch.manual_seed(0)
    start = build_backbone("tiny")
    model = load_model(run / "model.pt")
    trained = model.backbone.state_dict()
    stem = ("features.0.", "features.1.")
    for k, v in start.state_dict().items():
        if k.startswith(stem):
            assert torch.equal(trained[k], v), k
    changed = [k for k, v in start.state_dict().items() if not torch.equal(trained[k], v)]
    assert changed and all(k.startswith(("features.2.", "features.3.")) for k in changed)
    # the saved model embeds images as the cached path does (up to the fp16 cache)
    key = json.loads((run / "activations" / "key.json").read_text())
    cache = activations._open(run / "activations", key)
    model.tail = split_backbone(model.backbone, 2)
    files = image_folder_csv(data).select_split("train").files
    X_images = embed_images(model, files, size=(32, 16), device="cpu", flip=True)
    X_cached = embed_cached(model, cache["train"], "cpu")
    assert np.abs(X_images - X_cached).max() < 2e-2


def test_resume_reads_the_cache_and_repeats_the_uninterrupted_run(data, tmp_path):
    whole = tmp_path / "whole"
    train(_config(data, epochs=3), whole, log=_quiet)
    part = tmp_path / "part"
    train(_config(data, epochs=1), part, log=_quiet)
    logs = []
    train(_config(data, epochs=3), part, resume=True, log=logs.append)
    assert not any("caching the activations" in s for s in logs)  # read, not recomputed
    a, b = read_lines(whole / "metrics.jsonl"), read_lines(part / "metrics.jsonl")
    assert [m["epoch"] for m in b] == [0, 1, 2]
    assert np.allclose([m["loss"] for m in a], [m["loss"] for m in b], atol=1e-5)


def test_another_run_starts_from_an_earlier_runs_activations(data, tmp_path):
    first = tmp_path / "first"
    train(_config(data, epochs=1), first, log=_quiet)
    logs = []
    cfg = _config(data, epochs=1, feature_cache=str(first / "activations"))
    train(cfg, tmp_path / "second", log=logs.append)
    assert not any("caching the activations" in s for s in logs)  # copied in, not computed
    assert (tmp_path / "second" / "activations" / "key.json").exists()
    assert (first / "activations" / "key.json").exists()  # the earlier run keeps its own
    a, b = read_lines(first / "metrics.jsonl"), read_lines(tmp_path / "second" / "metrics.jsonl")
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], abs=1e-6)
    # another number of blocks: the copy does not match, so it is computed again
    logs = []
    cfg = _config(data, epochs=1, train_blocks=1, feature_cache=str(first / "activations"))
    train(cfg, tmp_path / "third", log=logs.append)
    assert any("recomputing the activation cache" in s for s in logs)
    with pytest.raises(ValueError, match="'feature_cache' .* is not a folder; with train_blocks"):
        train(
            _config(data, epochs=1, feature_cache=str(first / "metrics.jsonl")),
            tmp_path / "fourth",
            log=_quiet,
        )


def test_a_changed_image_recomputes_the_cache(data, tmp_path):
    run = tmp_path / "run"
    train(_config(data, epochs=1), run, log=_quiet)
    files = image_folder_csv(data).select_split("train").files
    from PIL import Image

    Image.new("RGB", (16, 32), (9, 9, 9)).save(files[0])
    logs = []
    train(_config(data, epochs=2), run, resume=True, log=logs.append)
    assert any("recomputing the activation cache" in s for s in logs)


def test_train_blocks_is_checked_with_a_message_naming_it(data, tmp_path, capsys):
    with pytest.raises(ValueError, match="'train_blocks' must be 'all', or an integer >= 0"):
        TrainConfig(data=str(data), arch="tiny", train_blocks=-1)
    with pytest.raises(ValueError, match="'train_blocks' must be 'all' or 0 with freeze"):
        TrainConfig(data=str(data), arch="tiny", train_blocks=2, freeze_backbone=True)
    with pytest.raises(ValueError, match=r"--train-blocks\) must be 'all' or 0..4 for the tiny"):
        train(_config(data, train_blocks=5), tmp_path / "run", log=_quiet)
    assert not (tmp_path / "run").exists()
    # 0 is the frozen backbone, "all" the whole network, as config.json recorded them
    assert TrainConfig(data=str(data), arch="tiny", train_blocks=0).freeze_backbone is True
    assert TrainConfig(data=str(data), arch="tiny", train_blocks="all").train_blocks is None

    base = ["train", "--csv", str(data), "--out", str(tmp_path / "cli"), "--arch", "tiny"]
    with pytest.raises(SystemExit):
        main([*base, "--train-blocks", "two"])
    assert "argument --train-blocks: expected 'all' or a number" in capsys.readouterr().err
    assert main([*base, "--train-blocks", "7", "--size", "32", "16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aas train: error: 'train_blocks' (--train-blocks) must be 'all' or 0..4")
    assert err.count("\n") == 1
    assert main([*base, "--train-blocks", "2", "--freeze-backbone"]) == 2
    assert "--train-blocks 2 and --freeze-backbone disagree" in capsys.readouterr().err


def test_cli_train_blocks_records_the_precision(data, tmp_path, capsys):
    run = tmp_path / "run"
    args = "--arch tiny --size 32 16 --train-blocks 1 --precision fp32 --epochs 1 --k1 10 --k2 3"
    args += " --budget 20 --num-workers 0 --device cpu"
    assert main(["train", "--csv", str(data), "--out", str(run), *args.split()]) == 0, (
        capsys.readouterr().err
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train_blocks"] == 1 and cfg["precision"] == "fp32" and cfg["iters"] is None
    assert read_lines(run / "metrics.jsonl")[0]["precision"] == "fp32"
    assert isinstance(load_model(run / "model.pt"), ReIDModel)


def test_a_run_directory_of_before_these_settings_resumes(data, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(data, freeze_backbone=True, iters=None, holdout=0.2, precision="fp32")
    train(cfg, run, log=_quiet)
    path = run / "config.json"
    old = json.loads(path.read_text())
    for key in ("train_blocks", "holdout", "precision"):  # what an older aas-core wrote
        del old[key]
    path.write_text(json.dumps(old))
    train(
        tiny_config(data, freeze_backbone=True, iters=None, epochs=3), run, resume=True, log=_quiet
    )
    assert [m["epoch"] for m in read_lines(run / "metrics.jsonl")] == [0, 1, 2]
    # a setting other than the default is a difference, as before
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="holdout: None -> 0.5"):
        train(
            tiny_config(data, freeze_backbone=True, iters=None, epochs=4, holdout=0.5),
            run,
            resume=True,
            log=_quiet,
        )
