"""Exports, CSV cells and --media (issue 23, points 6-8): one test per reproducer of the
red-team report."""

import csv
import os
import re
import tracemalloc
from urllib.parse import quote, unquote

import numpy as np
import pytest

import aas_core as aas
from aas_core._csvcell import read_cell, safe_cell
from aas_core.annotate import AnnotationStore
from aas_core.catalogue import (
    build_catalogue,
    write_camtrap_media,
    write_contact_sheet,
    write_csv,
    write_folders,
)
from aas_core.catalogue.records import load_records
from aas_core.loop import cluster_features

N = 40


@pytest.fixture(scope="module")
def clusters():
    X, _ = aas.datasets.make_reid_blobs(N, d=16, seed=3)
    return X, cluster_features(X, k1=8, n_threads=1)


@pytest.fixture
def make(tmp_path, clusters):
    """make(paths) -> (store, clusters, image folder): N photos, the given paths first."""
    stores = []

    def make(paths=()):
        paths = list(paths) + [f"cam{k % 2}/{k}.jpg" for k in range(N - len(paths))]
        images = tmp_path / "images"
        for k, p in enumerate(paths):
            (images / p).parent.mkdir(parents=True, exist_ok=True)
            (images / p).write_bytes(b"jpeg%d" % k)
        stores.append(AnnotationStore.create(tmp_path / "run.sqlite", paths))
        return stores[-1], clusters[1], images

    yield make
    for s in stores:
        s.close()


def _exported(out):
    """{file name: its folder} of the photos in an identities/ export."""
    return {f.name: f.parent.name for f in out.rglob("*") if f.parent != out}


# 6. exports ------------------------------------------------------------------------------


def test_photos_the_page_cannot_show_are_skipped_never_linked_or_copied(tmp_path, make):
    from aas_core.annotate.server import photo_problems

    store, cs, images = make()
    paths = store.image_paths()
    loop = images / paths[0]
    loop.unlink()
    os.symlink(loop.name, loop)  # a link to itself: ELOOP
    (images / paths[1]).unlink()  # missing
    (images / paths[2]).unlink()
    os.symlink("nowhere.jpg", images / paths[2])  # leads nowhere
    outside = tmp_path / "elsewhere" / "x.jpg"
    outside.parent.mkdir()
    outside.write_bytes(b"not in the folder")
    (images / paths[3]).unlink()
    os.symlink(outside, images / paths[3])  # leads out of the folder, to no image
    archive = tmp_path / "elsewhere" / "y.jpg"  # a folder of links to a photo archive
    archive.write_bytes(b"\xff\xd8\xff\xe0 a JPEG")
    (images / paths[4]).unlink()
    os.symlink(archive, images / paths[4])
    cat = build_catalogue(store, cs)
    refused = {k: why for k, _, why in photo_problems(store, images)}
    assert {0, 1, 2, 3} == set(refused) and "symbolic links" in refused[0]
    assert refused[3] == "a link out of the photo folder to a file that is not an image"
    shown = {paths[k].replace("/", "__") for k in range(N) if k not in refused}
    for copy in (False, True):
        out = write_folders(cat, images, tmp_path / f"folders-{copy}", copy=copy)
        files = _exported(out)
        assert set(files) == shown  # exactly what the server shows: never more
        skipped = (out / "skipped.txt").read_text(encoding="utf-8").splitlines()
        assert sorted(line.split("\t")[0] for line in skipped) == sorted(paths[k] for k in refused)
        assert any("Too many levels of symbolic links" in line for line in skipped)
    page = write_contact_sheet(cat, images, tmp_path / "sheet.html").read_text()
    for k in refused:
        assert f"images/{quote(paths[k])}" not in page and f"{paths[k]}: not shown (" in page
    assert f"{len(refused)} photos not shown" in page


def test_the_export_says_how_many_photos_it_skipped_and_why(cli_run, monkeypatch, capsys):
    from aas_core.annotate import server

    root, run, tmp_path = cli_run
    real = server._PhotoFiles.problem  # the server's rule, refusing two more photos

    def problem(self, index):
        return "unreadable: Permission denied" if index in (3, 7) else real(self, index)

    monkeypatch.setattr(server._PhotoFiles, "problem", problem)
    assert _cli(root, "--out", run, "--export", tmp_path / "exp", "--copy") == 0
    out = capsys.readouterr().out
    assert f"skipped 2 of {N} photos, as the page does (2 unreadable)" in out
    assert len(_exported(tmp_path / "exp" / "identities")) == N - 2


