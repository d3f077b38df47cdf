"""The GPU kNN against torch GEMM + top-k and faiss-gpu, side by side, and one AAS cycle.

Needs an aas-core built with its CUDA kernels (-DAAS_CUDA=ON) and a CUDA device; without
them it prints one JSON line saying so and exits 0, so it is safe to run anywhere.

    python benchmarks/bench_gpu.py                      # n = 100k, 300k, 1M; d = 2048, k = 30
    python benchmarks/bench_gpu.py --n 100000 300000    # what benchmarks/run.sh runs
    python benchmarks/bench_gpu.py --device-input       # also: inputs already on the GPU
    python benchmarks/bench_gpu.py --smoke              # n = 2000, d = 64: checks that it runs
    python benchmarks/bench_gpu.py --emulate            # no GPU: tf32/bf16 fallback share

One JSON line per n, then one for the cycle. Per n, each method's seconds and peak
device memory:

- ``ours_fp32``: ``knn_graph(X, k, device="cuda")`` from a numpy X (upload, search,
  results back to the host, all timed).
- ``ours_tf32`` / ``ours_bf16``: tensor-core candidates re-ranked in fp32
  (``knn_graph(precision=...)``, timed from the host rows), with how many rows the
  rounding certificate sent back to the fp32 tiles and whether the graph is identical
  to ``ours_fp32`` (it must be); ``seconds_vs_torch_fp32`` for each of ours.
- ``torch_fp32`` / ``torch_bf16``: ``torch.from_numpy(X).cuda()``, then row blocks of
  ``x @ x.T`` (fp32 with TF32 off; bf16 inputs and output) with self masked, then
  ``torch.topk``, indices back to the host; both timed, in the same run.
- ``faiss_gpu``: ``knn_graph(X, k, backend="faiss", device="cuda")`` (GpuIndexFlatIP)
  where faiss with GPU support is installed.
- ``same_rows``: the share of rows whose k - 1 neighbours (self excluded) are the same
  set as torch fp32's and as ours fp32's.
- with ``--device-input``: ``ours_fp32`` and ``torch_fp32`` again from a torch CUDA tensor
  already on the device (no upload; ours reads it in place, copies the results and the
  rows back to the host), and whether ours gave the same graph as from numpy.

Peak device memory (``peak_gib``) is the same yardstick for every method: cudaMemGetInfo
(used = total - free, the whole device) sampled every 2 ms from a thread during the
call, minus the level just before it. It counts what the call allocates, including what
torch's caching allocator reserves (emptied before each torch run), and can miss a peak
shorter than 2 ms. torch's own ``max_memory_allocated`` is reported beside it
(``torch_allocated_gib``).

The data (``--n`` up to 1M at d = 2048, 8 GB of float32) follow make_reid_blobs' model
(about n/8 identities in look-alike groups of 8; sample = normalise(sqrt(0.08) centre +
sqrt(0.92) noise)) but are generated in row blocks, on the GPU with torch when it has
CUDA, since make_reid_blobs holds several n x d temporaries (18.5 s at 100k on a 2-CPU
machine, so about 3 minutes at 1M). The rows are the same model, not the same numbers.

The cycle (``--cycle-n``, default the largest n): knn_graph → k_reciprocal_jaccard →
dbscan → finch + closest_partition → np3 → AmbiguityAwareSampler.propose_from, as
bench_cycle.py runs it, with device="cuda" passed to every stage that takes a device
(``gpu_stages`` lists them), seconds per stage.
"""

from __future__ import annotations

import argparse
import inspect
import math
import threading
import time

import numpy as np

from _common import emit, header

GIB = 1024.0**3
DEFAULT_N = [100_000, 300_000, 1_000_000]
_GROUP_SHARE, _CENTRE_SHARE, _IDS_PER_GROUP = 0.4, 0.08, 8
_TORCH_TILE_BYTES = 4 * 2**30  # one block of rows of x @ x.T


