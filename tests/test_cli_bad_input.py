"""Every command against a table of bad inputs: exit code 2, one line on stderr, no traceback."""

import json

import numpy as np
import pytest

from aas_core import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    X = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    np.save(d / "X.npy", X)
    (d / "empty.npy").write_bytes(b"")
    np.savez(d / "X.npz", X=X)
    (d / "afile").write_text("x")
    (d / "X.csv").write_text("1,2,3\n4,5,6\n")
    (d / "adir").mkdir()
    (d / "big.csv").write_text("i,j,same\n0,1," + "x" * 140_000 + "\n")
    (d / "huge.csv").write_text(f"i,j,same\n0,{2**63},same\n")
    (d / "huge.jsonl").write_text(
        json.dumps({"format": "aas-core/pair-constraints", "version": 1, "n": None})
        + "\n"
        + json.dumps({"i": 0, "j": 2**63, "same": True})
        + "\n"
    )
    (d / "latin.csv").write_bytes("i,j,same\n0,1,s\xe9me\n".encode("latin-1"))
    np.save(d / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    np.save(d / "vec.npy", np.arange(5.0))
    nan = X.copy()
    nan[2, 3] = np.nan
    np.save(d / "nan.npy", nan)
    return d


def _cases():
    out = []
    for cmd in ("propose", "refine"):
        extra = ["--budget", "10"] if cmd == "propose" else []
        for emb in (
            "empty.npy",
            "X.npz",
            "adir",
            "afile",
            "X.csv",
            "obj.npy",
            "vec.npy",
            "missing.npy",
            "nan.npy",
        ):
            out.append([cmd, emb, *extra])
        for c in (
            "adir",
            "big.csv",
            "huge.csv",
            "huge.jsonl",
            "latin.csv",
            "X.npz",
            "afile",
            *(["missing.csv"] if cmd == "refine" else []),  # propose: no answers yet
        ):
            out.append([cmd, "X.npy", *extra, "--constraints", c])
        for o in ("adir", "afile/p.csv", "/proc/nope/p.csv"):
            out.append([cmd, "X.npy", *extra, "--out", o])
        for opt, value in (
            ("--threads", "99999999999"),
            ("--k1", "99999999999999999999"),
            ("--eps", "nan"),
            ("--min-samples", "-1"),
            ("--store", "adir"),
            ("--store", "afile"),
            ("--store", "missing.sqlite"),
        ):
            out.append([cmd, "X.npy", *extra, opt, value])
    out += [
        ["propose", "X.npy", "--budget", "abc"],
        ["propose", "X.npy", "--budget", "1e400"],
        ["annotate", "--store", "adir", "--images", "."],
        ["annotate", "--store", "missing.sqlite", "--images", "."],
        ["annotate", "--store", "afile", "--images", "."],
        ["embed", "--images", "nodir", "--out", "o.npy"],
        ["embed", "--images", "adir", "--out", "o.npy"],
        ["embed", "--images", ".", "--out", "adir"],
        ["embed", "--images", ".", "--out", "o.txt"],
        ["embed", "--images", ".", "--backbone", "nope", "--out", "o.npy"],
        ["evaluate", "--csv", "missing.csv", "--embeddings", "X.npy"],
        ["evaluate", "--csv", "big.csv", "--embeddings", "empty.npy"],
        ["train", "--csv", "missing.csv", "--out", "r"],
        ["train", "--csv", "afile", "--out", "afile"],
        ["train", "--out", "adir", "--resume"],
        ["demo", "--n", "0"],
        ["demo", "--threads", "99999999999"],
        ["demo", "--n", "50", "--out", "afile/sub", "--no-plot"],
    ]
    return out


@pytest.mark.parametrize("argv", _cases(), ids=" ".join)
def test_bad_input_is_one_line_and_exit_code_2(files, argv, capsys, monkeypatch):
    monkeypatch.chdir(files)
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse: usage line + one error line
        rc = exc.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[0].startswith("usage:") and "error:" in err[-1], err
        return
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(err) == 1 and err[0].startswith(f"aas {argv[0]}: error: "), err
    assert "Traceback" not in err[0]


def test_ctrl_c_while_the_command_still_loads_is_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import aas_core

    # Ctrl+C lands wherever the interpreter is; make it land in numpy's import, the
    # first heavy one, which must come inside main() (where it is one line), not before
    script = (
        "import sys\n"
        "import aas_core.cli\n"
        "assert 'numpy' not in sys.modules, 'the aas entry point imports numpy before main'\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Stop())\n"
        "sys.exit(aas_core.cli.main(['refine', '--help']))\n"
    )
    env = {"PYTHONPATH": str(Path(aas_core.__file__).parents[1]), "PATH": "/usr/bin:/bin"}
    got = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert got.returncode == 130, got.stderr
    assert got.stderr == "\naas: interrupted\n" and got.stdout == ""


def test_every_public_name_is_there_when_first_used():
    import aas_core
    import aas_core.annotate

    for module in (aas_core, aas_core.annotate):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
            assert name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        aas_core.nope  # noqa: B018
