"""The annotation server answers every malformed request with a JSON 4xx naming what was
sent, every failure with a JSON 5xx (never Flask's HTML page), and marks every response
same-origin, so another web site cannot embed or probe the photos."""

import logging
import sqlite3
from urllib.parse import unquote

import pytest

pytest.importorskip("flask", reason="the annotation server needs the [web] extra")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import aas_core as aas  # noqa: E402
from _annotate import make_run, write_photos  # noqa: E402
from aas_core.annotate import AnnotationStore, StoreFull, StoreReadOnly  # noqa: E402
from aas_core.annotate.server import create_app  # noqa: E402

DEEP = 6000  # beyond the parser's recursion limit: a RecursionError before the fix


@pytest.fixture(scope="module")
def catalogue_run(tmp_path_factory):
    from aas_core.catalogue import build_catalogue
    from aas_core.loop import cluster_features

    tmp_path = tmp_path_factory.mktemp("catalogue")
    X, _ = aas.datasets.make_reid_blobs(40, d=16, seed=4)
    images = tmp_path / "images"
    paths = write_photos(images, len(X), size=(8, 8))
    store = AnnotationStore.create(tmp_path / "run.sqlite", paths)
    store.add_pairs([[0, 1], [2, 3]], sampler="aas", cycle=0)
    cs = cluster_features(X, k1=8, n_threads=1)
    app = create_app(store, images, catalogue=lambda: build_catalogue(store, cs))
    with app.test_client() as client:
        yield client, store
    store.close()


def json_error(r, status):
    """The error message of a JSON error response with ``status``."""
    assert r.status_code == status, (r.status_code, r.get_data()[:300])
    assert r.mimetype == "application/json", r.get_data()[:300]
    return r.get_json()["error"]


def nested(depth, inner="1"):
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(
    "data",
    [
        nested(DEEP),
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"pair_id": ' + nested(DEEP) + ', "answer": "same"}',
        # parses, but deep enough that echoing it back (repr) would overflow the stack
        '{"pair_id": ' + nested(900) + ', "answer": "same"}',
    ],
    ids=["array", "object", "field", "field-900"],
)
@pytest.mark.parametrize("route", ["/api/answer", "/api/undo", "/api/new_individual"])
def test_deeply_nested_json_is_a_400_that_says_so(run, route, data):
    client, store, _ = run
    r = client.post(route, data=data, content_type="application/json")
    assert "nest" in json_error(r, 400)
    assert store.answers(history=True) == []
    assert client.get("/api/next").get_json()["pair_id"] == 1  # the server goes on


@pytest.mark.parametrize(
    "data, message",
    [
        ('{"pair_id": 1, "answer": "same", "pair_id": 2}', "'pair_id' twice"),
        ('{"pair_id": NaN, "answer": "same"}', "NaN"),
        ('{"pair_id": 1, "answer": "same", "x": -Infinity}', "-Infinity"),
    ],
)
def test_ambiguous_json_is_refused_naming_what_was_sent(run, data, message):
    client, store, _ = run
    r = client.post("/api/answer", data=data, content_type="application/json")
    assert message in json_error(r, 400)
    assert store.answers(history=True) == []


def test_nested_json_is_refused_on_the_catalogue_routes_too(catalogue_run):
    client, _ = catalogue_run
    for route in ("/api/catalogue/rename", "/api/catalogue/split"):
        r = client.post(route, data=nested(DEEP), content_type="application/json")
        assert "nest" in json_error(r, 400)


def test_an_oversized_body_is_a_413_naming_the_limit(run):
    client, store, _ = run
    r = client.post("/api/answer", json={"pair_id": 1, "answer": "x" * 70000})
    message = json_error(r, 413)
    assert "Request Entity Too Large" in message and "65536 bytes" in message
    assert store.answers(history=True) == []


@pytest.mark.parametrize(
    "value",
    ["²", "١", "-1", "abc", "", "1e3", " 2", "2.0", "10001", "9" * 5000],
    ids=lambda v: ascii(v)[:12],
)
def test_integer_query_arguments_take_ascii_digits_only(catalogue_run, value):
    client, _ = catalogue_run
    r = client.get("/api/catalogue", query_string={"images": value})
    message = json_error(r, 400)
    assert "'images'" in message and repr(value)[:40] in message


def test_valid_integer_query_arguments_still_work(catalogue_run):
    client, _ = catalogue_run
    for query, most in (("?images=2", 2), ("?images=0", 0), ("", 24), ("?images=10000", 40)):
        r = client.get("/api/catalogue" + query)
        assert r.status_code == 200
        assert max(len(i["images"]) for i in r.get_json()["identities"]) <= most


@pytest.mark.parametrize(
    "path",
    [
        "/api/pairs/%D9%A1",  # an Arabic-Indic digit one: int() reads it as 1
        "/api/context/%D9%A1",
        "/api/effect/%D9%A1",
        "/api/catalogue/%D9%A1",
        "/api/pairs/%EF%BC%91",  # a fullwidth digit one
        "/api/pairs/" + "9" * 5000,  # more digits than int() converts
    ],
    ids=lambda v: v[:24],
)
def test_path_numbers_take_ascii_digits_only(catalogue_run, path):
    client, _ = catalogue_run
    message = json_error(client.get(path), 404)
    assert "no such page or API route" in message and unquote(path)[:13] in message


def test_numbers_beyond_64_bits_are_not_found_not_an_error(catalogue_run):
    client, _ = catalogue_run
    big = "99999999999999999999999"
    assert f"no answer {big}" in json_error(client.get(f"/api/effect/{big}"), 404)
    assert "unknown pair id" in json_error(client.get(f"/api/pairs/{big}"), 404)
    assert f"no identity {big}" in json_error(client.get(f"/api/catalogue/{big}"), 404)


