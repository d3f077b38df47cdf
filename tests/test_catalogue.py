"""The catalogue: stable identity numbers through merges, splits and undos; names and checks;
exports; the estimate of what is left."""

import csv
import os
import sqlite3
from contextlib import closing

import numpy as np
import pytest

import aas_core as aas
from aas_core.annotate import AnnotationStore
from aas_core.catalogue import (
    StaleIdentity,
    build_catalogue,
    write_camtrap_media,
    write_contact_sheet,
    write_csv,
    write_folders,
)
from aas_core.loop import cluster_features


@pytest.fixture(scope="module")
def blobs():
    X, y = aas.datasets.make_reid_blobs(300, d=32, seed=0)
    return X, y, cluster_features(X, k1=10, n_threads=1)


@pytest.fixture
def store(tmp_path, blobs):
    X, _, _ = blobs
    s = AnnotationStore.create(
        tmp_path / "run.sqlite", [f"cam{k % 3}/{k}.jpg" for k in range(len(X))]
    )
    yield s
    s.close()


def _split_truths(cat, y):
    """Pairs of identities that are one individual (by majority)."""
    by = {}
    for ident in cat.identities:
        by.setdefault(int(np.bincount(y[ident.images]).argmax()), []).append(ident)
    return [(v[0], v[1]) for v in by.values() if len(v) > 1]


def test_numbers_are_stable_through_merges_undo_and_reopening(store, blobs):
    _, y, cs = blobs
    first = build_catalogue(store, cs)
    assert [i.number for i in first.identities] == list(range(1, len(first) + 1))
    assert first.identities[0].code == "NY-0001" and not first.identities[0].named
    assert np.array_equal(build_catalogue(store, cs).numbers, first.numbers)  # nothing new
    split = _split_truths(first, y)[:3]
    assert split, "the blobs should leave some individuals split"
    store.add_pairs([[a.images[0], b.images[0]] for a, b in split], sampler="t", cycle=0)
    for p in store.pairs():
        store.answer(p["pair_id"], "same")
    first.rename(split[0][1].number, "Leo")  # the younger of the two gets the name
    merged = build_catalogue(store, cs)
    assert len(merged) == len(first) - len(split)
    for a, b in split:
        ident = merged.identity(a.number)
        assert merged.identity(b.number) is ident  # an absorbed number still finds it
        assert ident.number == a.number and b.number in ident.absorbed
        assert set(ident.images.tolist()) == set(a.images.tolist()) | set(b.images.tolist())
    leo = merged.identity(split[0][0].number)
    a, b = split[0]
    # the name belongs to b's photos; with the photo of a the answer joined them to, are
    # they at least half of the merged identity?
    if 2 * (len(b.images) + 1) >= len(leo.images):
        assert leo.name == "Leo" and not leo.conflict
    else:
        assert not leo.named and "'Leo' was given to" in leo.conflict
    for _ in split:
        store.undo()
    back = build_catalogue(store, cs)
    assert np.array_equal(back.numbers, first.numbers)  # each comes back under its number
    assert back.identity(split[0][1].number).name == "Leo"
    path = store.path
    store.close()
    with AnnotationStore.open(path) as again:
        assert np.array_equal(build_catalogue(again, cs).numbers, first.numbers)


def test_an_image_split_out_is_a_new_identity_and_the_rest_keeps_the_number(store, blobs):
    _, _, cs = blobs
    cat = build_catalogue(store, cs)
    big = max(cat.identities, key=lambda i: len(i.images))
    out = int(big.images[-1])
    store.add_pairs([[int(k), out] for k in big.images[:-1]], sampler="split", cycle=0)
    for p in store.pairs():
        store.answer(p["pair_id"], "different")
    after = build_catalogue(store, cs)
    assert after.numbers[out] == max(i.number for i in cat.identities) + 1
    rest = after.identity(big.number)
    assert set(rest.images.tolist()) == set(big.images.tolist()) - {out}


def test_without_record_nothing_is_written(store, blobs):
    _, _, cs = blobs
    build_catalogue(store, cs, record=False)
    with closing(sqlite3.connect(store.path)) as c:
        assert c.execute("SELECT COUNT(*) FROM identities").fetchone() == (0,)
        assert c.execute("SELECT COUNT(*) FROM anchors").fetchone() == (0,)
    cat = build_catalogue(store, cs)
    with closing(sqlite3.connect(store.path)) as c:
        assert c.execute("SELECT COUNT(*) FROM identities").fetchone() == (len(cat),)


