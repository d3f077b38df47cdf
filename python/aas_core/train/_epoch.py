"""One epoch's steps, shared with :mod:`aas_core.train.learn`: pseudo-labels, the answers
folded in, a pass of training, evaluation."""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch

from .._labels import outliers_to_singletons
from ..cluster.spcl import spcl_pseudo_labels
from ..loop import cluster_features
from ..metrics import clustering as _clustering
from ..metrics import retrieval as _retrieval
from ..refine import np3
from . import frozen as _frozen
from .embed import embed_images


class _Bar:
    def __init__(self, total, label, enabled):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.live = enabled
        self.t0 = time.perf_counter()

    def step(self, text=""):
        self.done += 1
        if self.live:
            width = 30
            filled = int(width * self.done / self.total)
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            sys.stderr.write(
                f"\r  {self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} {rate:.1f} it/s {text:<20}"
            )
            sys.stderr.flush()

    def close(self):
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _budget_pairs(budget, n) -> int:
    if isinstance(budget, int):
        return budget
    return int(round(budget * (n * (n - 1) // 2)))


def _cached_batches(views, batches, seed, epoch):
    """(features, index) batches from a feature cache: each image in one of its two views
    (image or mirror), drawn from (seed, epoch, iteration) as the image transforms are."""
    for it, index in enumerate(batches):
        rng = np.random.default_rng([seed, epoch, it, 31])
        view = rng.integers(0, 2, size=len(index))
        yield torch.from_numpy(views[index, view]), torch.from_numpy(np.asarray(index))


def _pseudo_labels(X, constraints, config, spcl_state):
    """SpCL's self-paced pseudo-labels of the memory bank's features ``X``.

    kNN graph -> Jaccard -> DBSCAN with eps fitted (or fixed) as ``config``
    says; returns the :class:`~aas_core.ClusterState` (the samplers use its
    graph and clusterings), the labels and SpCL's state for the next epoch.
    """
    cs = cluster_features(
        X,
        constraints=constraints,
        n_threads=config.threads,
        k1=config.k1,
        k2=config.k2,
        eps=config.eps,
        min_samples=config.min_samples,
        eps_from_answers=config.eps_from_answers,
    )
    if spcl_state is not None and spcl_state.eps != cs.eps.eps:
        # eps follows the bank's features epoch by epoch; SpCL's independence
        # threshold, fixed at the first epoch, carries over to the new eps
        spcl_state = dataclasses.replace(spcl_state, eps=cs.eps.eps)
    labels, spcl_state = spcl_pseudo_labels(
        cs.D,
        eps=cs.eps.eps,
        eps_gap=config.eps_gap,
        min_samples=config.min_samples,
        state=spcl_state,
        n_threads=config.threads,
    )
    return cs, labels, spcl_state


def _fold_answers(labels, constraints, X, merge):
    """NP3 with every answer; an image it leaves out is an instance of its own."""
    labels = np3(labels, constraints, X, on_conflict="drop_oldest", merge=merge)
    # merge="auto" returns the images of a mixed cluster it dissolved as
    # outliers (-1); SpCL keeps an unclustered image as an instance of its own
    return outliers_to_singletons(labels)


def _train_epoch(
    model, memory, optimizer, loader, device, *, cached, gather=None, bar=None, autocast=None
):
    """One pass over ``loader``'s (inputs, index) batches with the hybrid-memory loss;
    the bank follows the batch features (``gather``: those of every process). ``autocast``:
    a callable giving the context of the forward pass (bf16); the loss is in fp32. Returns
    the losses."""
    import contextlib

    autocast = autocast or contextlib.nullcontext
    losses = []
    for inputs, index in loader:
        inputs = inputs.to(device, non_blocking=True)
        index = index.to(device)
        with autocast():
            feats = model(inputs, cached=cached)
        feats = feats.float()
        loss = memory(feats, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if gather is None:
            memory.update(feats.detach(), index)
        else:
            memory.update(gather(feats.detach()), gather(index))
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.step(f"loss {losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    return losses


def _evaluate(model, query, gallery, config, device, cache=None, autocast=None) -> dict:
    size = (config.height, config.width)
    m = _unwrap(model)
    same = gallery is query
    if cache is not None:
        Q = _frozen.embed_cached(m, cache["query"], device, autocast=autocast)
        G = Q if same else _frozen.embed_cached(m, cache["gallery"], device, autocast=autocast)
    else:
        Q = embed_images(m, query.files, size=size, batch_size=config.batch_size, device=device)
        G = (
            Q
            if same
            else embed_images(
                m, gallery.files, size=size, batch_size=config.batch_size, device=device
            )
        )
    cams = query.camera is not None and gallery.camera is not None and not same
    r = _retrieval.evaluate(
        Q,
        G,
        query.identity,
        gallery.identity,
        query_cameras=query.camera if cams else None,
        gallery_cameras=gallery.camera if cams else None,
        exclude_self=same,
    )
    out = {"mAP": float(r.mean_ap), "mINP": float(r.mean_inp)}
    for k, v in r.cmc.items():
        out[f"top{k}"] = float(v)
    return out


def _pseudo_label_metrics(labels, y) -> dict:
    # Unknown identities (-1) count as singletons: linking one to anything is a mistake.
    p, r, f = _clustering.pairwise_scores(y, labels)
    return {"pl_precision": float(p), "pl_recall": float(r), "pl_f1": float(f)}
