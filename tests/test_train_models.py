"""Backbones, ReIDModel and checkpoints (aas_core.train.models)."""

import gzip
import json
import pickle
import warnings
from pathlib import Path

import pytest

from _torch import hide_module, importorskip

torch = importorskip("torch")

from aas_core.train import models  # noqa: E402 - after the torch check
from aas_core.train.models import (  # noqa: E402
    ReIDModel,
    build_backbone,
    load_model,
    save_model,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def torchvision_layout():
    """torchvision's state_dict() key -> shape listings (fc.* left out), dumped once."""
    with gzip.open(DATA / "torchvision_resnet_state_dicts.json.gz", "rt") as f:
        return json.load(f)["models"]


def _x(b=2, h=64, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- architectures ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_resnet_state_dict_has_torchvisions_keys_and_shapes(arch, torchvision_layout):
    net = build_backbone(arch)
    ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert ours == torchvision_layout[arch]
    assert not any(k.startswith("fc.") for k, _ in ours)


def test_resnet50_has_torchvisions_parameter_count_without_fc():
    net = build_backbone("resnet50")
    # torchvision.models.resnet50(): 25,557,032 parameters, of which fc has 2048*1000 + 1000
    assert sum(p.numel() for p in net.parameters()) == 23_508_032
    assert len(net.state_dict()) == 318
    assert net.feat_dim == 2048


@pytest.mark.parametrize(
    "arch, feat_dim, ls1, ls2",
    [
        # 64x32 input: stride 16 with last_stride=1, 32 with 2 (ResNets); 8 / 16 (tiny)
        ("resnet18", 512, (4, 2), (2, 1)),
        ("resnet50", 2048, (4, 2), (2, 1)),
        ("tiny", 64, (8, 4), (4, 2)),
    ],
)
def test_last_stride_sets_the_resolution_of_the_last_map(arch, feat_dim, ls1, ls2):
    x = _x()
    for last_stride, hw in ((1, ls1), (2, ls2)):
        net = build_backbone(arch, last_stride=last_stride).eval()
        with torch.no_grad():
            fmap = net.feature_map(x)
            pooled = net(x)
        assert tuple(fmap.shape) == (2, feat_dim, *hw)
        assert tuple(pooled.shape) == (2, feat_dim)
        torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))


def test_tiny_runs_at_64x32_and_trains():
    net = build_backbone("tiny")
    assert net.feat_dim == 64 and net.arch == "tiny" and net.last_stride == 1
    assert sum(p.numel() for p in net.parameters()) < 100_000
    out = net(_x(4))
    assert out.shape == (4, 64)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"arch": "resnet101"}, ValueError, "'arch' parameter of build_backbone"),
        ({"arch": "timm:"}, ValueError, "'arch' parameter"),
        ({"arch": 50}, ValueError, "'arch' parameter"),
        ({"arch": "tiny", "last_stride": 3}, ValueError, "'last_stride' parameter"),
        ({"arch": "tiny", "last_stride": True}, ValueError, "'last_stride' parameter"),
        ({"arch": "torchscript"}, ValueError, "TorchScript file as 'weights'"),
        ({"arch": "tiny", "weights": 3}, TypeError, "'weights' parameter"),
        ({"arch": "tiny", "weights": "https://x/y.pth"}, ValueError, "never downloads"),
        ({"arch": "tiny", "weights": "/no/such/file.pth"}, FileNotFoundError, "'weights' file"),
    ],
)
def test_build_backbone_rejects_bad_arguments(kwargs, exc, match):
    arch = kwargs.pop("arch")
    with pytest.raises(exc, match=match):
        build_backbone(arch, **kwargs)


# ---- loading weights files ------------------------------------------------------------------


def _perturbed(arch="tiny", seed=1):
    """A backbone whose every tensor differs from a fresh one (BN statistics too)."""
    torch.manual_seed(seed)
    net = build_backbone(arch)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    return net.eval()


