"""The annotation web app behind ``aas annotate``: one page and a JSON API.

Flask serves it and waitress runs it (the ``[web]`` extra; both are imported
only when an app is built, so ``import aas_core`` never needs them). Why
these two: the store is synchronous SQLite, and Flask's synchronous request
handlers call it directly, with no event loop or thread-pool hand-off in
between; Flask's test client needs no extra package; waitress is a pure-Python
production WSGI server (no compiler, Windows too) with a small thread pool,
which is all one person with a few browser tabs needs.

API (JSON; every POST must say ``Content-Type: application/json`` and send a JSON object
of at most 64 KiB (413), nested at most 16 levels, without NaN, Infinity or a key given
twice (400); numbers in paths are ASCII digits: anything else is a 404)::

    GET  /                 the page (static/index.html; CSS and JS from /static/, no CDN)
    GET  /api/next         200 {"pair_id", "a": IMAGE, "b": IMAGE, "remaining", "sampler",
                           "cycle", "prob", "pool", "kind"}; 204 when no pair is left
    POST /api/answer       {"pair_id", "answer": "same"|"different"|"cant_tell"|"skip",
                           "replace"?: bool,
                           "annotator"?: str} -> 200 {"answer": ANSWER, "unchanged",
                           "conflict": CONFLICT|null, "progress"}; stored before the reply.
                           A pair that already has a different answer: 409 {"error",
                           "current"} unless "replace": true (reviewing a conflict).
                           Unknown pair: 404. Malformed body: 400; not JSON: 415.
    POST /api/new_individual
                           {"pair_id", "annotator"?} -> 200 {"operation", "answers",
                           "unchanged", "answer": ANSWER, "conflict", "progress"}: a link
                           question (kind "link": a new season's photo against a known
                           individual) answered "none of the known individuals shown is
                           this animal", stored as a "different" answer of a catalogue
                           operation (undo reverts it). Not a link question: 400; a pair
                           already answered otherwise: 409 {"error", "current"}.
    POST /api/undo         {"annotator"?, "page"?} -> 200 {"undone": ANSWER, "progress"}:
                           takes back the annotator's own latest action (the server's
                           annotator when none is given), of the page's kind when "page"
                           is "annotate" (pair answers, new individuals) or "catalogue"
                           (merges, splits); another person's answers are never touched.
                           409 when there is nothing of theirs left to undo, or their
                           latest answer was since changed by someone else (nothing
                           changes)
    GET  /api/progress     {"images", "pairs", "answered", "same", "different", "cant_tell",
                           "skipped", "remaining", "conflicts", "undone", "edits",
                           "edit_answers", "annotator", "propose",
                           "message", "catalogue"}
    GET  /api/conflicts    {"conflicts": [CONFLICT]}: answers that contradict the closure
                           of the answers before them
    GET  /api/pairs/<id>   {"pair_id", "a", "b", ..., "answer": ANSWER|null}
    GET  /api/context/<id> {"a": CONTEXT, "b": CONTEXT} for a pair: CONTEXT = {"image":
                           IMAGE + {"file", "camera", "date"}, "identity": {"number",
                           "code", "name", "size", "verified", "status"}|null, "others":
                           [IMAGE] (at most 8)}
    GET  /images/<index>   the image file of row <index>: its listed path must lie inside
                           its folder (lexically: no absolute path, no ".."); a symbolic
                           link there is followed to any readable file. Otherwise 403
                           (outside, unreadable), 404 (missing, a broken link) or 415 (not
                           an image file type), with IMAGE's "problem" as the error

  With a catalogue builder (``aas catalogue``):

    GET  /catalogue                 the catalogue page (static/catalogue.html)
    GET  /api/catalogue?images=K    {"identities": [IDENTITY] (two photos or more, largest
                                    first, K images each, default 24; K not ASCII digits
                                    0..10000: 400), "unsorted":
                                    {"count", "images": [IMAGE + {"number", "code"}]}
                                    (identities of one photo, the first 500), "images",
                                    "progress", "status": STATUS}
    GET  /api/catalogue/<number>    IDENTITY with every image (+ file, camera, date)
    GET  /api/effect/<answer_id>    {"change": CHANGE|null}: what that answer (and those
                                    given since) did to the catalogue; the page asks
                                    after each answer, so answering never waits for it
    POST /api/catalogue/rename      {"number", "name"} ("" gives back the code)
    POST /api/catalogue/check       {"number", "checked"?: bool}
    POST /api/catalogue/merge       {"a", "b"} -> {"operation", "answers", "unchanged",
                                    "progress", "change": CHANGE}: stored as a "same"
                                    answer between the reference photos
    POST /api/catalogue/split       {"number", "images": [index]} -> as merge: stored as
                                    2k - 1 answers and the photos that stay (undo
                                    reverts it whole)

    GET /api/progress gains "status" (the last status message, or null while the
    first is computed) and "warning" ('' or what the answers show about the embedding);
    with --learn, "learning": {"source" (the embedding in use), "auc" (its held-out
    AUC, or null), "running", "next_in" (answers until the next retraining),
    "attempts": [{"answers", "auc", "auc_current", "kept", "seconds", "message", ...}],
    "error"}.

    IDENTITY = {"number", "code", "name", "named", "checked", "size", "absorbed",
                "status": "verified"|"partly verified"|"proposed"|"single",
                "verified": photos joined by answers to "reference" (a photo index),
                "conflict": '' or why a name or check given to its photos does not apply,
                "images": [IMAGE + {"verified": bool}]}
    STATUS   = aas_core.catalogue.estimate_status: {"wrongly_grouped", "missing_merges",
                "separation", "counts", "settled", "message", "warning"}
    CHANGE   = {"changed", "moved", "verified", "message"}
    IMAGE    = {"index", "url", "path", "exists", "problem"}: "problem" is null when the
               photo can be shown ("exists" true), else why not, e.g. "missing from
               /photos", "unreadable: Permission denied", "not an image file type",
               "outside the photo folder", "a symbolic link whose target is missing"
    ANSWER   = {"answer_id", "pair_id", "a", "b", "answer", "annotator", "answered_at",
                "replaces"}
    CONFLICT = ANSWER + {"implied": "same"|"different", "because": [ANSWER]}

Errors are ``{"error": message}`` with a 4xx/5xx status, never an HTML page: 4xx names
what the request sent; 503 when the store cannot be written or read (a full disk, a
read-only file: the store's message); 500 ``"internal error: <type>: <message>"`` for
anything else (the traceback goes to the server's log). When the server
listens on a loopback address, requests whose Host header is not a loopback
name are refused (403), so a web page elsewhere cannot reach the API through
DNS rebinding; requiring JSON bodies keeps other sites' plain form posts out.
Every response says ``Cross-Origin-Resource-Policy: same-origin`` and
``X-Content-Type-Options: nosniff``: another site's page cannot load a photo as an
``<img>`` (or a page as a script) to learn what is there.
"""

