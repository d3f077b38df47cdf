"""Rough edges a new user hit with the ``aas`` command: each test failed before its fix."""

import argparse
import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import aas_core as aas
from aas_core import cli
from aas_core.annotate import AnnotationStore
from aas_core.cli import _common, demo

README = Path(__file__).resolve().parent.parent / "README.md"
FAST = ["--k1", "15", "--threads", "1"]


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aas {command}: error: "), lines
    assert "Traceback" not in err
    return lines[0]


def _save(tmp_path, X, name="X.npy", paths=None):
    """X.npy, and X.rows.csv beside it as 'aas embed' writes it when ``paths`` are given."""
    path = tmp_path / name
    np.save(path, X)
    if paths is not None:
        rows = path.with_name(name[: -len(".npy")] + ".rows.csv")
        with open(rows, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["index", "path", "identity"])
            w.writerows([k, p, ""] for k, p in enumerate(paths))
    return path


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command's default output (pairs.csv) lands there


@pytest.fixture(scope="module")
def blobs():
    return aas.datasets.make_reid_blobs(240, d=32, seed=7)


def _paths(n):
    return [f"ind{k // 10:02d}/img{k:03d}.jpg" for k in range(n)]


# ---- no traceback for a user error or an interrupt -------------------------------------------


def test_ctrl_c_in_demo_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(aas.ActiveLoop, "run", interrupted)
    rc, _, err = _run(["demo", "--n", "60", "--d", "8", "--out", tmp_path / "o"], capsys)
    assert rc == 130
    assert err.strip().splitlines() == ["aas demo: interrupted"]
    assert not (tmp_path / "o").exists()


