"""The AAS sampling distribution (paper Eqs. 4-6) and weighted draws.

P(Y) = eps * P(Y | U_os) + (1 - eps) * P(Y | U_us), where

- P(Y | U_os) is proportional to the pair's similarity 1 - d_Jaccard;
- P(Y | U_us) = pi_i * rho_{k|i} * omega_{y|ik}. The paper defers the three
  factors to its supplementary; our definitions:
  * i is the pair's type by DBSCAN status: beta1 inlier-inlier, beta2
    inlier-outlier, beta3 outlier-outlier. pi_i is uniform over the types
    present (outlier pairs, which LBAS discards, keep real weight); other
    weights can be given.
  * rho_{k|i} is proportional to the variation of information between A and B
    restricted to region S_k (how tangled the region is, independent of its
    size), over the regions holding type-i pairs; uniform if all are 0.
  * omega_{y|ik} is uniform over the type-i pairs of region k.
- If one pool is empty, its share goes to the other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "aas_probabilities", "region_variation_of_information", "weighted_sample"]

KINDS = ("beta1", "beta2", "beta3")  # inlier-inlier, inlier-outlier, outlier-outlier


def region_variation_of_information(region, labels_a, labels_b, n_regions) -> np.ndarray:
    """VI(A, B) inside each region, from contingency counts (nats). Shape (n_regions,)."""
    inside = region >= 0
    r, a, b = region[inside], labels_a[inside], labels_b[inside]
    if not len(r):
        return np.zeros(n_regions)
    size = np.bincount(r, minlength=n_regions).astype(np.float64)
    # dense ranks keep the label order, so one int64 key per point sorts the
    # cells exactly as np.unique(axis=0) would (and much faster)
    a = np.unique(a, return_inverse=True)[1].reshape(-1)
    b = np.unique(b, return_inverse=True)[1].reshape(-1)
    n_a, n_b = int(a.max()) + 1, int(b.max()) + 1

    def entropy(key):
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        first = np.zeros(len(counts), np.int64)
        first[inv.ravel()] = np.arange(len(r))
        reg = r[first]
        p = counts / size[reg]
        return np.bincount(reg, weights=-p * np.log(p), minlength=n_regions)

    r64 = r.astype(np.int64)
    h_a, h_b = entropy(r64 * n_a + a), entropy(r64 * n_b + b)
    h_ab = entropy((r64 * n_a + a) * n_b + b)
    return np.maximum(2 * h_ab - h_a - h_b, 0.0)


def aas_probabilities(us_region, us_kind, os_sim, vi, *, eps=0.6, pi=None) -> np.ndarray:
    """Probability of every candidate: U_us pairs first, then U_os pairs.

    Parameters
    ----------
    us_region : (m_us,) int64, region of each U_us pair
    us_kind : (m_us,) int in {0, 1, 2}, its type beta1/beta2/beta3
    os_sim : (m_os,) float, similarity 1 - d of each U_os pair
    vi : (n_regions,) float, VI(A, B) per region
    eps : float in [0, 1], the U_os share
    pi : None or 3 non-negative weights for beta1..beta3 (None: uniform over types present)
    """
    m_us, m_os = len(us_region), len(os_sim)
    p_us = np.zeros(m_us)
    if m_us:
        weights = np.ones(3) if pi is None else np.asarray(pi, np.float64)
        present = np.bincount(us_kind, minlength=3) > 0
        w = np.where(present, weights, 0.0)
        if w.sum() <= 0:  # only zero-weight types present: fall back to uniform over them
            w = present.astype(np.float64)
        w = w / w.sum()
        for t in np.flatnonzero(w > 0):
            sel = np.flatnonzero(us_kind == t)
            regs, per_region = np.unique(us_region[sel], return_counts=True)
            rho = vi[regs].astype(np.float64)
            rho = rho / rho.sum() if rho.sum() > 0 else np.full(len(regs), 1.0 / len(regs))
            pos = np.searchsorted(regs, us_region[sel])
            p_us[sel] = w[t] * rho[pos] / per_region[pos]  # omega: uniform inside (i, k)
    p_os = np.zeros(m_os)
    if m_os:
        s = np.asarray(os_sim, np.float64)
        p_os = s / s.sum() if s.sum() > 0 else np.full(m_os, 1.0 / m_os)
    share_os = eps if m_us and m_os else (1.0 if m_os else 0.0)
    return np.concatenate([(1.0 - share_os) * p_us, share_os * p_os])


def weighted_sample(prob, budget, rng) -> np.ndarray:
    """Indices of ``budget`` candidates drawn without replacement, weighted by ``prob``.

    Exponential keys (Efraimidis & Spirakis): key = log(u) / p, keep the largest.
    Zero-probability candidates come last. All of them when budget >= len(prob).
    """
    prob = np.asarray(prob, np.float64)
    if budget >= len(prob):
        return np.arange(len(prob))
    u = rng.random(len(prob))
    with np.errstate(divide="ignore"):
        keys = np.where(prob > 0, np.log(u) / prob, -np.inf)
    return np.sort(np.argsort(-keys, kind="stable")[:budget])