@pytest.mark.parametrize(
    "path, status",
    [
        ("/images/0", 200),
        ("/images/6", 404),  # missing from the folder
        ("/static/app.js", 200),
        ("/static/app.css", 200),
        ("/static/nope.js", 404),
        ("/", 200),
        ("/api/progress", 200),
        ("/api/nope", 404),
    ],
)
def test_every_response_is_same_origin_only_and_never_sniffed(run, path, status):
    client, _, _ = run
    r = client.get(path)
    assert r.status_code == status
    assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r.close()
    if path == "/images/0":  # the photo's own sandbox policy is kept
        assert r.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


def _fail_writes(store, monkeypatch, exc):
    def write(fn):
        raise exc

    monkeypatch.setattr(store, "_write", write)


def _disk_full_from_store():
    """What the store raises for a full disk: a clear ValueError, the sqlite3 error behind."""
    try:
        raise sqlite3.OperationalError("database or disk is full")
    except sqlite3.OperationalError:
        try:
            raise ValueError("AnnotationStore: the disk is full; nothing was stored") from None
        except ValueError as exc:
            return exc


@pytest.mark.parametrize(
    "exc, message",
    [
        (sqlite3.OperationalError("database or disk is full"), "database or disk is full"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "readonly"),
        (_disk_full_from_store(), "the disk is full; nothing was stored"),
        (OSError(28, "No space left on device"), "No space left on device"),
        (StoreFull("the disk holding the store is full"), "the disk holding the store is full"),
        (StoreReadOnly("the store is read-only"), "the store is read-only"),
    ],
)
@pytest.mark.parametrize(
    "route, body",
    [("/api/answer", {"pair_id": 1, "answer": "same"}), ("/api/undo", {})],
)
def test_a_store_that_cannot_be_written_answers_503_json(
    run, monkeypatch, caplog, exc, message, route, body
):
    client, store, _ = run
    if route == "/api/undo":
        assert client.post("/api/answer", json={"pair_id": 1, "answer": "same"}).status_code == 200
    _fail_writes(store, monkeypatch, exc)
    with caplog.at_level(logging.ERROR):
        r = client.post(route, json=body)
    error = json_error(r, 503)
    assert message in error and "internal error" not in error
    assert "Traceback" in caplog.text  # the details go to the server's log
    monkeypatch.undo()
    assert client.get("/api/progress").status_code == 200  # the server goes on


def test_a_store_write_error_on_a_catalogue_edit_is_503_not_a_user_mistake(
    catalogue_run, monkeypatch
):
    client, store = catalogue_run
    listed = client.get("/api/catalogue?images=1").get_json()
    ident = listed["identities"][0]
    other = (listed["identities"][1:] or listed["unsorted"]["images"])[0]
    _fail_writes(store, monkeypatch, _disk_full_from_store())
    r = client.post("/api/catalogue/rename", json={"number": ident["number"], "name": "Kira"})
    assert "the disk is full" in json_error(r, 503)
    r = client.post("/api/catalogue/merge", json={"a": ident["number"], "b": other["number"]})
    assert "the disk is full" in json_error(r, 503)
    monkeypatch.undo()
    assert client.get("/api/catalogue/" + str(ident["number"])).get_json()["name"] != "Kira"


def test_any_other_failure_is_a_json_500_naming_it_and_logged(run, monkeypatch, caplog):
    client, store, _ = run

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "progress", broken)
    with caplog.at_level(logging.ERROR):
        r = client.get("/api/progress")
    assert json_error(r, 500) == "internal error: RuntimeError: boom"
    assert "Traceback" in caplog.text and "boom" in caplog.text
    assert r.headers["Cross-Origin-Resource-Policy"] == "same-origin"


def test_a_failure_outside_a_route_is_json_too(tmp_path, caplog):
    store_path, images = make_run(tmp_path)
    with AnnotationStore.open(store_path) as store:
        app = create_app(store, images)

        @app.after_request
        def broken(resp):
            raise KeyError("late")

        with caplog.at_level(logging.ERROR):
            r = app.test_client().get("/api/progress")
        assert json_error(r, 500) == "internal error: KeyError: 'late'"
        assert "late" in caplog.text


# ---- fuzz: odd bodies and query values never reach a 5xx ---------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "pair_id": _json | st.integers(-3, 8),
        "answer": _json | st.sampled_from(["same", "different", "cant_tell", "skip"]),
        "replace": _json,
        "annotator": _json,
    },
)
_deep = st.integers(1, 3 * DEEP).map(lambda d: nested(d))
_odd_digits = st.text(
    st.characters(categories=["Nd", "No", "Zs"]) | st.sampled_from("0123456789-+."), max_size=6
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(["/api/answer", "/api/undo", "/api/new_individual"]),
    body=_fields | _json | _deep,
    query=_odd_digits,
)
def test_fuzz_odd_requests_get_a_json_4xx_or_a_success(
    tmp_path_factory, catalogue_run, route, body, query
):
    import json

    catalogue_client, _ = catalogue_run  # read only: a fresh store per example takes the posts
    store_path, images = make_run(tmp_path_factory.mktemp("fuzz"))
    with AnnotationStore.open(store_path) as store:
        client = create_app(store, images).test_client()
        data = body if isinstance(body, str) else json.dumps(body)
        for r in (
            client.post(route, data=data, content_type="application/json"),
            client.get("/api/pairs/" + query),
            client.get("/images/" + query),
            catalogue_client.get("/api/catalogue", query_string={"images": query}),
            catalogue_client.get("/api/catalogue/" + query),
        ):
            assert r.status_code < 500, (r.status_code, r.get_data()[:300])
            if r.status_code >= 400:
                assert r.mimetype == "application/json"
            r.close()
