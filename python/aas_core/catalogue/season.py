"""A new season: new photos asked against the catalogue's known individuals first.

After new images join a store (:meth:`AnnotationStore.add_images`), the first
questions link each new image to the known identity it looks most like:
the pair (new image, that identity's most similar earlier image), named
identities first, most similar first. New-vs-new questions come after, from
the usual sampler over all images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["link_pairs"]


def link_pairs(catalogue, X, new_images):
    """Pairs linking each new image to its nearest known identity, in the order to ask.

    Parameters
    ----------
    catalogue : Catalogue of all images (old and new)
    X : (n, d) float array with unit rows (the clustering's features)
    new_images : int array, the rows added this season

    Returns
    -------
    pairs : (m, 2) int64, (earlier image, new image), one per new image that has a
        known identity to compare with; named identities first, then by similarity
    sims : (m,) float64, the cosine similarity of each pair
    """
    X = np.asarray(X, np.float32)
    new = np.unique(np.asarray(new_images, np.int64))
    is_new = np.zeros(len(X), bool)
    is_new[new] = True
    known = [i for i in catalogue.identities if (~is_new[i.images]).any()]
    if not known or not len(new):
        return np.empty((0, 2), np.int64), np.empty(0)
    old_rows = [i.images[~is_new[i.images]] for i in known]
    means = np.stack([X[r].mean(axis=0) for r in old_rows])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(X[new] @ means.T, axis=1)
    pairs, sims, named = [], [], []
    for k, g in zip(new.tolist(), nearest.tolist()):
        rows = old_rows[g]
        s = X[rows] @ X[k]
        best = int(np.argmax(s))
        pairs.append((int(rows[best]), k))
        sims.append(float(s[best]))
        named.append(known[g].named)
    order = np.lexsort((-np.asarray(sims), ~np.asarray(named)))
    return np.asarray(pairs, np.int64)[order].reshape(-1, 2), np.asarray(sims)[order]