# ---- data ----------------------------------------------------------------------------------


def make_data(n, d, seed=0, torch=None):
    """(X float32 (n, d) unit rows on the host, y (n,) identities); see the module docstring."""
    if torch is not None and torch.cuda.is_available():
        return _make_torch(torch, n, d, seed, "cuda")
    rng = np.random.default_rng(seed)

    def unit(rows):
        v = rng.standard_normal((rows, d), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v

    n_ids, n_groups, block = _sizes(n, d)
    centres = np.float32(math.sqrt(_GROUP_SHARE)) * unit(n_groups)[np.arange(n_ids) // 8]
    centres += np.float32(math.sqrt(1 - _GROUP_SHARE)) * unit(n_ids)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, n_ids, n)
    X = np.empty((n, d), np.float32)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        x = unit(r1 - r0)
        x *= np.float32(math.sqrt(1 - _CENTRE_SHARE))
        x += np.float32(math.sqrt(_CENTRE_SHARE)) * centres[y[r0:r1]]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        X[r0:r1] = x
    return X, y


def _sizes(n, d):
    n_ids = max(1, round(n / 8))
    n_groups = -(-n_ids // _IDS_PER_GROUP)
    block = max(1, min(n, 2**28 // max(d, 1)))  # ~1 GiB of float32 per block of rows
    return n_ids, n_groups, block


def _make_torch(torch, n, d, seed, device):
    g = torch.Generator(device=device).manual_seed(seed)

    def unit(rows):
        v = torch.randn(rows, d, generator=g, device=device)
        return v / v.norm(dim=1, keepdim=True)

    n_ids, n_groups, block = _sizes(n, d)
    group_of = torch.arange(n_ids, device=device) // _IDS_PER_GROUP
    centres = math.sqrt(_GROUP_SHARE) * unit(n_groups)[group_of]
    centres += math.sqrt(1 - _GROUP_SHARE) * unit(n_ids)
    centres /= centres.norm(dim=1, keepdim=True)
    y = torch.randint(0, n_ids, (n,), generator=g, device=device)
    X = np.empty((n, d), np.float32)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        x = math.sqrt(_CENTRE_SHARE) * centres[y[r0:r1]]
        x += math.sqrt(1 - _CENTRE_SHARE) * unit(r1 - r0)
        X[r0:r1] = (x / x.norm(dim=1, keepdim=True)).cpu().numpy()
    y = y.cpu().numpy()
    del centres, x
    if device == "cuda":
        torch.cuda.empty_cache()
    return X, y


# ---- measuring -----------------------------------------------------------------------------


class DevicePeak:
    """Peak device memory in use during a block above the level at its start (see the
    module docstring): cudaMemGetInfo sampled from a thread."""

    def __init__(self, mod, device, every=0.002):
        self.mod, self.device, self.every = mod, device, every

    def _used(self):
        free, total = self.mod.mem_info(self.device)
        return total - free

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            self._stop.wait(self.every)

    def __enter__(self):
        self.base = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())
        return False

    def report(self, **extra):
        return {
            "seconds": round(self.seconds, 3),
            "peak_gib": round((self.peak - self.base) / GIB, 2),
            **extra,
        }


def same_rows(a, b) -> float:
    """Share of rows whose neighbour sets are equal (order ignored)."""
    return round(float(np.mean(np.all(np.sort(a, axis=1) == np.sort(b, axis=1), axis=1))), 4)


def _torch_knn(torch, x, k, dtype):
    """Row blocks of x @ x.T in ``dtype``, self masked, top k - 1; indices on the host."""
    n = x.shape[0]
    x = x.to(dtype)
    block = max(64, min(n, _TORCH_TILE_BYTES // (n * x.element_size())))
    out = []
    for r0 in range(0, n, block):
        s = x[r0 : r0 + block] @ x.T
        rows = torch.arange(s.shape[0], device=s.device)
        s[rows, rows + r0] = -float("inf")  # not self
        out.append(torch.topk(s, k - 1, dim=1).indices)
        del s
    return torch.cat(out).cpu().numpy()


def _run_torch(torch, mod, dev, X, k, dtype, on_device=None):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.cuda.synchronize()
    with DevicePeak(mod, dev) as m:
        x = on_device if on_device is not None else torch.from_numpy(X).cuda()
        idx = _torch_knn(torch, x, k, dtype)
        torch.cuda.synchronize()
    del x
    allocated = (torch.cuda.max_memory_allocated() - base) / GIB
    torch.cuda.empty_cache()
    return m.report(torch_allocated_gib=round(allocated, 2)), idx


def _run_ours(aas, mod, dev, X, k, **kw):
    with DevicePeak(mod, dev) as m:
        g = aas.knn_graph(X, k, device="cuda", **kw)
    return m.report(), g


def _need_gib(n, d, k, extra_rows=0):
    """Device memory ours needs at most: X, the scratch copy, the heaps and outputs, a tile."""
    return (2 * n * d * 4 + n * k * 24 + 4096**2 * 4 + extra_rows) / GIB


def _kwargs_taken(fn, **maybe):
    """The keyword arguments ``fn`` accepts among ``maybe``."""
    params = inspect.signature(fn).parameters
    return {key: value for key, value in maybe.items() if key in params}


# ---- one size ------------------------------------------------------------------------------


def bench_size(aas, mod, dev, torch, n, d, k, device_input):
    out = header("gpu", n, d, k, 1)
    t = time.perf_counter()
    X, _ = make_data(n, d, seed=0, torch=torch)
    out["data_s"] = round(time.perf_counter() - t, 2)
    free = mod.mem_info(dev)[0] / GIB
    if _need_gib(n, d, k) > free:
        out["skipped"] = f"ours needs about {_need_gib(n, d, k):.1f} GiB; {free:.1f} GiB free"
        return out, None
    res, ours = _run_ours(aas, mod, dev, X, k)
    ref_ours = ours.indices[:, 1:]
    out["ours_fp32"] = res
    # tensor-core candidates re-ranked in fp32: must equal ours fp32 exactly; how many rows
    # the certificate sent back to the fp32 tiles decides the speed
    low_rows = {}
    for precision, bits in (("tf32", 11), ("bf16", 8)):
        with DevicePeak(mod, dev) as m:
            idx, sims, recomputed = mod.knn_graph_precision(ours.features, k, True, bits)
        out[f"ours_{precision}"] = {
            **m.report(),
            "rows_recomputed_fp32": int(recomputed),
            "identical_to_ours_fp32": bool(
                np.array_equal(idx, ours.indices) and np.array_equal(sims, ours.sims)
            ),
        }
        low_rows[precision] = idx[:, 1:]
    del ours
    ref_torch = None
    if torch is None:
        out["torch_fp32"] = out["torch_bf16"] = "skipped: torch with CUDA is not installed"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        res, ref_torch = _run_torch(torch, mod, dev, X, k, torch.float32)
        out["torch_fp32"] = {**res, "same_rows_vs_ours_fp32": same_rows(ref_torch, ref_ours)}
        res, idx = _run_torch(torch, mod, dev, X, k, torch.bfloat16)
        out["torch_bf16"] = {
            **res,
            "same_rows_vs_torch_fp32": same_rows(idx, ref_torch),
            "same_rows_vs_ours_fp32": same_rows(idx, ref_ours),
        }
        for precision, rows in low_rows.items():
            out[f"ours_{precision}"]["same_rows_vs_torch_fp32"] = same_rows(rows, ref_torch)
        for name in ("ours_fp32", "ours_tf32", "ours_bf16"):
            out[name]["seconds_vs_torch_fp32"] = round(
                out[name]["seconds"] / out["torch_fp32"]["seconds"], 3
            )
    out["faiss_gpu"] = _faiss(aas, mod, dev, X, k, ref_ours, ref_torch)
    if device_input:
        out["device_input"] = _device_input(aas, mod, dev, torch, X, k, ref_ours)
    return out, X


def _faiss(aas, mod, dev, X, k, ref_ours, ref_torch):
    try:
        import faiss
    except ImportError:
        return "skipped: faiss is not installed"
    if not hasattr(faiss, "GpuIndexFlatIP") or faiss.get_num_gpus() < 1:
        return "skipped: this faiss has no GPU support (pip install faiss-gpu-cu12)"
    with DevicePeak(mod, dev) as m:
        g = aas.knn_graph(X, k, backend="faiss", device="cuda")
    res = m.report(same_rows_vs_ours_fp32=same_rows(g.indices[:, 1:], ref_ours))
    if ref_torch is not None:
        res["same_rows_vs_torch_fp32"] = same_rows(g.indices[:, 1:], ref_torch)
    return res


def _device_input(aas, mod, dev, torch, X, k, ref_ours):
    if torch is None:
        return "skipped: needs torch with CUDA"
    x = torch.from_numpy(X).cuda()
    torch.cuda.synchronize()
    res, g = _run_ours(aas, mod, dev, x, k)
    out = {
        "ours_fp32": {
            **res,
            "same_graph_as_from_numpy": bool(np.array_equal(g.indices[:, 1:], ref_ours)),
        }
    }
    del g
    res, _ = _run_torch(torch, mod, dev, None, k, torch.float32, on_device=x)
    out["torch_fp32"] = res
    del x
    torch.cuda.empty_cache()
    return out


# ---- the cycle -----------------------------------------------------------------------------


def bench_cycle(aas, n, d, k, X=None, torch=None, budget=None):
    from aas_core._validation import effective_threads
    from aas_core.cluster import closest_partition
    from aas_core.sampling import AmbiguityAwareSampler
    from bench_cycle import BUDGET_FRACTION, EPS, K2, MAX_DISTANCE, MIN_SAMPLES

    if X is None:
        X, _ = make_data(n, d, seed=0, torch=torch)
    budget = int(BUDGET_FRACTION * n * (n - 1) / 2) if budget is None else budget
    gpu = []

    def on_gpu(fn, name, **maybe):
        kw = _kwargs_taken(fn, device="cuda", **maybe)
        if "device" in kw:
            gpu.append(name)
        return kw

    stages, t0 = {}, time.perf_counter()
    clock = [t0]

    def lap(name):
        now = time.perf_counter()
        stages[name] = round(now - clock[0], 3)
        clock[0] = now

    graph = aas.knn_graph(X, k, **on_gpu(aas.knn_graph, "knn"))
    lap("knn")
    D = aas.k_reciprocal_jaccard(
        graph,
        k1=k,
        k2=K2,
        max_distance=MAX_DISTANCE,
        **on_gpu(aas.k_reciprocal_jaccard, "jaccard"),
    )
    lap("jaccard")
    labels_a = aas.dbscan(D, eps=EPS, min_samples=MIN_SAMPLES, **on_gpu(aas.dbscan, "dbscan"))
    lap("dbscan")
    target = int(labels_a.max() + 1 + (labels_a < 0).sum())
    fin = aas.finch(graph, stop_at_clusters=target, **on_gpu(aas.finch, "finch"))
    labels_b = fin.labels[:, closest_partition(fin, target)]
    lap("finch")
    constraints = aas.PairConstraints(n=n)
    labels_a = aas.np3(labels_a, constraints, X)
    labels_b = aas.np3(labels_b, constraints, X)
    lap("np3")
    sampler = AmbiguityAwareSampler(**on_gpu(AmbiguityAwareSampler, "propose"))
    proposal = sampler.propose_from(
        X, labels_a, labels_b, D, constraints, budget, rng=np.random.default_rng(0), graph=graph
    )
    lap("propose")
    row = header("gpu_cycle", n, d, k, effective_threads(None, owner="bench_gpu"))
    row.update(
        seconds=round(time.perf_counter() - t0, 3),
        stages=stages,
        gpu_stages=gpu,
        budget=budget,
        proposed=len(proposal),
        dbscan_clusters=int(labels_a.max() + 1),
        finch_levels_computed=fin.n_clusters,
    )
    return row


# ---- driver --------------------------------------------------------------------------------


def emulate_fallback(n, d, k):
    """The share of rows the tf32/bf16 path recomputes in fp32 (what decides its speed),
    from exec::Host's run of the device algorithm on the same data model, with the
    device's default candidate count; the graph is checked to equal the fp32 one."""
    from aas_core import _core

    X, _ = make_data(n, d, seed=0)
    cap = k - 1
    out = {**header("gpu_emulated", n, d, k, 1), "candidates_per_row": cap + max(cap, 32)}
    t = time.perf_counter()
    ref = _core._knn_emulated(X, k, True, 24, 0)
    out["fp32_host_seconds"] = round(time.perf_counter() - t, 2)
    for precision, bits in (("tf32", 11), ("bf16", 8)):
        idx, sims, fallback = _core._knn_emulated(X, k, True, bits, cap + max(cap, 32))
        out[precision] = {
            "rows_recomputed_fp32": int(fallback),
            "share": round(max(int(fallback), 0) / n, 4),
            "identical_to_fp32": bool(np.array_equal(idx, ref[0]) and np.array_equal(sims, ref[1])),
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=DEFAULT_N)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--device-input", action="store_true", help="also time torch CUDA inputs")
    ap.add_argument("--cycle-n", type=int, default=None, help="n of the cycle (default: max n)")
    ap.add_argument("--no-cycle", action="store_true", help="skip the whole AAS cycle")
    ap.add_argument("--budget", type=int, default=None, help="pairs per cycle (default 0.02%%)")
    ap.add_argument("--smoke", action="store_true", help="n = 2000, d = 64")
    ap.add_argument(
        "--emulate",
        action="store_true",
        help="no GPU needed: the tf32/bf16 path's rows left to the fp32 fallback, from the "
        "host run of the same algorithm (default n 3000, d 256)",
    )
    args = ap.parse_args()
    if args.emulate:
        if args.n == DEFAULT_N:
            args.n, args.d = [3000], 256
        for n in args.n:
            emit(emulate_fallback(n, args.d, args.k))
        return
    if args.smoke:
        args.n, args.d = [2000], 64
        args.cycle_n = None
    import aas_core as aas

    if not aas.cuda_available():
        emit({**header("gpu", args.n[0], args.d, args.k, 1), "skipped": "no CUDA build or device"})
        return
    mod = aas.gpu.cuda_module("bench_gpu")
    dev = mod.current_device()
    try:
        import torch

        if not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None
    # one warm-up of each path, so no run pays for the CUDA context or cuBLAS set-up
    Xw, _ = make_data(2000, 64, seed=1)
    aas.knn_graph(Xw, 10, device="cuda")
    if torch is not None:
        _run_torch(torch, mod, dev, Xw, 10, torch.float32)
        _run_torch(torch, mod, dev, Xw, 10, torch.bfloat16)
    gpu_name = torch.cuda.get_device_name(dev) if torch is not None else f"cuda:{dev}"
    cycle_n = args.cycle_n or max(args.n)
    kept = None
    for n in args.n:
        out, X = bench_size(aas, mod, dev, torch, n, args.d, args.k, args.device_input)
        out["gpu"] = gpu_name
        emit(out)
        if n == cycle_n and X is not None:
            kept = X  # the cycle reuses these rows instead of making them again
        del X
    if not args.no_cycle:
        row = bench_cycle(aas, cycle_n, args.d, args.k, X=kept, torch=torch, budget=args.budget)
        row["gpu"] = gpu_name
        emit(row)


if __name__ == "__main__":
    main()
