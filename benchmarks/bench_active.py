"""Active learning on fixed embeddings: AAS against LBAS, GBAS, NIS and Random.

The issue's quality target (issue 3): on make_reid_blobs(n) with
n = 4000 and 10000, five cycles at 0.02% of all pairs per cycle, a
ground-truth oracle and NP3 refinement, AAS ends every cycle with a higher
pairwise F1 than every baseline while having asked no more pairs than any of
them. All samplers share one clustering (kNN → Jaccard → DBSCAN + FINCH) and
one sampler seed. Nothing here is timed against a reference, so it runs in one
process; the seconds per method are for information.

``--overseg regions`` runs AAS with the paper's literal U_os (region medoids)
for comparison; ``--merge`` sets NP3's merge (default auto, as ActiveLoop's);
``--start finch0`` makes clustering A FINCH's first partition (coarse, impure)
with DBSCAN as B. One JSON line per n: per method and cycle the cumulative pairs asked,
pairwise precision / recall / F1, ARI and clusters, and two checks:
``aas_best_every_cycle`` and ``aas_fewest_pairs_every_cycle``.

    python benchmarks/bench_active.py --n 4000 10000
"""

from __future__ import annotations

import dataclasses
import time

from _common import driver_args, emit, header, load_features

SAMPLERS = ("AAS", "LBAS", "GBAS", "NIS", "Random")
BUDGET_FRACTION = 0.0002  # of all n(n-1)/2 pairs per cycle (paper: 0.02%)


def run_samplers(
    X,
    y,
    state,
    *,
    cycles,
    seed,
    threads,
    overseg="cells",
    merge="auto",
    calibrate=0,
    checks=None,
    merges=None,
    split=None,
    names=SAMPLERS,
) -> dict:
    """Every sampler through ActiveLoop on one shared clustering: name -> per-cycle records.

    Also used by bench_defaults.py (the samplers on the generator family; with
    ``calibrate``, every sampler's loop first asks the same calibration pairs).
    ``checks``, ``merges``, ``split``: AmbiguityAwareSampler's; None: its default.
    """
    import aas_core as aas
    from aas_core import sampling

    given = dict(checks=checks, merges=merges, split=split)
    aas_options = {k: v for k, v in given.items() if v is not None}
    makers = {
        "AAS": lambda: sampling.AmbiguityAwareSampler(overseg=overseg, **aas_options),
        "LBAS": sampling.LBAS,
        "GBAS": sampling.GBAS,
        "NIS": sampling.NISSampler,
        "Random": sampling.RandomPairSampler,
    }
    methods = {}
    for name in names:
        t0 = time.perf_counter()
        records = aas.ActiveLoop(
            X,
            makers[name](),
            aas.LabelOracle(y),
            budget_per_cycle=BUDGET_FRACTION,
            cycles=cycles,
            seed=seed,
            clusters=state,
            n_threads=threads,
            merge=merge,
            calibrate=calibrate,
        ).run()
        methods[name] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "pairs": [r["pairs_total"] for r in records],
            "pairwise_f1": [round(r["pairwise_f1"], 4) for r in records],
            "pairwise_precision": [round(r["pairwise_precision"], 4) for r in records],
            "pairwise_recall": [round(r["pairwise_recall"], 4) for r in records],
            "ari": [round(r["ari"], 4) for r in records],
            "clusters": [r["clusters"] for r in records],
        }
    return methods


def run(
    n, d, cycles, seed, threads, overseg="cells", merge="auto", start="dbscan", aas_split=None
) -> dict:
    import aas_core as aas

    X, y = load_features(n, d)
    t0 = time.perf_counter()
    state = aas.cluster_features(X, n_threads=threads)
    if start == "finch0":  # a coarse, impure A: FINCH's first partition, with DBSCAN as B
        first = aas.finch(state.graph, n_threads=threads).labels[:, 0].astype("int64")
        state = dataclasses.replace(state, labels_a=first, labels_b=state.labels_a)
    row = header("active", n, d, 30, threads)
    row.update(cycles=cycles, seed=seed, budget_fraction=BUDGET_FRACTION, overseg=overseg)
    row.update(merge=merge, start=start, aas_split=aas_split or "the sampler's default")
    row["cluster_seconds"] = round(time.perf_counter() - t0, 3)
    # "fixed": the paper's split (U_us and U_os at eps 0.6, no checks or merges)
    split = {} if aas_split != "fixed" else dict(split="fixed", checks=0.0, merges=0.0)
    methods = run_samplers(
        X,
        y,
        state,
        cycles=cycles,
        seed=seed,
        threads=threads,
        overseg=overseg,
        merge=merge,
        **split,
    )
    aas_run = methods["AAS"]
    others = [m for m in SAMPLERS if m != "AAS"]
    row["methods"] = methods
    row["aas_best_every_cycle"] = all(
        aas_run["pairwise_f1"][c] > methods[m]["pairwise_f1"][c]
        for c in range(1, cycles + 1)
        for m in others
    )
    row["aas_fewest_pairs_every_cycle"] = all(
        aas_run["pairs"][c] <= methods[m]["pairs"][c] for c in range(cycles + 1) for m in others
    )
    return row


def main() -> None:
    args = driver_args(
        default_n=(4000, 10000),
        extra={
            "--cycles": dict(type=int, default=5),
            "--seed": dict(type=int, default=0, help="sampler seed (the data seed is 0)"),
            "--overseg": dict(
                choices=("cells", "regions"),
                default="cells",
                help="AAS's U_os: over cells (default) or the paper's region medoids",
            ),
            "--merge": dict(
                choices=("auto", "clusters", "nearest"),
                default="auto",
                help="NP3's merge on a must-link (ActiveLoop's default: auto)",
            ),
            "--aas-split": dict(
                choices=("yield", "fixed"),
                default=None,
                help="AAS's budget split: by yield (the sampler's default) or the paper's "
                "fixed split (no purity checks or merge questions)",
            ),
            "--start": dict(
                choices=("dbscan", "finch0"),
                default="dbscan",
                help="clustering A: DBSCAN (default), or FINCH's first partition with DBSCAN as B",
            ),
        },
    )
    cycles = 2 if args.smoke else args.cycles
    for n in args.n:
        emit(
            run(
                n,
                args.d,
                cycles,
                args.seed,
                args.threads,
                args.overseg,
                args.merge,
                args.start,
                args.aas_split,
            )
        )


if __name__ == "__main__":
    main()
