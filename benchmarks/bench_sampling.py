"""AAS pool kernels: ours (C++) vs the numpy implementation they replaced.

Input: the state of one AAS cycle on make_reid_blobs(n) (kNN graph k=30 →
Jaccard max_distance=0.7 → DBSCAN eps=0.6 → FINCH level closest to DBSCAN's
count), cached once. Each worker times, in a fresh process:
regions of uncertainty, U_us (inconsistent closest pairs), region medoids and
U_os (medoid pairs, k_max=5, s_min=0.3). The reference is the pure numpy/BLAS
code of commit 9b71882 (kept below): np.unique + scipy connected components,
a BLAS product per cluster in a Python loop, float32 medoid scores, the full
medoid Gram matrix with a stable argsort, and a Python loop per pair for the
sparse look-up. Quality: identical regions, U_us and (given the same medoids)
U_os; medoids that differ are reported with the largest score gap (ours
breaks exact ties to the smaller index, the float32 reference by rounding).
With ``--coarse`` clustering B is instead the FINCH level closest to n/250
clusters: a few giant regions, each FINCH cluster holding hundreds of DBSCAN
clusters (the case the closest-pair search must keep cheap).

    python benchmarks/bench_sampling.py --n 10000 30000
    python benchmarks/bench_sampling.py --n 10000 --coarse
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from _common import CACHE, driver_args, emit, header, load_features, run_worker, worker_args

SCRIPT = "bench_sampling.py"


def state_path(n: int, d: int, k: int):
    path = CACHE / f"aas_state_n{n}_d{d}_k{k}.npz"
    if not path.exists():
        import aas_core as aas
        from aas_core.cluster import closest_partition

        X, _ = load_features(n, d)
        g = aas.knn_graph(X, k)
        D = aas.k_reciprocal_jaccard(g, k1=k, k2=6, max_distance=0.7)
        a = aas.dbscan(D, eps=0.6, min_samples=4)
        target = int(a.max() + 1 + (a < 0).sum())
        fin = aas.finch(g)
        b = fin.labels[:, closest_partition(fin, target)]
        coarse = fin.labels[:, closest_partition(fin, max(1, n // 250))]
        np.savez(path, a=a, b=b, coarse=coarse, indptr=D.indptr, indices=D.indices, data=D.data)
    return path


def worker() -> None:
    a = worker_args({"--state": {}, "--medoids": {"default": None}, "--b": {"default": "b"}})
    X, _ = load_features(a.n, a.d)
    s = np.load(a.state)
    D = sp.csr_array((s["data"], s["indices"], s["indptr"]), shape=(a.n, a.n))
    la, lb = s["a"], s[a.b]
    seconds, out = {}, {}

    def timed(name, fn):
        t0 = time.perf_counter()
        result = fn()
        seconds[name] = round(time.perf_counter() - t0, 4)
        return result

    if a.worker == "ours":
        from aas_core.sampling import uncertainty_regions
        from aas_core.sampling.pools import (
            closest_inconsistent_pairs,
            overseg_pairs,
            region_medoids,
        )

        regions, us, medoids, os_ = _run(
            timed,
            lambda: uncertainty_regions(la, lb),
            lambda r: closest_inconsistent_pairs(X, r, n_threads=a.threads),
            lambda r: region_medoids(X, r, n_threads=a.threads),
            lambda m: overseg_pairs(X, m, D, n_threads=a.threads),
            None,
        )
    elif a.worker == "numpy":
        regions, us, medoids, os_ = _run(
            timed,
            lambda: _np_regions(la, lb),
            lambda r: _np_closest_pairs(X, r),
            lambda r: _np_medoids(X, r),
            lambda m: _np_overseg(X, m, D),
            np.load(a.medoids) if a.medoids else None,
        )
    else:
        raise SystemExit(f"unknown worker {a.worker}")
    out = dict(region=regions.region, us=us[0], via=us[2], medoids=medoids, os=os_[0], sim=os_[1])
    np.savez(a.out, **out)
    emit(
        {"seconds": seconds, "regions": int(regions.n_regions), "us": len(us[0]), "os": len(os_[0])}
    )


def _run(timed, regions_fn, us_fn, medoids_fn, os_fn, given_medoids):
    regions = timed("regions", regions_fn)
    us = timed("closest_pairs", lambda: us_fn(regions))
    medoids = timed("medoids", lambda: medoids_fn(regions))
    use = medoids if given_medoids is None else given_medoids  # U_os from the same medoids
    os_ = timed("medoid_pairs", lambda: os_fn(use))
    return regions, us, medoids, os_


def main() -> None:
    args = driver_args(
        extra={"--coarse": {"action": "store_true", "help": "B = FINCH level near n/250"}}
    )
    for n in args.n:
        load_features(n, args.d)
        state = state_path(n, args.d, args.k)
        row = header("sampling", n, args.d, args.k, args.threads)
        row["labels_b"] = "coarse" if args.coarse else "closest"
        b = "coarse" if args.coarse else "b"
        common = dict(n=n, d=args.d, k=args.k, threads=args.threads, state=state, b=b)
        ours_out = CACHE / f"sampling_ours_{n}.npz"
        row["ours"] = run_worker(SCRIPT, "ours", out=ours_out, **common)
        if not args.no_ref:
            medoids_file = CACHE / f"sampling_medoids_{n}.npy"
            np.save(medoids_file, np.load(ours_out)["medoids"])
            ref_out = CACHE / f"sampling_numpy_{n}.npz"
            row["numpy"] = run_worker(SCRIPT, "numpy", out=ref_out, medoids=medoids_file, **common)
            ours, ref = np.load(ours_out), np.load(ref_out)
            row["speedup"] = {
                k: round(row["numpy"]["seconds"][k] / max(row["ours"]["seconds"][k], 1e-9), 1)
                for k in row["ours"]["seconds"]
            }
            differ = np.flatnonzero(ours["medoids"] != ref["medoids"])
            row["quality"] = {
                "same_regions": bool(np.array_equal(ours["region"], ref["region"])),
                "same_closest_pairs": bool(
                    np.array_equal(ours["us"], ref["us"])
                    and np.array_equal(ours["via"], ref["via"])
                ),
                "same_medoid_pairs": bool(
                    np.array_equal(ours["os"], ref["os"])
                    and np.array_equal(ours["sim"], ref["sim"])
                ),
                "medoids_differing": len(differ),
                "medoids_differing_max_score_gap": _max_gap(n, args.d, ours, ref, differ),
            }
        emit(row)


def _max_gap(n, d, ours, ref, differ) -> float:
    """Largest |Σ_j cos(i, j) difference| between the two medoid choices (0: exact ties)."""
    if not len(differ):
        return 0.0
    X, _ = load_features(n, d)
    region = ours["region"]
    gap = 0.0
    for k in differ.tolist():
        m = np.flatnonzero(region == k)
        U = X[m].astype(np.float64)
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        score = (U @ U.T).sum(axis=1)
        i, j = np.searchsorted(m, ours["medoids"][k]), np.searchsorted(m, ref["medoids"][k])
        gap = max(gap, abs(score[i] - score[j]))
    return float(gap)


# ---- the numpy implementation of commit 9b71882 (the reference) ------------------------


class _Regions:
    def __init__(self, region, n_regions, labels_a, labels_b):
        self.region, self.n_regions = region, n_regions
        self.labels_a, self.labels_b = labels_a, labels_b


def _np_singletons(labels):
    x = np.asarray(labels).astype(np.int64)
    noise = np.flatnonzero(x < 0)
    x[noise] = x.max(initial=-1) + 1 + np.arange(len(noise))
    return x


def _np_regions(labels_a, labels_b):
    a, b = _np_singletons(labels_a), _np_singletons(labels_b)
    _, a_id = np.unique(a, return_inverse=True)
    _, b_id = np.unique(b, return_inverse=True)
    n_a = int(a_id.max(initial=-1)) + 1
    size_a = np.bincount(a_id, minlength=n_a)
    size_b = np.bincount(b_id)
    cell, cell_of_point, count = np.unique(
        a_id.astype(np.int64) * (len(size_b)) + b_id, return_inverse=True, return_counts=True
    )
    ca, cb = cell // len(size_b), cell % len(size_b)
    agree = (count == size_a[ca]) & (count == size_b[cb])
    edges = np.flatnonzero(~agree)
    nodes = n_a + len(size_b)
    g = sp.coo_array((np.ones(len(edges)), (ca[edges], n_a + cb[edges])), shape=(nodes, nodes))
    _, comp = connected_components(g, directed=False)
    region = np.where(agree[cell_of_point], -1, comp[a_id])
    inside = np.flatnonzero(region >= 0)
    uniq, first = np.unique(region[inside], return_index=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(inside[first])] = np.arange(len(uniq))
    region[inside] = rank[np.searchsorted(uniq, region[inside])]
    return _Regions(region.astype(np.int64), int(len(uniq)), a, b)


def _np_medoids(X, regions):
    order = np.argsort(regions.region, kind="stable")
    order = order[regions.region[order] >= 0]
    bounds = np.searchsorted(regions.region[order], np.arange(regions.n_regions + 1))
    medoids = np.empty(regions.n_regions, np.int64)
    for k in range(regions.n_regions):
        members = order[bounds[k] : bounds[k + 1]]
        scores = X[members] @ X[members].sum(axis=0, dtype=np.float64).astype(np.float32)
        medoids[k] = members[int(np.argmax(scores))]
    return medoids


def _np_closest_pairs(X, regions):
    found = {}
    inside = regions.region >= 0
    for zeta, (mine, other) in enumerate(
        ((regions.labels_a, regions.labels_b), (regions.labels_b, regions.labels_a))
    ):
        for i, j in _np_closest_pairs_sharing_other(X, mine, other, inside):
            found.setdefault((min(i, j), max(i, j)), zeta)
    if not found:
        return np.empty((0, 2), np.int64), np.empty(0, np.int64), np.empty(0, np.int8)
    keys = sorted(found)
    pairs = np.array(keys, np.int64)
    return pairs, regions.region[pairs[:, 0]], np.array([found[k] for k in keys], np.int8)


def _np_closest_pairs_sharing_other(X, mine, other, inside):
    idx = np.flatnonzero(inside)
    if not len(idx):
        return []
    cells = np.unique(np.stack([other[idx], mine[idx]], axis=1), axis=0)
    partners: dict[int, set] = {}
    start = 0
    while start < len(cells):
        stop = start
        while stop < len(cells) and cells[stop, 0] == cells[start, 0]:
            stop += 1
        group = cells[start:stop, 1].tolist()
        for a in group:
            partners.setdefault(a, set()).update(g for g in group if g > a)
        start = stop
    members = {}
    order = idx[np.argsort(mine[idx], kind="stable")]
    cuts = np.flatnonzero(np.diff(mine[order])) + 1
    for chunk in np.split(order, cuts):
        members[int(mine[chunk[0]])] = chunk
    out = []
    for a, bs in partners.items():
        if not bs:
            continue
        bs = sorted(bs)
        ma = members[a]
        cols = np.concatenate([members[b] for b in bs])
        sims = X[ma] @ X[cols].T
        offset = 0
        for b in bs:
            mb = members[b]
            block = sims[:, offset : offset + len(mb)]
            offset += len(mb)
            flat = int(np.argmax(block))
            u, v = int(ma[flat // len(mb)]), int(mb[flat % len(mb)])
            if other[u] == other[v]:
                out.append((u, v))
    return out


def _np_overseg(X, medoids, D, k_max=5, s_min=0.3):
    medoids = np.asarray(medoids, np.int64)
    r = len(medoids)
    if r < 2:
        return np.empty((0, 2), np.int64), np.empty(0)
    S = X[medoids] @ X[medoids].T
    np.fill_diagonal(S, -np.inf)
    k = min(k_max, r - 1)
    nn = np.argsort(-S, axis=1, kind="stable")[:, :k]
    a = np.repeat(medoids, k)
    b = medoids[nn.ravel()]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    D = sp.csr_array(D)
    dist = np.asarray(D[pairs[:, 0], pairs[:, 1]]).ravel()
    stored = np.zeros(len(pairs), bool)
    for t, (i, j) in enumerate(pairs.tolist()):
        row = D.indices[D.indptr[i] : D.indptr[i + 1]]
        stored[t] = bool(np.any(row == j))
    sim = np.where(stored, 1.0 - dist, 0.0)
    keep = sim >= s_min
    return pairs[keep], sim[keep]


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
