"""The annotation server's JSON API: in process (Flask's test client) and as a real process
(kill -9 durability, two tabs at once, two servers on one store)."""

import json
import os
import sqlite3
import threading
from contextlib import closing

import numpy as np
import pytest

pytest.importorskip("flask", reason="the annotation server needs the [web] extra")

import aas_core as aas  # noqa: E402
from _annotate import Server, make_run, write_png  # noqa: E402
from aas_core.annotate import AnnotationStore  # noqa: E402
from aas_core.annotate.server import Proposer, create_app  # noqa: E402


def post(client, path, body=None, **kw):
    return client.post(path, json=body if body is not None else {}, **kw)


def test_next_answer_progress_and_the_end_of_the_queue(run):
    client, store, _ = run
    r = client.get("/api/next")
    assert r.status_code == 200
    p = r.get_json()
    assert p["pair_id"] == 1 and p["remaining"] == 5
    assert p["a"] == {
        "index": 0,
        "url": "/images/0",
        "path": "ind0/img0.png",
        "exists": True,
        "problem": None,
    }
    assert p["b"]["index"] == 1
    r = post(client, "/api/answer", {"pair_id": 1, "answer": "same"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["answer"]["answer"] == "same" and body["answer"]["annotator"] == "tester"
    assert body["conflict"] is None and body["unchanged"] is False
    assert body["progress"]["answered"] == 1 and body["progress"]["remaining"] == 4
    # stored before the reply: a fresh connection sees it
    with closing(sqlite3.connect(store.path)) as c:
        assert c.execute("SELECT pair_id, answer FROM answers").fetchall() == [(1, "same")]
    for pid, ans in ((2, "different"), (3, "skip"), (4, "same"), (5, "same")):
        assert client.get("/api/next").get_json()["pair_id"] == pid
        assert post(client, "/api/answer", {"pair_id": pid, "answer": ans}).status_code == 200
    r = client.get("/api/next")
    assert r.status_code == 204 and r.data == b""
    prog = client.get("/api/progress").get_json()
    assert {k: prog[k] for k in ("pairs", "answered", "same", "different", "skipped")} == {
        "pairs": 5,
        "answered": 4,
        "same": 3,
        "different": 1,
        "skipped": 1,
    }
    assert prog["remaining"] == 0 and prog["conflicts"] == 0


def test_undo_reverts_the_last_answer_and_stops_at_the_beginning(run):
    client, store, _ = run
    post(client, "/api/answer", {"pair_id": 1, "answer": "same"})
    post(client, "/api/answer", {"pair_id": 2, "answer": "different", "annotator": "ann"})
    r = post(client, "/api/undo", {"annotator": "ann"})
    assert r.status_code == 200
    assert r.get_json()["undone"]["pair_id"] == 2 and r.get_json()["progress"]["undone"] == 1
    assert client.get("/api/next").get_json()["pair_id"] == 2
    r = post(client, "/api/undo", {"annotator": "ann"})  # ann's own answers only
    assert r.status_code == 409 and "by 'ann'" in r.get_json()["error"]
    assert post(client, "/api/undo").status_code == 200  # the server's annotator's answer
    before = store.answers(history=True)
    r = post(client, "/api/undo")
    assert r.status_code == 409 and "nothing to undo" in r.get_json()["error"]
    r = client.post("/api/undo")  # no body at all: also fine, also nothing changes
    assert r.status_code == 415
    assert store.answers(history=True) == before and len(before) == 2  # kept, marked undone
    assert client.get("/api/next").get_json()["pair_id"] == 1


def test_an_answer_that_contradicts_earlier_ones_is_flagged_and_can_be_changed(run):
    client, store, _ = run
    store.add_pairs([[0, 2]], sampler="test", cycle=1)  # pair 6
    post(client, "/api/answer", {"pair_id": 1, "answer": "same"})  # 0~1
    post(client, "/api/answer", {"pair_id": 5, "answer": "same"})  # 1~2
    r = post(client, "/api/answer", {"pair_id": 6, "answer": "different"})  # 0 vs 2?
    c = r.get_json()["conflict"]
    assert c["implied"] == "same" and c["pair_id"] == 6
    assert [(b["pair_id"], b["answer"]) for b in c["because"]] == [(1, "same"), (5, "same")]
    assert c["because"][0]["a"]["url"] == "/images/0"
    assert r.get_json()["progress"]["conflicts"] == 1
    listed = client.get("/api/conflicts").get_json()["conflicts"]
    assert [x["answer_id"] for x in listed] == [c["answer_id"]]
    # a different answer for an answered pair needs "replace" (another tab must not overwrite)
    r = post(client, "/api/answer", {"pair_id": 5, "answer": "different"})
    assert r.status_code == 409 and r.get_json()["current"]["answer"] == "same"
    # the same answer again writes nothing
    r = post(client, "/api/answer", {"pair_id": 5, "answer": "same"})
    assert r.status_code == 200 and r.get_json()["unchanged"] is True
    # review: change the wrong earlier answer
    r = post(client, "/api/answer", {"pair_id": 5, "answer": "different", "replace": True})
    assert r.status_code == 200 and r.get_json()["answer"]["replaces"] is not None
    assert r.get_json()["conflict"] is None and r.get_json()["progress"]["conflicts"] == 0
    assert client.get("/api/conflicts").get_json() == {"conflicts": []}
    pair = client.get("/api/pairs/5").get_json()
    assert pair["answer"]["answer"] == "different" and pair["b"]["index"] == 2
    assert len(store.answers(history=True)) == 4  # the replaced answer is kept as history


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"data": "{bad json", "content_type": "application/json"}, 400, "malformed JSON"),
        ({"data": b"\xff\xfe", "content_type": "application/json"}, 400, "malformed JSON"),
        ({"json": [1, "same"]}, 400, "must be a JSON object"),
        ({"json": {"answer": "same"}}, 400, "'pair_id' must be an integer; got None"),
        ({"json": {"pair_id": "1", "answer": "same"}}, 400, "'pair_id' must be an integer"),
        ({"json": {"pair_id": True, "answer": "same"}}, 400, "'pair_id' must be an integer"),
        ({"json": {"pair_id": 1.0, "answer": "same"}}, 400, "'pair_id' must be an integer"),
        ({"json": {"pair_id": 1, "answer": "yes"}}, 400, "'answer' must be one of"),
        ({"json": {"pair_id": 1, "answer": "same", "replace": 1}}, 400, "'replace' must be"),
        ({"json": {"pair_id": 1, "answer": "same", "annotator": 5}}, 400, "'annotator'"),
        ({"json": {"pair_id": 999, "answer": "same"}}, 404, "unknown pair id 999"),
        ({"json": {"pair_id": -1, "answer": "same"}}, 404, "unknown pair id -1"),
        ({"json": {"pair_id": 2**63, "answer": "same"}}, 404, "unknown pair id 92233"),
        ({"json": {"pair_id": 10**30, "answer": "same"}}, 404, "unknown pair id 10000"),
        ({"json": {"pair_id": 1, "answer": "same", "annotator": "a\x00"}}, 400, "'annotator'"),
        ({"json": {"pair_id": 1, "answer": "same", "annotator": "\ud800"}}, 400, "'annotator'"),
        ({"data": "pair_id=1&answer=same"}, 415, "Content-Type: application/json"),
        ({"data": '{"pair_id": 1, "answer": "same"}', "content_type": "text/plain"}, 415, "JSON"),
        ({"json": {"pair_id": 1, "answer": "x" * 70000}}, 413, "Request Entity Too Large"),
    ],
)
def test_bad_answers_are_refused_clearly_and_write_nothing(run, kwargs, status, message):
    client, store, _ = run
    r = client.post("/api/answer", **kwargs)
    assert r.status_code == status
    assert message in r.get_json()["error"]
    assert store.answers(history=True) == []
    assert client.get("/api/next").get_json()["pair_id"] == 1  # the server goes on