from __future__ import annotations

import errno
import json
import mimetypes
import re
import sqlite3
import sys
import threading
from pathlib import Path

from .._extras import install_hint
from ._answers import _annotator_problem
from ._pools import (
    CALIBRATION_POOL,
    calibration_answers,
    calibration_to_ask,
    load_sampler_state,
    save_sampler_state,
)
from .photos import _PhotoFiles, photo_problems
from .store import (
    ANSWERS,
    AlreadyAnswered,
    AnnotationStore,
    NothingToUndo,
    StoreFull,
    StoreReadOnly,
    UnknownPair,
)

__all__ = ["Proposer", "create_app", "photo_problems", "serve"]

STATIC = Path(__file__).with_name("static")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_INDEX = re.compile(r"[0-9]{1,12}")
_MAX_BODY = 64 * 1024  # bytes: the largest request the page sends is a few KiB
_MAX_DEPTH = 16  # nesting of a request body; the API needs 2 (an object holding a list)
_MAX_SHOWN = 10_000  # images per identity the catalogue list may ask for
# a disk that cannot take a write: the store's failure, not the request's (no EDQUOT on
# some systems)
_DISK_ERRNOS = {getattr(errno, n, errno.ENOSPC) for n in ("ENOSPC", "EROFS", "EDQUOT", "EIO")}
_UNSORTED_SHOWN = 500  # unsorted photos listed on the catalogue page
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
_WEB_HINT = install_hint("web")


