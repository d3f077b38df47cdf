"""Catalogue edits stored as edits, and undo per person and per page (issue 23, items 4-5)."""

import importlib.util
import sqlite3
from contextlib import closing

import numpy as np
import pytest

from aas_core.annotate import AnnotationStore, NothingToUndo
from aas_core.catalogue import StaleIdentity, build_catalogue
from aas_core.catalogue.records import MAX_ANCHORS, anchor_sample
from aas_core.loop import cluster_features

web = pytest.mark.skipif(
    importlib.util.find_spec("flask") is None, reason="the server needs the [web] extra"
)


def _rows(path) -> dict:
    with closing(sqlite3.connect(path)) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


@pytest.fixture(scope="module")
def one_blob():
    """An embedding that puts nearly all of 1,200 photos in one identity."""
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(1200, 16)) * 0.05 + np.eye(16)[0]).astype(np.float32)
    return X, cluster_features(X, k1=10, n_threads=1)


@pytest.fixture
def big_store(tmp_path, one_blob):
    X, _ = one_blob
    s = AnnotationStore.create(tmp_path / "run.sqlite", [f"{k}.jpg" for k in range(len(X))])
    yield s
    s.close()


def test_a_split_out_of_a_large_identity_writes_rows_in_proportion_to_the_edit(big_store, one_blob):
    _, cs = one_blob
    cat = build_catalogue(big_store, cs)
    big = max(cat.identities, key=lambda i: len(i.images))
    assert len(big.images) > 3 * MAX_ANCHORS
    before = _rows(big_store.path)
    held = big_store._read("SELECT COUNT(*) FROM anchors WHERE identity_id = ?", (big.number,))
    assert held[0][0] == MAX_ANCHORS  # a sample, not every photo
    out = big.images[5:15]
    rec = cat.split(big.number, out)
    after = build_catalogue(big_store, cs)
    grown = {t: n - before[t] for t, n in _rows(big_store.path).items() if n != before[t]}
    # 2k - 1 answers (not k x (n - k)), the photos that stayed once, at most one new anchor
    # sample for the rest and one for the photos taken out
    assert rec["answers"] == 2 * len(out) - 1 == grown["answers"]
    assert grown["operation_photos"] == len(big.images) - len(out)
    assert grown.get("anchors", 0) <= MAX_ANCHORS + len(out)
    assert after.numbers[out[0]] != big.number and len(np.unique(after.numbers[out])) == 1
    assert after.identity(big.number).images.tolist() == np.setdiff1d(big.images, out).tolist()
    # a split is one edit in the progress, never 19 answered questions, never a question
    p = big_store.progress()
    assert (p["edits"], p["edit_answers"], p["answered"], p["pairs"]) == (1, 19, 0, 0)
    assert big_store.next_pair() is None
    big_store.undo()
    assert big_store.next_pair() is None and big_store.progress()["remaining"] == 0
    assert big_store.progress()["edits"] == 0
    back = build_catalogue(big_store, cs)
    assert back.identity(big.number).images.tolist() == big.images.tolist()


def test_anchor_samples_are_spread_fixed_and_change_only_where_photos_change():
    images = np.arange(0, 40_000, 2, dtype=np.int64)
    sample = anchor_sample(images)
    assert len(sample) == MAX_ANCHORS and np.isin(sample, images).all()
    assert np.array_equal(sample, anchor_sample(images[::-1].copy()[::-1]))  # fixed
    assert sample.min() < 4_000 and sample.max() > 36_000  # spread, not the first rows
    kept = np.setdiff1d(images, images[:100])  # 100 photos leave
    moved = np.setdiff1d(sample, anchor_sample(kept))
    assert len(moved) == np.isin(sample, images[:100]).sum()  # only the ones that left
    small = np.array([3, 9, 11])
    assert anchor_sample(small).tolist() == [3, 9, 11]