@pytest.mark.parametrize(
    "path",
    [
        "/images/../../etc/passwd",
        "/images/..%2f..%2fetc%2fpasswd",
        "/images/%2e%2e/%2e%2e/etc/passwd",
        "/images//etc/passwd",
        "/images/0/../../../etc/passwd",
        "/images/-1",
        "/images/8",
        "/images/99999999999999999999999",
        "/images/1e3",
        "/images/0x1",
        "/images/ 1",
        "/images/%D9%A1",  # an Arabic-Indic digit one: not an index
        "/images/ind0/img0.png",
        "/images/",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/store.py",
        "/../run.sqlite",
    ],
)
def test_no_path_traversal(run, path):
    client, _, _ = run
    r = client.get(path)
    assert r.status_code in (403, 404)
    assert b"root:" not in r.data and b"import" not in r.data and b"SQLite" not in r.data


def test_images_are_served_only_from_inside_the_folder(run, tmp_path):
    client, store, images = run
    r = client.get("/images/0")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.data == (images / "ind0/img0.png").read_bytes()
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r.close()  # a streamed file
    # a missing image: a clear 404 naming the path, and the pair can still be answered
    r = client.get("/images/6")
    assert r.status_code == 404 and "ind3/img6.png" in r.get_json()["error"]
    store.add_pairs([[6, 0]], sampler="test", cycle=1)
    for pid in range(1, 6):
        post(client, "/api/answer", {"pair_id": pid, "answer": "skip"})
    nxt = client.get("/api/next").get_json()
    assert nxt["a"] == {
        "index": 0,
        "url": "/images/0",
        "path": "ind0/img0.png",
        "exists": True,
        "problem": None,
    }
    assert nxt["b"]["exists"] is False and nxt["b"]["path"] == "ind3/img6.png"
    assert (
        post(client, "/api/answer", {"pair_id": nxt["pair_id"], "answer": "same"}).status_code
        == 200
    )
    # a symlink inside the folder is the folder's: followed to a readable file anywhere
    elsewhere = tmp_path / "elsewhere.png"
    write_png(elsewhere, 1)
    link = images / "ind3" / "img7.png"
    link.unlink()
    link.symlink_to(elsewhere)
    r = client.get("/images/7")
    assert r.status_code == 200 and r.data == elsewhere.read_bytes()
    r.close()
    # a symlink loop and a link to nothing: refused, saying why, and the pair is still shown
    loop = images / "ind2" / "img5.png"
    loop.unlink()
    loop.symlink_to(loop)
    r = client.get("/images/5")
    assert r.status_code == 403 and "cannot be shown: unreadable" in r.get_json()["error"]
    gone = images / "ind1" / "img3.png"
    gone.unlink()
    gone.symlink_to(tmp_path / "deleted.png")
    r = client.get("/images/3")
    assert r.status_code == 404 and "target is missing" in r.get_json()["error"]
    store.add_pairs([[5, 3]], sampler="test", cycle=2)
    post(client, "/api/answer", {"pair_id": nxt["pair_id"], "answer": "skip", "replace": True})
    nxt = client.get("/api/next").get_json()
    assert nxt["a"]["exists"] is False and nxt["b"]["exists"] is False
    assert nxt["a"]["problem"] == "a symbolic link whose target is missing"
    assert nxt["b"]["problem"].startswith("unreadable: ")
    assert client.get("/api/next").get_json()["pair_id"] == nxt["pair_id"]
    store.add_pairs([[2, 6]], sampler="test", cycle=3)
    post(client, "/api/answer", {"pair_id": nxt["pair_id"], "answer": "skip"})
    nxt = client.get("/api/next").get_json()
    assert nxt["a"]["problem"] is None and nxt["a"]["exists"] is True
    assert nxt["b"]["problem"] == f"missing from {images.resolve()}"
    # unreadable photos (not as root, who reads everything)
    if os.geteuid() != 0:
        (images / "ind0" / "img1.png").chmod(0)
        assert client.get("/api/pairs/1").get_json()["b"]["problem"] == (
            "unreadable: permission denied"
        )
        assert client.get("/images/1").status_code == 403