def test_names_and_checks_are_kept_and_checked(store, blobs):
    _, _, cs = blobs
    cat = build_catalogue(store, cs)
    cat.rename(1, "  Kali  ")
    cat.mark_checked(2)
    with pytest.raises(ValueError, match="NY-0001 is already called 'Kali'"):
        cat.rename(2, "Kali")
    with pytest.raises(ValueError, match="control characters"):
        cat.rename(2, "a\nb")
    with pytest.raises(ValueError, match="at most 100 characters"):
        cat.rename(2, "x" * 101)
    with pytest.raises(TypeError, match="'name' must be a string"):
        cat.rename(2, 7)
    with pytest.raises(KeyError, match="no identity 99999"):
        cat.rename(99999, "x")
    with pytest.raises(TypeError, match="'checked' must be a bool"):
        cat.mark_checked(2, "yes")
    again = build_catalogue(store, cs)
    assert again.identity(1).name == "Kali" and again.identity(2).checked
    again.rename(1, "")  # back to the number
    again.mark_checked(2, False)
    third = build_catalogue(store, cs)
    assert third.identity(1).name == "NY-0001" and not third.identity(2).checked
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._write(lambda c: c.execute("DELETE FROM names"))


def test_exports(tmp_path, store, blobs):
    _, _, cs = blobs
    images = tmp_path / "images"
    for k, p in enumerate(store.image_paths()):
        if k == 5:
            continue  # one photo missing
        f = images / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"jpeg%d" % k)
    cat = build_catalogue(store, cs)
    cat.rename(cat.numbers[0], "Leo/<b>")
    cat = build_catalogue(store, cs)

    rows = list(csv.reader(write_csv(cat, tmp_path / "out" / "cat.csv").read_text().splitlines()))
    assert rows[0] == ["image_path", "identity", "identity_name", "verified", "photo_folder"]
    assert len(rows) == 301
    # no answer yet; a store made here records no photo folder
    assert rows[1] == ["cam0/0.jpg", "NY-0001", "Leo/<b>", "false", ""]
    rows = list(csv.reader(write_csv(cat, tmp_path / "cat.csv", images).read_text().splitlines()))
    assert rows[1][4] == str(images.resolve()) and len(rows) == 301

    out = write_folders(cat, images, tmp_path / "folders")
    first = out / "NY-0001 Leo_b_"
    assert os.path.islink(first / "cam0__0.jpg")
    assert (first / "cam0__0.jpg").read_bytes() == b"jpeg0"
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert skipped[0].startswith("cam2/5.jpg\tNY-") and skipped[0].endswith(
        "\tmissing from " + str(images.resolve())
    )
    n_files = sum(len(files) for _, _, files in os.walk(out))
    assert n_files == 299 + 1  # every present photo once, plus skipped.txt
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_folders(cat, images, out)
    copied = write_folders(cat, images, tmp_path / "copies", copy=True)
    assert not os.path.islink(copied / "NY-0001 Leo_b_" / "cam0__0.jpg")

    media = tmp_path / "media.csv"
    media.write_text(
        "mediaID,deploymentID,filePath,fileName\n"
        "m1,d1,cam0/0.jpg,0.jpg\nm2,d1,elsewhere/3.jpg,3.jpg\nm3,d1,x/none.jpg,none.jpg\n"
    )
    counts = write_camtrap_media(cat, media, tmp_path / "media_out.csv")
    got = list(csv.DictReader((tmp_path / "media_out.csv").read_text().splitlines()))
    assert counts == {"rows": 3, "matched": 1, "outside": 0}  # by the full path only
    assert [r["individualID"] for r in got] == ["NY-0001", "", ""]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no filePath column, .*a, b"):
        write_camtrap_media(cat, bad, tmp_path / "x.csv")

    page = write_contact_sheet(cat, images, tmp_path / "sheet" / "index.html").read_text()
    assert "<script" not in page and "Leo/&lt;b&gt;" in page
    assert 'src="../images/cam0/0.jpg"' in page
    singles = sum(len(i.images) == 1 for i in cat.identities)
    assert page.count("<section") == len(cat) - singles + (singles > 0)  # one "Unsorted"