def test_demo_refuses_an_unusable_out_before_any_work(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the data was made before --out was checked")

    monkeypatch.setattr(aas.datasets, "make_reid_blobs", never)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        rc, _, err = _run(["demo", "--out", out], capsys)
        assert rc == 2 and str(afile) in _one_error_line(err, "demo")


@pytest.mark.parametrize("command", ["propose", "refine"])
def test_out_a_folder_is_one_line(blobs, tmp_path, capsys, command):
    X = _save(tmp_path, blobs[0])
    for out in (tmp_path, Path(str(tmp_path) + "/")):
        rc, _, err = _run([command, X, *FAST, "--out", out], capsys)
        assert rc == 2 and "is a folder" in _one_error_line(err, command)


def test_out_of_memory_is_one_line(blobs, tmp_path, capsys, monkeypatch):
    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 74.5 GiB for an array")

    monkeypatch.setattr(aas.sampling.AmbiguityAwareSampler, "propose", too_big)
    rc, _, err = _run(["propose", _save(tmp_path, blobs[0]), *FAST], capsys)
    line = _one_error_line(err, "propose")
    assert rc == 2 and "out of memory" in line and "74.5 GiB" in line


# ---- the first round: no answers file yet -----------------------------------------------------


def test_propose_without_the_answers_file_yet_proposes_and_says_so(blobs, tmp_path, capsys):
    X = _save(tmp_path, blobs[0])
    answers, pairs = tmp_path / "answers.csv", tmp_path / "pairs.csv"
    argv = ["propose", X, "--constraints", answers, "--budget", "20", *FAST, "--out", pairs]
    rc, _, err = _run(argv, capsys)
    assert rc == 0
    assert err.strip().splitlines() == [
        f"aas propose: {answers} does not exist yet: proposing without answers"
    ]
    assert len(_read_csv(pairs)) == 20 and not answers.exists()


def test_refine_still_refuses_a_missing_answers_file(blobs, tmp_path, capsys):
    X = _save(tmp_path, blobs[0])
    rc, _, err = _run(["refine", X, "--constraints", tmp_path / "nope.csv", *FAST], capsys)
    assert rc == 2 and "does not exist" in _one_error_line(err, "refine")


def _readme_workflow():
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    block = next(b for b in blocks if "aas propose X.npy --constraints answers.csv" in b)
    return [line for line in block.splitlines() if line.strip()]


def _fill_in(pairs_csv, answers_csv, y):
    """A person: answers every row of pairs.csv and adds them to answers.csv."""
    rows = _read_csv(pairs_csv)
    for r in rows:
        r["same"] = "same" if y[int(r["i"])] == y[int(r["j"])] else "different"
    new = not answers_csv.exists()
    with open(answers_csv, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    return rows


def test_the_readme_cli_workflow_runs_as_written(blobs, tmp_path, capsys, monkeypatch):
    X, y = blobs
    _save(tmp_path, X, paths=_paths(len(X)))
    monkeypatch.chdir(tmp_path)
    lines = _readme_workflow()
    assert [ln.split()[:2] for ln in lines if ln.startswith("aas ")] == [
        ["aas", "propose"],
        ["aas", "propose"],
        ["aas", "refine"],
    ]
    asked = []
    for line in lines:
        if line.startswith("#"):  # the person's step, after each proposal
            asked += _fill_in(tmp_path / "pairs.csv", tmp_path / "answers.csv", y)
            continue
        argv = shlex.split(line, comments=True)
        assert argv[0] == "aas"
        rc, _, err = _run([*argv[1:], "--threads", "1"], capsys)
        assert rc == 0, err
    assert len(asked) > 200 and len({(r["i"], r["j"]) for r in asked}) == len(asked)
    ids = _read_csv(tmp_path / "identities.csv")
    assert [r["image_path"] for r in ids] == _paths(len(X))
    ident = {r["image_path"]: r["identity"] for r in ids}
    for r in asked:
        together = ident[r["path_i"]] == ident[r["path_j"]]
        assert together == (r["same"] == "same")


# ---- messages: the file, 1-based rows, no internal names --------------------------------------


@pytest.fixture()
def bad_files(tmp_path, blobs):
    X = blobs[0][:40]
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    np.save(tmp_path / "int.npy", np.arange(80).reshape(40, 2))
    nan = X.copy()
    nan[16, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _save(tmp_path, nan, "named.npy", paths=_paths(40))
    zero = X.copy()
    zero[4] = 0
    np.save(tmp_path / "zero.npy", zero)
    big = X.astype(np.float64)
    big[9, 0] = 1e300  # beyond float32
    np.save(tmp_path / "big.npy", big)
    (tmp_path / "bad.jsonl").write_text('{"format": "something else"}\n')
    return tmp_path


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["propose", "X.csv"],
            ["'X.csv' is not a .npy file", "(n, d) array of floats", "numpy.save", "aas embed"],
        ),
        (["propose", "obj.npy"], ["'obj.npy' holds Python objects (dtype object), not numbers"]),
        (["propose", "int.npy"], ["'int.npy' holds int64 values; embeddings must be floats"]),
        (["refine", "nan.npy"], ["'nan.npy' row 17 of 40 contains NaN", "counted from 1"]),
        (
            ["refine", "named.npy"],
            ["row 17 of 40 (ind01/img016.jpg, line 18 of named.rows.csv) contains NaN"],
        ),
        (["propose", "zero.npy"], ["'zero.npy' row 5 of 40 is all zeros"]),
        (["propose", "big.npy"], ["'big.npy' row 10 of 40 contains", "beyond float32"]),
        (["refine", "X.npy", "--constraints", "bad.jsonl"], ["'bad.jsonl' is not an aas-core"]),
        (["refine", "X.npy", "--store", "missing.sqlite"], ["--store 'missing.sqlite' does not"]),
    ],
)
def test_messages_name_the_file_and_1_based_rows_never_a_function(
    bad_files, blobs, argv, expected, capsys, monkeypatch
):
    monkeypatch.chdir(bad_files)
    np.save(bad_files / "X.npy", blobs[0][:40])
    rc, _, err = _run([*argv, *FAST], capsys)
    line = _one_error_line(err, argv[0])
    assert rc == 2
    for part in expected:
        assert part in line, line
    for internal in (
        "allow_pickle",
        "pickled",
        "cluster_features",
        "PairConstraints.load",
        "AnnotationStore",
        "'X' contains",
        "row 16",
        "row 4 of",
    ):
        assert internal not in line, line