class _ApiError(Exception):
    def __init__(self, status, message, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _store_failure(exc):
    """The sqlite3 or disk error behind ``exc`` (itself or what it was raised from, even
    ``from None``), or None: a store that cannot be written or read, not a bad request."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (StoreFull, StoreReadOnly)):  # the store's own words
            return exc
        if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
            return exc
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _parse_json(raw: bytes):
    """The JSON value of a request body, or ValueError naming what is wrong with it.

    Stricter than ``json.loads``: no NaN or Infinity (not JSON), no key given twice (which
    one counts would be a guess), no integer of more than 100 digits, and at most
    ``_MAX_DEPTH`` levels of nesting, checked without recursion so that no later ``repr``
    or walk of the value can overflow the stack.
    """

    def constant(name):
        raise ValueError(f"{name} is not a JSON value")

    def integer(text):  # int() refuses 4301 digits with advice about sys; say it plainly
        if len(text.lstrip("-")) > 100:
            raise ValueError(f"a number of {len(text.lstrip('-'))} digits (at most 100)")
        return int(text)

    def unique(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"the key {k!r} twice in one object")
            out[k] = v
        return out

    try:
        data = json.loads(raw, parse_constant=constant, parse_int=integer, object_pairs_hook=unique)
    except RecursionError:  # the C parser recurses once per level
        raise ValueError(f"it nests arrays or objects deeper than {_MAX_DEPTH} levels") from None
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > _MAX_DEPTH:
                raise ValueError(f"it nests arrays or objects deeper than {_MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
    return data


def _ascii_int_converter(base):
    """The ``<int:...>`` URL converter, ASCII digits only: werkzeug's matches any decimal
    digit and int() reads other scripts' digits (an Arabic-Indic one was pair 1)."""

    class AsciiInt(base):
        regex = r"[0-9]+"
        weight = 50

        def to_python(self, value):
            try:
                return int(value)
            except ValueError:  # more digits than int() converts: no such thing
                from werkzeug.routing import ValidationError

                raise ValidationError() from None

        def to_url(self, value):
            return str(int(value))

    return AsciiInt


def _import_flask():
    try:
        import flask
    except ImportError:
        raise ImportError(f"aas annotate needs Flask and waitress: {_WEB_HINT}") from None
    return flask


def is_loopback(host) -> bool:
    """Whether a listening address stays on this machine (127.0.0.0/8, ::1, localhost)."""
    h = host.strip("[]").lower()
    return h in _LOOPBACK_NAMES or h.startswith("127.")


class Proposer:
    """Tops up an empty queue: runs a sampler on the embeddings and the store's answers.

    The clustering of the embeddings (kNN, Jaccard, DBSCAN, FINCH) is computed
    on first use and reused; each call refines it with the current answers
    (NP3) inside ``sampler.propose``, proposes at most ``budget`` pairs and
    queues them as the next cycle, seeded by (seed, cycle).

    With ``calibrate`` = C, each round first asks near pairs drawn uniformly among the
    kNN edges (pool and kind "calibration", out of the round's budget) until C are
    answered or waiting; once C are answered, eps is chosen from their answers
    (:func:`aas_core.cluster.calibrated_eps`, starting from the data's clustering) and
    the sampler proposes from that clustering; ``on_calibrated(clusters, choice)`` is
    called with it, then and whenever more of them are answered.

    Parameters
    ----------
    X : (n, d) float array, row i = image i of the store
    sampler : PairSampler, e.g. ``AmbiguityAwareSampler()``
    name : str, the sampler's name as recorded with each pair
    budget : int >= 1
    seed : int >= 0
    cluster_args : dict, keyword arguments of :func:`aas_core.cluster_features`
    clusters : ClusterState, optional, already computed from X (then cluster_args is unused);
        at the data's eps when ``calibrate`` is given
    calibrate : int >= 0, near pairs to ask for the calibration (0: none)
    on_calibrated : callable(ClusterState, EpsChoice), optional
    calibrated : (ClusterState, int), optional: the clustering a calibration already chose
        from that many answers (then it is used until more are answered)
    """

    def __init__(
        self,
        X,
        sampler,
        *,
        name,
        budget,
        seed=0,
        cluster_args=None,
        clusters=None,
        calibrate=0,
        on_calibrated=None,
        calibrated=None,
    ):
        self.X, self.sampler, self.name = X, sampler, name
        self.budget, self.seed = int(budget), int(seed)
        self.cluster_args = dict(cluster_args or {})
        self.message = ""
        self.calibrate, self.on_calibrated = int(calibrate), on_calibrated
        self._base = self._clusters = clusters  # the data's clustering; the one in use
        self._calibrated_with = 0  # answered calibration pairs behind the eps in use
        if calibrated is not None:  # chosen already (the caller showed it at start-up)
            self._clusters, self._calibrated_with = calibrated

    def _state(self):
        from ..loop import cluster_features

        if self._base is None:
            self._base = cluster_features(self.X, **self.cluster_args)
        if self._clusters is None:
            self._clusters = self._base
        return self._clusters

    def recalibrate(self, store: AnnotationStore, answers=None):
        """With ``calibrate`` = C and at least C calibration pairs answered (more than the
        eps in use was chosen from): eps chosen again from all their answers, and
        ``on_calibrated`` told. Returns the choice's message, or None when nothing
        changed. ``answers``: ``calibration_answers(store)`` when the caller has them."""
        if not self.calibrate:
            return None
        self._state()
        base = self._base
        pairs, same = calibration_answers(store) if answers is None else answers
        if len(pairs) < self.calibrate or len(pairs) == self._calibrated_with:
            return None
        threads = self.cluster_args.get("n_threads")
        self._clusters, choice = base._calibrated(pairs, same, n_threads=threads)
        self._calibrated_with = len(pairs)
        if self.on_calibrated is not None:
            self.on_calibrated(self._clusters, choice)
        return choice.message

    def propose(self, store: AnnotationStore, budget: int, cycle: int) -> dict:
        """Up to ``budget`` pairs the sampler proposes that are not queued yet (none is
        queued here), after the calibration's near pairs when ``calibrate`` asks for more: a
        dict of ``pairs``, ``prob``, ``pool``, ``kind`` and the sampler's ``message``. What
        the sampler learns from round to round (PairSampler.get_state) is kept in the
        store's meta, so a restarted server goes on from it."""
        import numpy as np

        self._state()
        answers = calibration_answers(store) if self.calibrate else None
        said = self.recalibrate(store, answers)
        listed, constraints = store.pairs(), store.constraints()
        calibration = np.empty((0, 2), np.int64)
        if self.calibrate:
            rng = np.random.default_rng([self.seed, cycle, 29])
            calibration, _ = calibration_to_ask(
                self._state().graph,
                self.calibrate,
                len(answers[0]),
                budget,
                rng,
                constraints,
                store,
                listed,
            )
        # Pairs already queued are settled or waiting (a "can't tell" or a skip is no
        # constraint, so the sampler may propose it again): ask for more until the
        # budget is met with new pairs, or the sampler has nothing more to give.
        queued = {(p["i"], p["j"]) for p in listed}
        queued |= {(int(a), int(b)) for a, b in calibration.tolist()}
        rest = budget - len(calibration)
        pairs = np.empty((0, 2), np.int64)
        prob, pool, kind = np.empty(0), np.empty(0, object), np.empty(0, object)
        said_by_sampler = "none from the sampler this round (the calibration took its budget)"
        asked = rest
        if rest > 0 and self.sampler.get_state() is None:
            load_sampler_state(store, self.sampler)  # what it learnt before a restart
        learnt = self.sampler.get_state()
        for _ in range(4 if rest > 0 else 0):
            self.sampler.set_state(learnt)  # each try learns from the last round, not the try
            prop = self.sampler.propose(
                self.X,
                constraints,
                asked,
                rng=np.random.default_rng([self.seed, cycle]),
                clusters=self._clusters,
            )
            lo = np.minimum(prop.pairs[:, 0], prop.pairs[:, 1]).tolist()
            hi = np.maximum(prop.pairs[:, 0], prop.pairs[:, 1]).tolist()
            new = np.array([(a, b) not in queued for a, b in zip(lo, hi)], bool)
            keep = np.flatnonzero(new)[:rest]
            pairs, prob = prop.pairs[keep], np.asarray(prop.prob, np.float64)[keep]
            pool, kind = np.asarray(prop.pool, object)[keep], np.asarray(prop.kind, object)[keep]
            said_by_sampler = prop.message
            if new.sum() >= rest or len(prop.pairs) < asked:
                break
            asked += rest
        if rest > 0:
            save_sampler_state(store, self.sampler)
        m = len(calibration)
        message = said_by_sampler if not said else f"calibration: {said}; {said_by_sampler}"
        if m:
            message = f"{m} near pairs for the calibration; {message}"
        cal = np.full(m, CALIBRATION_POOL, object)
        return {
            "pairs": np.concatenate([calibration, pairs]).astype(np.int64).reshape(-1, 2),
            "prob": np.concatenate([np.full(m, np.nan), prob]),
            "pool": np.concatenate([cal, pool]),
            "kind": np.concatenate([cal, kind]),
            "message": message,
        }

    def use(self, X, clusters, store=None) -> None:
        """Proposes from now on from ``X`` and its clustering at the data's eps (a new
        embedding); with ``calibrate`` and ``store``, eps is chosen again from the store's
        calibration answers at once (else at the next round)."""
        self.X, self._base, self._clusters = X, clusters, clusters
        self._calibrated_with = 0
        if store is not None:
            self.recalibrate(store)

    def __call__(self, store: AnnotationStore) -> int:
        cycle = store.next_cycle()
        got = self.propose(store, self.budget, cycle)
        added = store.add_pairs(
            got["pairs"],
            sampler=self.name,
            cycle=cycle,
            prob=got["prob"],
            pool=got["pool"],
            kind=got["kind"],
        )
        self.message = f"cycle {cycle}: {got['message']} ({added} new pairs queued)"
        return added


def create_app(
    store,
    images_dir,
    *,
    proposer=None,
    annotator=None,
    allowed_hosts=(),
    low_water=0,
    catalogue=None,
    cameras=None,
    learner=None,
):
    """The Flask app (WSGI) over an open :class:`AnnotationStore`.

    Parameters
    ----------
    store : AnnotationStore
    images_dir : str or Path, the folder the store's image paths are relative to
    proposer : callable(store) -> int, optional; called when the queue is empty
        (see :class:`Proposer`)
    low_water : int >= 0
        With a proposer: once an answer leaves at most this many pairs
        unanswered, the proposer runs in a background thread with the answers
        so far, so the next pairs are ready before the queue runs dry
        (0: only when it is empty, and the page waits).
    catalogue : callable() -> Catalogue, optional
        Builds the current catalogue (``aas_core.catalogue.build_catalogue``
        with the run's clustering); enables the catalogue page, its API and
        the identities in the context beside each pair.
    cameras : dict, optional
        {image index: camera or station name}, shown beside each image
        (default: the image's folder).
    learner : :class:`aas_core.catalogue.learner.Learner`, optional
        ``aas catalogue --learn``: asked after each answer whether to retrain
        in the background; its state goes into the progress as "learning".
    annotator : str, optional, the name recorded when the page sends none
    allowed_hosts : iterable of str
        Host names besides ``localhost``, ``127.0.0.1`` and ``[::1]`` that
        requests may be addressed to (the Host header, port aside, must be
        exactly one of them; anything else gets 403, so a web page that
        rebinds its own name to 127.0.0.1 cannot post answers).
    """
    flask = _import_flask()
    from werkzeug.exceptions import HTTPException, InternalServerError
    from werkzeug.routing import BaseConverter

    if isinstance(allowed_hosts, str):
        allowed_hosts = [allowed_hosts]
    allowed = set(_LOOPBACK_NAMES) | {str(h).strip("[]").lower() for h in allowed_hosts}
    problem = None if annotator is None else _annotator_problem(annotator)
    if problem is not None:  # checked now, not as a failure on every answer
        raise ValueError(f"create_app: 'annotator' {problem}")
    root = Path(images_dir).resolve()
    if not root.is_dir():
        raise ValueError(f"the image folder {str(images_dir)!r} does not exist or is not a folder")
    files = _PhotoFiles(store, root)
    n = len(files.paths)
    propose_lock = threading.Lock()

    def top_up():  # in the background: never two at once, errors become the message
        if not propose_lock.acquire(blocking=False):
            return
        try:
            proposer(store)
        except Exception as exc:  # the page shows it; answering goes on
            proposer.message = f"proposing new pairs failed: {exc}"
        finally:
            propose_lock.release()

    app = flask.Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=_MAX_BODY)
    app.url_map.converters["int"] = _ascii_int_converter(BaseConverter)
    app.json.sort_keys = False
    app.url_map.merge_slashes = False  # '/images//etc' is an error, not a redirect

    def image(index):
        problem = files.problem(index)
        return {
            "index": index,
            "url": f"/images/{index}",
            "path": files.paths[index],
            "exists": problem is None,
            "problem": problem,
        }

    def with_images(d):
        out = dict(d)
        out["a"], out["b"] = image(out.pop("i")), image(out.pop("j"))
        return out

    def progress():
        p = store.progress()
        p["annotator"] = annotator or ""
        p["propose"] = proposer is not None
        p["message"] = getattr(proposer, "message", "")
        p["catalogue"] = catalogue is not None
        if catalogue is not None:  # the last status computed (a fresh one is on its way)
            status = catalogue_status(wait=False)
            p["status"] = None if status is None else status["message"]
            p["warning"] = "" if status is None else status["warning"]
        if learner is not None:
            p["learning"] = learner.state()
        return p

    def body():
        if flask.request.mimetype != "application/json":
            raise _ApiError(415, "send the request body as JSON (Content-Type: application/json)")
        raw = flask.request.get_data(cache=False)
        if not raw.strip():
            return {}
        try:
            data = _parse_json(raw)
        except ValueError as exc:  # UnicodeDecodeError too
            raise _ApiError(400, f"malformed JSON in the request body ({exc})") from None
        if not isinstance(data, dict):
            raise _ApiError(
                400, f"the request body must be a JSON object; got {type(data).__name__}"
            )
        return data

    def int_arg(name, default, most):
        """Query argument ``name``: ASCII digits 0..most (int() would also take other
        scripts' digits, and fail on a superscript two), ``default`` when absent, else 400
        naming it."""
        raw = flask.request.args.get(name)
        if raw is None:
            return default
        if not (_INDEX.fullmatch(raw) and int(raw) <= most):
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise _ApiError(400, f"{name!r} must be a whole number from 0 to {most}; got {shown!r}")
        return int(raw)

    def who(data):
        name = data.get("annotator")
        if name is None or name == "":
            return annotator
        problem = _annotator_problem(name)
        if problem is not None:
            raise _ApiError(400, f"'annotator' {problem}")
        return name

    @app.errorhandler(_ApiError)
    def api_error(exc):
        return flask.jsonify(error=exc.message, **exc.extra), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc):  # 404, 405, 413, ...: JSON, like every other error
        if isinstance(exc, InternalServerError) and exc.original_exception is not None:
            # raised outside a view (URL matching, an after_request hook): Flask has logged
            # it; say what it was
            return failure(exc.original_exception, log=False)
        req = flask.request
        what = exc.description
        shown = req.path if len(req.path) <= 80 else req.path[:80] + "..."
        if exc.code == 404:
            what = f"no such page or API route: {req.method} {shown!r}"
        elif exc.code == 405:
            allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
            what = f"{shown!r} does not answer {req.method} (only {allowed})"
        elif exc.code == 413:
            sent = "" if req.content_length is None else f" (this one has {req.content_length})"
            what = f"a request body may have at most {_MAX_BODY} bytes{sent}"
        return flask.jsonify(error=f"{exc.code} {exc.name}: {what}"), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc):  # keep serving, and say what happened
        return failure(exc)

    def failure(exc, log=True):
        """503 when the store cannot be written or read (a full disk: try again later),
        else 500; JSON either way, the traceback in the server's log."""
        cause = _store_failure(exc)
        if log:
            what = "the store failed" if cause is not None else "unexpected error"
            app.logger.error(f"aas annotate: {what}", exc_info=exc)
        if cause is None:
            return flask.jsonify(error=f"internal error: {type(exc).__name__}: {exc}"), 500
        message = str(exc)
        if cause is exc:  # sqlite3's own words: say which file
            message = f"the store {str(store.path)!r} could not be written or read: {exc}"
        return flask.jsonify(error=message), 503

    @app.before_request
    def check_host():
        name = _host_name(flask.request.host).lower()
        if name not in allowed:
            shown = ", ".join(sorted(f"[{h}]" if ":" in h else h for h in allowed))
            raise _ApiError(
                403,
                f"this server only answers requests addressed to {shown}; to reach it by "
                "another name, start it with --allow-host NAME",
            )

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        # other sites' pages may not load the photos, pages or answers (an <img> or <script>
        # tag is not stopped by the Host check when the browser is on this machine)
        resp.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        if flask.request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    def page(name):  # a page of ours: only our own scripts, styles and images
        resp = flask.send_from_directory(STATIC, name, max_age=0)
        resp.headers["Content-Security-Policy"] = _PAGE_CSP
        return resp

    @app.get("/")
    def index():
        return page("index.html")

    @app.get("/api/next")
    def next_pair():
        pair = store.next_pair()
        if pair is None and proposer is not None:
            with propose_lock:  # two tabs asking at once: one proposal
                pair = store.next_pair()
                if pair is None:
                    try:
                        proposer(store)
                    except (ValueError, TypeError) as exc:
                        raise _ApiError(500, f"proposing new pairs failed: {exc}") from None
                    pair = store.next_pair()
        if pair is None:
            return "", 204
        out = with_images(pair)
        out["remaining"] = store.progress()["remaining"]
        return flask.jsonify(out)

    @app.post("/api/answer")
    def answer():
        data = body()
        pair_id, ans = data.get("pair_id"), data.get("answer")
        if isinstance(pair_id, bool) or not isinstance(pair_id, int):
            raise _ApiError(400, f"'pair_id' must be an integer; got {pair_id!r}")
        if ans not in ANSWERS:
            raise _ApiError(
                400, f"'answer' must be one of {', '.join(map(repr, ANSWERS))}; got {ans!r}"
            )
        replace = data.get("replace", False)
        if not isinstance(replace, bool):
            raise _ApiError(400, f"'replace' must be true or false; got {replace!r}")
        try:
            stored = store.answer(pair_id, ans, annotator=who(data), replace=replace)
        except UnknownPair as exc:
            raise _ApiError(404, str(exc)) from None
        except AlreadyAnswered as exc:
            raise _ApiError(409, str(exc), current=with_images(exc.current)) from None
        unchanged = stored.pop("unchanged")
        mine = store.conflict_of(stored["answer_id"])
        if catalogue is not None and not unchanged:
            remember_before(stored["answer_id"])
        return flask.jsonify(
            answer=with_images(stored),
            unchanged=unchanged,
            conflict=_conflict(mine, with_images) if mine else None,
            progress=answered(),
        )

    @app.get("/api/effect/<int:answer_id>")
    def effect(answer_id):
        """What answer ``answer_id`` (with those given since) did to the catalogue."""
        if catalogue is None:
            raise _ApiError(404, "this server has no catalogue (start it with 'aas catalogue')")
        with cat_lock:
            before = before_answer.get(answer_id)
        if answer_id >= 2**63:  # beyond SQLite's integers: OverflowError, not "none"
            raise _ApiError(404, f"no answer {answer_id}")
        rows = store._read(
            "SELECT p.i, p.j, a.answer FROM answers a JOIN pairs p ON p.id = a.pair_id "
            "WHERE a.id = ?",
            (answer_id,),
        )
        if not rows:
            raise _ApiError(404, f"no answer {answer_id}")
        if before is None:  # no catalogue was built before it, or it is long past
            return flask.jsonify(change=None)
        i, j, ans = rows[0]
        return flask.jsonify(change=change_of(before, [[i, j]], ans))

    def answered():
        """The progress after an answer; tops the queue up in the background when low, and
        starts a retraining in the background when one is due (--learn)."""
        if learner is not None:
            learner.maybe_start()
        counts = progress()
        if proposer is not None and low_water > 0 and counts["remaining"] <= low_water:
            if not propose_lock.locked():
                threading.Thread(target=top_up, name="aas-propose", daemon=True).start()
        return counts

    @app.post("/api/new_individual")
    def new_individual():
        data = body()
        pair_id = data.get("pair_id")
        if isinstance(pair_id, bool) or not isinstance(pair_id, int):
            raise _ApiError(400, f"'pair_id' must be an integer; got {pair_id!r}")
        name = who(data)
        try:
            pair = store.pair(pair_id)
        except UnknownPair as exc:
            raise _ApiError(404, str(exc)) from None
        if pair["kind"] != "link":
            raise _ApiError(
                400,
                f"pair {pair_id} is not a link question (a new photo against a known "
                "individual); answer it same or different",
            )
        current = pair["answer"]
        if current is not None and current["answer"] != "different":
            raise _ApiError(
                409,
                f"pair {pair_id} already has the answer {current['answer']!r} (in another "
                "tab?); it is kept",
                current=with_images(current),
            )
        if current is None:
            i, j = pair["i"], pair["j"]
            rec = store.apply_operation(
                "new_individual",
                [[i, j]],
                ["different"],
                detail=f"image {j} is none of the known individuals shown (pair {pair_id})",
                annotator=name,
            )
        else:  # already "different": nothing to store
            rec = {"operation": None, "answers": 0, "unchanged": 1}
        stored = store.pair(pair_id)["answer"]
        mine = store.conflict_of(stored["answer_id"])
        if catalogue is not None and rec["answers"]:
            remember_before(stored["answer_id"])
        return flask.jsonify(
            **rec,
            answer=with_images(stored),
            conflict=_conflict(mine, with_images) if mine else None,
            progress=answered(),
        )

    undo_pages = {"annotate": ("pair", "new_individual"), "catalogue": ("merge", "split")}

    @app.post("/api/undo")
    def undo():
        data = body()
        page_kind = data.get("page")
        if page_kind is not None and page_kind not in undo_pages:
            raise _ApiError(400, f"'page' must be 'annotate' or 'catalogue'; got {page_kind!r}")
        try:
            # no name anywhere: the name answers are stored under (the user's), never
            # "anyone's latest" -- an empty name tells the store exactly that
            undone = store.undo(annotator=who(data) or "", origins=undo_pages.get(page_kind))
        except NothingToUndo as exc:
            raise _ApiError(409, str(exc)) from None
        return flask.jsonify(undone=with_images(undone), progress=progress())

    @app.get("/api/progress")
    def get_progress():
        return flask.jsonify(progress())

    @app.get("/api/conflicts")
    def conflicts():
        return flask.jsonify(conflicts=[_conflict(c, with_images) for c in store.conflicts()])

    @app.get("/api/pairs/<int:pair_id>")
    def get_pair(pair_id):
        try:
            pair = store.pair(pair_id)
        except UnknownPair as exc:
            raise _ApiError(404, str(exc)) from None
        out = with_images(pair)
        if out["answer"] is not None:
            out["answer"] = with_images(out["answer"])
        return flask.jsonify(out)

    # ---- the catalogue (with a catalogue builder) and the context of a pair --------------
    cat_lock = threading.Lock()
    cat_cache = {"key": None, "value": None, "status": None, "status_of": None}
    status_lock = threading.Lock()
    before_answer = {}  # answer id -> the catalogue last built before it (the latest few)
    info_cache = {}

    def current_catalogue():
        if catalogue is None:
            raise _ApiError(404, "this server has no catalogue (start it with 'aas catalogue')")
        with cat_lock:  # one build at a time: it records new identity numbers
            key = store.version()
            if cat_cache["key"] != key:
                cat_cache["value"], cat_cache["key"] = catalogue(), key
            return cat_cache["value"]

    def refresh_status():
        """Computes the status of the catalogue now, unless it is known (one at a time)."""
        with status_lock:
            now = current_catalogue()
            if cat_cache["status_of"] is now:
                return
            # a LiveCatalogue keeps the status it computed (e.g. for the start-up line)
            got = catalogue.status() if hasattr(catalogue, "status") else now.status()
            with cat_lock:
                cat_cache["status"], cat_cache["status_of"] = got, now

    def catalogue_status(wait):
        """The status of the catalogue now (estimate_status); without ``wait``, the last
        one computed, never waiting for a build (a fresh one is computed in the
        background), except for the very first."""
        if wait or cat_cache["status"] is None:  # the first one is worth the wait
            refresh_status()
        elif not status_lock.locked():
            threading.Thread(target=refresh_status, name="aas-status", daemon=True).start()
        with cat_lock:
            return cat_cache["status"]

    def remember_before(answer_id):
        """Keeps the catalogue last built as the one before ``answer_id`` (no build)."""
        with cat_lock:
            before_answer[answer_id] = cat_cache["value"]
            for old in sorted(before_answer)[:-32]:
                del before_answer[old]

    def change_of(before, pairs, kind):
        """What answers did to the catalogue, for the page (None without one)."""
        if catalogue is None or before is None:
            return None
        from ..catalogue import describe_change

        return describe_change(before, current_catalogue(), pairs, kind)

    def image_info(index):
        """The image plus what a person judges by: file name, camera (its folder), EXIF date."""
        if index not in info_cache:
            rel, full, _ = files.locate(index)
            parts = rel.split("/")
            folder = parts[-2] if len(parts) > 1 else ""
            info_cache[index] = {
                **image(index),
                "file": parts[-1],
                "camera": str((cameras or {}).get(index, folder)),
                "date": _exif_date(full) if full is not None else "",
            }
        return info_cache[index]

    def identity_json(ident, limit, describe=image):
        shown = ident.images[:limit].tolist()
        return {
            "number": ident.number,
            "code": ident.code,
            "name": ident.name,
            "named": ident.named,
            "checked": ident.checked,
            "size": int(len(ident.images)),
            "absorbed": list(ident.absorbed),
            "status": ident.status,
            "verified": ident.n_verified,
            "reference": int(ident.reference),
            "conflict": ident.conflict,
            "images": [
                {**describe(int(k)), "verified": bool(v)}
                for k, v in zip(shown, ident.verified[: len(shown)].tolist())
            ],
        }

    def number_arg(data, key):
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**63:
            raise _ApiError(400, f"{key!r} must be an identity number; got {v!r}")
        return v

    def catalogue_call(fn, *args, **kw):
        from ..catalogue import StaleIdentity

        try:
            return fn(*args, **kw)
        except KeyError as exc:
            raise _ApiError(404, str(exc).strip("'\"")) from None
        except StaleIdentity as exc:  # the page showed the catalogue as it was
            raise _ApiError(409, str(exc)) from None
        except (ValueError, TypeError) as exc:
            if _store_failure(exc) is not None:  # the store's fault, not the request's: 503
                raise
            raise _ApiError(400, str(exc)) from None

    @app.get("/catalogue")
    def catalogue_page():
        return page("catalogue.html")

    @app.get("/api/catalogue")
    def get_catalogue():
        limit = int_arg("images", 24, _MAX_SHOWN)  # before the build: a bad request is quick
        cat = current_catalogue()
        ids = sorted(cat.identities, key=lambda i: (-len(i.images), i.number))
        groups = [i for i in ids if len(i.images) > 1]
        singles = [i for i in ids if len(i.images) == 1]
        return flask.jsonify(
            identities=[identity_json(i, limit) for i in groups],
            unsorted={
                "count": len(singles),
                "images": [
                    {**image(int(i.images[0])), "number": i.number, "code": i.code}
                    for i in sorted(singles, key=lambda i: i.number)[:_UNSORTED_SHOWN]
                ],
            },
            images=len(cat.image_paths),
            progress=progress(),
            status=catalogue_status(wait=True),
        )

    @app.get("/api/catalogue/<int:number>")
    def get_identity(number):
        try:
            ident = current_catalogue().identity(number)
        except KeyError as exc:
            raise _ApiError(404, str(exc).strip("'\"")) from None
        return flask.jsonify(identity_json(ident, len(ident.images), image_info))

    @app.post("/api/catalogue/rename")
    def rename():
        data = body()
        cat = current_catalogue()
        name = data.get("name")
        catalogue_call(cat.rename, number_arg(data, "number"), name, annotator=who(data))
        return flask.jsonify(ok=True)

    @app.post("/api/catalogue/check")
    def check():
        data = body()
        cat = current_catalogue()
        checked = data.get("checked", True)
        catalogue_call(cat.mark_checked, number_arg(data, "number"), checked, annotator=who(data))
        return flask.jsonify(ok=True)

    @app.post("/api/catalogue/merge")
    def merge():
        data = body()
        cat = current_catalogue()
        a, b = number_arg(data, "a"), number_arg(data, "b")
        rec = catalogue_call(cat.merge, a, b, annotator=who(data))
        pair = [[cat.identity(a).reference, cat.identity(b).reference]]
        return flask.jsonify(**rec, progress=progress(), change=change_of(cat, pair, "same"))

    @app.post("/api/catalogue/split")
    def split():
        data = body()
        cat = current_catalogue()
        images = data.get("images")
        if not isinstance(images, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) for k in images
        ):
            raise _ApiError(400, f"'images' must be a list of image indices; got {images!r}")
        number = number_arg(data, "number")
        rec = catalogue_call(cat.split, number, images, annotator=who(data))
        pair = [[images[0], cat.identity(number).reference]]
        return flask.jsonify(**rec, progress=progress(), change=change_of(cat, pair, "different"))

    @app.get("/api/context/<int:pair_id>")
    def context(pair_id):
        """Each image of a pair with its details and, with a catalogue, up to 8 images of the
        identity it is in now."""
        try:
            pair = store.pair(pair_id)
        except UnknownPair as exc:
            raise _ApiError(404, str(exc)) from None
        cat = current_catalogue() if catalogue is not None else None
        out = {}
        for side, k in (("a", pair["i"]), ("b", pair["j"])):
            entry = {"image": image_info(k), "identity": None, "others": []}
            if cat is not None:
                ident = cat.identity(int(cat.numbers[k]))
                others = [int(m) for m in ident.images.tolist() if m != k][:8]
                entry["identity"] = {
                    "number": ident.number,
                    "code": ident.code,
                    "name": ident.name,
                    "size": int(len(ident.images)),
                    "verified": ident.n_verified,
                    "status": ident.status,
                }
                entry["others"] = [image(m) for m in others]
            out[side] = entry
        return flask.jsonify(out)

    @app.get("/images/<path:raw>")
    def get_image(raw):
        if not _INDEX.fullmatch(raw):
            raise _ApiError(404, f"images are addressed by their index 0..{n - 1}; got {raw!r}")
        index = int(raw)
        if index >= n:
            raise _ApiError(404, f"no image {index}: the store holds images 0..{n - 1}")
        rel, full, _ = files.locate(index)
        problem = files.problem(index)
        if problem is not None:
            code = 404
            if full is None or problem.startswith("unreadable"):
                code = 403
            elif problem == "not an image file type":
                code = 415
            raise _ApiError(code, f"image {index} ({rel!r}) cannot be shown: {problem}")
        mime = mimetypes.guess_type(full.name)[0]
        resp = flask.send_file(full, mimetype=mime, conditional=True, max_age=3600)
        resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return resp

    return app


