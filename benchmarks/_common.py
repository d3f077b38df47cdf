"""Shared plumbing of the benchmark scripts.

Every measurement runs in a fresh Python process (a "worker") so that peak
RSS belongs to one implementation only and nothing is warm from a previous
run. A worker loads the cached input, notes its RSS, runs the timed call,
then reports seconds, peak RSS and the peak above the input as one JSON
object on its last line of stdout. The driver prints one JSON line per
comparison: ours, the reference and the quality check, side by side.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("AAS_BENCH_CACHE", "/tmp/aas-bench"))
GIB = 1024.0**3


# ---- inputs ------------------------------------------------------------------


def features_path(n: int, d: int, seed: int = 0) -> Path:
    """Caches make_reid_blobs(n, d, seed) as .npy files and returns the X path."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"X_n{n}_d{d}_s{seed}.npy"
    if not path.exists():
        from aas_core.datasets import make_reid_blobs

        X, y = make_reid_blobs(n, d=d, seed=seed)
        np.save(CACHE / f"y_n{n}_d{d}_s{seed}.npy", y)
        np.save(path, X)
    return path


def load_features(n: int, d: int, seed: int = 0):
    path = features_path(n, d, seed)
    return np.load(path), np.load(CACHE / f"y_n{n}_d{d}_s{seed}.npy")


def faiss_rank(X: np.ndarray, k: int):
    """faiss-cpu exact inner-product search: what SpCL and finch-clust call."""
    import faiss

    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    sims, idx = index.search(X, k)
    return idx, sims


# ---- measuring ---------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    # VmHWM, not ru_maxrss: a child started with vfork + exec inherits the
    # parent's ru_maxrss (Linux keeps the max across exec), so a driver that
    # generated large data would leak its own peak into every worker's figure.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _reset_peak() -> None:
    """Restarts VmHWM at the current RSS (Linux >= 4.0), so the peak is the block's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Timer:
    """Context manager: wall time and peak RSS of the block, above a baseline.

    The baseline is the RSS on entry (the loaded input); the high-water mark
    is reset on entry where Linux allows it, so ``peak`` covers the block (and
    never less than the input). It is read right after the block, before any
    quality checks.
    """

    def __enter__(self):
        _reset_peak()
        self.base = _rss_bytes()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak = _peak_bytes()
        return False

    def report(self, **extra) -> dict:
        out = {
            "seconds": round(self.seconds, 3),
            "peak_rss_gib": round(self.peak / GIB, 3),
            "above_input_gib": round(max(0, self.peak - self.base) / GIB, 3),
        }
        out.update(extra)
        return out


def worker_args(extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    for name, kw in (extra or {}).items():
        p.add_argument(name, **kw)
    return p.parse_args()


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def run_worker(
    script: str, name: str, *, n: int, d: int, k: int, threads: int, out=None, timeout=3600, **extra
) -> dict:
    """Runs ``script --worker name`` in a fresh process pinned to ``threads``."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT / "benchmarks")]
        + env.get("PYTHONPATH", "").split(os.pathsep)
    ).rstrip(os.pathsep)
    cmd = [
        sys.executable,
        str(Path(__file__).parent / script),
        "--worker",
        name,
        "--n",
        str(n),
        "--d",
        str(d),
        "--k",
        str(k),
        "--threads",
        str(threads),
    ]
    if out is not None:
        cmd += ["--out", str(out)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"worker {script} {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def driver_args(default_n=(10000,), extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=list(default_n))
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    p.add_argument("--no-ref", action="store_true", help="skip the reference implementation")
    for name, kw in (extra or {}).items():
        p.add_argument(name, **kw)
    args = p.parse_args()
    if args.smoke:
        args.n, args.d = [1500], 512
    return args


def header(bench: str, n: int, d: int, k: int, threads: int) -> dict:
    return {
        "bench": bench,
        "date": _dt.date.today().isoformat(),
        "n": n,
        "d": d,
        "k": k,
        "threads": threads,
        "machine": _machine(),
        "git": _git_sha(),
    }


def _machine() -> str:
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def same_partition(a, b) -> bool:
    """True when two labelings are equal up to renaming the labels."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def ratio(a: dict, b: dict) -> float:
    """How many times faster ``a`` is than ``b``."""
    return round(b["seconds"] / max(a["seconds"], 1e-9), 2)
