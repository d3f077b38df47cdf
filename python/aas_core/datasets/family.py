"""A family of synthetic Re-ID embeddings, and a named suite of its members.

:func:`make_reid_blobs` is one data set; defaults tuned on it (DBSCAN's eps,
the samplers) may not hold elsewhere. :func:`make_reid_family` varies what real
embeddings of animals vary: how tight an identity is, how many images each
has and how unequal those counts are, the dimension, animals seen once,
camera-trap bursts, several looks of one animal (left and right flank) and
noise that prefers some directions (pose, light). :data:`GENERATOR_SUITE`
names members of the family, easy and hard, for benchmarks and tests
(:func:`make_suite_member`).

The model, in order (all directions are Gaussian; one seeded Generator):

1. **Sizes.** ``singletons`` × n images belong to identities seen once; the
   rest to identities whose sizes follow ``per_identity`` and ``zipf``
   (see :func:`make_reid_family`).
2. **Centres.** As in make_reid_blobs, identities come in look-alike groups
   of ``ids_per_group`` sharing a direction g: centre c = normalise(√0.4·g +
   √0.6·own).
3. **Sub-modes.** With ``submodes`` = m > 1 each identity has m unit centres
   normalise(√(1 - t)·c + √t·u_j), t = ``submode_distance``; each image
   takes one of them at random.
4. **Noise.** An image is normalise(centre + noise), noise of expected norm
   0.75·``spread`` whatever the dimension: 0.75·s/√d · (√(1 - a)·z + √(a·d/r)·Qᵀh),
   z ~ N(0, I_d), h ~ N(0, I_r), Q r orthonormal directions shared by all
   identities (r = max(1, round(d/16))), a = ``anisotropy``. So a share a
   of the noise lies in r directions, as a pose or the light moves every
   animal's embedding alike.
5. **Bursts.** Each image after an identity's first is, with probability
   ``bursts``, a near-duplicate of the identity's previous image:
   normalise(previous + ``burst_jitter``/√d · z). Runs of such copies are a
   camera trap's bursts.

Rows are shuffled, so their order carries no identity information.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_float, check_int
from .synthetic import _GROUP_SHARE, _unit_gaussian

__all__ = ["GENERATOR_SUITE", "make_reid_family", "make_suite_member"]

# The noise norm per unit of spread: at this scale issue 24's four variants (spread 2.0 at
# d 128, ...) are about as hard as measured there (best fixed eps F1 0.61 vs 0.62).
NOISE_SCALE = 0.75


def _check_per_identity(value, owner):
    """(lo, hi) from an int or a (lo, hi) pair of ints, 1 <= lo <= hi."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        v = check_int("per_identity", value, low=1, owner=owner)
        return v, v
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo = check_int("per_identity", value[0], low=1, owner=owner)
        hi = check_int("per_identity", value[1], low=1, owner=owner)
        if lo > hi:
            raise ValueError(
                f"The 'per_identity' parameter of {owner} must be an int >= 1 or a (low, high) "
                f"pair with low <= high; got {tuple(value)!r}."
            )
        return lo, hi
    raise TypeError(
        f"The 'per_identity' parameter of {owner} must be an int >= 1 or a (low, high) pair "
        f"of ints; got {value!r}."
    )


def _sizes(n_reg, lo, hi, zipf, rng):
    """Identity sizes summing to n_reg (see make_reid_family's ``per_identity``)."""
    if n_reg == 0:
        return np.zeros(0, np.int64)
    if lo == hi and zipf > 0:
        # rank r holds c·r^-zipf images, c such that round(n_reg / lo) identities hold n_reg
        m = max(1, round(n_reg / lo))
        w = np.arange(1, m + 1, dtype=np.float64) ** -zipf
        exact = n_reg * w / w.sum()
        sizes = np.maximum(np.floor(exact).astype(np.int64), 1)
        short = n_reg - int(sizes.sum())
        if short > 0:  # largest remainders first
            sizes[np.argsort(-(exact - np.floor(exact)), kind="stable")[:short]] += 1
        over = int(sizes.sum()) - n_reg
        if over > 0:  # the floor of 1 overshot: take it from the sizes above 1, in proportion
            excess = sizes - 1
            take = over * excess // excess.sum()
            take[np.argsort(-(excess - take), kind="stable")[: over - int(take.sum())]] += 1
            sizes -= take
        return sizes
    if zipf > 0:  # a range: the largest identity has hi images, rank r hi·r^-zipf, never < lo
        ranks = np.arange(1, n_reg // lo + 2, dtype=np.float64)
        sizes = np.clip(np.rint(hi * ranks**-zipf), lo, hi).astype(np.int64)
        sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n_reg)) + 1]
    elif lo == hi:
        sizes = np.full(-(-n_reg // lo), lo, np.int64)
    else:
        sizes = rng.integers(lo, hi + 1, size=n_reg // lo + 1)
        sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n_reg)) + 1]
    sizes[-1] -= int(sizes.sum()) - n_reg  # the last identity takes what is left
    return sizes[sizes > 0]