def _exif_date(path) -> str:
    """The photo's EXIF date ('2024:05:01 06:12:33'), or '' (no EXIF, no Pillow, not a file)."""
    try:
        from PIL import Image
    except ImportError:
        return ""
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            date = exif.get_ifd(0x8769).get(36867) or exif.get(306) or ""
    except Exception:  # an unreadable file has no date; never an error page
        return ""
    return str(date).strip("\x00 ")


def _host_name(host) -> str:
    """'localhost:8765' -> 'localhost'; '[::1]:8765' -> '::1'."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _conflict(c, with_images):
    out = with_images({k: v for k, v in c.items() if k != "because"})
    out["because"] = [with_images(b) for b in c["because"]]
    return out


def serve(
    store,
    images_dir,
    *,
    host="127.0.0.1",
    port=8765,
    proposer=None,
    annotator=None,
    allow_hosts=(),
    low_water=0,
    status=None,
    catalogue=None,
    cameras=None,
    command="aas annotate",
    learner=None,
):
    """Runs the app with waitress until interrupted; prints the URL once it listens.

    ``low_water``, ``catalogue``, ``cameras``, ``learner``: see :func:`create_app`.
    ``status``: a line printed after the URL. ``command``: the name the printed lines
    start with.

    ``port=0`` picks a free port (the printed URL tells which). Requests must
    be addressed to a loopback name, to ``host`` or to one of ``allow_hosts``.
    """
    names = [*allow_hosts] + ([] if host in ("0.0.0.0", "::", "") else [host])
    if proposer is not None:
        proposer = _Announced(proposer, command)
    app = create_app(
        store,
        images_dir,
        proposer=proposer,
        annotator=annotator,
        allowed_hosts=names,
        low_water=low_water,
        catalogue=catalogue,
        cameras=cameras,
        learner=learner,
    )
    try:
        from waitress import create_server
    except ImportError:
        raise ImportError(f"aas annotate needs Flask and waitress: {_WEB_HINT}") from None
    import logging

    # a page loading its thumbnails queues requests for a moment: normal, not worth a line
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app, host=host, port=port, threads=4, ident="aas-annotate")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.effective_port}/"
    if not is_loopback(host):
        print(
            f"{command}: warning: listening on {host}: anyone who can reach this machine "
            "can read the images and change the answers (there is no login).",
            file=sys.stderr,
        )
        if host in ("0.0.0.0", "::", "") and not allow_hosts:
            print(
                f"{command}: note: requests are answered only when addressed to localhost; "
                "add --allow-host NAME for each name or address others use to reach it.",
                file=sys.stderr,
            )
    problems = photo_problems(store, images_dir)
    if problems:
        shown = ", ".join(f"{p!r} ({why})" for _, p, why in problems[:3])
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        print(
            f"{command}: warning: {len(problems)} of {store.n_images} photos cannot be shown: "
            f"{shown}{more}; the page says why in their place",
            file=sys.stderr,
            flush=True,
        )
    print(f"{command}: serving {store.path} on {url} (Ctrl+C to stop)", flush=True)
    if catalogue is not None:
        print(f"{command}: the catalogue of identities is at {url}catalogue", flush=True)
    if status:
        print(status, flush=True)
    before = store.progress()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        try:
            print(_session_summary(command, store, before, catalogue), flush=True)
        except (KeyboardInterrupt, ValueError, OSError):
            pass  # a second Ctrl+C, or a store gone: the answers are stored either way


def _session_summary(command, store, before, catalogue) -> str:
    """What this session did, in one line, for the terminal it ends in."""
    now = store.progress()
    answers = now["answered"] + now["cant_tell"] + now["skipped"]
    answers -= before["answered"] + before["cant_tell"] + before["skipped"]
    edits = now["edits"] - before["edits"]
    cat = getattr(catalogue, "latest", lambda: None)()
    known = f", {len(cat.identities)} identities" if cat is not None else ""
    return (
        f"{command}: stopped. This session: {answers} answer{'s' * (answers != 1)}, {edits} "
        f"edit{'s' * (edits != 1)} (net of undos); {now['answered']} answered in all"
        f"{known}, {now['remaining']} questions left. Everything is stored in {store.path}."
    )


class _Announced:
    """A proposer whose rounds are each one line in the terminal."""

    def __init__(self, proposer, command):
        self._proposer, self._command = proposer, command

    def __call__(self, store):
        got = self._proposer(store)
        print(f"{self._command}: {self._proposer.message}", flush=True)
        return got

    @property
    def message(self):
        return self._proposer.message

    @message.setter
    def message(self, text):
        self._proposer.message = text