def test_a_tampered_store_cannot_reach_outside_the_folder_or_serve_non_images(tmp_path):
    store_path, images = make_run(tmp_path)
    (images / "notes.html").write_text("<script>alert(1)</script>")
    with closing(sqlite3.connect(store_path)) as c:  # as if someone edited the file by hand
        c.execute("UPDATE images SET path = '../run.sqlite' WHERE idx = 0")
        c.execute("UPDATE images SET path = 'notes.html' WHERE idx = 1")
        c.commit()
    with AnnotationStore.open(store_path) as store:
        client = create_app(store, images).test_client()
        r = client.get("/images/0")
        assert r.status_code == 403 and b"SQLite" not in r.data
        assert "outside the photo folder" in r.get_json()["error"]
        r = client.get("/images/1")
        assert r.status_code == 415 and b"<script>" not in r.data
        nxt = client.get("/api/next").get_json()
        assert nxt["a"]["exists"] is False and nxt["a"]["problem"] == "outside the photo folder"
        assert nxt["b"]["problem"] == "not an image file type"


def test_the_page_and_its_assets_are_local(run):
    client, _, _ = run
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in html
        r = client.get(asset)
        assert r.status_code == 200 and b"http" not in r.data
        r.close()
    page.close()


def test_requests_for_other_host_names_are_refused(run):
    client, _, _ = run
    for host in (
        "evil.example:8765",
        "127.evil.example",  # a DNS-rebinding name that starts like a loopback address
        "127.0.0.1.nip.io:8765",
        "127.0.0.2",
        "localhost.",
        "localhost.evil.example",
        "[::1].evil",
        "",
    ):
        r = client.get("/api/progress", headers={"Host": host})
        assert r.status_code == 403, host
        assert "--allow-host" in r.get_json()["error"]
        r = client.post(
            "/api/answer", json={"pair_id": 1, "answer": "same"}, headers={"Host": host}
        )
        assert r.status_code == 403, host
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "127.0.0.1", "LOCALHOST"):
        assert client.get("/api/progress", headers={"Host": host}).status_code == 200


def test_allowed_host_names(tmp_path):
    store_path, images = make_run(tmp_path)
    store = AnnotationStore.open(store_path)
    try:
        app = create_app(store, images, allowed_hosts=["annotate.lab", "192.168.1.5"])
        client = app.test_client()
        for host in ("annotate.lab:8765", "192.168.1.5", "localhost"):
            assert client.get("/api/progress", headers={"Host": host}).status_code == 200
        assert client.get("/api/progress", headers={"Host": "evil.lab"}).status_code == 403
    finally:
        store.close()