def _same_outputs(a, b, x):
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"model": {"state_dict": sd}},
    ],
    ids=["plain", "state_dict", "model", "ddp-module-prefix", "nested"],
)
def test_weights_load_plain_wrapped_and_ddp_prefixed(tmp_path, wrap):
    src = _perturbed()
    sd = dict(src.state_dict())
    sd["fc.weight"] = torch.zeros(10, 64)  # a classifier: dropped
    sd["fc.bias"] = torch.zeros(10)
    path = tmp_path / "w.pth"
    torch.save(wrap(sd), path)
    net = build_backbone("tiny", weights=path)
    assert net.weights == path
    assert _same_outputs(src, net, _x())
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_resnet18_weights_with_fc_and_without_batch_counters_load(tmp_path):
    """Old torchvision files have fc.* and lack the BatchNorm num_batches_tracked buffers."""
    src = _perturbed("resnet18")
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"] = torch.zeros(1000, 512)
    sd["fc.bias"] = torch.zeros(1000)
    torch.save(sd, tmp_path / "resnet18.pth")
    net = build_backbone("resnet18", weights=tmp_path / "resnet18.pth", last_stride=2)
    assert _same_outputs(src, net, _x(1, 64, 64))


def test_weights_that_do_not_fit_are_listed_with_the_file(tmp_path):
    sd = dict(build_backbone("tiny").state_dict())
    del sd["features.3.bn.weight"]
    sd["features.9.conv.weight"] = torch.zeros(1)
    sd["features.0.conv.weight"] = torch.zeros(16, 3, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as err:
        build_backbone("tiny", weights=path)
    msg = str(err.value)
    assert str(path) in msg and "arch='tiny'" in msg
    assert "1 missing key(s): features.3.bn.weight" in msg
    assert "1 unexpected key(s): features.9.conv.weight" in msg
    assert "features.0.conv.weight (file (16, 3, 5, 5), model (16, 3, 3, 3))" in msg


def test_a_resnet50_file_for_resnet18_lists_at_most_ten_keys_per_kind(tmp_path):
    torch.save(build_backbone("resnet50").state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"unexpected key\(s\): .*\(\d+ more\)") as err:
        build_backbone("resnet18", weights=tmp_path / "r50.pth")
    assert "shape mismatch" in str(err.value)
    assert len(str(err.value)) < 3000


class _Foreign:
    pass


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a torch file at all", "cannot be read as a state dict"),
        (pickle.dumps(_Foreign()), "cannot be read as a state dict"),
        ({"epoch": 3, "w": torch.zeros(1)}, "entries that are not tensors: epoch"),
        ([torch.zeros(1)], "holds list, not a state dict"),
        ({}, "holds dict, not a state dict"),
    ],
    ids=["garbage", "foreign-pickle", "not-tensors", "list", "empty"],
)
def test_weights_file_that_is_no_state_dict_is_a_value_error(tmp_path, content, match):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=match) as err:
        build_backbone("tiny", weights=path)
    assert str(path) in str(err.value)


# ---- ReIDModel ------------------------------------------------------------------------------


def test_reid_model_neck_and_modes():
    model = ReIDModel.from_spec("tiny", last_stride=2)
    assert (model.arch, model.feat_dim, model.last_stride, model.weights) == ("tiny", 64, 2, None)
    assert isinstance(model.neck, torch.nn.BatchNorm1d) and model.neck.num_features == 64
    assert torch.equal(model.neck.weight, torch.ones(64))
    assert torch.equal(model.neck.bias, torch.zeros(64))
    assert model.neck.weight.requires_grad and not model.neck.bias.requires_grad
    x = _x(4)
    train_out = model.train()(x)
    assert train_out.shape == (4, 64)
    assert not torch.allclose(train_out.norm(dim=1), torch.ones(4))
    with torch.no_grad():
        eval_out = model.eval()(x)
        torch.testing.assert_close(eval_out.norm(dim=1), torch.ones(4))
        bn = model.neck(model.backbone(x))
    torch.testing.assert_close(eval_out, torch.nn.functional.normalize(bn, dim=1))