def test_library_function_names_are_dropped_from_what_gets_through(capsys, monkeypatch):
    def refuse(args):
        raise ValueError("cluster_features: 'X' must not be like this.")

    monkeypatch.setattr(demo, "run", refuse)  # the parser is built at each call of main
    rc, _, err = _run(["demo"], capsys)
    assert rc == 2 and _one_error_line(err, "demo") == "aas demo: error: 'X' must not be like this."


def test_a_transposed_file_gets_one_warning(blobs, tmp_path, capsys):
    X = blobs[0][:60]  # unit rows
    transposed = _save(tmp_path, np.ascontiguousarray(X.T), "T.npy")  # 32 x 60, unit columns
    argv = ["propose", transposed, "--budget", "5", *FAST, "--out", tmp_path / "p.csv"]
    rc, _, err = _run(argv, capsys)
    warnings = [ln for ln in err.splitlines() if "transposed" in ln]
    assert rc == 0 and len(warnings) == 1
    assert warnings[0].startswith("aas propose: warning: ") and "32 x 60" in warnings[0]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_more_columns_than_rows_warns_only_when_rows_are_not_unit(tmp_path, capsys, scale):
    X, _ = aas.datasets.make_reid_blobs(40, d=64, seed=1)  # d > n, unit rows
    argv = ["propose", _save(tmp_path, X * scale), "--budget", "5", "--out", tmp_path / "p.csv"]
    rc, _, err = _run([*argv, *FAST], capsys)
    assert rc == 0 and ("transposed" in err) == (scale != 1.0)


# ---- answer numbers in the conflict message -----------------------------------------------------


def test_refine_store_conflict_names_the_stores_answer_ids(blobs, tmp_path, capsys):
    X, _ = blobs
    emb = _save(tmp_path, X)
    store_path = tmp_path / "run.sqlite"
    with AnnotationStore.create(store_path, _paths(len(X)), embeddings_path=emb) as store:
        store.add_pairs([[5, 6], [0, 1], [1, 2], [0, 2]], sampler="test", cycle=0)
        ids = {(p["i"], p["j"]): p["pair_id"] for p in store.pairs()}
        store.answer(ids[(5, 6)], "skip")  # answer 1: no constraint
        store.answer(ids[(0, 1)], "same")  # answer 2 (constraint row 0)
        store.answer(ids[(1, 2)], "same")  # answer 3 (row 1)
        last = store.answer(ids[(0, 2)], "different")  # answer 4 (row 2)
    assert last["answer_id"] == 4
    rc, _, err = _run(["refine", "--store", store_path, *FAST], capsys)
    line = _one_error_line(err, "refine")
    assert rc == 2 and "inconsistent" in line and "--on-conflict drop_oldest" in line
    assert "answer 4 says images 0 and 2 differ" in line
    assert "answer 2 (0, 1)" in line and "answer 3 (1, 2)" in line
    rc, out, _ = _run(
        [
            "refine",
            "--store",
            store_path,
            *FAST,
            "--on-conflict",
            "drop_oldest",
            "--out",
            tmp_path / "ids.csv",
        ],
        capsys,
    )
    assert rc == 0 and "1 contradictory answer ignored: answer 2" in out


def test_refine_csv_conflict_names_the_lines_of_the_file(blobs, tmp_path, capsys):
    X = _save(tmp_path, blobs[0])
    answers = tmp_path / "answers.csv"
    answers.write_text("i,j,same\n7,8,\n0,1,yes\n1,2,s\n0,2,no\n")
    rc, _, err = _run(["refine", X, "--constraints", answers, *FAST], capsys)
    line = _one_error_line(err, "refine")
    assert rc == 2 and "line 5 of answers.csv says images 0 and 2 differ" in line
    assert "line 3 of answers.csv (0, 1)" in line and "line 4 of answers.csv (1, 2)" in line


# ---- pairs.csv: paths, an empty 'same', priority order, and back in ----------------------------


