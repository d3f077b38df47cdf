"""Input checks shared by every public function.

This is the single place that converts arrays. Rules: float64 features are
converted to float32 (a documented copy), non-contiguous arrays are copied to
C order, integer inputs become int64, and the caller's array is never written.
Error messages follow one template and always name the argument.
"""

from __future__ import annotations

import numbers
import os
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

__all__ = [
    "DistanceGraph",
    "as_distance_graph",
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


# Counts and sizes go to C++ as 64-bit ints; no meaningful one comes near this.
INT_LIMIT = 2**62
MAX_THREADS = 2**15


def check_int(name, value, *, low=None, high=None, owner):
    """Returns ``value`` as int, or raises naming the parameter and range.

    Without ``high`` the bound is 2**62, so nothing reaches the C++ core as an
    integer overflow (pybind's "incompatible function arguments").
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"The {name!r} parameter of {owner} must be an int; got {_describe(value)}."
        )
    if high is None:
        high = INT_LIMIT
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
        raise TypeError(
            f"The {name!r} parameter of {owner} must be a float; got {_describe(value)}."
        )
    try:
        value = float(value)
    except OverflowError:  # an int beyond float's range
        value = float("inf") if value > 0 else float("-inf")
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


def check_rows_columns(shape, name, *, owner, min_rows=1) -> tuple:
    """(n, d) of a 2-D features shape, after checking n >= min_rows and d >= 1 (ValueError
    naming the argument); the rule for rows on the host and on the device."""
    n, d = shape
    # the wording after "got" is also what scikit-learn's estimator checks look for
    if n < min_rows:
        raise ValueError(
            f"{owner}: {name!r} must have at least {min_rows} rows; "
            f"got {n} sample{'' if n == 1 else 's'}."
        )
    if d < 1:
        raise ValueError(
            f"{owner}: {name!r} must have at least 1 feature column; "
            f"got 0 feature(s) (shape=({n}, 0)) while a minimum of 1 is required."
        )
    return n, d


def as_features(X, *, name="X", owner, min_rows=1, check_finite=True) -> np.ndarray:
    """Returns X as a C-contiguous float32 (n, d) array, never writing to it.

    float64 (and float16) input is converted to float32, which copies; so do
    non-contiguous arrays. Integer and other dtypes are rejected, because a
    silent cast of ids or counts into embeddings is almost always a mistake
    (TypeError; complex data raises ValueError, as in numpy and scikit-learn).
    Sparse matrices are refused (TypeError) rather than densified.
    """
    if hasattr(X, "__cuda_array_interface__") or type(X).__module__.startswith("torch"):
        raise TypeError(
            f"{owner}: {name!r} must be a numpy array on the host; got {type(X).__name__}. "
            "Move it to the CPU first (for example tensor.cpu().numpy())."
        )
    if sp.issparse(X):
        raise TypeError(
            f"{owner}: {name!r} must be a dense array; sparse input ({type(X).__name__}) is "
            "not supported."
        )
    arr = np.asarray(X)
    _check_not_complex(arr.dtype, name, owner)
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
    check_rows_columns(arr.shape, name, owner=owner, min_rows=min_rows)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite and not all_finite(arr):
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{owner}: {name!r} contains NaN or inf (first in row {bad}).")
    return arr


def all_finite(arr) -> bool:
    """np.isfinite(arr).all() in blocks of 2**20 elements, so that a large array needs
    no boolean copy (a quarter of a float32 array's size, touched page by page)."""
    flat = np.ravel(arr)  # a view of a contiguous array
    step = 1 << 20
    return all(bool(np.isfinite(flat[i : i + step]).all()) for i in range(0, flat.size, step))


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
    n_threads = check_int("n_threads", n_threads, low=-MAX_THREADS, high=MAX_THREADS, owner=owner)
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


class DistanceGraph(NamedTuple):
    """A checked (n, n) CSR distance graph in the dtypes the C++ core takes."""

    indptr: np.ndarray  # (n + 1,) int64
    indices: np.ndarray  # (nnz,) int32, sorted and unique within each row
    data: np.ndarray  # (nnz,) float32, finite, >= 0
    n: int


def _check_graph_ndim_and_dtype(D, name, owner) -> None:
    if D.ndim != 2:
        raise ValueError(
            f"{owner}: {name!r} must be a 2-D (n, n) distance graph; got "
            f"{D.ndim}-D with shape {D.shape}."
        )
    _check_float_dtype(D.dtype, name, owner)


def as_distance_graph(D, *, name="D", owner) -> DistanceGraph:
    """Checks a precomputed distance graph and returns its CSR arrays.

    Accepted input:

    - a scipy.sparse array or matrix: CSR is used as is; other formats are
      converted with ``tocsr()`` (which sums duplicate COO entries). Only the
      stored entries are distances; an ABSENT entry means "not a neighbour"
      (distance 1 for the Jaccard graph). Explicit zeros are neighbours.
    - a dense 2-D numpy array: every entry is a stored distance (as for
      sklearn's dense ``metric="precomputed"``), so use it for small n only.

    The values must be floating point, finite and >= 0; float64 is converted
    to float32 (a copy). Indices become int32 and row pointers int64 (copies
    only when the dtype differs). Rows with unsorted columns are sorted in a
    copy; duplicate entries are an error. The caller's object is never written.
    """
    if hasattr(D, "__cuda_array_interface__") or type(D).__module__.startswith("torch"):
        raise TypeError(
            f"{owner}: {name!r} must be a scipy.sparse matrix or a numpy array on the host; "
            f"got {type(D).__name__}."
        )
    if sp.issparse(D):
        _check_graph_ndim_and_dtype(D, name, owner)
        _check_square(D.shape, name, owner)
        csr = D if D.format == "csr" else D.tocsr()
        n = D.shape[0]
        indptr = np.asarray(csr.indptr)
        nnz = int(indptr[-1])
        indices = np.asarray(csr.indices)[:nnz]
        data = np.asarray(csr.data)[:nnz]
    elif isinstance(D, np.ndarray):
        _check_graph_ndim_and_dtype(D, name, owner)
        # float32 copy (or view), never written; NaN is reported before a wrong shape, as
        # scikit-learn's estimator checks expect
        data = np.ascontiguousarray(D, dtype=np.float32).ravel()
        _check_finite_distances(data, name, owner)
        _check_square(D.shape, name, owner)
        n = D.shape[0]
        if n >= 2**31:
            raise ValueError(f"{owner}: {name!r} is too large for int32 indices; got n = {n}.")
        indptr = np.arange(0, n * n + 1, n, dtype=np.int64)
        indices = np.tile(np.arange(n, dtype=np.int32), n)
        nnz = n * n
    else:
        raise TypeError(
            f"{owner}: {name!r} must be a scipy.sparse distance graph (CSR preferred) or a "
            f"2-D numpy array; got {type(D).__name__}."
        )
    if n >= 2**31:
        raise ValueError(f"{owner}: {name!r} is too large for int32 indices; got n = {n}.")
    if len(indptr) != n + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(
            f"{owner}: {name!r} has an invalid CSR structure (indptr must start "
            "at 0, be non-decreasing and hold n + 1 entries)."
        )
    if len(indices) != nnz or len(data) != nnz:
        raise ValueError(
            f"{owner}: {name!r} has an invalid CSR structure (indptr[-1] = "
            f"{nnz} but {len(indices)} indices and {len(data)} values)."
        )
    if nnz and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"{owner}: {name!r} has column indices outside [0, {n - 1}].")
    data = np.ascontiguousarray(data, dtype=np.float32)
    _check_finite_distances(data, name, owner)
    if nnz and data.min() < 0:
        # "Negative values in data" is the phrase scikit-learn's estimator checks look for
        raise ValueError(
            f"{owner}: {name!r} must hold distances >= 0; got a minimum of "
            f"{float(data.min())!r}. Negative values in data are not distances."
        )
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    step = np.diff(indices.astype(np.int64))
    row_start = np.zeros(max(nnz - 1, 0), dtype=bool)
    inner = indptr[1:-1]
    row_start[inner[(inner > 0) & (inner < nnz)] - 1] = True
    if not np.all((step > 0) | row_start):
        # Sort each row in a copy (never in the caller's arrays), then look again.
        fixed = sp.csr_array((data.copy(), indices.copy(), indptr.copy()), shape=(n, n))
        fixed.sort_indices()
        indices = np.ascontiguousarray(fixed.indices, dtype=np.int32)
        data = np.ascontiguousarray(fixed.data, dtype=np.float32)
        repeated = np.flatnonzero((np.diff(indices.astype(np.int64)) == 0) & ~row_start)
        if len(repeated):
            k = int(repeated[0]) + 1  # the second entry of the first repeated pair
            i = int(np.searchsorted(indptr, k, side="right") - 1)
            raise ValueError(
                f"{owner}: {name!r} holds duplicate entries for the same (i, j), the first "
                f"({i}, {int(indices[k])}); keep one distance per pair (for example call "
                "sum_duplicates() if the duplicates are meant to add up)."
            )
    return DistanceGraph(indptr, indices, data, n)


def _check_finite_distances(data, name, owner):
    if not all_finite(data):
        raise ValueError(f"{owner}: {name!r} contains NaN or inf distances.")


def _check_square(shape, name, owner):
    if shape[0] != shape[1] or shape[0] < 1:
        # scikit-learn's estimator checks look for the "0 feature(s)" wording
        got = (
            f"0 feature(s) (shape=({shape[0]}, 0)) while a minimum of 1 is required"
            if shape[1] == 0 and shape[0] > 0
            else f"shape {tuple(shape)}"
        )
        raise ValueError(
            f"{owner}: {name!r} must be a square (n, n) distance graph with n >= 1; got {got}."
        )


def _check_not_complex(dtype, name, owner):
    # a ValueError, as numpy and scikit-learn raise for complex input
    if np.dtype(dtype).kind == "c":
        raise ValueError(
            f"{owner}: {name!r} must hold real floating-point values; got dtype {dtype}. "
            "Complex data not supported."
        )


def _check_float_dtype(dtype, name, owner):
    _check_not_complex(dtype, name, owner)
    if np.dtype(dtype).kind != "f":
        raise TypeError(
            f"{owner}: {name!r} must hold floating-point distances (float32 "
            f"preferred); got dtype {dtype}."
        )