def make_reid_family(
    n,
    *,
    d=256,
    spread=1.0,
    per_identity=8,
    zipf=0.0,
    singletons=0.0,
    bursts=0.0,
    burst_jitter=0.1,
    submodes=1,
    submode_distance=0.5,
    anisotropy=0.0,
    ids_per_group=8,
    seed=0,
):
    """L2-normalised embeddings of identities with a chosen shape (module notes).

    Parameters
    ----------
    n : int >= 1
        Images.
    d : int >= 2
        Dimension.
    spread : float >= 0
        Within-identity noise: its expected norm around the (unit) centre is
        0.75·``spread``. At 0 every image lies on its centre; at 1 an image's
        cosine to its centre is about 0.8, at 2 about 0.55.
    per_identity : int >= 1, or (low, high) ints
        Images per identity: a fixed count, or a range. Without ``zipf`` a
        range draws each size uniformly in [low, high]. With a range or
        without ``zipf`` one identity takes what is left of n, so it may have
        fewer.
    zipf : float >= 0
        Imbalance of the sizes (0: none). With a fixed count, the identity of
        rank r holds ∝ r^-zipf images, the mean staying ``per_identity``;
        with a range, round(high·r^-zipf) clipped to [low, high].
    singletons : float in [0, 1]
        Share of the images whose identity is seen once.
    bursts : float in [0, 1)
        Probability that an image is a near-duplicate of its identity's
        previous image (camera-trap bursts).
    burst_jitter : float >= 0
        Noise norm of such a near-duplicate around the image it copies.
    submodes : int >= 1
        Centres per identity (2: left and right flank).
    submode_distance : float in [0, 1]
        Variance share of a sub-mode's own direction: the sub-centres of one
        identity have cosine about 1 - ``submode_distance`` to each other.
    anisotropy : float in [0, 1]
        Share of the noise lying in max(1, round(d/16)) directions shared by
        all identities (0: isotropic).
    ids_per_group : int >= 1
        Identities per look-alike group (centres sharing 40% of their variance).
    seed : int >= 0
        Seed of the one numpy Generator used (the global RNG is never touched).

    Returns
    -------
    X : (n, d) float32, unit rows
    y : (n,) int64 identity labels 0..m-1

    Examples
    --------
    >>> X, y = make_reid_family(300, d=32, per_identity=(2, 10), zipf=1.0, bursts=0.5, seed=0)
    >>> X.shape, X.dtype, y.dtype
    ((300, 32), dtype('float32'), dtype('int64'))
    """
    owner = "make_reid_family"
    n = check_int("n", n, low=1, owner=owner)
    d = check_int("d", d, low=2, owner=owner)
    spread = check_float("spread", spread, low=0.0, owner=owner)
    lo, hi = _check_per_identity(per_identity, owner)
    zipf = check_float("zipf", zipf, low=0.0, owner=owner)
    singletons = check_float("singletons", singletons, low=0.0, high=1.0, owner=owner)
    bursts = check_float("bursts", bursts, low=0.0, high=1.0, closed="left", owner=owner)
    burst_jitter = check_float("burst_jitter", burst_jitter, low=0.0, owner=owner)
    submodes = check_int("submodes", submodes, low=1, owner=owner)
    submode_distance = check_float(
        "submode_distance", submode_distance, low=0.0, high=1.0, owner=owner
    )
    anisotropy = check_float("anisotropy", anisotropy, low=0.0, high=1.0, owner=owner)
    ids_per_group = check_int("ids_per_group", ids_per_group, low=1, owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    rng = np.random.default_rng(seed)

    n_single = int(round(singletons * n))
    sizes = np.concatenate([_sizes(n - n_single, lo, hi, zipf, rng), np.ones(n_single, np.int64)])
    n_ids = len(sizes)
    y = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)

    # float64 throughout, one cast at the end: the norms stay exact at d = 2048
    n_groups = -(-n_ids // ids_per_group)
    groups = _unit_gaussian(rng, (n_groups, d), np.float64)
    group_of = rng.permutation(n_ids) // ids_per_group  # singletons get look-alikes too
    centres = np.sqrt(_GROUP_SHARE) * groups[group_of] + np.sqrt(1 - _GROUP_SHARE) * (
        _unit_gaussian(rng, (n_ids, d), np.float64)
    )
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if submodes > 1:
        own = _unit_gaussian(rng, (n_ids, submodes, d), np.float64)
        subs = np.sqrt(1 - submode_distance) * centres[:, None, :] + np.sqrt(submode_distance) * own
        subs /= np.linalg.norm(subs, axis=2, keepdims=True)
        mode = rng.integers(0, submodes, size=n)
        X = subs[y, mode]
    else:
        X = centres[y]

    noise = rng.standard_normal((n, d)) * np.sqrt(1 - anisotropy)
    if anisotropy > 0:
        r = max(1, round(d / 16))
        Q = np.linalg.qr(rng.standard_normal((d, r)))[0]  # (d, r), orthonormal columns
        noise += np.sqrt(anisotropy * d / r) * (rng.standard_normal((n, r)) @ Q.T)
    X = X + (NOISE_SCALE * spread / np.sqrt(d)) * noise
    X /= np.linalg.norm(X, axis=1, keepdims=True)

    if bursts > 0:
        # y is sorted, so an image's predecessor in the same identity is the row before it
        follows = rng.random(n) < bursts
        follows[0] = False
        follows[1:] &= y[1:] == y[:-1]
        jitter = (burst_jitter / np.sqrt(d)) * rng.standard_normal((n, d))
        for i in np.flatnonzero(follows):  # in order: a run copies its own latest image
            X[i] = X[i - 1] + jitter[i]
            X[i] /= np.linalg.norm(X[i])

    order = rng.permutation(n)
    return np.ascontiguousarray(X[order], dtype=np.float32), y[order]


# ---- the named suite -----------------------------------------------------------

#: Members of the family by name: keyword arguments of :func:`make_reid_family`
#: (all but ``n`` and ``seed``). The first four are issue 24's variants.
GENERATOR_SUITE = {
    "wide-6-d128": dict(spread=2.0, per_identity=6, d=128),
    "zipf0.5-20-d512": dict(spread=1.0, per_identity=20, zipf=0.5, d=512),
    "mid-10-d256": dict(spread=1.2, per_identity=10, d=256),
    "zipf1-4-d64": dict(spread=1.4, per_identity=4, zipf=1.0, d=64),
    "base-8-d256": dict(spread=1.3, per_identity=8, d=256),
    "anisotropic": dict(spread=1.6, per_identity=8, anisotropy=0.7, d=256),
    "bursts": dict(spread=1.9, per_identity=(5, 30), bursts=0.6, d=256),
    "flanks": dict(spread=1.2, per_identity=12, submodes=2, submode_distance=0.6, d=256),
    "many-singletons": dict(spread=1.3, per_identity=8, singletons=0.3, d=256),
    "tiny-ids": dict(spread=1.3, per_identity=(2, 3), d=256),
    "large-ids": dict(spread=1.7, per_identity=50, d=512),
    "zipf-range": dict(spread=1.5, per_identity=(2, 50), zipf=1.2, d=256),
    "low-d32": dict(spread=1.1, per_identity=8, d=32),
    "high-d2048": dict(spread=4.0, per_identity=8, d=2048),
    "camera-trap": dict(
        spread=1.6,
        per_identity=(2, 40),
        zipf=0.8,
        singletons=0.15,
        bursts=0.5,
        submodes=2,
        submode_distance=0.5,
        anisotropy=0.5,
        d=256,
    ),
}


def make_suite_member(name, *, n=2500, seed=0):
    """(X, y) of the :data:`GENERATOR_SUITE` member ``name`` with ``n`` images.

    >>> X, y = make_suite_member("tiny-ids", n=100)
    >>> X.shape
    (100, 256)
    """
    owner = "make_suite_member"
    if not isinstance(name, str) or name not in GENERATOR_SUITE:
        choices = ", ".join(repr(k) for k in GENERATOR_SUITE)
        raise ValueError(f"The 'name' parameter of {owner} must be one of {choices}; got {name!r}.")
    n = check_int("n", n, low=1, owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    return make_reid_family(n, seed=seed, **GENERATOR_SUITE[name])
