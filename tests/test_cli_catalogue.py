"""``aas catalogue``: set-up from embeddings, resume, --status, --export, bad input."""

import csv
from pathlib import Path

import numpy as np
import pytest

import aas_core as aas
from _annotate import photos_with_embeddings
from aas_core.annotate import AnnotationStore
from aas_core.cli import main

pytest.importorskip("flask", reason="aas catalogue serves the [web] page")


@pytest.fixture
def photos(tmp_path):
    X, y = aas.datasets.make_reid_blobs(120, d=16, seed=2)
    paths = [f"cam{k % 2}/{ident}_{k}.png" for k, ident in enumerate(y.tolist())]
    return (*photos_with_embeddings(tmp_path, X, paths), y)


def _run(*argv):
    return main(["catalogue", *map(str, argv)])


def test_set_up_resume_status_and_export(tmp_path, photos, capsys):
    root, emb, y = photos
    run = tmp_path / "run"
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "created" in out and "120 photos" in out
    assert "photos wrongly grouped: not known yet (0 of 5 check answers)" in out
    with AnnotationStore.open(run / "run.sqlite") as s:  # answer like a person would
        s.add_pairs([[i, j] for i in range(0, 60, 2) for j in (i + 1,)], sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "created" not in out and "30 answers" in out
    assert "identities verified by answers" in out and "merges missing: not known yet" in out

    assert _run(root, "--out", run, "--export", tmp_path / "exp", "--k1", 8) == 0
    exp = tmp_path / "exp"
    rows = list(csv.reader((exp / "catalogue.csv").read_text().splitlines()))
    assert rows[0] == ["image_path", "identity", "identity_name", "verified", "photo_folder"]
    assert len(rows) == 121
    assert {r[0] for r in rows[1:]} == {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert {r[4] for r in rows[1:]} == {str(root.resolve())}
    assert (exp / "contact_sheet.html").is_file() and (exp / "identities").is_dir()
    linked = sum(1 for f in (exp / "identities").rglob("*.png"))
    assert linked == 120
    assert not list(tmp_path.glob(".exp*"))  # nothing half-written left


def test_status_refine_and_annotate_count_the_answers_alike(tmp_path, photos, capsys):
    import re

    root, emb, y = photos
    run = tmp_path / "run"
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs([[i, i + 1] for i in range(0, 20, 2)], sampler="t", cycle=0)
        said = ["same", "different", "cant_tell", "skip", "cant_tell", "same", "same"]
        for p, a in zip(s.pairs(), said):
            s.answer(p["pair_id"], a)
        # a catalogue edit: one merge of two photos, stored as one "same" answer
        s.apply_operation("merge", [[40, 41]], ["same"], detail="test")
    capsys.readouterr()
    want = "7 answers (3 same, 1 different, 2 can't tell, 1 skipped) and 1 catalogue edit"
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    status = capsys.readouterr().out
    store = str(run / "run.sqlite")
    assert main(["refine", "--store", store, "--k1", "8", "--out", str(tmp_path / "i.csv")]) == 0
    refine = capsys.readouterr().out
    assert main(["annotate", "--store", store, "--images", str(root), "--no-serve"]) == 0
    annotate = capsys.readouterr().out
    said = [
        re.search(r"\d+ answers? \([^)]*\)(?: and \d+ catalogue edits?)?", t)
        for t in (status, refine, annotate)
    ]
    assert [m and m[0] for m in said] == [want] * 3, (status, refine, annotate)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--media", "m.csv"], "--media goes with --export"),
        (["--export", "{tmp}"], "already exists; name a new folder"),
        (["--backbone", "resnet9000"], "--backbone"),
    ],
)
def test_bad_options_are_one_line(tmp_path, photos, capsys, extra, message):
    root, emb, _ = photos
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert _run(root, "--out", tmp_path / "run", "--embeddings", emb, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("aas catalogue: error:") and message in err and "Traceback" not in err


def test_embeddings_without_rows_or_from_elsewhere_are_refused(tmp_path, photos, capsys):
    root, emb, _ = photos
    (tmp_path / "X.rows.csv").unlink()
    assert _run(root, "--out", tmp_path / "run", "--embeddings", emb, "--no-serve") == 2
    assert "no X.rows.csv beside it" in capsys.readouterr().err
    assert _run(tmp_path / "nope", "--out", tmp_path / "run") == 2
    assert "PHOTOS" in capsys.readouterr().err and not (tmp_path / "run").exists()


def _season(tmp_path, name, X, start):
    root = tmp_path / name
    paths = []
    for k in range(len(X)):
        p = f"cam{k % 2}/IMG_{k:04d}.png"  # the same file names as another season's
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"\x89PNG%d" % (start + k))
        paths.append(p)
    emb = tmp_path / f"{name}.npy"
    np.save(emb, X)
    with open(tmp_path / f"{name}.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    return root, emb


def test_a_new_season_is_added_and_linked_to_the_known_identities_first(tmp_path, capsys):
    rng = np.random.default_rng(6)  # 20 well-apart animals, 8 photos each
    y = np.repeat(np.arange(20), 8)
    X = (rng.normal(size=(20, 16))[y] + 0.15 * rng.normal(size=(160, 16))).astype(np.float32)
    first, second = np.arange(0, 160, 2), np.arange(1, 160, 2)  # both seasons see every animal
    root_a, emb_a = _season(tmp_path, "2024", X[first], 0)
    root_b, emb_b = _season(tmp_path, "2025", X[second], 1000)
    run = tmp_path / "run"
    assert _run(root_a, "--out", run, "--embeddings", emb_a, "--no-serve", "--k1", 8) == 0
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs([[0, 1], [2, 3]], sampler="t", cycle=0)  # one is left unanswered
        s.answer(1, "different")
    capsys.readouterr()
    assert _run(root_b, "--add-to", run, "--embeddings", emb_b, "--no-serve", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "added 80 photos" in out and "questions link the new photos" in out
    assert sorted(f.name for f in run.iterdir() if f.suffix == ".npy") == ["embeddings-160.npy"]
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.n_images == 160 and len(s.answers()) == 1  # nothing lost
        asked = s.next_pair()  # new against known first, before the leftover pair
        assert asked["kind"] == "link" and asked["priority"] > 0 and asked["pair_id"] > 2
        assert len(s.files()) == 160 and s.meta["season_links_pending"] == ""
        assert s.image_paths()[80] == "2025/cam0/IMG_0000.png"
        assert s.image_file(80, root_a) == root_b.resolve() / "cam0/IMG_0000.png"
        links = [p for p in s.pairs() if p["sampler"] == "season"]
        assert len(links) == 80 and all(p["i"] < 80 <= p["j"] for p in links)
        truth = np.r_[y[first], y[second]]
        right = np.mean([truth[p["i"]] == truth[p["j"]] for p in links])
        assert right > 0.8, right  # the nearest known identity is mostly the right animal
        probs = [p["prob"] for p in links]
        assert probs == sorted(probs, reverse=True)  # most similar first (none named yet)
    # the export finds each season's files in its own folder
    assert _run(root_b, "--add-to", run, "--embeddings", emb_b, "--no-serve") == 2
    assert "were these photos added before" in capsys.readouterr().err
    assert _run(root_a, "--out", run, "--export", tmp_path / "exp", "--k1", 8) == 0
    files = [f for f in (tmp_path / "exp" / "identities").rglob("*.png")]
    assert len(files) == 160
    assert {f.resolve().read_bytes() for f in files} == {
        b"\x89PNG%d" % k for k in [*range(80), *range(1000, 1080)]
    }
    # catalogue.csv writes both seasons alike: the path inside the folder each came from
    rows = list(csv.DictReader((tmp_path / "exp" / "catalogue.csv").read_text().splitlines()))
    assert [r["image_path"] for r in rows[:2]] == ["cam0/IMG_0000.png", "cam1/IMG_0001.png"]
    assert [r["image_path"] for r in rows[80:82]] == ["cam0/IMG_0000.png", "cam1/IMG_0001.png"]
    assert [r["photo_folder"] for r in rows] == [str(root_a.resolve())] * 80 + [
        str(root_b.resolve())
    ] * 80
    got = [(Path(r["photo_folder"]) / r["image_path"]).read_bytes() for r in rows]
    assert got == [b"\x89PNG%d" % k for k in [*range(80), *range(1000, 1080)]]
    assert _run(root_a, "--add-to", run, "--no-serve") == 2
    assert "is the run's own folder" in capsys.readouterr().err


def test_without_the_web_extra_it_says_so_before_embedding(tmp_path, photos, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "waitress" else real(name, *a)
    )
    root, emb, _ = photos
    assert _run(root, "--out", tmp_path / "run", "--embeddings", emb) == 2
    err = capsys.readouterr().err
    assert "needs waitress" in err and 'pip install ".[web]"' in err
    assert not (tmp_path / "run").exists()


def test_no_photos_and_a_new_season_from_another_backbone_are_refused(tmp_path, photos, capsys):
    import json

    root, emb, _ = photos
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    assert _run(empty, "--out", tmp_path / "r0", "--no-serve") == 2
    assert "PHOTOS" in capsys.readouterr().err and not (tmp_path / "r0").exists()
    run = tmp_path / "run"
    (tmp_path / "X.provenance.json").write_text(
        json.dumps({"model": {"backbone": "efficientnet-lite0"}})
    )
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    new = tmp_path / "2025"
    (new / "a").mkdir(parents=True)
    (new / "a" / "1.png").write_bytes(b"\x89PNG")
    np.save(tmp_path / "Y.npy", np.ones((1, 16), np.float32))
    (tmp_path / "Y.rows.csv").write_text("index,path,identity\n0,a/1.png,\n")
    (tmp_path / "Y.provenance.json").write_text(json.dumps({"model": {"backbone": "dinov2-s"}}))
    capsys.readouterr()
    assert _run(new, "--add-to", run, "--embeddings", tmp_path / "Y.npy", "--no-serve") == 2
    assert "made with dinov2-s but the run's with efficientnet-lite0" in capsys.readouterr().err
    assert _run(new, "--add-to", run, "--backbone", "efficientnet-lite2", "--no-serve") == 2
    assert "differs from the run's efficientnet-lite0" in capsys.readouterr().err
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.n_images == 120  # nothing was added


def test_cameras_come_from_a_camera_or_station_column_else_the_folder(tmp_path):
    from aas_core._files import save_embeddings  # what 'aas embed' writes, without torch
    from aas_core.cli.catalogue import _cameras

    X = np.ones((3, 4), np.float32)
    out, rows, _ = save_embeddings(
        tmp_path / "X.npy",
        X,
        ["a/1.png", "a/2.png", "b/3.png"],
        ["", "", ""],
        {},
        cameras=[7, 7, 9],
    )
    assert rows.read_text().splitlines()[:2] == ["index,path,identity,camera", "0,a/1.png,,7"]
    assert _cameras(out) == {0: "7", 1: "7", 2: "9"}
    (tmp_path / "Y.rows.csv").write_text("index,path,identity,station\n0,a.png,,\n1,b.png,,North\n")
    assert _cameras(tmp_path / "Y.npy") == {1: "North"}
    assert _cameras(tmp_path / "none.npy") == {}


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err
    assert err.startswith("aas catalogue: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err
    return err


@pytest.fixture
def made(tmp_path, photos, capsys):
    """A run made from the photos fixture."""
    root, emb, _ = photos
    run = tmp_path / "run"
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    capsys.readouterr()
    return root, run


def _reads(monkeypatch):
    """Counts the photos read (hashed) by the check on resume."""
    import aas_core.annotate.photos as photos_module

    seen = []
    real = photos_module.file_digest

    def counting(path):
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(photos_module, "file_digest", counting)
    return seen


def test_photos_are_recorded_and_a_resume_reads_only_the_changed_ones(made, capsys, monkeypatch):
    import os

    root, run = made
    with AnnotationStore.open(run / "run.sqlite") as s:
        files = s.files()
        paths = s.image_paths()
    assert len(files) == 120
    assert files[5].size == len((root / paths[5]).read_bytes())
    reads = _reads(monkeypatch)
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    assert reads == []  # nothing changed: one stat per photo, no reading
    st = (root / paths[5]).stat()
    os.utime(root / paths[5], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    assert reads == [Path(paths[5]).name]
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    assert len(reads) == 1  # its new time was recorded
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.files()[5].mtime_ns == st.st_mtime_ns + 10**9


def test_moved_and_renamed_photos_are_found_by_their_content(made, tmp_path, capsys):
    root, run = made
    with AnnotationStore.open(run / "run.sqlite") as s:
        paths = s.image_paths()
    (root / "sorted").mkdir()
    (root / paths[3]).rename(root / "sorted" / "renamed.png")
    (root / paths[4]).rename(root / "sorted" / Path(paths[4]).name)
    a, b = (root / paths[7]).read_bytes(), (root / paths[8]).read_bytes()
    (root / paths[7]).write_bytes(b)  # two photos that swapped names
    (root / paths[8]).write_bytes(a)
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "4 photos were found under new paths (by their content)" in out
    with AnnotationStore.open(run / "run.sqlite") as s:
        now = s.image_paths()
        assert now[3] == "sorted/renamed.png" and now[4] == f"sorted/{Path(paths[4]).name}"
        assert (now[7], now[8]) == (paths[8], paths[7])
        assert [(m["image"], m["old_path"]) for m in s.relocations()] == [
            (3, paths[3]),
            (4, paths[4]),
            (7, paths[7]),
            (8, paths[8]),
        ]
        for k in (3, 4, 7, 8):
            assert (root / now[k]).read_bytes() == b"\x89PNG photo %d" % k
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0  # and now all is in place
    assert "new paths" not in capsys.readouterr().out
    assert _run(root, "--out", run, "--export", tmp_path / "exp", "--k1", 8) == 0
    linked = {f.resolve() for f in (tmp_path / "exp" / "identities").rglob("*.png")}
    assert root.resolve() / "sorted" / "renamed.png" in linked and len(linked) == 120


@pytest.mark.parametrize(
    "change, message",
    [
        ("delete", "is missing (1 of 120 photos do not match: 1 missing)"),
        ("edit", "has other content than when it was listed (same size) (1 of 120"),
        ("grow", "has another size (14 bytes; 12 when listed) (1 of 120 photos do not match"),
        ("dangle", "is a symbolic link to"),
    ],
)
def test_edited_or_deleted_photos_are_refused_and_nothing_changes(
    made, tmp_path, capsys, change, message
):
    import os

    root, run = made
    with AnnotationStore.open(run / "run.sqlite") as s:
        target = s.image_paths()[2]
        before = s.files()
    photo = root / target
    assert len(photo.read_bytes()) == 12
    if change == "delete":
        photo.unlink()
    elif change == "edit":
        photo.write_bytes(photo.read_bytes()[:-1] + b"x")
    elif change == "grow":
        photo.write_bytes(photo.read_bytes() + b"!!")
    else:
        photo.unlink()
        photo.symlink_to(tmp_path / "gone.png")
    for extra in (["--status"], ["--export", tmp_path / "exp"], ["--no-serve"]):
        assert _run(root, "--out", run, *extra, "--k1", 8) == 2
        _one_line_error(
            capsys, "lists are not all as they were", target, message, f"PHOTOS {str(root)!r}"
        )
    assert not (tmp_path / "exp").exists()
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.files() == before and s.relocations() == []
    # the same content anywhere else under PHOTOS is enough
    if change != "dangle":
        (root / "copy").mkdir()
        (root / "copy" / "x.png").write_bytes(b"\x89PNG photo 2")
        assert _run(root, "--out", run, "--status", "--k1", 8) == 0
        assert "1 photo was found under new paths" in capsys.readouterr().out
        os.unlink(root / "copy" / "x.png")


def test_another_folder_is_refused_unless_it_holds_the_same_photos(made, tmp_path, capsys):
    import shutil

    root, run = made
    other = tmp_path / "season2"
    (other / "cam0").mkdir(parents=True)
    (other / "cam0" / "a.png").write_bytes(b"\x89PNG other")
    assert _run(other, "--out", run, "--status", "--k1", 8) == 2
    _one_line_error(
        capsys,
        f"PHOTOS {str(other)!r} is not the run's photo folder ({str(root.resolve())!r})",
        "120 of 120 photos do not match: 120 missing",
        "--add-to",
    )
    moved = tmp_path / "moved" / "photos"
    moved.parent.mkdir()
    shutil.move(root, moved)  # the folder moved as a whole
    assert _run(moved, "--out", run, "--status", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert f"the run's photos are now taken from {moved.resolve()}" in out
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.meta["images_root"] == str(moved.resolve()) and s.relocations() == []
    assert _run(moved, "--out", run, "--status", "--k1", 8) == 0
    assert "now taken from" not in capsys.readouterr().out


def test_symlinked_photos_are_fine_and_broken_links_are_refused_at_set_up(tmp_path, photos, capsys):
    root, emb, _ = photos
    outside = tmp_path / "outside"
    outside.mkdir()
    link = sorted(root.rglob("*.png"))[0]
    (outside / "real.png").write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(outside / "real.png")  # a link out of the folder to a readable file
    broken = [root / "cam0" / "gone1.png", root / "cam1" / "gone2.png"]
    for b in broken:
        b.symlink_to(tmp_path / "nothing.png")
    run = tmp_path / "run"
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 2
    _one_line_error(
        capsys,
        f"PHOTOS {str(root)!r} holds 2 symbolic links whose target is missing or not a file",
        "'cam0/gone1.png' -> ",
        "fix or remove them first",
    )
    assert not run.exists()
    for b in broken:
        b.unlink()
    assert _run(root, "--out", run, "--embeddings", emb, "--no-serve", "--k1", 8) == 0
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    from aas_core.annotate.server import create_app

    with AnnotationStore.open(run / "run.sqlite") as s:
        k = s.image_paths().index(link.relative_to(root).as_posix())
        client = create_app(s, root).test_client()
        r = client.get(f"/images/{k}")
        assert r.status_code == 200 and r.data == link.read_bytes()
        r.close()


@pytest.mark.parametrize("flag", [["--status"], ["--export", "exp"]])
def test_add_to_with_status_or_export_is_refused(made, tmp_path, capsys, flag):
    _, run = made
    new = tmp_path / "2025"
    (new / "a").mkdir(parents=True)
    (new / "a" / "1.png").write_bytes(b"\x89PNG")
    assert _run(new, "--add-to", run, *flag) == 2
    _one_line_error(capsys, f"--add-to does not go with {flag[0]}", "add the photos first")
    assert not (tmp_path / "exp").exists()
    assert sorted(f.name for f in run.iterdir()) == ["run.sqlite", "run.sqlite.lock"]


def test_a_store_made_before_photos_were_known_by_content_records_them_on_resume(
    tmp_path, photos, capsys
):
    root, emb, _ = photos
    run = tmp_path / "run"
    run.mkdir()
    paths = [r[1] for r in csv.reader((tmp_path / "X.rows.csv").read_text().splitlines()[1:])]
    with AnnotationStore.create(run / "run.sqlite", paths, embeddings_path=emb) as s:
        s.set_meta("images_root", root.resolve())  # as aas catalogue wrote it before
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    captured = capsys.readouterr()
    assert "has no record of the content of 120 photos" in captured.err
    assert "recorded the content of 120 photos" in captured.out
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert len(s.files()) == 120
    assert _run(root, "--out", run, "--status", "--k1", 8) == 0
    assert "no record" not in capsys.readouterr().err


def _seasons(tmp_path):
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(10), 6)
    X = (rng.normal(size=(10, 16))[y] + 0.15 * rng.normal(size=(60, 16))).astype(np.float32)
    root_a, emb_a = _season(tmp_path / "photos", "2024", X[::2], 0)
    root_b, emb_b = _season(tmp_path / "photos", "2025", X[1::2], 1000)
    run = tmp_path / "run"
    assert _run(root_a, "--out", run, "--embeddings", emb_a, "--no-serve", "--k1", 8) == 0
    return root_a, root_b, emb_b, run


def test_a_failed_or_interrupted_season_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    import aas_core.cli.catalogue as cat_cli
    import aas_core.loop

    root_a, root_b, emb_b, run = _seasons(tmp_path)

    def embed_here(photos, out, backbone):  # 'aas embed' without a network: its three files
        rows = Path(str(emb_b)[: -len(".npy")] + ".rows.csv")
        np.save(out, np.load(emb_b))
        Path(str(out)[: -len(".npy")] + ".rows.csv").write_bytes(rows.read_bytes())
        Path(str(out)[: -len(".npy")] + ".provenance.json").write_text("{}")
        return cat_cli._rows(out)

    monkeypatch.setattr(cat_cli, "_embed_photos", embed_here)
    with AnnotationStore.open(run / "run.sqlite") as s:
        before = (s.n_images, s.meta["embeddings_path"], len(s.files()))
    real = aas_core.loop.cluster_features

    def stop(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(aas_core.loop, "cluster_features", stop)
    capsys.readouterr()
    assert _run(root_b, "--add-to", run, "--no-serve", "--k1", 8) == 130  # Ctrl-C
    assert "interrupted" in capsys.readouterr().err
    assert sorted(f.name for f in run.iterdir()) == [
        "embeddings.npy",
        "run.sqlite",
        "run.sqlite.lock",
    ] or sorted(f.name for f in run.iterdir()) == ["run.sqlite", "run.sqlite.lock"]
    assert not list(run.glob("season-*")) and not list(run.glob("embeddings-*"))
    assert not list(run.glob(".*"))
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert (s.n_images, s.meta["embeddings_path"], len(s.files())) == before
    # an error after the embedding (a photo gone meanwhile): the same
    monkeypatch.setattr(aas_core.loop, "cluster_features", real)
    (root_b / "cam1" / "IMG_0003.png").unlink()
    assert _run(root_b, "--add-to", run, "--no-serve", "--k1", 8) == 2
    _one_line_error(capsys, "1 of the 30 photos of the new season are not under PHOTOS")
    assert not list(run.glob("season-*")) and not list(run.glob("embeddings-*"))
    assert not list(run.glob(".*"))
    (root_b / "cam1" / "IMG_0003.png").write_bytes(b"\x89PNG%d" % 1003)
    # stopped after the store took the photos: the files are there, and the next run asks
    # the link questions it did not get to
    import aas_core.catalogue

    real_build = aas_core.catalogue.LiveCatalogue.__call__
    monkeypatch.setattr(aas_core.catalogue.LiveCatalogue, "__call__", stop)
    assert _run(root_b, "--add-to", run, "--no-serve", "--k1", 8) == 130
    assert sorted(f.name for f in run.glob("*.npy")) == [
        "embeddings-60.npy",
        "season-2025.npy",
    ]
    assert (run / "season-2025.rows.csv").is_file() and not list(run.glob(".*"))
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.n_images == 60 and s.meta["season_links_pending"] == "30:60"
        assert not [p for p in s.pairs() if p["kind"] == "link"]
    monkeypatch.setattr(aas_core.catalogue.LiveCatalogue, "__call__", real_build)
    capsys.readouterr()
    assert _run(root_a, "--out", run, "--no-serve", "--k1", 8) == 0
    assert "questions link the new photos" in capsys.readouterr().out
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert len([p for p in s.pairs() if p["kind"] == "link"]) == 30
        assert s.meta["season_links_pending"] == ""


def test_seasons_moved_with_the_run_s_folder_are_found_there(tmp_path, capsys):
    import shutil

    root_a, root_b, emb_b, run = _seasons(tmp_path)
    assert _run(root_b, "--add-to", run, "--embeddings", emb_b, "--no-serve", "--k1", 8) == 0
    capsys.readouterr()
    assert _run(root_b, "--out", run, "--status") == 2  # the season's folder is not the run's
    _one_line_error(capsys, f"is not the run's photo folder ({str(root_a.resolve())!r})")
    shutil.move(tmp_path / "photos", tmp_path / "disk2")  # both seasons, one parent
    capsys.readouterr()
    new_a = tmp_path / "disk2" / "2024"
    assert _run(new_a, "--out", run, "--status", "--k1", 8) == 0
    out = capsys.readouterr().out
    assert "now taken from" in out and "30 photos were found under new paths" in out
    with AnnotationStore.open(run / "run.sqlite") as s:
        assert s.image_file(30, new_a) == (tmp_path / "disk2" / "2025").resolve() / (
            "cam0/IMG_0000.png"
        )
    assert _run(new_a, "--out", run, "--export", tmp_path / "exp", "--k1", 8) == 0
    assert "new paths" not in capsys.readouterr().out
    files = list((tmp_path / "exp" / "identities").rglob("*.png"))
    assert len(files) == 60 and all(f.resolve().is_relative_to(tmp_path / "disk2") for f in files)
    rows = list(csv.DictReader((tmp_path / "exp" / "catalogue.csv").read_text().splitlines()))
    assert {r["photo_folder"] for r in rows} == {
        str((tmp_path / "disk2" / s).resolve()) for s in ("2024", "2025")
    }  # where each season's photos are now
    assert all((Path(r["photo_folder"]) / r["image_path"]).is_file() for r in rows)
    # a season photo deleted: named with its folder
    (tmp_path / "disk2" / "2025" / "cam1" / "IMG_0001.png").unlink()
    assert _run(new_a, "--out", run, "--status", "--k1", 8) == 2
    _one_line_error(capsys, "2025/cam1/IMG_0001.png' is missing", "1 of 60 photos")
    assert _run(tmp_path / "disk2" / "2025", "--add-to", run, "--no-serve") == 2
    _one_line_error(capsys, "within the run's photo folder", "IMG_0001.png' is missing")