def test_long_names_fit_the_file_system_by_bytes_with_a_stable_suffix(tmp_path, make):
    deep = "長" * 70 + "/" + "写" * 70 + ".jpg"  # each part fits; joined, 428 bytes
    store, cs, images = make([deep, "a/b__c.jpg", "a__b/c.jpg"])
    cat = build_catalogue(store, cs)
    if cat.numbers[1] != cat.numbers[2]:  # both flatten to a__b__c.jpg: one folder
        cat.merge(int(cat.numbers[1]), int(cat.numbers[2]))
        cat = build_catalogue(store, cs)
    a, b = [i for i in cat.identities if i.number != cat.numbers[1]][:2]
    cat.rename(a.number, "鹿" * 83)  # 83 characters, 249 bytes
    cat.rename(b.number, "鹿" * 82 + "馬")  # the same beginning
    cat = build_catalogue(store, cs)
    out = write_folders(cat, images, tmp_path / "folders")
    folders = sorted(f.name for f in out.iterdir())
    assert len(folders) == len(cat.identities)
    assert all(len(f.encode("utf-8")) <= 200 for f in folders)
    long = [f for f in folders if f.startswith((f"{a.code} 鹿", f"{b.code} 鹿"))]
    assert len(long) == 2 and all(f[-9] == "~" and int(f[-8:], 16) >= 0 for f in long)
    files = _exported(out)
    assert len(files) == N and all(len(f.encode("utf-8")) <= 200 for f in files)
    assert sum(f.endswith(".jpg") and "~" in f for f in files) >= 2  # cut, and the collision
    assert sorted((out / files[f] / f).read_bytes() for f in files) == sorted(
        (images / p).read_bytes() for p in store.image_paths()
    )
    again = write_folders(cat, images, tmp_path / "again")
    assert _exported(again) == files  # the same names in every export


def test_contact_sheet_links_are_url_encoded(tmp_path, make):
    odd = ["x/a#b.jpg", "x/q?x.jpg", "x/100%.jpg", "x/sp ace.jpg", "x/é&<.jpg"]
    store, cs, images = make(odd)
    cat = build_catalogue(store, cs)
    page = write_contact_sheet(cat, images, tmp_path / "sheet" / "index.html").read_text()
    srcs = [s.split('"')[0] for s in page.split('<img src="')[1:]]
    assert len(srcs) == N
    for p in odd:
        assert f'src="../images/{quote(p)}"' in page
    for s in srcs:  # each link leads to its photo
        assert (tmp_path / "sheet" / unquote(s.replace("&amp;", "&"))).is_file()


@pytest.mark.parametrize(
    "boom, rc", [(OSError(28, "No space left on device"), 2), (KeyboardInterrupt(), 130)]
)
def test_a_failed_or_interrupted_export_leaves_nothing_behind(cli_run, monkeypatch, boom, rc):
    import aas_core.catalogue as catalogue

    root, run, tmp_path = cli_run
    assert _cli(root, "--out", run, "--export", tmp_path / "before") == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "before").rglob("*"))
    there = sorted(os.listdir(tmp_path))

    def fail(*args, **kwargs):
        raise boom

    monkeypatch.setattr(catalogue, "write_contact_sheet", fail)  # after the folders
    assert _cli(root, "--out", run, "--export", tmp_path / "exp") == rc
    assert _cli(root, "--out", run, "--export", tmp_path / "new" / "deep" / "exp") == rc
    assert sorted(os.listdir(tmp_path)) == there  # no .exp*.partial, no exp, no new/
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "before").rglob("*")) == before


@pytest.mark.parametrize(
    "name",
    [
        "{code}",
        "{code_en_dash}",  # NY–0001
        "{code_fullwidth}",  # ＮＹ-０００１
        "{code_minus}",  # NY−0001
        "AB-{digits}",  # the merge box reads letters-dash-digits as the identity's number
    ],
)
def test_no_identity_is_named_with_another_identity_s_code(make, name):
    pytest.importorskip("flask", reason="the annotation server needs the [web] extra")
    from aas_core.annotate.server import create_app

    store, cs, images = make()
    cat = build_catalogue(store, cs)
    first, second = cat.identities[0], cat.identities[1]
    digits = first.code.split("-")[1]
    name = name.format(
        code=first.code,
        code_en_dash=first.code.replace("-", "\u2013"),
        code_fullwidth="".join(chr(ord(c) + 0xFEE0) for c in first.code),
        code_minus=first.code.replace("-", "\u2212"),
        digits=digits,
    )
    with pytest.raises(ValueError, match="reads as an identity code"):
        cat.rename(second.number, name)
    app = create_app(store, images, catalogue=lambda: build_catalogue(store, cs))
    with app.test_client() as client:
        r = client.post(
            "/api/catalogue/rename", json={"number": second.number, "name": name, "annotator": "a"}
        )
    assert r.status_code == 400 and "reads as an identity code" in r.get_json()["error"]
    assert load_records(store).names == {}
    cat.rename(second.number, f"{name} Leo")  # with a word after it, it is a name