def test_pairs_csv_has_paths_an_empty_same_and_the_most_probable_first(blobs, tmp_path, capsys):
    X, y = blobs
    emb = _save(tmp_path, X, paths=_paths(len(X)))
    pairs = tmp_path / "pairs.csv"
    rc, _, _ = _run(["propose", emb, "--budget", "30", *FAST, "--out", pairs], capsys)
    rows = _read_csv(pairs)
    assert rc == 0 and len(rows) == 30
    assert list(rows[0]) == [
        "i",
        "j",
        "path_i",
        "path_j",
        "same",
        "probability",
        "pool",
        "kind",
        "region",
    ]
    assert all(r["same"] == "" for r in rows)
    assert all(r["path_i"] == _paths(len(X))[int(r["i"])] for r in rows)
    assert all(r["path_j"] == _paths(len(X))[int(r["j"])] for r in rows)
    # the pool's pairs by probability, then the purity checks and merge questions (none)
    scored = [r["probability"] != "" for r in rows]
    assert scored == sorted(scored, reverse=True) and any(scored)
    assert all(r["pool"] in ("check", "merge") for r, s in zip(rows, scored) if not s)
    prob = [float(r["probability"]) for r, s in zip(rows, scored) if s]
    assert prob == sorted(prob, reverse=True) and prob[0] > prob[-1]