def test_unknown_routes_and_methods_answer_json(run):
    client, _, _ = run
    r = client.get("/api/nope")
    assert r.status_code == 404 and "error" in r.get_json()
    r = client.get("/api/answer")
    assert r.status_code == 405 and "error" in r.get_json()
    assert client.get("/api/pairs/99").status_code == 404
    r = client.get("/api/pairs/99999999999999999999999")  # beyond 64 bits: still no such pair
    assert r.status_code == 404 and "unknown pair id" in r.get_json()["error"]


@pytest.mark.parametrize("name", ["a" * 201, "a\x00", "\ud800", 5])
def test_undo_with_a_bad_annotator_name_is_refused_and_changes_nothing(run, name):
    client, store, _ = run
    post(client, "/api/answer", {"pair_id": 1, "answer": "same"})
    r = post(client, "/api/undo", {"annotator": name})
    assert r.status_code == 400 and "'annotator'" in r.get_json()["error"]
    assert [h["undone"] for h in store.answers(history=True)] == [False]


def test_a_bad_default_annotator_name_is_refused_when_the_app_is_built(run):
    _, store, images = run
    # e.g. 'aas annotate --annotator' given bytes that are not UTF-8 (a lone surrogate)
    with pytest.raises(ValueError, match="'annotator' must be valid Unicode"):
        create_app(store, images, annotator="ann\udcff")


def test_propose_tops_up_an_empty_queue_from_the_embeddings(tmp_path):
    X, y = aas.datasets.make_reid_blobs(120, d=24, seed=3)
    images = tmp_path / "images"
    images.mkdir()
    with AnnotationStore.create(tmp_path / "run.sqlite", [f"{k}.png" for k in range(len(X))]) as s:
        keep = X.copy()
        proposer = Proposer(
            X,
            aas.sampling.AmbiguityAwareSampler(),
            name="aas",
            budget=6,
            seed=0,
            cluster_args={"k1": 10, "n_threads": 1},
        )
        client = create_app(s, images, proposer=proposer).test_client()
        first = client.get("/api/next")
        assert first.status_code == 200
        pairs = s.pairs()
        assert 0 < len(pairs) <= 6 and {p["sampler"] for p in pairs} == {"aas"}
        assert {p["cycle"] for p in pairs} == {0}
        assert client.get("/api/progress").get_json()["message"].startswith("cycle 0:")
        for p in pairs:  # answer the first cycle truthfully
            ans = "same" if y[p["i"]] == y[p["j"]] else "different"
            post(client, "/api/answer", {"pair_id": p["pair_id"], "answer": ans})
        r = client.get("/api/next")  # the queue is empty: a second cycle
        assert r.status_code == 200
        later = [p for p in s.pairs() if p["cycle"] == 1]
        assert later and r.get_json()["pair_id"] == later[0]["pair_id"]
        known = {(p["i"], p["j"]) for p in pairs}
        assert not known & {(p["i"], p["j"]) for p in later}  # never asked twice
        assert np.array_equal(X, keep)


def test_cant_tell_through_the_api_and_the_proposer_fills_its_budget_with_new_pairs(tmp_path):
    X, _ = aas.datasets.make_reid_blobs(8, d=8, seed=1)
    images = tmp_path / "images"
    images.mkdir()
    with AnnotationStore.create(tmp_path / "run.sqlite", [f"{k}.png" for k in range(8)]) as s:
        s.add_pairs([[0, 1], [2, 3]], sampler="manual", cycle=0)
        proposer = Proposer(
            X,
            aas.sampling.RandomPairSampler(),
            name="random",
            budget=26,
            seed=0,
            cluster_args={"k1": 3, "k2": 1, "min_samples": 2, "n_threads": 1},
        )
        client = create_app(s, images, proposer=proposer).test_client()
        r = post(client, "/api/answer", {"pair_id": 1, "answer": "cant_tell"})
        assert r.status_code == 200
        body = r.get_json()
        assert body["answer"]["answer"] == "cant_tell" and body["conflict"] is None
        assert (body["progress"]["cant_tell"], body["progress"]["answered"]) == (1, 0)
        post(client, "/api/answer", {"pair_id": 2, "answer": "skip"})
        assert len(s.constraints()) == 0  # neither is a constraint
        # the queue is empty: 28 pairs in all, 2 settled, so exactly 26 new ones, none of
        # them a pair asked before (the sampler may propose those again: no constraint)
        assert client.get("/api/next").status_code == 200
        later = [(p["i"], p["j"]) for p in s.pairs() if p["cycle"] == 1]
        assert len(later) == 26 and not {(0, 1), (2, 3)} & set(later)
        r = post(client, "/api/answer", {"pair_id": 1, "answer": "maybe", "replace": True})
        assert r.status_code == 400 and "'cant_tell'" in r.get_json()["error"]