# 7. formula injection ----------------------------------------------------------------------

FORMULAS = ["=1+1", "+cmd.jpg", "-x.jpg", "@SUM(A1)", "\t=1", "\r=1", "'=1", "''-x"]
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
PLAIN = ["-0.5", "-3", "+3", "1e-3", "Leo", "'Leo", "'-3", "", "a=b"]


def _no_formula(path):
    """Every cell of the CSV at ``path``, checked to start with nothing a spreadsheet runs."""
    with open(path, newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    for c in cells:
        assert c[:1] not in ("=", "+", "-", "@", "\t", "\r") or _NUMBER.fullmatch(c), c
    return cells


def test_formula_cells_are_neutralised_in_every_csv_and_read_back_as_written(tmp_path, make):
    from aas_core._files import save_embeddings  # what 'aas embed' writes, without torch
    from aas_core.cli._common import _read_paths_csv, _write_csv
    from aas_core.cli.catalogue import _cameras
    from aas_core.datasets import image_folder_csv

    for text in FORMULAS:
        assert safe_cell(text) == "'" + text and read_cell(safe_cell(text)) == text
    for text in PLAIN:  # numbers stay numbers, other text as it is
        assert safe_cell(text) == text and read_cell(text) == text
    assert safe_cell(-3) == -3 and safe_cell(-0.5) == -0.5

    # catalogue.csv: names and file names
    store, cs, images = make(["=cmd.jpg", "+x.jpg", "-x.jpg", "@x.jpg"])
    cat = build_catalogue(store, cs)
    cat.rename(cat.numbers[0], '=HYPERLINK("http://evil","open")')
    cat = build_catalogue(store, cs)
    cells = _no_formula(write_csv(cat, tmp_path / "catalogue.csv"))
    assert "'=cmd.jpg" in cells and "'-x.jpg" in cells
    assert """'=HYPERLINK("http://evil","open")""" in cells

    # media.csv copies input cells: neutralised, numbers kept; our own output reads back
    media = tmp_path / "media.csv"
    with open(media, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [
                ["mediaID", "filePath", "exposure", "comment"],
                ["m1", "=cmd.jpg", "-0.5", "=2+2"],
                ["m2", "-x.jpg", "-3", "\t@x"],
            ]
        )
    counts = write_camtrap_media(cat, media, tmp_path / "out.csv")
    assert counts["matched"] == 2
    cells = _no_formula(tmp_path / "out.csv")
    assert {"'=2+2", "'\t@x", "-0.5", "-3", "'=cmd.jpg"} <= set(cells)
    write_camtrap_media(cat, tmp_path / "out.csv", tmp_path / "again.csv")  # given back
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "out.csv").read_bytes()

    # X.rows.csv, read back by propose, annotate, catalogue, evaluate and train --csv
    paths = ["=a.png", "-b.png", "'=c.png", "'d.png", "-3", "@e.png"]
    out, rows, _ = save_embeddings(
        tmp_path / "X.npy",
        np.ones((6, 4), np.float32),
        paths,
        ["=Leo", "-1", "", "+x", "Kali", "@y"],
        {},
        cameras=["@north", "=2", "-1", "", "south", "-x"],
    )
    _no_formula(rows)
    assert _read_paths_csv(rows, "rows") == paths
    assert _cameras(out) == {0: "@north", 1: "=2", 2: "-1", 4: "south", 5: "-x"}
    out, rows, _ = save_embeddings(
        tmp_path / "Y.npy", np.ones((6, 4), np.float32), paths, ["=Leo"] * 6, {}
    )
    ds = image_folder_csv(rows, check_files=False)
    assert list(ds.paths) == paths and list(ds.identity_names) == ["=Leo"]

    # refine --out and propose --out (pairs.csv)
    _write_csv(
        tmp_path / "ids.csv", [["image_path", "identity"], ["=a.png", 3], ["b", -1]], "--out"
    )
    cells = _no_formula(tmp_path / "ids.csv")
    assert cells == ["image_path", "identity", "'=a.png", "3", "b", "-1"]
    assert [read_cell(c) for c in cells][2] == "=a.png"