def test_names_given_before_names_had_photos_still_use_the_identitys_full_anchor_set(
    big_store,
):
    # a version 2 name: no name_photos rows; its identity's anchors were every photo then
    members = list(range(400))
    with closing(sqlite3.connect(big_store.path)) as c:
        c.execute("INSERT INTO identities (id, created_at) VALUES (1, 't')")
        c.executemany(
            "INSERT INTO anchors (identity_id, image, set_at) VALUES (1, ?, 1)",
            [(i,) for i in members],
        )
        sample = anchor_sample(np.array(members[:350]))
        c.executemany(
            "INSERT INTO anchors (identity_id, image, set_at) VALUES (1, ?, 2)",
            [(int(i),) for i in sample],
        )
        c.execute(
            "INSERT INTO names (identity_id, name, annotator, named_at) "
            "VALUES (1, 'Zuri', 'a', 't')"
        )
        c.commit()
    from aas_core.catalogue.records import load_records

    rec = load_records(big_store)
    assert rec.anchors[1] == set(sample.tolist())
    assert rec.name_photos[1] == set(members)  # the full set, not the sample written later


def post(client, url, body=None):
    return client.post(url, json=body if body is not None else {})


@web
def test_one_persons_undo_never_takes_back_anothers_answer(catalogue_run):
    client, store, _ = catalogue_run
    store.add_pairs([[4, 5]], sampler="aas", cycle=0)
    post(client, "/api/answer", {"pair_id": 1, "answer": "same", "annotator": "alice"})
    post(client, "/api/answer", {"pair_id": 2, "answer": "different", "annotator": "bob"})
    r = post(client, "/api/undo", {"annotator": "alice", "page": "annotate"})
    assert r.status_code == 200 and r.get_json()["undone"]["pair_id"] == 1
    assert store.pair(2)["answer"]["annotator"] == "bob"  # Bob's answer stands
    r = post(client, "/api/undo", {"annotator": "alice", "page": "annotate"})
    assert r.status_code == 409 and "by 'alice'" in r.get_json()["error"]
    # Alice answers, Bob changes that answer in the conflict review: Alice's undo would
    # take back nothing, so it is refused and nothing changes
    post(client, "/api/answer", {"pair_id": 3, "answer": "same", "annotator": "alice"})
    r = post(
        client,
        "/api/answer",
        {"pair_id": 3, "answer": "different", "annotator": "bob", "replace": True},
    )
    assert r.status_code == 200
    history = store.answers(history=True)
    r = post(client, "/api/undo", {"annotator": "alice", "page": "annotate"})
    assert r.status_code == 409 and "changed since to 'different' by 'bob'" in r.get_json()["error"]
    assert store.answers(history=True) == history
    r = post(client, "/api/undo", {"annotator": "alice", "page": "elsewhere"})
    assert r.status_code == 400 and "'page'" in r.get_json()["error"]


@web
def test_the_catalogue_pages_undo_takes_back_its_merge_not_a_pair_answered_meanwhile(
    catalogue_run,
):
    client, store, _ = catalogue_run
    ids = client.get("/api/catalogue").get_json()["identities"]
    a, b = ids[0], ids[1]
    r = post(client, "/api/catalogue/merge", {"a": a["number"], "b": b["number"]})
    assert r.status_code == 200
    # the same person answers a pair question in another tab meanwhile
    post(client, "/api/answer", {"pair_id": 1, "answer": "same"})
    r = post(client, "/api/undo", {"page": "catalogue"})
    assert r.status_code == 200
    undone = r.get_json()["undone"]
    assert undone["origin"] == "merge" and undone["operation"] is not None
    assert store.pair(1)["answer"]["answer"] == "same"  # the pair answer stands
    sizes = {i["number"]: i["size"] for i in client.get("/api/catalogue").get_json()["identities"]}
    assert sizes[a["number"]] == a["size"] and sizes[b["number"]] == b["size"]
    r = post(client, "/api/undo", {"page": "catalogue"})
    assert r.status_code == 409  # no edit of theirs is left; the pair answer is not one


