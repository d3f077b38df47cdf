"""Input checks shared by every public function (DESIGN.md §7).

This is the single place that converts arrays. Rules: float64 features are
converted to float32 (a documented copy), non-contiguous arrays are copied to
C order, integer inputs become int64, and the caller's array is never written.
Error messages follow one template and always name the argument.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

__all__ = [
    "as_features",
    "check_float",
    "check_int",
    "check_option",
    "effective_threads",
]


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


def check_int(name, value, *, low=None, high=None, owner):
    """Returns ``value`` as int, or raises naming the parameter and range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"The {name!r} parameter of {owner} must be an int; got {_describe(value)}.")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise ValueError(
            f"The {name!r} parameter of {owner} must be an int in [{lo}, {hi}]; got {value}."
        )
    return value


def check_float(name, value, *, low=None, high=None, closed="both", owner):
    """Returns ``value`` as a finite float inside the interval, or raises.

    ``closed`` is one of "both", "left", "right", "neither".
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"The {name!r} parameter of {owner} must be a float; got {_describe(value)}.")
    value = float(value)
    lo_ok = low is None or (value >= low if closed in ("both", "left") else value > low)
    hi_ok = high is None or (value <= high if closed in ("both", "right") else value < high)
    if not np.isfinite(value) or not (lo_ok and hi_ok):
        left = "[" if closed in ("both", "left") and low is not None else "("
        right = "]" if closed in ("both", "right") and high is not None else ")"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(
            f"The {name!r} parameter of {owner} must be a float in {left}{lo}, {hi}{right}; "
            f"got {value!r}."
        )
    return value


def check_option(name, value, options, *, owner):
    """Checks that a string option is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        choices = ", ".join(repr(o) for o in options)
        raise ValueError(
            f"The {name!r} parameter of {owner} must be one of {choices}; got {_describe(value)}."
        )
    return value


def as_features(X, *, name="X", owner, min_rows=1, check_finite=True) -> np.ndarray:
    """Returns X as a C-contiguous float32 (n, d) array, never writing to it.

    float64 (and float16) input is converted to float32, which copies; so do
    non-contiguous arrays. Integer and other dtypes are rejected, because a
    silent cast of ids or counts into embeddings is almost always a mistake.
    """
    if hasattr(X, "__cuda_array_interface__") or type(X).__module__.startswith("torch"):
        raise TypeError(
            f"{owner}: {name!r} must be a numpy array on the host; got {type(X).__name__}. "
            "Move it to the CPU first (for example tensor.cpu().numpy())."
        )
    arr = np.asarray(X)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{owner}: {name!r} must be a floating-point array (float32 preferred); "
            f"got dtype {arr.dtype}."
        )
    if arr.ndim != 2:
        raise ValueError(
            f"{owner}: {name!r} must be 2-D (n_samples, n_features); got {arr.ndim}-D "
            f"with shape {arr.shape}."
        )
    n, d = arr.shape
    if n < min_rows:
        raise ValueError(f"{owner}: {name!r} must have at least {min_rows} rows; got {n}.")
    if d < 1:
        raise ValueError(f"{owner}: {name!r} must have at least 1 feature column; got {d}.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite and not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{owner}: {name!r} contains NaN or inf (first in row {bad}).")
    return arr


def effective_threads(n_threads, *, owner) -> int:
    """sklearn semantics: None follows OMP_NUM_THREADS, else the CPUs this
    process may use; -1 means all of those; other negatives count back from
    it (-2: all but one); 0 is an error."""
    if n_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        try:
            first = int(env.split(",")[0])
        except ValueError:
            first = 0
        if first > 0:
            return first
        return _available_cpus()
    n_threads = check_int("n_threads", n_threads, owner=owner)
    if n_threads == 0:
        raise ValueError(
            f"The 'n_threads' parameter of {owner} must be a positive int, -1 or None; got 0."
        )
    if n_threads < 0:
        return max(1, _available_cpus() + 1 + n_threads)
    return n_threads


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