def test_reid_model_takes_any_backbone_with_feat_dim():
    class Flat(torch.nn.Module):
        feat_dim = 3 * 8 * 4

        def forward(self, x):
            return x.flatten(1)

    model = ReIDModel(Flat()).eval()
    assert model.arch is None and model.feat_dim == 96
    assert model(_x(2, 8, 4)).shape == (2, 96)
    with pytest.raises(TypeError, match="'backbone' parameter of ReIDModel"):
        ReIDModel("resnet50")
    with pytest.raises(ValueError, match="'feat_dim'"):
        ReIDModel(torch.nn.Identity())


# ---- checkpoints --------------------------------------------------------------------------


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = ReIDModel(_perturbed("tiny"))
    model.last_stride = 1
    model.train()(_x(8))  # move the neck's running statistics
    path = save_model(tmp_path / "sub" / "model.pt", model, extra={"epoch": 7, "cfg": {"a": 1}})
    assert path == tmp_path / "sub" / "model.pt"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == "aas-core-reid-model" and ckpt["version"] == 1
    assert ckpt["arch"] == "tiny" and ckpt["last_stride"] == 1
    assert ckpt["torchscript_path"] is None and ckpt["extra"] == {"epoch": 7, "cfg": {"a": 1}}
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    again = load_model(path)
    assert isinstance(again, ReIDModel) and not again.training
    assert (again.arch, again.feat_dim, again.last_stride) == ("tiny", 64, 1)
    x = _x(3)
    assert _same_outputs(model, again, x)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_load_does_not_read_the_initial_weights_file_again(tmp_path):
    weights = tmp_path / "init.pth"
    torch.save(_perturbed("tiny").state_dict(), weights)
    model = ReIDModel.from_spec("tiny", weights=weights)
    save_model(tmp_path / "m.pt", model)
    weights.unlink()
    again = load_model(tmp_path / "m.pt")
    assert again.weights == str(weights)
    assert _same_outputs(model, again, _x())