@web
def test_a_stale_tabs_edit_of_a_merged_away_identity_is_refused_with_409(catalogue_run):
    client, store, _ = catalogue_run
    ids = client.get("/api/catalogue").get_json()["identities"]  # what the stale tab shows
    a, b = ids[0], ids[1]
    r = post(client, "/api/catalogue/merge", {"a": a["number"], "b": b["number"]})
    assert r.status_code == 200
    now = {i["number"]: i for i in client.get("/api/catalogue").get_json()["identities"]}
    survivor = a if a["number"] in now else b
    gone = b if survivor is a else a
    assert gone["number"] not in now
    names = store._read("SELECT COUNT(*) FROM names")[0][0]
    for url, body in (
        ("/api/catalogue/rename", {"number": gone["number"], "name": "Zuri"}),
        ("/api/catalogue/check", {"number": gone["number"]}),
        ("/api/catalogue/merge", {"a": gone["number"], "b": ids[2]["number"]}),
        (
            "/api/catalogue/split",
            {"number": gone["number"], "images": [gone["images"][0]["index"]]},
        ),
    ):
        r = post(client, url, body)
        assert r.status_code == 409, url
        assert (
            f"{gone['code']} is no longer an identity: it was merged into" in r.get_json()["error"]
        )
        assert survivor["code"] in r.get_json()["error"]
    assert store._read("SELECT COUNT(*) FROM names")[0][0] == names  # the survivor not renamed
    assert store._read("SELECT COUNT(*) FROM operations")[0][0] == 1
    # photos the tab showed in an identity that has lost them since: 409 too
    third = now[ids[2]["number"]]
    moved = post(
        client,
        "/api/catalogue/split",
        {"number": third["number"], "images": [third["images"][0]["index"]]},
    )
    assert moved.status_code == 200
    r = post(
        client,
        "/api/catalogue/split",
        {"number": third["number"], "images": [third["images"][0]["index"]]},
    )
    assert r.status_code == 409 and "no longer in" in r.get_json()["error"]


def test_undo_refuses_unknown_origins(big_store):
    with pytest.raises(ValueError, match="'origins' must be some of"):
        big_store.undo(origins=("pair", "rename"))
    with pytest.raises(NothingToUndo):
        big_store.undo(origins="merge")


def test_a_split_of_an_identity_merged_away_meanwhile_is_stale(big_store, one_blob):
    _, cs = one_blob
    cat = build_catalogue(big_store, cs)
    with pytest.raises(StaleIdentity, match="no longer an identity"):
        # an identity number recorded in the store that no cluster holds now
        with closing(sqlite3.connect(big_store.path)) as c:
            top = c.execute("SELECT MAX(id) FROM identities").fetchone()[0]
            c.execute("INSERT INTO identities (id, created_at) VALUES (?, 't')", (top + 1,))
            c.commit()
        cat.rename(top + 1, "Ghost")
    with pytest.raises(KeyError, match="no identity 99999"):
        cat.rename(99999, "Nobody")


@web
def test_an_undo_without_any_name_is_the_users_own_never_anyones(tmp_path):
    # a server started without --annotator, a page whose name box is empty
    from _annotate import make_run
    from aas_core.annotate.server import create_app

    store_path, images = make_run(tmp_path)
    with AnnotationStore.open(store_path) as store:
        client = create_app(store, images).test_client()
        client.post("/api/answer", json={"pair_id": 1, "answer": "same", "annotator": "alice"})
        for body in ({}, {"annotator": ""}, {"annotator": "", "page": "annotate"}):
            r = client.post("/api/undo", json=body)
            assert r.status_code == 409, body  # Alice's answer is not the user's to undo
        assert store.pair(1)["answer"]["annotator"] == "alice"
        client.post("/api/answer", json={"pair_id": 2, "answer": "same"})  # the user's own
        r = client.post("/api/undo", json={"annotator": ""})
        assert r.status_code == 200 and r.get_json()["undone"]["pair_id"] == 2


@web
@pytest.mark.parametrize("number", [2**63, 10**30, -(2**63) - 1, 0, -1])
def test_identity_numbers_beyond_any_identity_are_400_never_500(catalogue_run, number):
    client, store, _ = catalogue_run
    for url, body in (
        ("/api/catalogue/rename", {"number": number, "name": "x"}),
        ("/api/catalogue/check", {"number": number}),
        ("/api/catalogue/merge", {"a": number, "b": 1}),
        ("/api/catalogue/merge", {"a": 1, "b": number}),
        ("/api/catalogue/split", {"number": number, "images": [0]}),
    ):
        r = client.post(url, json=body)
        assert r.status_code == 400, (url, body)
        assert "must be an identity number" in r.get_json()["error"]


def test_an_edit_of_a_number_no_store_could_hold_is_unknown_not_an_overflow(big_store, one_blob):
    _, cs = one_blob
    cat = build_catalogue(big_store, cs)
    for number in (2**63, 10**30, -5):
        with pytest.raises(KeyError, match="no identity"):
            cat.rename(number, "x")
