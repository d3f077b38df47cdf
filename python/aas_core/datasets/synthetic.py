"""Synthetic Re-ID embeddings with look-alike identities (DESIGN.md §8)."""

from __future__ import annotations

import numpy as np

from .._validation import check_int

__all__ = ["make_reid_blobs"]

# Variance shares of DESIGN.md §8: an identity centre is 40% its group's
# direction and 60% its own; a sample is 8% its identity centre, 92% noise.
_GROUP_SHARE = 0.4
_CENTRE_SHARE = 0.08


def _unit_gaussian(rng, shape):
    v = rng.standard_normal(shape, dtype=np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v


def make_reid_blobs(n, *, d=2048, ids_per_group=8, seed=0):
    """L2-normalised embeddings of ~n/8 identities in look-alike groups.

    Identity sizes are multinomial (n draws over n/8 identities, so about
    Poisson with mean 8; identities drawn zero times are dropped, and a few are
    singletons). Identities come in groups of ``ids_per_group`` that share a
    direction g: centre c = normalise(√0.4·g + √0.6·own), sample =
    normalise(√0.08·c + √0.92·noise), all directions Gaussian. Samples are
    shuffled so that row order carries no identity information.

    Parameters
    ----------
    n : int
        Number of samples (>= 1).
    d : int
        Dimension (>= 1).
    ids_per_group : int
        Identities per look-alike group (>= 1).
    seed : int
        Seed of the one numpy Generator used (the global RNG is never touched).

    Returns
    -------
    X : (n, d) float32, unit rows
    y : (n,) int64 identity labels 0..m-1

    Examples
    --------
    >>> X, y = make_reid_blobs(64, d=16, seed=0)
    >>> X.shape, X.dtype, y.dtype
    ((64, 16), dtype('float32'), dtype('int64'))
    """
    owner = "make_reid_blobs"
    n = check_int("n", n, low=1, owner=owner)
    d = check_int("d", d, low=1, owner=owner)
    ids_per_group = check_int("ids_per_group", ids_per_group, low=1, owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    rng = np.random.default_rng(seed)

    n_ids = max(1, round(n / 8))
    sizes = rng.multinomial(n, np.full(n_ids, 1.0 / n_ids))
    sizes = sizes[sizes > 0]
    n_ids = len(sizes)
    n_groups = -(-n_ids // ids_per_group)

    groups = _unit_gaussian(rng, (n_groups, d))
    own = _unit_gaussian(rng, (n_ids, d))
    group_of_id = np.arange(n_ids) // ids_per_group
    centres = np.sqrt(_GROUP_SHARE) * groups[group_of_id] + np.sqrt(1 - _GROUP_SHARE) * own
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    y = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)
    X = _unit_gaussian(rng, (n, d))  # the noise, filled in place below
    X *= np.float32(np.sqrt(1 - _CENTRE_SHARE))
    X += np.float32(np.sqrt(_CENTRE_SHARE)) * centres[y]
    X /= np.linalg.norm(X, axis=1, keepdims=True)

    order = rng.permutation(n)
    return np.ascontiguousarray(X[order]), y[order]
