"""The GPU kNN against torch GEMM + top-k (and faiss-gpu when installed), side by side.

Needs an aas-core built with its CUDA kernels (-DAAS_CUDA=ON) and a CUDA device; without
them it prints one JSON line saying so and exits 0, so it is safe to run anywhere.

    python benchmarks/bench_gpu.py --n 100000 300000 --d 2048 --k 30
    python benchmarks/bench_gpu.py --smoke

Per size: seconds for ours and for torch (fp32: torch.mm in row blocks, then topk), the
share of rows whose neighbour lists are identical, and peak device memory where torch
reports it. bf16 with an exact fp32 re-rank is not built yet.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import emit, header


def _torch_knn(X, k, block=8192):
    import torch

    x = torch.from_numpy(X).cuda()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t = time.perf_counter()
    idx = []
    for r0 in range(0, len(X), block):
        s = x[r0 : r0 + block] @ x.T
        s[torch.arange(len(s)), torch.arange(r0, r0 + len(s))] = -2.0  # not self
        idx.append(torch.topk(s, k - 1, dim=1).indices)
    out = torch.cat(idx).cpu().numpy()
    torch.cuda.synchronize()
    return time.perf_counter() - t, out, torch.cuda.max_memory_allocated() / 2**30


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--smoke", action="store_true", help="n = 2000, d = 64")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.d = [2000], 64
    import aas_core as aas

    if not aas.cuda_available():
        emit({**header("gpu", args.n[0], args.d, args.k, 1), "skipped": "no CUDA build or device"})
        return
    for n in args.n:
        X, _ = aas.datasets.make_reid_blobs(n, d=args.d, seed=0)
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        t = time.perf_counter()
        ours = aas.knn_graph(X, args.k, device="cuda")
        t_ours = time.perf_counter() - t
        out = header("gpu", n, args.d, args.k, 1)
        out["ours_fp32_s"] = round(t_ours, 3)
        try:
            t_torch, idx, peak = _torch_knn(X.astype(np.float32), args.k)
            same = np.mean([set(a) == set(b) for a, b in zip(ours.indices[:, 1:], idx)])
            out.update(torch_fp32_s=round(t_torch, 3), ratio=round(t_ours / t_torch, 3))
            out.update(same_rows_vs_torch=round(float(same), 4), torch_peak_gib=round(peak, 2))
        except ImportError:
            out["torch"] = "not installed"
        emit(out)


if __name__ == "__main__":
    main()