def test_low_water_tops_up_the_queue_in_the_background_before_it_runs_dry(tmp_path):
    X, y = aas.datasets.make_reid_blobs(120, d=24, seed=3)
    images = tmp_path / "images"
    images.mkdir()
    with AnnotationStore.create(tmp_path / "run.sqlite", [f"{k}.png" for k in range(len(X))]) as s:
        proposer = Proposer(
            X,
            aas.sampling.AmbiguityAwareSampler(),
            name="aas",
            budget=8,
            seed=0,
            cluster_args={"k1": 10, "n_threads": 1},
        )
        client = create_app(s, images, proposer=proposer, low_water=3).test_client()
        assert client.get("/api/next").status_code == 200  # the first round, on demand
        first = s.pairs()
        for p in first[: len(first) - 3]:  # leave exactly low_water pairs unanswered
            ans = "same" if y[p["i"]] == y[p["j"]] else "different"
            post(client, "/api/answer", {"pair_id": p["pair_id"], "answer": ans})
        for t in threading.enumerate():
            if t.name == "aas-propose":
                t.join(60)
        later = [p for p in s.pairs() if p["cycle"] == 1]
        assert later, "the queue was topped up before it ran dry"
        assert s.progress()["remaining"] == 3 + len(later)


# ---- the real server process ---------------------------------------------------------------


def test_ctrl_c_ends_with_one_line_of_what_the_session_did_and_no_queue_chatter(tmp_path):
    import concurrent.futures

    store_path, images = make_run(tmp_path)
    with Server(store_path, images) as srv:
        for pid, ans in ((1, "same"), (2, "skip")):
            assert srv.request("POST", "/api/answer", {"pair_id": pid, "answer": ans})[0] == 200
        # many requests at once, as a page loading its thumbnails: waitress queues them
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: srv.request("GET", "/api/progress"), range(64)))
        srv.stop()
        out = srv.output()
    assert srv.proc.returncode == 0 and "Traceback" not in out
    assert "Task queue depth" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("aas annotate: stopped. This session: 2 answers, 0 edits")
    assert f"1 answered in all, 3 questions left. Everything is stored in {store_path}." in last


def test_kill_9_between_answers_loses_nothing_and_resumes_at_the_right_pair(tmp_path):
    store_path, images = make_run(tmp_path)
    given = []
    with Server(store_path, images) as srv:
        pid_before = srv.proc.pid
        for pid, ans in ((1, "same"), (2, "different")):
            status, body = srv.request("POST", "/api/answer", {"pair_id": pid, "answer": ans})
            assert status == 200
            given.append((pid, ans))
        srv.kill9()  # no shutdown, no flush, no goodbye
        assert srv.proc.returncode == -9
    with Server(store_path, images) as srv:
        assert srv.proc.pid != pid_before
        status, prog = srv.request("GET", "/api/progress")
        assert (prog["answered"], prog["remaining"]) == (2, 3)
        status, nxt = srv.request("GET", "/api/next")
        assert nxt["pair_id"] == 3  # resumes at the first unanswered pair
        srv.request("POST", "/api/answer", {"pair_id": 3, "answer": "skip"})
        srv.request("POST", "/api/answer", {"pair_id": 4, "answer": "same"})
        status, undone = srv.request("POST", "/api/undo")
        assert status == 200 and undone["undone"]["pair_id"] == 4
        given.append((3, "skip"))
        srv.kill9()
    with Server(store_path, images) as srv:
        status, nxt = srv.request("GET", "/api/next")
        assert nxt["pair_id"] == 4  # the undo survived too
    with AnnotationStore.open(store_path) as store:
        assert [(a["pair_id"], a["answer"]) for a in store.answers()] == given
        hist = store.answers(history=True)
        assert [(h["pair_id"], h["undone"]) for h in hist] == [
            (1, False),
            (2, False),
            (3, False),
            (4, True),
        ]


