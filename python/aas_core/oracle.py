"""A simulated annotator: answers "same identity?" from known labels."""

from __future__ import annotations

import numpy as np

from ._validation import check_float

__all__ = ["LabelOracle"]


class LabelOracle:
    """Answers pair queries from ground-truth identities, optionally with flips.

    Parameters
    ----------
    y : (n,) int array
        True identity of every image.
    noise : float in [0, 0.5]
        Probability that an answer is flipped (an annotator's mistake).
    seed : int or None
        Seed of the flips. Each pair's flip depends only on (seed, pair), so
        asking the same pair again, or in another order, gives the same answer.

    Attributes
    ----------
    n_asked : int
        Pairs answered so far (the annotation cost).

    Examples
    --------
    >>> oracle = LabelOracle([0, 0, 1])
    >>> oracle.answer([[0, 1], [1, 2]]).tolist(), oracle.n_asked
    ([True, False], 2)
    """

    def __init__(self, y, *, noise=0.0, seed=None):
        y = np.asarray(y)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(
                f"LabelOracle: 'y' must be a 1-D integer array; got dtype {y.dtype}, "
                f"shape {y.shape}."
            )
        self.y = y.astype(np.int64)  # a copy
        self.noise = check_float("noise", noise, low=0.0, high=0.5, owner="LabelOracle")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"LabelOracle: 'seed' must be an int or None; got {seed!r}.")
        self.seed = seed
        self._key = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])
        self.n_asked = 0

    def answer(self, pairs) -> np.ndarray:
        """Returns (m,) bool: True where the two images are (said to be) the same identity."""
        arr = np.asarray(pairs)
        if arr.size == 0:
            return np.zeros(0, bool)
        if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                f"LabelOracle.answer: 'pairs' must be an (m, 2) int array; got dtype "
                f"{arr.dtype}, shape {arr.shape}."
            )
        n = len(self.y)
        if (arr < 0).any() or (arr >= n).any():
            raise ValueError(f"LabelOracle.answer: 'pairs' indices must be in [0, {n}).")
        same = self.y[arr[:, 0]] == self.y[arr[:, 1]]
        if self.noise > 0:
            same ^= _unit_hash(self._key, arr) < self.noise
        self.n_asked += len(arr)
        return same


def _unit_hash(key: int, pairs: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per unordered pair (splitmix64 of key and pair)."""
    lo = np.minimum(pairs[:, 0], pairs[:, 1]).astype(np.uint64)
    hi = np.maximum(pairs[:, 0], pairs[:, 1]).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) ^ (lo * np.uint64(0x9E3779B97F4A7C15)) ^ (hi << np.uint64(32))
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z = (z ^ (z >> np.uint64(shift))) * np.uint64(mult)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