def test_load_accepts_a_trainers_checkpoint_with_more_keys_and_a_ddp_prefix(tmp_path):
    model = ReIDModel.from_spec("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    model.train()(_x(4)).sum().backward()
    opt.step()
    ckpt = {
        "format": "aas-core-reid-model",
        "version": 1,
        "arch": "tiny",
        "last_stride": 1,
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "memory": torch.zeros(10, 64),
        "epoch": 2,
    }
    torch.save(ckpt, tmp_path / "trainer.pt")
    assert _same_outputs(model, load_model(tmp_path / "trainer.pt"), _x())


def test_save_model_unwraps_a_data_parallel_wrapper(tmp_path):
    model = ReIDModel.from_spec("tiny")
    wrapper = torch.nn.DataParallel(model)  # has .module, as DistributedDataParallel does
    save_model(tmp_path / "m.pt", wrapper)
    state = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert set(state) == set(model.state_dict())


def _checkpoint(tmp_path, **changes):
    save_model(tmp_path / "good.pt", ReIDModel.from_spec("tiny"))
    ckpt = torch.load(tmp_path / "good.pt", weights_only=True)
    for k, v in changes.items():
        if v is None:
            del ckpt[k]
        else:
            ckpt[k] = v
    path = tmp_path / "changed.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format": "something-else"}, "not an aas-core model checkpoint.*'something-else'"),
        ({"version": 2}, "format version 2; this aas-core reads version 1"),
        ({"arch": None}, "lacks the entries arch"),
        ({"arch": "resnet18"}, "does not fit arch='resnet18'"),
        ({"arch": "vgg16"}, "unusable spec"),
        ({"last_stride": 4}, "unusable spec"),
        ({"state_dict": [1, 2]}, "'state_dict' is list"),
    ],
)
def test_load_rejects_wrong_checkpoints_naming_the_path(tmp_path, changes, match):
    path = _checkpoint(tmp_path, **changes)
    with pytest.raises(ValueError, match=match) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_load_rejects_foreign_truncated_and_missing_files(tmp_path):
    save_model(tmp_path / "good.pt", ReIDModel.from_spec("tiny"))
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "foreign.pt").write_bytes(pickle.dumps(_Foreign()))
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name, match in [
        ("cut.pt", "damaged"),
        ("foreign.pt", "damaged"),
        ("plain.pt", "its 'format' is None"),
        ("tensor.pt", "it holds Tensor"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            load_model(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_model(tmp_path / "missing.pt")


def test_save_model_rejects_what_it_cannot_rebuild(tmp_path):
    class Flat(torch.nn.Module):
        feat_dim = 4

        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(ValueError, match="not made by build_backbone"):
        save_model(tmp_path / "m.pt", ReIDModel(Flat()))
    with pytest.raises(TypeError, match="'model' parameter of save_model"):
        save_model(tmp_path / "m.pt", build_backbone("tiny"))
    with pytest.raises(TypeError, match="'extra' parameter"):
        save_model(tmp_path / "m.pt", ReIDModel.from_spec("tiny"), extra=[1])
    assert not list(tmp_path.iterdir())


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = save_model(tmp_path / "m.pt", ReIDModel.from_spec("tiny"), extra={"v": 1})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(models.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, ReIDModel.from_spec("tiny"), extra={"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# ---- TorchScript ------------------------------------------------------------------------------


class _Scriptable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, stride=2)
        self.bn = torch.nn.BatchNorm2d(12)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture
def scripted_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "net.ts"
    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.14
        torch.jit.save(torch.jit.script(_Scriptable()), str(path))
    return path


def test_torchscript_backbone_round_trip(tmp_path, scripted_file):
    net = build_backbone("torchscript", weights=scripted_file)
    assert net.feat_dim == 12 and net.torchscript_path == str(scripted_file)
    assert net.training  # the dry run restored the mode
    model = ReIDModel(net)
    model.train()(_x(4)).sum().backward()  # trainable
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    path = save_model(tmp_path / "m.pt", model)
    assert torch.load(path, weights_only=True)["torchscript_path"] == str(scripted_file)
    again = load_model(path)
    assert again.arch == "torchscript"
    assert _same_outputs(model, again, _x())
    scripted_file.unlink()
    with pytest.raises(FileNotFoundError, match="TorchScript backbone whose file is missing"):
        load_model(path)


def test_torchscript_errors(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a TorchScript module"):
        build_backbone("torchscript", weights=tmp_path / "plain.pt")

    class Image2Image(torch.nn.Module):
        def forward(self, x):
            return x * 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.14
        torch.jit.save(torch.jit.script(Image2Image()), str(tmp_path / "map.ts"))
    with pytest.raises(ValueError, match=r"to \(B, d\) features.*\(1, 3, 64, 64\)"):
        build_backbone("torchscript", weights=tmp_path / "map.ts")


# ---- timm (optional) -------------------------------------------------------------------------


def test_timm_backbone_and_its_weights(tmp_path):
    timm = pytest.importorskip("timm", exc_type=ImportError)
    net = build_backbone("timm:resnet18")
    assert net.feat_dim == 512 and net.arch == "timm:resnet18"
    assert net(_x(1, 64, 64)).shape == (1, 512)
    full = timm.create_model("resnet18", pretrained=False, num_classes=7)  # with a head
    torch.save({"state_dict": full.state_dict()}, tmp_path / "timm.pth")
    loaded = build_backbone("timm:resnet18", weights=tmp_path / "timm.pth")
    full.reset_classifier(0)
    assert _same_outputs(full, loaded, _x(1, 64, 64))
    model = ReIDModel(loaded)
    save_model(tmp_path / "m.pt", model)
    assert _same_outputs(model, load_model(tmp_path / "m.pt"), _x(1, 64, 64))
    with pytest.raises(ValueError, match="timm cannot build"):
        build_backbone("timm:no_such_model_xyz")


def test_timm_missing_gives_an_install_hint(monkeypatch):
    hide_module(monkeypatch, "timm")
    with pytest.raises(ImportError, match="needs timm.*pip install timm"):
        build_backbone("timm:resnet18")
