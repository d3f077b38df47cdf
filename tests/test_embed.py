"""Embedding images (aas_core.train.embed), the device choice, and ``aas embed``."""

import csv
import json
import re
import shutil
import sys

import numpy as np
import pytest

from _torch import importorskip

torch = importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from aas_core import cli  # noqa: E402 - after the torch check
from aas_core.datasets import make_reid_images  # noqa: E402
from aas_core.train import _runtime  # noqa: E402
from aas_core.train import transforms as T  # noqa: E402
from aas_core.train.embed import embed_images  # noqa: E402
from aas_core.train.models import ReIDModel, save_model  # noqa: E402

SIZE = (64, 32)
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 generated images of 4 identities (Pillow, no download)."""
    return make_reid_images(tmp_path_factory.mktemp("reid"), 4, 3, size=(40, 20), seed=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ReIDModel.from_spec("tiny")
    m.train()(torch.rand(8, 3, *SIZE))  # non-trivial running statistics in the neck
    return m.eval()


def _manual(model, files, flip=False):
    t = T.test_transform(SIZE)
    x = torch.stack([t(T.load_image(f)) for f in files])
    with torch.no_grad():
        f = model(x)
        if flip:
            f = (f + model(torch.flip(x, dims=[3]))) / 2
    return torch.nn.functional.normalize(f, dim=1).numpy()


# ---- resolve_device / require_torch ------------------------------------------------------------


def test_resolve_device_cpu_and_auto():
    assert _runtime.resolve_device("cpu") == torch.device("cpu")
    assert _runtime.resolve_device(" CPU ") == torch.device("cpu")
    assert _runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = _runtime.resolve_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_is_a_clear_error(device):
    with pytest.raises(ValueError) as err:
        _runtime.resolve_device(device)
    msg = str(err.value)
    assert "'device' parameter" in msg and "torch sees no CUDA device" in msg
    assert torch.__version__ in msg
    assert ("CPU-only build" in msg) == (torch.version.cuda is None)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:x", "", "mps"])
def test_resolve_device_rejects_other_strings(device):
    with pytest.raises(ValueError, match="'device' parameter of resolve_device must be"):
        _runtime.resolve_device(device)
    with pytest.raises(TypeError, match="'device' parameter"):
        _runtime.resolve_device(0)


def test_require_torch_names_the_extra_and_the_caller(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    hint = r'pip install "\.\[torch\]" in the aas-core source folder'
    with pytest.raises(ImportError, match=r"aas embed needs PyTorch.*" + hint):
        _runtime.require_torch("aas embed")


# ---- embed_images ---------------------------------------------------------------------------


def test_embed_matches_a_manual_forward_and_rows_are_unit(model, dataset):
    files = dataset.files
    X = embed_images(model, files, size=SIZE, batch_size=5, device="cpu")
    assert X.shape == (12, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(X, _manual(model, files), atol=1e-6)
    # batch size does not matter
    np.testing.assert_allclose(
        X, embed_images(model, files, size=SIZE, batch_size=64, device="cpu"), atol=1e-6
    )


def test_flip_averages_the_image_and_its_mirror(model, dataset):
    files = dataset.files[:5]
    X = embed_images(model, files, size=SIZE, flip=True, device="cpu")
    np.testing.assert_allclose(X, _manual(model, files, flip=True), atol=1e-6)
    assert not np.allclose(X, embed_images(model, files, size=SIZE, device="cpu"), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)


def test_any_module_works_and_its_output_is_normalised(dataset):
    class Colours(torch.nn.Module):  # no parameters at all
        def forward(self, x):
            return x.mean(dim=(2, 3)) + 5.0

    X = embed_images(Colours(), dataset.files[:4], size=(8, 4), device="cpu")
    assert X.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)


def test_modes_are_restored_and_nothing_of_the_callers_changes(dataset):
    torch.manual_seed(1)
    m = ReIDModel.from_spec("tiny")
    m.train()
    m.backbone.features[0].eval()  # a frozen block inside a training model
    before = {k: v.clone() for k, v in m.state_dict().items()}
    params = [id(p) for p in m.parameters()]
    files = list(dataset.files[:6])
    files_before = list(files)
    X = embed_images(m, files, size=SIZE, device="cpu")
    assert m.training and m.neck.training and not m.backbone.features[0].training
    assert m.backbone.features[1].training
    assert files == files_before
    assert [id(p) for p in m.parameters()] == params
    for k, v in m.state_dict().items():  # eval mode: BatchNorm statistics untouched
        assert torch.equal(v, before[k]), k
    assert X.shape == (6, 64)


def test_a_failing_run_still_restores_the_mode(dataset, tmp_path):
    m = ReIDModel.from_spec("tiny").train()
    with pytest.raises(FileNotFoundError, match="nope.png"):
        embed_images(m, [dataset.files[0], tmp_path / "nope.png"], size=SIZE, device="cpu")
    assert m.training


def test_missing_and_corrupt_images_name_their_path(model, dataset, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="cannot read the image .*bad.png"):
        embed_images(model, [dataset.files[0], bad], size=SIZE, device="cpu")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        embed_images(model, [tmp_path / "missing.png"], size=SIZE, device="cpu")


class _NaNForSecondImage(torch.nn.Module):
    """Features of the mean colour; NaN for batch row 1 (a broken model)."""

    def forward(self, x):
        f = x.mean(dim=(2, 3)) + 1.0
        f[1] = float("nan")
        return f


def test_non_finite_features_raise_naming_the_image(dataset, tmp_path, capsys):
    with pytest.raises(ValueError, match=f"NaN or inf features for 1 of 3 .*{dataset.paths[1]}"):
        embed_images(_NaNForSecondImage(), dataset.files[:3], size=SIZE, device="cpu")
    # aas embed with a checkpoint whose weights are NaN (a diverged run): exit 2, nothing written
    broken = ReIDModel.from_spec("tiny")
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    ckpt = save_model(tmp_path / "nan.pt", broken)
    rc, out, rows = _embed(["--images", str(dataset.root), "--model", str(ckpt)], tmp_path)
    assert rc == 2 and not out.exists() and not rows.exists()
    assert "NaN or inf features for 12 of 12 images" in capsys.readouterr().err


def test_an_unreadable_image_in_a_worker_is_named_without_the_worker_traceback(
    model, dataset, tmp_path
):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError) as exc:
        embed_images(
            model, [dataset.files[0], bad], size=SIZE, device="cpu", num_workers=1, batch_size=1
        )
    assert str(exc.value).startswith("load_image: cannot read the image ")
    assert "bad.png" in str(exc.value) and "Traceback" not in str(exc.value)


def test_workers_give_the_same_embeddings(model, dataset):
    a = embed_images(model, dataset.files, size=SIZE, batch_size=4, device="cpu")
    b = embed_images(model, dataset.files, size=SIZE, batch_size=4, num_workers=2, device="cpu")
    np.testing.assert_array_equal(a, b)


def test_progress_bar_goes_to_stderr_only_when_asked(model, dataset, capsys):
    embed_images(model, dataset.files[:3], size=SIZE, device="cpu", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "3/3 images" in err and err.endswith("\n")
    embed_images(model, dataset.files[:3], size=SIZE, device="cpu")  # stderr is no terminal
    embed_images(model, dataset.files[:3], size=SIZE, device="cpu", progress=False)
    assert capsys.readouterr() == ("", "")


def test_no_files_gives_an_empty_matrix(model):
    assert embed_images(model, [], size=SIZE, device="cpu").shape == (0, 64)
    with pytest.raises(ValueError, match="'files' parameter"):
        embed_images(torch.nn.Identity(), [], device="cpu")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"batch_size": 0}, ValueError, "'batch_size' parameter of embed_images"),
        ({"num_workers": -1}, ValueError, "'num_workers' parameter"),
        ({"flip": "yes"}, TypeError, "'flip' parameter"),
        ({"progress": "yes"}, TypeError, "'progress' parameter"),
        ({"size": (0, 4)}, ValueError, "'size' parameter"),
        ({"device": "gpu"}, ValueError, "'device' parameter"),
    ],
)
def test_bad_arguments_are_named(model, dataset, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        embed_images(model, dataset.files[:2], **kwargs)


def test_bad_model_and_files_arguments(model, dataset):
    with pytest.raises(TypeError, match="'model' parameter"):
        embed_images("resnet50", dataset.files, device="cpu")
    with pytest.raises(TypeError, match="'files' parameter"):
        embed_images(model, str(dataset.files[0]), device="cpu")
    with pytest.raises(ValueError, match=r"to \(B, d\) features"):
        embed_images(torch.nn.Identity(), dataset.files[:2], size=(8, 4), device="cpu")


@pytest.mark.gpu
@needs_cuda
def test_embedding_on_cuda_equals_the_cpu(model, dataset):
    cpu = embed_images(model, dataset.files, size=SIZE, device="cpu")
    gpu = embed_images(model, dataset.files, size=SIZE, device="cuda", flip=True)
    np.testing.assert_allclose(
        embed_images(model, dataset.files, size=SIZE, device="cpu", flip=True), gpu, atol=1e-4
    )
    np.testing.assert_allclose(
        cpu, embed_images(model, dataset.files, size=SIZE, device="cuda:0"), atol=1e-4
    )
    assert next(model.parameters()).device.type == "cpu"  # moved back
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"torch sees {n} CUDA device"):
        _runtime.resolve_device(f"cuda:{n}")


# ---- aas embed ------------------------------------------------------------------------------


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _embed(args, tmp_path, name="X.npy"):
    out = tmp_path / name
    rc = cli.main(["embed", *args, "--size", "64", "32", "--out", str(out)])
    return rc, out, out.with_name(out.name[:-4] + ".rows.csv")


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("ckpt") / "model.pt", model)


def test_cli_csv_with_a_checkpoint_equals_embed_images(dataset, model, checkpoint, tmp_path):
    csv_path = dataset.root / "labels.csv"
    rc, out, rows_path = _embed(["--csv", str(csv_path), "--model", str(checkpoint)], tmp_path)
    assert rc == 0
    X = np.load(out)
    rows = _rows(rows_path)
    assert [r["path"] for r in rows] == list(dataset.paths)
    assert [r["index"] for r in rows] == [str(i) for i in range(12)]
    assert [r["identity"] for r in rows] == [dataset.identity_names[c] for c in dataset.identity]
    np.testing.assert_allclose(X, embed_images(model, dataset.files, size=SIZE), atol=1e-6)


def test_cli_precision_bf16_tracks_fp32_and_is_recorded(dataset, checkpoint, tmp_path):
    csv_path = str(dataset.root / "labels.csv")
    got = {}
    for p in ("fp32", "bf16"):
        rc, out, _ = _embed(
            ["--csv", csv_path, "--model", str(checkpoint), "--precision", p], tmp_path, f"{p}.npy"
        )
        assert rc == 0
        record = json.loads(out.with_name(f"{p}.provenance.json").read_text())
        assert record["precision"] == p
        got[p] = np.load(out)
    assert not np.array_equal(got["fp32"], got["bf16"])  # bf16 did run
    assert np.abs(got["fp32"] - got["bf16"]).max() < 0.05


def test_cli_prints_a_one_line_summary(dataset, tmp_path, capsys):
    rc, out, _ = _embed(
        ["--csv", str(dataset.root / "labels.csv"), "--arch", "tiny", "--batch-size", "5"],
        tmp_path,
    )
    assert rc == 0
    printed = capsys.readouterr()
    assert printed.out.count("\n") == 1
    assert "12 images (4 identities)" in printed.out and "12 x 64 float32" in printed.out
    assert "random weights" in printed.err
    X = np.load(out)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)


def test_cli_images_folder_sorted_with_unknown_identities(dataset, tmp_path, capsys):
    rc, out, rows_path = _embed(["--images", str(dataset.root), "--arch", "tiny"], tmp_path)
    assert rc == 0
    assert "12 images (identities unknown)" in capsys.readouterr().out
    rows = _rows(rows_path)
    assert [r["path"] for r in rows] == sorted(dataset.paths)
    assert all(r["identity"] == "" for r in rows)
    assert np.load(out).shape == (12, 64)


def test_cli_wildlife_metadata(dataset, tmp_path):
    meta = tmp_path / "metadata.csv"
    lines = ["path,identity,species,split"]
    for k, (p, code) in enumerate(zip(dataset.paths[:5], dataset.identity[:5])):
        ident = "unknown" if k == 4 else f"lynx_{code}"
        lines.append(f"{p},{ident},lynx,train")
    meta.write_text("\n".join(lines) + "\n")
    rc, out, rows_path = _embed(
        ["--wildlife", str(meta), "--root", str(dataset.root), "--arch", "tiny"], tmp_path
    )
    assert rc == 0
    assert [r["identity"] for r in _rows(rows_path)] == ["lynx_0"] * 3 + ["lynx_1", ""]
    assert np.load(out).shape == (5, 64)


def test_cli_market1501_layout(dataset, tmp_path):
    root = tmp_path / "Market"
    names = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000452_01.jpg"],
        "bounding_box_test": ["0007_c3s1_000001_01.jpg", "-1_c3s1_000002_01.jpg"],
        "query": ["0007_c1s1_000003_01.jpg"],
    }
    src = iter(dataset.files)
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            T.load_image(next(src)).save(root / folder / name, format="JPEG")
    rc, out, rows_path = _embed(["--market1501", str(root), "--arch", "tiny"], tmp_path)
    assert rc == 0
    rows = _rows(rows_path)
    assert [r["identity"] for r in rows] == ["0002", "0002", "0007", "0007"]  # junk dropped
    assert rows[-1]["path"] == "query/0007_c1s1_000003_01.jpg"
    assert np.load(out).shape == (4, 64)


@pytest.fixture
def broken_copy(dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(dataset.root, root)
    bad = root / dataset.paths[4]
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG
    return root, dataset.paths[4]


def test_cli_skip_leaves_unreadable_images_out_and_reports_them(broken_copy, tmp_path, capsys):
    root, bad = broken_copy
    for args in (["--csv", str(root / "labels.csv")], ["--images", str(root)]):
        rc, out, rows_path = _embed([*args, "--arch", "tiny", "--on-error", "skip"], tmp_path)
        assert rc == 0
        printed = capsys.readouterr()
        assert f"skipped {bad}: unreadable image" in printed.err
        assert "skipped 1 images" in printed.out
        rows = _rows(rows_path)
        assert len(rows) == 11 and bad not in [r["path"] for r in rows]
        assert [r["index"] for r in rows] == [str(i) for i in range(11)]
        assert np.load(out).shape == (11, 64)


def test_cli_evaluate_matches_embedding_rows_to_images_by_path(broken_copy, tmp_path, capsys):
    from aas_core.datasets import image_folder_csv
    from aas_core.train.evaluate import evaluate_embeddings

    root, bad = broken_copy
    csv_path = root / "labels.csv"
    rc, out, rows_path = _embed(
        ["--csv", str(csv_path), "--arch", "tiny", "--on-error", "skip"], tmp_path
    )
    assert rc == 0
    X = np.load(out)
    ds = image_folder_csv(csv_path, check_files=False)
    keep = [i for i, p in enumerate(ds.paths) if p != bad]
    want = evaluate_embeddings(X, ds.subset(keep))["mAP"]
    capsys.readouterr()

    def evaluated(emb):
        js = tmp_path / "m.json"
        args = ["evaluate", "--csv", str(csv_path), "--embeddings", str(emb), "--json", str(js)]
        assert cli.main(args) == 0
        return json.loads(js.read_text())["mAP"]

    # 11 rows for 12 images: matched by X.rows.csv, the skipped image left out and said so
    assert evaluated(out) == pytest.approx(want, abs=1e-12)
    assert "1 of the dataset's 12 images have no embedding" in capsys.readouterr().err
    # rows in another order (array and rows file together): the same images, the same result
    rows = _rows(rows_path)
    rev = tmp_path / "R.npy"
    np.save(rev, X[::-1])
    with open(tmp_path / "R.rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[::-1])
    assert evaluated(rev) == pytest.approx(want, abs=1e-12)
    # without the rows file a count mismatch is an error, never a guess
    alone = tmp_path / "alone.npy"
    np.save(alone, X)
    assert cli.main(["evaluate", "--csv", str(csv_path), "--embeddings", str(alone)]) == 2
    assert "has 11 rows but the dataset has 12 images" in capsys.readouterr().err


def test_cli_raise_stops_at_an_unreadable_image_naming_it(broken_copy, tmp_path, capsys):
    root, bad = broken_copy
    rc, out, rows_path = _embed(["--csv", str(root / "labels.csv"), "--arch", "tiny"], tmp_path)
    assert rc == 2
    err = capsys.readouterr().err
    assert "aas embed: error:" in err and bad in err
    assert not out.exists() and not rows_path.exists()


@needs_no_cuda
def test_cli_cuda_without_a_gpu_fails_clearly(dataset, tmp_path, capsys):
    rc, out, _ = _embed(
        ["--images", str(dataset.root), "--arch", "tiny", "--device", "cuda"], tmp_path
    )
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "aas embed: error:" in err and "torch sees no CUDA device" in err


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "m.pt", "--arch", "tiny"], "one of --backbone, --arch/--weights or --model"),
        (["--arch", "tiny", "--root", "."], "--root goes with --csv or --wildlife"),
        (["--arch", "resnet101"], "'arch' parameter"),
        (["--arch", "tiny", "--weights", "nope.pth"], "'weights' file .* does not exist"),
        (["--model", "nope.pt"], "checkpoint file not found"),
    ],
)
def test_cli_errors_are_messages_with_exit_code_2(dataset, tmp_path, capsys, args, match):
    rc, out, _ = _embed(["--images", str(dataset.root), *args], tmp_path)
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "aas embed: error:" in err
    assert re.search(match, err), err


def test_cli_out_must_be_npy_and_inputs_exclusive(dataset, tmp_path, capsys):
    assert cli.main(["embed", "--images", str(dataset.root), "--out", str(tmp_path / "X")]) == 2
    assert "--out must name a .npy file" in capsys.readouterr().err
    for argv in (
        ["embed", "--out", "X.npy"],  # no input
        ["embed", "--images", ".", "--csv", "a.csv", "--out", "X.npy"],
        ["embed", "--images", ".", "--size", "64", "--out", "X.npy"],
        ["embed", "--images", ".", "--batch-size", "0", "--out", "X.npy"],
        ["embed", "--images", "."],  # no --out
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        capsys.readouterr()


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["embed", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--csv", "--wildlife", "--market1501", "--images", "--arch", "--weights"):
        assert option in text
    for option in ("--model", "--size", "--device", "--flip", "--on-error", "--out"):
        assert option in text