def test_pairs_csv_without_rows_file_has_no_path_columns(blobs, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    rc, _, _ = _run(
        ["propose", _save(tmp_path, blobs[0]), "--budget", "5", *FAST, "--out", pairs], capsys
    )
    assert rc == 0 and "path_i" not in _read_csv(pairs)[0]


def test_a_filled_in_pairs_csv_goes_back_in(blobs, tmp_path, capsys):
    X, y = blobs
    emb = _save(tmp_path, X, paths=_paths(len(X)))
    pairs = tmp_path / "pairs.csv"
    assert _run(["propose", emb, "--budget", "24", *FAST, "--out", pairs], capsys)[0] == 0
    rows = _read_csv(pairs)
    yes = ["same", "Yes", "1", "true", "S", " y "]
    no = ["different", "NO", "0", "false", "d", "diff"]
    for k, r in enumerate(rows):
        if k % 4 == 3:
            continue  # left empty: not answered yet
        r["same"] = (yes if y[int(r["i"])] == y[int(r["j"])] else no)[k % 6]
    with open(pairs, "w", newline="", encoding="utf-8-sig") as f:  # a spreadsheet's BOM
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    answered = {(int(r["i"]), int(r["j"])) for r in rows if r["same"]}
    nxt = tmp_path / "next.csv"
    argv = ["propose", emb, "--constraints", pairs, "--budget", "24", *FAST, "--out", nxt]
    assert _run(argv, capsys)[0] == 0
    assert not answered & {(int(r["i"]), int(r["j"])) for r in _read_csv(nxt)}
    ids = tmp_path / "ids.csv"
    rc, out, _ = _run(["refine", emb, "--constraints", pairs, *FAST, "--out", ids], capsys)
    n_same = sum(r["same"] in yes for r in rows)
    said = f"from {len(answered)} answers ({n_same} same, {len(answered) - n_same} different);"
    assert rc == 0 and said in out  # a file holds no can't tell or skip: not said to be 0
    got = {r["image_path"]: r["identity"] for r in _read_csv(ids)}
    for r in rows:
        if r["same"]:
            assert (got[r["path_i"]] == got[r["path_j"]]) == (r["same"].strip() in yes)


@pytest.mark.parametrize("command", ["propose", "refine"])
def test_out_may_not_overwrite_the_answers(blobs, tmp_path, capsys, command):
    X = _save(tmp_path, blobs[0])
    answers = tmp_path / "pairs.csv"
    answers.write_text("i,j,same\n0,1,same\n")
    rc, _, err = _run([command, X, "--constraints", answers, *FAST, "--out", answers], capsys)
    assert rc == 2 and "is the --constraints file" in _one_error_line(err, command)
    assert answers.read_text() == "i,j,same\n0,1,same\n"


def test_refine_writes_paths_when_the_rows_file_is_there(blobs, tmp_path, capsys):
    emb = _save(tmp_path, blobs[0], paths=_paths(len(blobs[0])))
    out = tmp_path / "ids.csv"
    assert _run(["refine", emb, *FAST, "--out", out], capsys)[0] == 0
    rows = _read_csv(out)
    assert list(rows[0]) == ["image_path", "identity"]
    assert [r["image_path"] for r in rows] == _paths(len(blobs[0]))


def test_a_rows_file_of_another_length_is_named_and_not_used(blobs, tmp_path, capsys):
    X = blobs[0]
    emb = _save(tmp_path, X, paths=_paths(len(X) - 1))
    out = tmp_path / "ids.csv"
    rc, _, err = _run(["refine", emb, *FAST, "--out", out], capsys)
    assert rc == 0 and "X.rows.csv lists 239 images but X.npy has 240 rows" in err
    assert list(_read_csv(out)[0]) == ["index", "identity"]


# ---- aas annotate --create --embeddings: rows matched by path ---------------------------------


@pytest.fixture()
def photos(tmp_path):
    images = tmp_path / "photos"
    for p in _paths(40):
        (images / p).parent.mkdir(parents=True, exist_ok=True)
        (images / p).write_bytes(b"")  # --from-dir lists files; their content is not read
    return images


def _create(photos, emb, capsys, *listing):
    store = photos.parent / "run.sqlite"
    argv = ["annotate", "--store", store, "--images", photos, "--create", *listing]
    rc, out, err = _run([*argv, "--embeddings", emb, "--no-serve"], capsys)
    return rc, out, err, store


def test_annotate_create_accepts_embeddings_whose_rows_are_the_images(photos, blobs, capsys):
    emb = _save(photos.parent, blobs[0][:40], paths=_paths(40))
    rc, _, err, store = _create(photos, emb, capsys, "--from-dir")
    assert rc == 0, err
    with AnnotationStore.open(store) as s:
        assert s.image_paths() == _paths(40)


def test_annotate_create_refuses_rows_of_other_images(photos, blobs, capsys):
    paths = _paths(40)
    paths[11] = "elsewhere/x.jpg"
    emb = _save(photos.parent, blobs[0][:40], paths=paths)
    rc, _, err, store = _create(photos, emb, capsys, "--from-dir")
    line = _one_error_line(err, "annotate")
    assert rc == 2 and not store.exists()
    assert "row 12 is 'elsewhere/x.jpg' (line 13 of X.rows.csv)" in line
    assert "image 12 of --from-dir is 'ind01/img011.jpg'" in line


def test_annotate_create_refuses_the_same_images_in_another_order(photos, blobs, capsys):
    paths = _paths(40)
    paths[3], paths[4] = paths[4], paths[3]
    emb = _save(photos.parent, blobs[0][:40], paths=paths)
    rc, _, err, store = _create(photos, emb, capsys, "--from-dir")
    line = _one_error_line(err, "annotate")
    assert rc == 2 and not store.exists()
    assert "in another order: row 4 is 'ind00/img004.jpg'" in line
    assert "--image-list X.rows.csv" in line
    # ... which is the way that works
    rc, _, err, store = _create(photos, emb, capsys, "--image-list", emb.with_name("X.rows.csv"))
    assert rc == 0, err
    with AnnotationStore.open(store) as s:
        assert s.image_paths() == paths


def test_propose_store_refuses_embeddings_of_other_images(photos, blobs, tmp_path, capsys):
    emb = _save(photos.parent, blobs[0][:40], paths=_paths(40))
    rc, _, _, store = _create(photos, emb, capsys, "--from-dir")
    assert rc == 0
    other = _paths(40)
    other[0] = "new/a.jpg"
    _save(photos.parent, blobs[0][:40], paths=other)  # X.npy embedded again, other images
    rc, _, err = _run(["propose", "--store", store, "--budget", "5", *FAST], capsys)
    assert rc == 2 and "row 1 is 'new/a.jpg'" in _one_error_line(err, "propose")


@pytest.mark.parametrize(
    "content, message",
    [
        ("a.jpg\n/abs/b.jpg\n", "line 2: '/abs/b.jpg' is absolute"),
        ("a.jpg\n\n../b.jpg\n", "line 3: '../b.jpg' leaves the --images folder"),
        ("a.jpg\nb.jpg\n./a.jpg\n", "lines 1 and 3 are the same image 'a.jpg'"),
    ],
)
def test_image_list_problems_name_the_line(photos, tmp_path, capsys, content, message):
    listing = tmp_path / "list.txt"
    listing.write_text(content)
    argv = ["annotate", "--store", tmp_path / "s.sqlite", "--images", photos, "--create"]
    rc, _, err = _run([*argv, "--image-list", listing, "--no-serve"], capsys)
    line = _one_error_line(err, "annotate")
    assert rc == 2 and message in line and "AnnotationStore" not in line


# ---- --help: every default, no %%; --budget forms ------------------------------------------------


def _subparsers():
    parser = cli._build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_shows_its_default_in_help():
    missing = []
    for name, p in _subparsers().items():
        fmt = p._get_formatter()
        required = [a for g in p._mutually_exclusive_groups if g.required for a in g._group_actions]
        for a in p._actions:
            if not a.option_strings or a.nargs == 0 or a.required or a in required:
                continue  # positionals, flags, required options and one-of choices
            if isinstance(a, argparse._HelpAction):
                continue
            text = fmt._expand_help(a) if a.help else ""
            if "default" not in text:
                missing.append(f"aas {name} {a.option_strings[0]}")
    assert not missing, missing


@pytest.mark.parametrize("command", ["demo", "propose", "annotate", "refine", "evaluate", "train"])
def test_help_prints_percent_signs_once(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "%%" not in out
    if command == "evaluate":
        assert "80% of the training" in " ".join(out.split())
    if command in ("demo", "propose", "train"):
        assert "(default 0.02%)" in " ".join(out.split())


@pytest.mark.parametrize(
    "text, value",
    [
        ("35", 35),
        ("1", 1),
        ("0", 0),
        ("0.5", 0.5),
        ("0.0002", 0.0002),
        ("50%", 0.5),
        ("0.02%", 0.0002),
        ("100%", 1.0),
    ],
)
def test_budget_a_count_is_an_integer_a_share_is_below_one(text, value):
    got = _common._budget(text)
    assert got == pytest.approx(value) and isinstance(got, type(value))


@pytest.mark.parametrize(
    "text, hint",
    [
        ("1.0", "write 1 for one pair, or 100% for all pairs"),
        ("35.0", "write 35 for 35 pairs"),
        ("1.5", ""),
        ("150%", ""),
        ("-2", ""),
        ("2**62", ""),
        ("99999999999999999999", "2**62"),
    ],
)
def test_budget_ambiguous_or_bad_forms_are_refused_explaining_both(text, hint):
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        _common._budget(text)
    message = str(exc.value)
    assert "count of pairs written as an integer (500)" in message
    assert "a number below 1 (0.0002) or a percentage (0.02%)" in message
    assert hint in message


# ---- the demo: clusters + singletons, and a curve per method ---------------------------------


def test_demo_counts_clusters_and_singletons_the_same_way_in_summary_and_table(tmp_path, capsys):
    argv = ["demo", "--n", "300", "--d", "32", "--cycles", "1", "--methods", "aas", "--no-plot"]
    rc, out, _ = _run([*argv, *FAST, "--out", tmp_path], capsys)
    assert rc == 0
    m = re.search(r"DBSCAN .*?: (\d+) clusters \+ (\d+) singletons = (\d+) identities", out)
    assert m and int(m[1]) + int(m[2]) == int(m[3])
    header = next(ln for ln in out.splitlines() if ln.startswith("method"))
    first = next(ln for ln in out.splitlines() if ln.startswith("AAS "))
    assert header.split()[-1] == "identities"
    assert int(first.split()[-1]) == int(m[3])  # cycle 0: the DBSCAN clustering itself


def test_demo_plot_gives_each_method_its_own_marker_and_line_style():
    plt = pytest.importorskip("matplotlib.pyplot")
    runs = {
        name: [
            {"budget_used_pct": 0.0, "pairwise_f1": 0.5},
            {"budget_used_pct": 0.1, "pairwise_f1": 0.6},
        ]
        for name in _common.SAMPLERS
    }
    fig = demo._figure(plt, runs, 100)
    try:
        lines = fig.axes[0].get_lines()
        assert len(lines) == len(_common.SAMPLERS)
        assert len({ln.get_marker() for ln in lines}) == len(lines)
        style = {ln.get_label(): ln.get_linestyle() for ln in lines}
        assert style["LBAS"] != style["GBAS"] and len(set(style.values())) >= 4
    finally:
        plt.close(fig)