def test_merge_and_split_are_answers_and_undo_reverts_each_as_a_whole(store, blobs):
    _, y, cs = blobs
    store.add_pairs([[0, 1]], sampler="aas", cycle=0)
    store.answer(1, "different" if y[0] != y[1] else "same")  # an ordinary answer first
    cat = build_catalogue(store, cs)
    a, b = _split_truths(cat, y)[0]
    rec = cat.merge(a.number, b.number, annotator="ann")
    assert rec["answers"] == 1
    merged = build_catalogue(store, cs)
    assert merged.identity(b.number) is merged.identity(a.number)
    big = merged.identity(a.number)
    gone = a.number if big.number == b.number else b.number
    with pytest.raises(ValueError, match="already one identity"):
        merged.merge(big.number, big.number)
    # a page that still shows the merged-away identity: refused, saying where it went
    for edit in (
        lambda: merged.merge(gone, big.number),
        lambda: merged.rename(gone, "Stale"),
        lambda: merged.mark_checked(gone),
        lambda: merged.split(gone, big.images[:1]),
    ):
        with pytest.raises(StaleIdentity, match=f"merged into {big.code}; nothing was changed"):
            edit()
    out = [int(big.images[-1]), int(big.images[-2])]
    rec = merged.split(big.number, out)
    # k "different" answers against the photo that anchors what stays, k - 1 "same" joining
    # the photos taken out (one may already be an answer): O(k), whatever the identity's size
    assert rec["answers"] + rec["unchanged"] == 2 * len(out) - 1
    after = build_catalogue(store, cs)
    assert after.numbers[out[0]] == after.numbers[out[1]]
    assert after.verified[out].all()  # joined by the split's answers
    # the photos left in place stay apart from those taken out (0 alone may follow the
    # graph: its answer with 1 can keep it from the side that holds 1)
    stayed = [int(k) for k in big.images if k not in out and k not in (0, 1)]
    assert stayed and all(after.numbers[k] != after.numbers[out[0]] for k in stayed)
    c = store.constraints()
    assert c.is_consistent
    # one undo takes the whole split back, the next the merge, the next the plain answer
    assert store.undo()["undone_answers"] == rec["answers"]
    assert np.array_equal(build_catalogue(store, cs).numbers, merged.numbers)
    assert store.undo()["operation"] is not None
    assert np.array_equal(build_catalogue(store, cs).numbers, cat.numbers)
    assert store.undo()["operation"] is None and len(store.constraints()) == 0
    assert [o for o in store._read("SELECT kind FROM operations")] == [("merge",), ("split",)]
    with pytest.raises(ValueError, match="must be some of NY-"):
        after.split(big.number, [10**6])
    with pytest.raises(ValueError, match="every image out"):
        one = min(after.identities, key=lambda i: len(i.images))
        after.split(one.number, one.images)


def test_link_pairs_ask_named_identities_first_then_by_similarity(store, blobs):
    from aas_core.catalogue import link_pairs

    X, _, cs = blobs
    cat = build_catalogue(store, cs)
    new = np.arange(280, 300)  # treat the last 20 as this season's
    pairs, sims = link_pairs(cat, cs.X, new)
    assert len(pairs) == 20 and set(pairs[:, 1].tolist()) == set(new.tolist())
    assert (pairs[:, 0] < 280).all() and np.all(np.diff(sims) <= 1e-12)
    # each pair's earlier image is the most similar earlier image of the nearest identity
    target = cat.identity(int(cat.numbers[pairs[0, 0]]))
    cat.rename(target.number, "Asha")
    named = build_catalogue(store, cs)
    p2, s2 = link_pairs(named, cs.X, new)
    first_named = [named.identity(int(named.numbers[i])).named for i in p2[:, 0]]
    assert first_named == sorted(first_named, reverse=True) and first_named[0]


def test_a_merge_or_split_that_contradicts_earlier_answers_changes_nothing(store, blobs):
    _, _, cs = blobs
    cat = build_catalogue(store, cs)
    a, b = cat.identities[0], cat.identities[1]
    i, j = int(a.images[0]), int(b.images[0])
    store.add_pairs([[i, j]], sampler="aas", cycle=0)
    store.answer(1, "different")
    before = store.answers(history=True)
    with pytest.raises(ValueError, match=r"would be one individual.*answer 1: .* different"):
        cat.merge(a.number, b.number)
    assert store.answers(history=True) == before  # the refused merge wrote nothing
    big = max(cat.identities, key=lambda x: len(x.images))
    k, m = int(big.images[0]), int(big.images[1])
    store.add_pairs([[k, m]], sampler="aas", cycle=0)
    store.answer(2, "same")
    before = store.answers(history=True)
    with pytest.raises(ValueError, match="would be two individuals.*nothing was changed"):
        build_catalogue(store, cs).split(big.number, [m])
    assert store.answers(history=True) == before
    assert store._read("SELECT COUNT(*) FROM operations") == [(0,)]
