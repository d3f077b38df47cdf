"""Evaluation of embeddings on a dataset: the Re-ID protocol and the paper's open-set one."""

from __future__ import annotations

import numpy as np

from ..metrics import open_set as _open_set
from ..metrics import retrieval as _retrieval

__all__ = ["evaluate_embeddings"]


def evaluate_embeddings(
    X,
    dataset,
    *,
    protocol="reid",
    train_split="train",
    query_split="query",
    gallery_split="gallery",
    test_split="test",
    unknown_fraction=0.2,
    max_exemplars=5,
    threshold=None,
    seed=0,
) -> dict:
    """Retrieval (and open-set) metrics of embeddings ``X`` (one row per image of ``dataset``).

    protocol="reid": the ``query_split`` images against the ``gallery_split``
    images (same identity and camera removed when cameras are known); mAP,
    mINP, CMC top-1/3/5/10. Without those splits, the ``test_split`` images
    are queried against each other (the query itself removed).

    protocol="open-set" (paper §4): the ``test_split`` images (or query +
    gallery splits together, when there is no test split) are the queries;
    ``unknown_fraction`` of the training identities are held out and every
    other one contributes up to ``max_exemplars`` exemplars to the gallery
    (medoid, then farthest points, on ``X``; see
    :func:`aas_core.metrics.open_set.protocol_split`). Reported: mAP, mINP
    and CMC over the queries whose identity is in the gallery, BAKS, AUC-ROC
    of known vs unknown from the top-1 similarity, and BAUS at ``threshold``
    (when given).
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] != len(dataset):
        raise ValueError(
            f"evaluate: 'X' must have one row per image of the dataset ({len(dataset)}); got "
            f"shape {X.shape}."
        )
    if dataset.split is None:
        raise ValueError("evaluate: the dataset has no split column (query/gallery/test).")
    split = dataset.split
    present = sorted(set(split.tolist()))

    def rows(name):
        return np.flatnonzero(split == name)

    ident = dataset.identity
    cam = dataset.camera
    out = {"protocol": protocol}
    if protocol == "reid":
        q, g = rows(query_split), rows(gallery_split)
        same = False
        if q.size == 0 or g.size == 0:
            q = g = rows(test_split)
            same = True
        if q.size == 0:
            raise ValueError(
                f"evaluate: need {query_split!r} and {gallery_split!r} splits, or a "
                f"{test_split!r} split; the splits are {present}."
            )
        cams = cam is not None and not same
        r = _retrieval.evaluate(
            X[q],
            X[g],
            ident[q],
            ident[g],
            query_cameras=cam[q] if cams else None,
            gallery_cameras=cam[g] if cams else None,
            exclude_self=same,
        )
        out.update(n_query=int(q.size), n_gallery=int(g.size))
    elif protocol == "open-set":
        tr = rows(train_split)
        q = rows(test_split)
        if q.size == 0:
            q = np.concatenate([rows(query_split), rows(gallery_split)])
        if tr.size == 0 or q.size == 0:
            raise ValueError(
                f"evaluate: the open-set protocol needs a {train_split!r} split and a "
                f"{test_split!r} (or query/gallery) split; the splits are {present}."
            )
        s = _open_set.protocol_split(
            ident[tr],
            X[tr],
            unknown_fraction=unknown_fraction,
            max_exemplars=max_exemplars,
            seed=seed,
        )
        g = tr[s.gallery]
        gid = ident[g]
        qid = np.where(np.isin(ident[q], gid), ident[q], -1)  # not in the gallery: unknown
        o = _open_set.evaluate(X[q], X[g], qid, gid, threshold=threshold)
        out.update(
            n_query=int(q.size),
            n_gallery=int(g.size),
            n_known_queries=int(o.n_known),
            n_unknown_queries=int(o.n_unknown),
            BAKS=float(o.baks),
            AUC_ROC=float(o.auc_roc),
        )
        if threshold is not None:
            out["BAUS"] = float(o.baus)
        known = qid >= 0
        if not known.any():
            return out
        r = _retrieval.evaluate(X[q[known]], X[g], qid[known], gid)
    else:
        raise ValueError(f"evaluate: 'protocol' must be 'reid' or 'open-set'; got {protocol!r}.")
    out.update(mAP=float(r.mean_ap), mINP=float(r.mean_inp))
    out.update({f"top{k}": float(v) for k, v in r.cmc.items()})
    return out