def test_two_tabs_answering_at_once(tmp_path):
    store_path, images = make_run(tmp_path, n_images=40, pairs=[(k, k + 1) for k in range(0, 39)])
    with Server(store_path, images) as srv:
        # two tabs show the same pair and answer it at the same moment, differently
        barrier = threading.Barrier(2)
        results = {}

        def tab(name, answer):
            barrier.wait()
            results[name] = srv.request("POST", "/api/answer", {"pair_id": 1, "answer": answer})

        threads = [
            threading.Thread(target=tab, args=a) for a in (("A", "same"), ("B", "different"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results.values())
        assert statuses == [200, 409]  # one wins, the other is told, nothing overwritten
        loser = next(r[1] for r in results.values() if r[0] == 409)
        winner = next(r[1] for r in results.values() if r[0] == 200)
        assert loser["current"]["answer"] == winner["answer"]["answer"]
        # two tabs racing through different pairs: every answer stored once
        errors = []

        def worker(pids, answer):
            for pid in pids:
                status, _ = srv.request("POST", "/api/answer", {"pair_id": pid, "answer": answer})
                if status != 200:
                    errors.append((pid, status))

        threads = [
            threading.Thread(target=worker, args=(range(2, 40, 2), "same")),
            threading.Thread(target=worker, args=(range(3, 40, 2), "different")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        status, prog = srv.request("GET", "/api/progress")
        assert (prog["answered"], prog["remaining"]) == (39, 0)
    with AnnotationStore.open(store_path) as store:
        hist = store.answers(history=True)
        assert len(hist) == 39 and len({h["pair_id"] for h in hist}) == 39
        assert all(
            h["answer"] == ("same" if h["pair_id"] % 2 == 0 else "different") for h in hist[1:]
        )


def test_a_second_server_on_the_same_store_is_refused(tmp_path):
    store_path, images = make_run(tmp_path)
    with Server(store_path, images) as first:
        first.request("POST", "/api/answer", {"pair_id": 1, "answer": "same"})
        with pytest.raises(
            RuntimeError, match="already in use by another aas annotate or aas catalogue server"
        ) as e:
            Server(store_path, images)
        assert f"pid {first.proc.pid}" in str(e.value)
        status, prog = first.request("GET", "/api/progress")  # the first one is unaffected
        assert status == 200 and prog["answered"] == 1
        status, _ = first.request("POST", "/api/answer", {"pair_id": 2, "answer": "same"})
        assert status == 200
    with Server(store_path, images) as again:  # once it stopped, a new one may start
        assert again.request("GET", "/api/progress")[1]["answered"] == 2


def test_the_server_refuses_bad_set_ups(tmp_path):
    store_path, images = make_run(tmp_path)
    cases = [
        (["--images", str(tmp_path / "nope")], "is not a folder"),
        (["--store", str(tmp_path / "missing.sqlite")], "does not exist"),
        (["--create", "--from-dir"], "already exists"),
        (["--image-list", "x.txt"], "only go with --create"),
        (["--propose"], "--propose needs the embeddings"),
        (["--calibrate", "10"], "--calibrate 10 asks its pairs through --propose"),
        (["--propose", "--calibrate", "10", "--eps", "0.5"], "leave --eps at auto"),
    ]
    from aas_core import cli

    for extra, message in cases:
        argv = ["annotate", "--store", str(store_path), "--images", str(images), "--no-serve"]
        # later options win in argparse, so --store/--images above can be overridden
        rc, err = _run_cli(cli, argv + extra)
        assert rc == 2 and message in err, (extra, err)
    assert json.loads(json.dumps(AnnotationStore.open(store_path).progress()))["pairs"] == 5


def _run_cli(cli, argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    return rc, err.getvalue()


def test_create_from_dir_then_propose_into_the_store_then_refine(tmp_path, capsys):
    from aas_core import cli

    X, y = aas.datasets.make_reid_blobs(80, d=24, seed=1)
    images = tmp_path / "images"
    for k in range(len(X)):
        write_png(images / f"{k // 10}" / f"{k % 10:02d}.png", k, size=(8, 8))
    emb = tmp_path / "X.npy"
    np.save(emb, X)
    store_path = tmp_path / "run.sqlite"
    base = ["annotate", "--store", str(store_path), "--images", str(images)]
    rc = cli.main([*base, "--create", "--from-dir", "--embeddings", str(emb), "--no-serve"])
    assert rc == 0 and "created" in capsys.readouterr().out
    (images / "0" / "00.png").unlink()
    assert cli.main([*base, "--no-serve"]) == 0
    assert "1 of 80 images are not under" in capsys.readouterr().out
    with AnnotationStore.open(store_path) as s:
        assert s.image_paths()[:3] == ["0/00.png", "0/01.png", "0/02.png"]
        assert s.embeddings_path == emb.resolve()
    # pairs go into the store; the CSV only when asked for
    rc = cli.main(["propose", "--store", str(store_path), "--budget", "10", "--k1", "10"])
    assert rc == 0 and "queued" in capsys.readouterr().out
    assert not (tmp_path / "pairs.csv").exists()
    with AnnotationStore.open(store_path) as s:
        pairs = s.pairs()
        assert 0 < len(pairs) <= 10 and {p["cycle"] for p in pairs} == {0}
        for p in pairs:
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
        paths = s.image_paths()
    out = tmp_path / "ids.csv"
    rc = cli.main(["refine", "--store", str(store_path), "--k1", "10", "--out", str(out)])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "image_path,identity" and len(lines) == len(X) + 1
    ids = {row.split(",")[0]: int(row.split(",")[1]) for row in lines[1:]}
    assert list(ids) == paths
    for p in pairs:  # every answer holds in the export
        same = ids[paths[p["i"]]] == ids[paths[p["j"]]]
        assert same == (y[p["i"]] == y[p["j"]])
    # the store and --constraints cannot both give the answers
    rc, err = _run_cli(
        cli, ["refine", str(emb), "--store", str(store_path), "--constraints", "a.csv"]
    )
    assert rc == 2 and "not both" in err
    # wrong embeddings for this store
    np.save(tmp_path / "short.npy", X[:50])
    rc, err = _run_cli(cli, ["refine", str(tmp_path / "short.npy"), "--store", str(store_path)])
    assert rc == 2 and "has 50 rows but the store" in err
    assert os.path.exists(store_path)


def test_catalogue_api_lists_renames_checks_merges_splits_and_undoes(catalogue_run):
    client, store, y = catalogue_run
    r = client.get("/api/catalogue?images=2")
    assert r.status_code == 200
    data = r.get_json()
    ids = data["identities"]
    unsorted = data["unsorted"]
    assert data["images"] == 60 and sum(i["size"] for i in ids) + unsorted["count"] == 60
    assert len(unsorted["images"]) == unsorted["count"] and all(i["size"] > 1 for i in ids)
    status = data["status"]
    assert status["wrongly_grouped"]["estimate"] is None and "not known yet" in status["message"]
    assert all(len(i["images"]) <= 2 for i in ids) and ids[0]["size"] >= ids[-1]["size"]
    assert ids[0]["status"] == "proposed" and ids[0]["verified"] == 0
    assert not any(im["verified"] for im in ids[0]["images"])
    first, second = ids[0], ids[1]
    assert (
        post(
            client, "/api/catalogue/rename", {"number": first["number"], "name": "Zuri"}
        ).status_code
        == 200
    )
    r = post(client, "/api/catalogue/rename", {"number": second["number"], "name": "Zuri"})
    assert r.status_code == 400 and "already called 'Zuri'" in r.get_json()["error"]
    assert post(client, "/api/catalogue/check", {"number": second["number"]}).status_code == 200
    r = post(client, "/api/catalogue/rename", {"number": 99999, "name": "x"})
    assert r.status_code == 404 and "no identity 99999" in r.get_json()["error"]
    r = post(client, "/api/catalogue/merge", {"a": first["number"], "b": "2"})
    assert r.status_code == 400 and "'b' must be an identity number" in r.get_json()["error"]
    shown = {i["number"]: i for i in client.get("/api/catalogue").get_json()["identities"]}
    assert shown[first["number"]]["name"] == "Zuri" and shown[second["number"]]["checked"]

    r = post(client, "/api/catalogue/merge", {"a": first["number"], "b": second["number"]})
    assert r.status_code == 200 and r.get_json()["answers"] == 1
    assert r.get_json()["change"]["message"].startswith(f"joined {first['code']} and ")
    merged = client.get(f"/api/catalogue/{first['number']}").get_json()
    assert merged["size"] == first["size"] + second["size"]
    assert merged["status"] == "partly verified" and merged["verified"] == 2
    assert merged["images"][0]["file"] and merged["images"][0]["camera"] in ("cam0", "cam1")
    out = [merged["images"][-1]["index"]]
    r = post(client, "/api/catalogue/split", {"number": first["number"], "images": out})
    assert r.status_code == 200 and r.get_json()["change"]["changed"]
    after = client.get(f"/api/catalogue/{first['number']}").get_json()
    assert after["size"] == merged["size"] - 1
    r = post(client, "/api/catalogue/split", {"number": first["number"], "images": ["x"]})
    assert r.status_code == 400
    # undo takes back the split, then the merge
    assert post(client, "/api/undo").get_json()["undone"]["operation"] is not None
    assert client.get(f"/api/catalogue/{first['number']}").get_json()["size"] == merged["size"]
    post(client, "/api/undo")
    assert client.get(f"/api/catalogue/{first['number']}").get_json()["size"] == first["size"]


def test_context_of_a_pair_names_file_camera_and_the_identity_so_far(catalogue_run):
    client, store, _ = catalogue_run
    r = client.get("/api/context/1")
    assert r.status_code == 200
    c = r.get_json()
    assert c["a"]["image"]["file"] == "0.png" and c["a"]["image"]["camera"] == "cam0"
    assert c["b"]["image"]["camera"] == "cam1" and c["a"]["image"]["date"] == ""
    ident = c["a"]["identity"]
    assert ident["code"].startswith("NY-") and len(c["a"]["others"]) == min(8, ident["size"] - 1)
    assert all(o["index"] != 0 for o in c["a"]["others"])
    assert client.get("/api/context/999").status_code == 404
    assert client.get("/api/progress").get_json()["catalogue"] is True


def test_without_a_catalogue_the_context_has_no_identity_and_the_catalogue_is_404(run):
    client, _, _ = run
    c = client.get("/api/context/1").get_json()
    assert c["a"]["identity"] is None and c["a"]["image"]["file"]
    assert c["a"]["image"]["camera"] == "ind0"  # no camera given: the folder
    _, store, images = run
    with create_app(store, images, cameras={0: "station-7"}).test_client() as other:
        assert other.get("/api/context/1").get_json()["a"]["image"]["camera"] == "station-7"
    r = client.get("/api/catalogue")
    assert r.status_code == 404 and "aas catalogue" in r.get_json()["error"]


def test_images_added_from_another_folder_are_served_from_it(tmp_path):
    store_path, images = make_run(tmp_path)
    other = tmp_path / "season2"
    (other / "cam1").mkdir(parents=True)
    write_png(other / "cam1" / "a.png", 99)
    with AnnotationStore.open(store_path) as s:
        n = s.n_images
        (new,) = s.add_images(["cam1/a.png"], root=other, tag="season2")
        assert new == n and s.image_paths()[new] == "season2/cam1/a.png"
        client = create_app(s, images).test_client()
        r = client.get(f"/images/{new}")
        assert r.status_code == 200 and r.data == (other / "cam1" / "a.png").read_bytes()
        r.close()
        with pytest.raises(ValueError, match="already lists images under 'season2/'"):
            s.add_images(["cam1/a.png"], root=other, tag="season2")


def test_two_tabs_on_the_catalogue_lose_no_operation(catalogue_run):
    client, store, _ = catalogue_run
    ids = client.get("/api/catalogue").get_json()["identities"]  # both tabs loaded this
    a, b, c = ids[0]["number"], ids[1]["number"], ids[2]["number"]
    other = client.application.test_client()  # the second tab
    assert post(client, "/api/catalogue/rename", {"number": a, "name": "Ayo"}).status_code == 200
    assert post(other, "/api/catalogue/merge", {"a": c, "b": b}).status_code == 200
    # the first tab still shows b on its own; checking it reaches the identity it is in now
    assert post(client, "/api/catalogue/check", {"number": b}).status_code == 200
    now = {i["number"]: i for i in client.get("/api/catalogue").get_json()["identities"]}
    assert now[a]["name"] == "Ayo"
    merged = next(i for i in now.values() if i["number"] in (b, c))  # the bigger one's number
    assert {b, c} == {merged["number"], *merged["absorbed"]}
    assert merged["checked"] and merged["size"] == ids[1]["size"] + ids[2]["size"]
    assert store._read("SELECT COUNT(*) FROM operations") == [(1,)]


def test_a_link_question_can_be_answered_new_individual_and_undone_whole(run):
    client, store, _ = run
    store.add_pairs([[0, 7]], sampler="season", cycle=1, kind=["link"], priority=1)  # pair 6
    p = client.get("/api/next").get_json()
    assert p["pair_id"] == 6 and p["kind"] == "link"  # asked before the earlier pairs
    r = post(client, "/api/new_individual", {"pair_id": 1})
    assert r.status_code == 400 and "not a link question" in r.get_json()["error"]
    for body, status in (({"pair_id": "6"}, 400), ({"pair_id": 99}, 404), ({}, 400)):
        assert post(client, "/api/new_individual", body).status_code == status
    r = post(client, "/api/new_individual", {"pair_id": 6, "annotator": "ann"})
    assert r.status_code == 200
    body = r.get_json()
    assert body["answers"] == 1 and body["operation"] is not None and body["conflict"] is None
    assert body["answer"]["answer"] == "different" and body["answer"]["annotator"] == "ann"
    assert body["answer"]["b"]["index"] == 7 and body["progress"]["different"] == 1
    (op,) = store._read("SELECT kind, detail FROM operations")
    assert op[0] == "new_individual" and "image 7" in op[1]
    assert store.constraints().cannot_link.tolist() == [[0, 7]]
    again = post(client, "/api/new_individual", {"pair_id": 6}).get_json()
    assert again["unchanged"] == 1 and again["operation"] is None  # nothing written twice
    assert client.get("/api/next").get_json()["pair_id"] == 1
    assert post(client, "/api/undo").status_code == 409  # ann's edit, not the server's user's
    r = post(client, "/api/undo", {"annotator": "ann", "page": "annotate"})
    assert r.get_json()["undone"]["operation"] == body["operation"]
    assert client.get("/api/next").get_json()["pair_id"] == 6 and len(store.constraints()) == 0
    assert post(client, "/api/answer", {"pair_id": 6, "answer": "same"}).status_code == 200
    r = post(client, "/api/new_individual", {"pair_id": 6})  # another tab said "same"
    assert r.status_code == 409 and r.get_json()["current"]["answer"] == "same"
    assert store.pair(6)["answer"]["answer"] == "same"


def test_each_proposal_round_is_one_line_in_the_terminal(tmp_path, capsys):
    from aas_core.annotate.server import _Announced

    class Rounds:
        message = ""

        def __init__(self):
            self.cycle = 0

        def __call__(self, store):
            store.add_pairs([[self.cycle, self.cycle + 1]], sampler="t", cycle=self.cycle)
            self.message = f"cycle {self.cycle}: 1 new pairs queued"
            self.cycle += 1
            return 1

    store_path, images = make_run(tmp_path, pairs=())
    with AnnotationStore.open(store_path) as s:
        client = create_app(s, images, proposer=_Announced(Rounds(), "aas annotate")).test_client()
        for _ in range(2):
            pid = client.get("/api/next").get_json()["pair_id"]
            post(client, "/api/answer", {"pair_id": pid, "answer": "same"})
        assert client.get("/api/progress").get_json()["message"] == "cycle 1: 1 new pairs queued"
    assert capsys.readouterr().out.splitlines() == [
        f"aas annotate: cycle {k}: 1 new pairs queued" for k in range(2)
    ]
