"""No command writes over an input or through a link, FIFO or device; no input blocks.

Each test failed before its fix (issue 23: points 1 and 9).
"""

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import aas_core as aas
from aas_core import _files, cli
from aas_core.annotate import AnnotationStore

FAST = ["--k1", "8", "--threads", "1"]
PYTHON_DIR = str(Path(aas.__file__).resolve().parent.parent)


def _run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _error(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aas {command}: error: "), lines
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs (pairs.csv) land there


@pytest.fixture
def work(tmp_path, capsys):
    """X.npy with X.rows.csv, the images and a store with 10 answered pairs."""
    X, y = aas.datasets.make_reid_blobs(60, d=8, seed=0)
    np.save(tmp_path / "X.npy", X)
    paths = [f"img/{k:02d}.jpg" for k in range(len(X))]
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    (tmp_path / "img").mkdir()
    for p in paths:
        (tmp_path / p).write_bytes(b"x")
    store = tmp_path / "run.sqlite"
    argv = ["annotate", "--store", store, "--images", tmp_path, "--create"]
    argv += ["--image-list", "X.rows.csv", "--embeddings", "X.npy", "--no-serve"]
    assert _run(argv, capsys)[0] == 0
    with AnnotationStore.open(store) as s:
        s.add_pairs([[k, k + 1] for k in range(0, 20, 2)], sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
    return tmp_path


def _answers(store):
    with AnnotationStore.open(store) as s:
        return len(s.answers()), len(s.pairs())


# ---- point 1: --out is never an input ------------------------------------------------


@pytest.mark.parametrize("command", ["refine", "propose"])
@pytest.mark.parametrize("out", ["run.sqlite", "run.sqlite-wal", "hard.sqlite", "no/../run.sqlite"])
def test_out_is_never_the_store_or_a_file_sqlite_keeps_beside_it(work, capsys, command, out):
    os.link(work / "run.sqlite", work / "hard.sqlite")
    before = _answers(work / "run.sqlite")
    extra = ["--budget", "5"] if command == "propose" else []
    rc, _, err = _run([command, "--store", "run.sqlite", *extra, *FAST, "--out", out], capsys)
    assert rc == 2
    line = _error(err, command)
    assert "--store" in line and "choose another file" in line
    assert _answers(work / "run.sqlite") == before  # nothing lost, nothing queued


@pytest.mark.parametrize("out", ["X.rows.csv", "X.provenance.json", "hard.npy", "./X.npy"])
def test_out_is_never_the_embeddings_or_the_files_beside_them(work, capsys, out):
    os.link(work / "X.npy", work / "hard.npy")
    rows = (work / "X.rows.csv").read_bytes()
    rc, _, err = _run(["refine", "X.npy", *FAST, "--out", out], capsys)
    assert rc == 2 and "embeddings" in _error(err, "refine")
    assert (work / "X.rows.csv").read_bytes() == rows
    assert not (work / "X.provenance.json").exists()
    assert np.load(work / "X.npy").shape == (60, 8)


def test_propose_checks_its_default_out_too(work, capsys):
    (work / "pairs.csv").write_text("i,j,same\n0,1,same\n")
    rc, _, err = _run(["propose", "X.npy", "--constraints", "pairs.csv", *FAST], capsys)
    assert rc == 2 and "is the --constraints file" in _error(err, "propose")
    assert (work / "pairs.csv").read_text() == "i,j,same\n0,1,same\n"


def _special(tmp_path, kind):
    """A path of the given kind in tmp_path, and how to tell it is still that kind."""
    path = tmp_path / f"special-{kind}"
    if kind == "link":
        (tmp_path / "target.csv").write_text("kept\n")
        path.symlink_to("target.csv")
        return path, os.path.islink
    if kind == "dangling link":
        path.symlink_to("nowhere.csv")
        return path, os.path.islink
    if kind == "fifo":
        os.mkfifo(path)
        return path, lambda p: stat.S_ISFIFO(os.lstat(p).st_mode)
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
    return path, lambda p: stat.S_ISCHR(os.lstat(p).st_mode)


@pytest.mark.parametrize(
    "kind, said",
    [
        ("link", "symbolic link (to 'target.csv')"),
        ("dangling link", "symbolic link (to 'nowhere.csv')"),
        ("fifo", "named pipe (FIFO)"),
        ("device", "character device"),
    ],
)
@pytest.mark.parametrize("command", ["refine", "propose"])
def test_out_that_is_a_link_fifo_or_device_is_refused_not_replaced(
    work, capsys, kind, said, command
):
    path, still = _special(work, kind)
    rc, _, err = _run([command, "X.npy", *FAST, "--out", path], capsys)
    assert rc == 2 and said in _error(err, command)
    assert still(path)
    if kind == "link":
        assert (work / "target.csv").read_text() == "kept\n"


def test_embed_refuses_an_out_whose_rows_file_is_the_csv(tmp_path, capsys):
    (tmp_path / "lab.rows.csv").write_text("path,identity\na.jpg,1\n")
    rc, _, err = _run(["embed", "--csv", "lab.rows.csv", "--out", "lab.npy"], capsys)
    line = _error(err, "embed")
    assert rc == 2 and "'lab.rows.csv', which is the --csv file" in line
    assert (tmp_path / "lab.rows.csv").read_text() == "path,identity\na.jpg,1\n"


def test_evaluate_refuses_a_json_that_is_an_input(work, capsys):
    (work / "labels.csv").write_text(
        "path,identity\n" + "".join(f"img/{k:02d}.jpg,{k % 6}\n" for k in range(60))
    )
    argv = ["evaluate", "--csv", "labels.csv", "--embeddings", "X.npy", "--json"]
    rc, _, err = _run([*argv, "X.rows.csv"], capsys)
    assert rc == 2 and "rows file of the --embeddings" in _error(err, "evaluate")
    rc, _, err = _run([*argv, "labels.csv"], capsys)
    assert rc == 2 and "is the --csv file" in _error(err, "evaluate")
    assert (work / "labels.csv").read_text().startswith("path,identity\n")


def test_folder_outputs_refuse_inputs_fifos_and_links_to_files(work, capsys):
    (work / "labels.csv").write_text("path,identity\nimg/00.jpg,1\n")
    rc, _, err = _run(["train", "--csv", "labels.csv", "--out", "labels.csv"], capsys)
    assert rc == 2 and "is the --csv file, not a folder" in _error(err, "train")
    os.mkfifo(work / "fifo")
    rc, _, err = _run(["demo", "--n", "50", "--no-plot", "--out", "fifo"], capsys)
    assert rc == 2 and "named pipe (FIFO)" in _error(err, "demo")
    (work / "demo").mkdir()
    (work / "demo" / "demo_results.json").symlink_to(work / "labels.csv")
    rc, _, err = _run(["demo", "--n", "50", "--no-plot", "--out", "demo"], capsys)
    assert rc == 2 and "symbolic link" in _error(err, "demo")
    assert (work / "labels.csv").read_text() == "path,identity\nimg/00.jpg,1\n"
    argv = ["catalogue", "img", "--out", "X.npy", "--embeddings", "X.npy", "--no-serve"]
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "is the --embeddings file, not a folder" in _error(err, "catalogue")


def test_write_atomic_refuses_a_fifo_or_a_folder(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name in ("fifo", "dir"):
        with pytest.raises(ValueError, match="nothing was written"):
            _files.write_atomic(tmp_path / name, lambda f: f.write(b"x"))
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert not list(tmp_path.glob(".*.tmp"))


# ---- point 9: inputs that block, names that are not UTF-8, PyTorch missing ----------


def _aas(args, cwd, *, hide_torch=False, timeout=120):
    """``aas ARGS`` in a fresh interpreter (a FIFO would block this one), optionally with
    PyTorch hidden as on a machine without it."""
    code = "import sys\n"
    if hide_torch:
        code += (
            "class _NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'torchvision', 'timm'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, _NoTorch())\n"
        )
    code += "from aas_core.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["propose", "fifo"],
        ["refine", "X.npy", "--constraints", "fifo"],
        ["evaluate", "--csv", "fifo", "--embeddings", "X.npy"],
        [
            "annotate",
            "--store",
            "new.sqlite",
            "--images",
            "img",
            "--create",
            "--image-list",
            "fifo",
        ],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_fifo_given_as_an_input_is_refused_without_blocking(work, args):
    os.mkfifo(work / "fifo")
    done = _aas(args, work, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "named pipe (FIFO)" in _error(done.stderr, args[0])


def test_from_dir_names_a_file_name_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ok.jpg").write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path / "img"), b"caf\xe9.jpg"), "wb") as f:
        f.write(b"x")
    argv = ["annotate", "--store", "s.sqlite", "--images", "img", "--create", "--from-dir"]
    rc, _, err = _run([*argv, "--no-serve"], capsys)
    line = _error(err, "annotate")
    assert rc == 2 and "b'caf\\xe9.jpg'" in line and "not UTF-8" in line
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize(
    "backbone, said",
    [
        (None, 'needs PyTorch, which is not installed: pip install ".[pretrained]"'),
        ("megadescriptor-t", 'needs PyTorch, which is not installed: pip install ".[torch,hub]"'),
        ("resnet9000", "--backbone must be one of efficientnet-lite0"),
    ],
)
def test_catalogue_without_pytorch_says_what_to_install(work, backbone, said):
    args = ["catalogue", "img", "--out", "run", "--no-serve"]
    done = _aas(args + (["--backbone", backbone] if backbone else []), work, hide_torch=True)
    assert done.returncode == 2 and said in _error(done.stderr, "catalogue")
    assert not (work / "run").exists()


# ---- point 9: to_dense_distance and exact duplicates in cluster_features --------------


def test_to_dense_distance_checks_its_input():
    with pytest.raises(ValueError, match="'D' must be a 2-D"):
        aas.to_dense_distance(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="'D' must be a square"):
        aas.to_dense_distance(sp.csr_array(np.ones((2, 3), np.float32)))
    twice = sp.csr_array(
        (np.array([0.2, 0.7], np.float32), np.array([1, 1]), np.array([0, 2, 2])), shape=(2, 2)
    )
    with pytest.raises(ValueError, match=r"'D' holds duplicate entries.*\(0, 1\)"):
        aas.to_dense_distance(twice)
    dense = np.array([[0, 0.5], [0.5, 0]], np.float32)  # every entry given, zeros included
    np.testing.assert_array_equal(aas.to_dense_distance(dense), dense)


def test_identical_rows_cluster_together():
    s = aas.cluster_features(np.ones((40, 4)))
    assert (s.labels_a == 0).all()
    centres = np.random.default_rng(0).normal(size=(5, 16))
    y = np.repeat(np.arange(5), 40)  # groups of exact copies, each larger than k1
    order = np.random.default_rng(1).permutation(len(y))
    s = aas.cluster_features(centres[y[order]])
    assert aas.metrics.clustering.ari(y[order], s.labels_a) == 1.0
    X, _ = aas.datasets.make_reid_blobs(200, d=16, seed=0)
    X = np.concatenate([X, np.repeat(X[:1], 60, axis=0), X[:50]])  # copies of real images
    s = aas.cluster_features(X)
    copy_of = [int(np.flatnonzero((X == row).all(axis=1))[0]) for row in X]
    np.testing.assert_array_equal(s.labels_a, s.labels_a[copy_of])  # copies share a label
