"""``aas demo``: every sampler against a ground-truth oracle on synthetic Re-ID data."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .._extras import install_hint
from .._files import write_atomic
from ._common import (
    _BUDGET_HELP,
    _NAMES,
    SAMPLERS,
    _add_clustering_args,
    _budget,
    _check_calibrate,
    _check_out,
    _check_out_folder,
    _cluster,
    _make_sampler,
    _methods,
    _non_negative_int,
    _pair_budget,
    _positive_int,
)

# what the demo writes into --out
RESULTS = "demo_results.json"
PLOT = "demo_f1_vs_budget.png"


def add_parser(sub):
    demo = sub.add_parser(
        "demo",
        help="compare AAS with LBAS, GBAS, NIS and Random on built-in synthetic Re-ID data",
        description=(
            "Clusters make_reid_blobs (no download) with DBSCAN on the k-reciprocal Jaccard "
            "distance and FINCH, then runs active-learning cycles with each sampler and a "
            "ground-truth oracle, refining the clustering with NP3 after every cycle. Prints "
            "pairwise F1, ARI and the budget used per method and cycle; writes "
            "demo_results.json and demo_f1_vs_budget.png to --out."
        ),
    )
    demo.add_argument("--n", type=_positive_int, default=4000, help="images (default 4000)")
    demo.add_argument("--d", type=_positive_int, default=2048, help="dimension (default 2048)")
    demo.add_argument("--seed", type=int, default=0, help="data and sampler seed (default 0)")
    demo.add_argument("--cycles", type=_non_negative_int, default=5, help="AL cycles (default 5)")
    demo.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help=f"pairs per cycle: {_BUDGET_HELP} (default 0.02%%)",
    )
    demo.add_argument(
        "--methods",
        type=_methods,
        default=list(SAMPLERS),
        help="samplers to compare (default aas,lbas,gbas,nis,random)",
    )
    _add_clustering_args(demo)
    demo.add_argument(
        "--calibrate",
        type=_non_negative_int,
        default=0,
        metavar="C",
        help="first ask C near pairs drawn at random and choose eps from their answers "
        "(out of the first cycle's budget; default 0: eps from the data alone)",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output directory (default ./demo_out)"
    )
    demo.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    demo.set_defaults(func=run)


# One marker and line style per method, so that no curve hides another (LBAS and GBAS
# often coincide).
_STYLES = {
    "aas": ("o", "-"),
    "lbas": ("s", "--"),
    "gbas": ("^", "-."),
    "nis": ("D", ":"),
    "random": ("x", (0, (6, 2, 1, 2, 1, 2))),
}


def run(args):
    import numpy as np

    from .. import datasets
    from ..loop import ActiveLoop
    from ..metrics import clustering
    from ..oracle import LabelOracle

    _check_out_dir(args.out)  # before minutes of work, not after
    _check_calibrate(args)
    t_start = time.perf_counter()
    print(f"aas demo: make_reid_blobs(n={args.n}, d={args.d}, seed={args.seed})")
    X, y = datasets.make_reid_blobs(args.n, d=args.d, seed=args.seed)
    n = len(X)
    total_pairs = n * (n - 1) // 2
    budget = _pair_budget(args.budget, n)
    state = _cluster(X, args)
    a, b = state.labels_a, state.labels_b
    print(
        f"  {len(np.unique(y))} true identities; DBSCAN (eps {state.eps.eps:.3f}, "
        f"{state.eps.source}): {_identities(a)}; FINCH: {_identities(b)} "
        f"({sum(state.seconds.values()):.1f} s)"
    )
    print(
        f"  {args.cycles} cycles of at most {budget} pairs each "
        f"({100.0 * budget / max(total_pairs, 1):.3f}% of {total_pairs} pairs)\n"
    )

    bar = _Progress(len(args.methods) * args.cycles)
    runs = {}
    for name in args.methods:
        loop = ActiveLoop(
            X,
            _make_sampler(name, args.device),
            LabelOracle(y),
            budget_per_cycle=budget,
            cycles=args.cycles,
            seed=args.seed,
            clusters=state,
            calibrate=args.calibrate,
        )
        runs[name] = loop.run(
            progress=lambda c, total, name=name: bar.step(f"{_NAMES[name]} cycle {c}/{total}")
        )
    bar.close()
    if args.calibrate and runs:
        # every method's loop draws the same calibration pairs (one seed): one line says it
        print(f"  calibration ({args.calibrate} near pairs): {loop.clusters_.eps.message}")

    print(
        f"{'method':<8}{'cycle':>6}{'pairs':>8}{'budget used':>13}"
        f"{'pair P':>8}{'pair R':>8}{'pair F1':>9}{'ARI':>7}{'identities':>11}"
    )
    for name, records in runs.items():
        for r in records:
            print(
                f"{_NAMES[name]:<8}{r['cycle']:>6}{r['pairs_total']:>8}"
                f"{r['budget_used_pct']:>12.4f}%{r['pairwise_precision']:>8.3f}"
                f"{r['pairwise_recall']:>8.3f}{r['pairwise_f1']:>9.3f}{r['ari']:>7.3f}"
                f"{r['clusters']:>11}"
            )
    best = max(runs, key=lambda m: runs[m][-1]["pairwise_f1"])
    print("(identities: clusters + singletons, the outliers no answer has placed)")
    print(
        f"\nbest final pairwise F1: {_NAMES[best]} {runs[best][-1]['pairwise_f1']:.3f} with "
        f"{runs[best][-1]['pairs_total']} pairs ({runs[best][-1]['budget_used_pct']:.4f}%)"
    )

    results = {
        "n": n,
        "d": args.d,
        "seed": args.seed,
        "true_identities": int(len(np.unique(y))),
        "cycles": args.cycles,
        "budget_per_cycle_pairs": budget,
        "calibrate": args.calibrate,
        "total_pairs": total_pairs,
        "clustering": {
            "dbscan": _scores(clustering, y, a),
            "finch": _scores(clustering, y, b),
            "seconds": {k: round(v, 4) for k, v in state.seconds.items()},
        },
        "methods": {_NAMES[m]: recs for m, recs in runs.items()},
    }
    path = args.out / RESULTS
    results["seconds_total"] = round(time.perf_counter() - t_start, 3)
    text = json.dumps(results, indent=2)
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))
    print(f"wrote {path}")
    if not args.no_plot:
        png = _plot(runs, args.out / PLOT, n)
        hint = install_hint("demo")
        print(f"wrote {png}" if png else f"no plot: matplotlib is missing ({hint})")
    return 0


class _Progress:
    """A one-line progress bar on stderr (only drawn on a terminal)."""

    def __init__(self, total, width=30, stream=None):
        self.total, self.width, self.done = max(total, 1), width, 0
        self.stream = stream or sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()

    def step(self, label):
        self.done += 1
        if self.live:
            filled = int(self.width * self.done / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r  [{bar}] {self.done}/{self.total} {label:<24}")
            self.stream.flush()

    def close(self):
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def _identities(labels):
    """'345 clusters + 1203 singletons = 1548 identities' (outliers are singletons)."""
    import numpy as np

    clusters = int(len(np.unique(labels[labels >= 0])))
    singletons = int(np.sum(labels < 0))
    if not singletons:
        return f"{clusters} clusters"
    return f"{clusters} clusters + {singletons} singletons = {clusters + singletons} identities"


def _check_out_dir(path):
    """Refuses an --out that is not a folder, or whose files cannot be written, before any
    work is done."""
    _check_out_folder(path, "--out")
    for name in (RESULTS, PLOT):
        _check_out(path / name, "--out", via=path)


def _scores(clustering, y, labels):
    import numpy as np

    p, r, f = clustering.pairwise_scores(y, labels)
    return {
        "clusters": int(len(np.unique(labels[labels >= 0])) + np.sum(labels < 0)),
        "outliers": int(np.sum(labels < 0)),
        "pairwise_precision": p,
        "pairwise_recall": r,
        "pairwise_f1": f,
        "ari": clustering.ari(y, labels),
        "nmi": clustering.nmi(y, labels),
    }


def _plot(runs, path, n):
    """Writes the F1-vs-budget figure to ``path``; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = _figure(plt, runs, n)
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def _figure(plt, runs, n):
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, records in runs.items():
        marker, style = _STYLES[name]
        ax.plot(
            [r["budget_used_pct"] for r in records],
            [r["pairwise_f1"] for r in records],
            marker=marker,
            linestyle=style,
            markersize=7 if name == "aas" else 5.5,
            markerfacecolor="none" if name in ("lbas", "nis") else None,
            linewidth=2.2 if name == "aas" else 1.4,
            label=_NAMES[name],
        )
    ax.set_xlabel("cumulative budget (% of all pairs)")
    ax.set_ylabel("pairwise F1 of the refined clustering")
    ax.set_title(f"Active learning on make_reid_blobs (n = {n}), one marker per cycle")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