# 8. --media ------------------------------------------------------------------------------


def test_media_rows_match_by_their_full_path_only(tmp_path, make):
    store, cs, images = make(["cam1/IMG_00017.jpg"])
    cat = build_catalogue(store, cs)
    code = cat.rows()[0][1]
    media = tmp_path / "media.csv"
    media.write_text(
        "mediaID,filePath,fileName\n"
        "m1,cam1/IMG_00017.jpg,IMG_00017.jpg\n"
        "m2,otherdeployment/sub/IMG_00017.jpg,IMG_00017.jpg\n"  # another camera's photo
        "m3,../cam1/IMG_00017.jpg,IMG_00017.jpg\n"  # out of the folder and back
        "m4,.\\cam1\\IMG_00017.jpg,IMG_00017.jpg\n"
        "m5,/abs/cam1/IMG_00017.jpg,IMG_00017.jpg\n"
        "m6,,IMG_00017.jpg\n"
        "m7,cam1/x/../IMG_00017.jpg,\n",
        encoding="utf-8",
    )
    counts = write_camtrap_media(cat, media, tmp_path / "out.csv")
    got = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert [r["individualID"] for r in got] == [code, "", "", code, "", "", code]
    assert counts == {"rows": 7, "matched": 3, "outside": 2}


@pytest.mark.parametrize(
    "text, where",
    [
        ("mediaID,filePath,mediaID\nm1,cam0/0.jpg,x\n", "line 1: the column 'mediaID' appears"),
        ("mediaID,filePath\nm1,cam0/0.jpg\nm2,cam0/2.jpg,extra\n", "line 3: 3 fields, but"),
        ('mediaID,filePath\n"m\n1",cam0/0.jpg\n\nm2\n', "line 5: 1 field, but its header has 2"),
    ],
)
def test_media_duplicate_columns_and_ragged_rows_are_refused_with_the_line(
    tmp_path, make, cli_run, capsys, text, where
):
    store, cs, _ = make()
    media = tmp_path / "m.csv"
    media.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"m.csv'? {where}"):
        write_camtrap_media(build_catalogue(store, cs), media, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv*"))
    root, run, _ = cli_run  # the command says it in one line and leaves nothing
    there = sorted(os.listdir(tmp_path))
    assert _cli(root, "--out", run, "--export", tmp_path / "exp", "--media", media) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(media) in err and where in err
    assert sorted(os.listdir(tmp_path)) == there


def test_media_is_read_and_written_as_a_stream(tmp_path, make):
    store, cs, _ = make()
    cat = build_catalogue(store, cs)
    media = tmp_path / "big.csv"
    n = 30_000
    with open(media, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["mediaID", "deploymentID", "filePath", "fileName", "timestamp"])
        for k in range(n):
            w.writerow([f"m{k}", "d1", f"cam{k % 2}/{k % N}.jpg", f"{k}.jpg", "2024-05-01"])
    size = media.stat().st_size
    tracemalloc.start()
    try:
        counts = write_camtrap_media(cat, media, tmp_path / "out.csv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 4, (peak, size)  # never the whole table
    assert counts == {"rows": n, "matched": n, "outside": 0}


# the command ---------------------------------------------------------------------------------


@pytest.fixture
def cli_run(tmp_path_factory, clusters):
    """(PHOTOS, run folder, a folder for the outputs) of a run made by 'aas catalogue'."""
    pytest.importorskip("flask", reason="aas catalogue serves the [web] page")
    base = tmp_path_factory.mktemp("cli")
    root = base / "photos"
    paths = [f"cam{k % 2}/{k}.png" for k in range(N)]
    for k, p in enumerate(paths):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"\x89PNG photo %d" % k)
    np.save(base / "X.npy", clusters[0])
    with open(base / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows([["index", "path", "identity"], *enumerate(paths)])
    out = base / "outputs"
    out.mkdir()
    assert _cli(root, "--out", base / "run", "--embeddings", base / "X.npy", "--no-serve") == 0
    return root, base / "run", out


def _cli(*argv):
    from aas_core.cli import main

    return main(["catalogue", *map(str, argv), "--k1", "8"])
