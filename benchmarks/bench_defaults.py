"""How the defaults hold on data nobody tuned them for (issue 24): the generator family's
suite and the development sets of real photos.

For each data set: pairwise F1 (outliers as singletons) of the default
clustering -- ``cluster_features(X)``, i.e. eps="auto" -- of eps 0.5, 0.6 and
0.7, and of every eps of a grid (``--grid``, default 0.30 to 0.90 step
0.02); the best fixed eps in hindsight, and the regret = best fixed F1 -
default F1 (negative where the default beats every grid eps, e.g. an auto eps
below the grid). The grid reuses one Jaccard graph that holds distances up to
1 (DBSCAN reads only those up to eps, so the result equals cluster_features
with that eps; ``grid_matches_direct`` checks it at 0.5/0.6/0.7).

With ``--samplers`` (slow) each data set also runs the five samplers of
bench_active.py (its ``run_samplers``) on the default clustering: 0.02% of
all pairs per cycle, ``--cycles`` cycles, one run per ``--seeds``, and the
refined pairwise F1 per cycle per seed, their means, and whether AAS's mean
is at least every baseline's minus the larger seed spread, every cycle
(``aas_best_or_tied_every_cycle``).

With ``--calibrate C [C ...]`` each data set also gets the eps chosen from C
answers to near pairs drawn uniformly (``aas_core.cluster.calibrated_eps``;
one draw per ``--seeds``) and its regret; with ``--samplers`` too, every
sampler's loop first asks the first C of them (``ActiveLoop(calibrate=C)``),
out of its first cycle's budget.

With ``--rules`` each data set also gets the eps and the regret of every
candidate data-only rule of ``eps_rules.py`` (the rules tried for issue 24;
none is the library's default).

Data sets:

- the suite: ``aas_core.datasets.GENERATOR_SUITE`` at ``--n`` images (default
  2,500), data seed ``--data-seed``; ``--members`` picks some by name.
- development sets of real photos (never committed; not run by CI):
  ``--real NAME=EMB.npy`` or ``--real NAME=EMB.npy:MANIFEST.csv``. ``EMB.npy``
  is an ``aas embed`` output with its ``EMB.rows.csv`` (``index,path[,identity]``)
  beside it. Each row's identity is its ``identity`` cell when filled, else the
  manifest's (``path,identity,...``) for the manifest path equal to the row's
  path or ending in ``/`` + it (so ``images/a/1.jpg`` matches ``a/1.jpg``), else
  the first folder of the row's path. Every row is used (all splits).

One JSON line per data set. ``--smoke``: three small members at n = 600 with
two sampler cycles, in well under a minute.

    python benchmarks/bench_defaults.py
    python benchmarks/bench_defaults.py --real lion=/data/lion.npy:/data/lion/manifest.csv \
        --real dog=/data/dog.npy
    python benchmarks/bench_defaults.py --members tiny-ids flanks --samplers --seeds 0 1 2
    python benchmarks/bench_defaults.py --rules --grid 0.10 0.90 0.02 --data-seed 1
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from _common import emit, header

FIXED = (0.5, 0.6, 0.7)
SMOKE_MEMBERS = ("tiny-ids", "flanks", "zipf1-4-d64")


def _scores(y, labels) -> dict:
    from aas_core.metrics.clustering import pairwise_scores

    p, r, f = pairwise_scores(y, labels)
    n_clusters = int(labels.max(initial=-1) + 1)
    return {
        "f1": round(f, 4),
        "precision": round(p, 4),
        "recall": round(r, 4),
        "clusters": n_clusters,
        "outliers": int((labels < 0).sum()),
    }


def clustering_part(X, y, grid, threads, rules=False) -> dict:
    """The default's F1, eps 0.5/0.6/0.7's, every grid eps's, the best and the regret.

    With ``rules``: each candidate rule of ``eps_rules.py``, its eps and regret.
    """
    import aas_core as aas

    t0 = time.perf_counter()
    state = aas.cluster_features(X, n_threads=threads)
    out = {"default": dict(_scores(y, state.labels_a), eps=round(state.eps.eps, 4))}
    out["default"]["source"] = state.eps.source
    out["fixed"] = {}
    for eps in FIXED:
        out["fixed"][f"{eps:.1f}"] = _scores(
            y, aas.cluster_features(X, eps=eps, n_threads=threads).labels_a
        )
    # one graph with every distance up to 1 serves the whole grid
    wide = aas.cluster_features(X, eps=0.9, n_threads=threads)
    f1 = {}
    for eps in grid:
        labels = aas.dbscan(wide.D, eps=float(eps), min_samples=wide.min_samples, n_threads=threads)
        f1[f"{eps:.2f}"] = round(aas.metrics.clustering.pairwise_f1(y, labels), 4)
    out["grid_f1"] = f1
    best = max(f1, key=lambda e: (f1[e], -abs(float(e) - 0.6)))  # ties: the eps nearest 0.6
    out["best_eps"] = float(best)
    out["best_f1"] = f1[best]
    out["regret"] = round(f1[best] - out["default"]["f1"], 4)
    out["grid_matches_direct"] = all(
        f1[f"{eps:.2f}"] == out["fixed"][f"{eps:.1f}"]["f1"] for eps in FIXED if f"{eps:.2f}" in f1
    )
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if rules:
        import eps_rules

        out["rules"] = eps_rules.regrets(
            eps_rules.RULES,
            D=wide.D,
            graph=wide.graph,
            finch_labels=aas.finch(wide.graph, n_threads=threads).labels,
            grid=grid,
            grid_f1=f1,
        )
    return out, state


def calibration_part(y, state, grid_f1, counts, seeds) -> dict:
    """Per count of calibration answers and seed: the calibrated eps and its regret."""
    from aas_core.cluster import calibrated_eps, calibration_pairs

    eps_grid = np.array([float(e) for e in grid_f1])
    f1 = np.array(list(grid_f1.values()))
    out = {}
    for count in counts:
        rows = []
        for seed in seeds:
            pairs = calibration_pairs(state.graph, count, seed)
            same = y[pairs[:, 0]] == y[pairs[:, 1]]
            choice = calibrated_eps(state.D, state.graph, pairs, same, fallback=state.eps)
            near = int(np.argmin(np.abs(eps_grid - choice.eps)))
            rows.append(
                {
                    "seed": seed,
                    "eps": choice.eps,
                    "source": choice.source,
                    "same": int(same.sum()),
                    "regret": round(float(f1.max() - f1[near]), 4),
                }
            )
        out[str(count)] = {"per_seed": rows, "worst_regret": max(r["regret"] for r in rows)}
    return out


def samplers_part(
    X,
    y,
    state,
    seeds,
    cycles,
    threads,
    calibrate=0,
    checks=None,
    merges=None,
    split=None,
    only=None,
) -> dict:
    from aas_core.sampling import AmbiguityAwareSampler
    from bench_active import SAMPLERS, run_samplers

    names = tuple(only or SAMPLERS)
    given = dict(checks=checks, merges=merges, split=split)
    aas = AmbiguityAwareSampler(**{k: v for k, v in given.items() if v is not None})

    per_seed = {name: [] for name in names}
    pairs = {}
    t0 = time.perf_counter()
    for seed in seeds:
        methods = run_samplers(
            X,
            y,
            state,
            cycles=cycles,
            seed=seed,
            threads=threads,
            calibrate=calibrate,
            checks=checks,
            merges=merges,
            split=split,
            names=names,
        )
        for name, rec in methods.items():
            per_seed[name].append(rec["pairwise_f1"])
            pairs[name] = rec["pairs"]
    f1 = {k: np.array(v) for k, v in per_seed.items()}  # (seeds, cycles + 1)
    mean = {k: v.mean(axis=0) for k, v in f1.items()}
    spread = {k: v.max(axis=0) - v.min(axis=0) for k, v in f1.items()}
    others = [m for m in names if m != "AAS"] if "AAS" in names else []
    tied = all(
        mean["AAS"][c] >= mean[m][c] - max(spread["AAS"][c], spread[m][c])
        for c in range(1, cycles + 1)
        for m in others
    )
    best = all(mean["AAS"][c] > mean[m][c] for c in range(1, cycles + 1) for m in others)
    return {
        "seeds": list(seeds),
        "cycles": cycles,
        "budget_fraction": 0.0002,
        "calibrate": calibrate,
        "aas_checks": aas.checks,
        "aas_merges": aas.merges,
        "aas_split": aas.split,
        "pairs_last_seed": pairs,
        "pairwise_f1_per_seed": {k: v for k, v in per_seed.items()},
        "pairwise_f1_mean": {k: [round(float(x), 4) for x in v] for k, v in mean.items()},
        "aas_best_every_cycle": best,
        "aas_best_or_tied_every_cycle": tied,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---- development sets ----------------------------------------------------------


def _parse_real(spec: str):
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"bench_defaults: --real {spec!r}: expected NAME=EMB.npy[:MANIFEST.csv]")
    emb, _, manifest = rest.partition(":")
    return name, Path(emb), Path(manifest) if manifest else None


def load_real(emb: Path, manifest: Path | None):
    """(X, y, info) of an ``aas embed`` output; identities as the module notes say."""
    X = np.load(emb)
    rows_path = emb.with_name(emb.name[: -len(".npy")] + ".rows.csv")
    with open(rows_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(X):
        raise SystemExit(f"bench_defaults: {rows_path} has {len(rows)} rows, {emb} {len(X)}")
    by_path = {}
    if manifest is not None:
        with open(manifest, newline="", encoding="utf-8") as f:
            by_path = {r["path"]: r["identity"] for r in csv.DictReader(f)}
    by_suffix = {}
    for path, ident in by_path.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            by_suffix.setdefault("/".join(parts[i:]), []).append(ident)
    names, source = [], {"rows": 0, "manifest": 0, "folder": 0}
    for r in rows:
        path, ident = r["path"], (r.get("identity") or "").strip()
        if ident:
            source["rows"] += 1
        elif path in by_path or len(by_suffix.get(path, ())) == 1:
            ident = by_path.get(path) or by_suffix[path][0]
            source["manifest"] += 1
        elif manifest is not None:
            raise SystemExit(f"bench_defaults: {path!r} ({rows_path}) is not in {manifest}")
        else:
            ident = path.split("/")[0]
            source["folder"] += 1
        names.append(ident)
    _, y = np.unique(np.array(names), return_inverse=True)
    return X, y.astype(np.int64), {"identities_from": source}


# ---- driver ----------------------------------------------------------------------


def main() -> None:
    from aas_core.datasets import GENERATOR_SUITE, make_suite_member

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2500, help="images per suite member")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--members", nargs="*", default=None, help="suite members (default: all)")
    p.add_argument("--no-suite", action="store_true", help="only the --real sets")
    p.add_argument("--real", action="append", default=[], metavar="NAME=EMB.npy[:MANIFEST.csv]")
    p.add_argument(
        "--grid", type=float, nargs=3, default=(0.30, 0.90, 0.02), metavar=("LO", "HI", "STEP")
    )
    p.add_argument("--samplers", action="store_true", help="also the five samplers (slow)")
    p.add_argument(
        "--rules", action="store_true", help="also the candidate eps rules of eps_rules.py"
    )
    p.add_argument(
        "--calibrate",
        type=int,
        nargs="*",
        default=[],
        metavar="C",
        help="eps from C calibration answers (per --seeds); the samplers use the first C",
    )
    p.add_argument(
        "--aas-checks",
        type=float,
        default=None,
        metavar="SHARE",
        help="AmbiguityAwareSampler(checks=SHARE): budget share of purity checks (with "
        "--aas-split yield the first cycle's; default: the sampler's, 0.2)",
    )
    p.add_argument(
        "--aas-merges",
        type=float,
        default=None,
        metavar="SHARE",
        help="AmbiguityAwareSampler(merges=SHARE): budget share of merge questions (as "
        "--aas-checks; default: the sampler's, 0.1)",
    )
    p.add_argument(
        "--aas-split",
        choices=("fixed", "yield"),
        default=None,
        help="AmbiguityAwareSampler(split=...): 'yield' (the sampler's default) shares each "
        "later cycle's budget between U_us, U_os, checks and merges by their answers' yield; "
        "'fixed' keeps --aas-checks and --aas-merges (both 0: the paper's split)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="SAMPLER",
        help="run only these samplers (e.g. AAS; the baselines do not depend on --aas-checks "
        "or --aas-merges)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="3 small members, n = 600: runs < 1 min")
    args = p.parse_args()
    if args.smoke:
        args.n, args.cycles, args.seeds = 600, 2, [0]
        args.members = args.members or list(SMOKE_MEMBERS)
    lo, hi, step = args.grid
    grid = np.round(np.arange(lo, hi + step / 2, step), 4)

    sets = []
    if not args.no_suite:
        for name in args.members or list(GENERATOR_SUITE):
            if name not in GENERATOR_SUITE:
                raise SystemExit(f"bench_defaults: no suite member {name!r}")
            sets.append(
                (
                    name,
                    "suite",
                    GENERATOR_SUITE[name],
                    lambda nm=name: make_suite_member(nm, n=args.n, seed=args.data_seed),
                )
            )
    for spec in args.real:
        name, emb, manifest = _parse_real(spec)
        sets.append((name, "real", {}, lambda e=emb, m=manifest: load_real(e, m)))

    for name, kind, params, make in sets:
        loaded = make()
        X, y = loaded[:2]
        row = header("defaults", len(X), X.shape[1], 30, args.threads)
        row.update(dataset=name, kind=kind)
        if kind == "suite":
            row.update(
                params={k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                data_seed=args.data_seed,
            )
        else:
            row.update(loaded[2])
        sizes = np.bincount(y)
        row.update(
            identities=len(sizes),
            singleton_identities=int((sizes == 1).sum()),
            largest_identity=int(sizes.max()),
        )
        row["grid"] = [float(lo), float(hi), float(step)]
        clustering, state = clustering_part(X, y, grid, args.threads, rules=args.rules)
        row.update(clustering)
        if args.calibrate:
            row["calibration"] = calibration_part(
                y, state, clustering["grid_f1"], args.calibrate, args.seeds
            )
        if args.samplers:
            row["samplers"] = samplers_part(
                X,
                y,
                state,
                args.seeds,
                args.cycles,
                args.threads,
                calibrate=args.calibrate[0] if args.calibrate else 0,
                checks=args.aas_checks,
                merges=args.aas_merges,
                split=args.aas_split,
                only=args.only,
            )
        emit(row)


if __name__ == "__main__":
    main()
