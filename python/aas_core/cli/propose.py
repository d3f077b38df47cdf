"""``aas propose``: the pairs a person should answer next, as CSV or queued in a store."""

from __future__ import annotations

from pathlib import Path

from ..annotate._pools import load_sampler_state, save_sampler_state
from ._common import (
    _BUDGET_HELP,
    _NAMES,
    CALIBRATION_POOL,
    SAMPLERS,
    _add_calibrate_arg,
    _add_clustering_args,
    _add_input_args,
    _budget,
    _calibration_to_ask,
    _check_calibrate,
    _check_out,
    _cluster,
    _input_files,
    _load_inputs,
    _make_sampler,
    _not_among,
    _pair_budget,
    _write_csv,
)


def add_parser(sub):
    prop = sub.add_parser(
        "propose",
        help="propose the next pairs to annotate (embeddings + answers so far -> pairs CSV)",
        description=(
            "Clusters the embeddings, refines with the answers so far (NP3) and writes the "
            "pairs a person should look at next as CSV, the most probable first: i, j (rows "
            "of the embeddings, from 0), path_i, path_j (where X.rows.csv from 'aas embed' "
            "beside X.npy, or the store, names the images), an empty 'same' column for the "
            "person to fill in (same/different, yes/no or 1/0; the file then goes back in "
            "with --constraints), probability, pool, kind, region. With --store, reads the "
            "answers from an 'aas annotate' store and queues the pairs there (as the next "
            "cycle) for the browser; --out then also writes the CSV."
        ),
    )
    _add_input_args(prop)
    prop.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help=f"pairs to propose: {_BUDGET_HELP} (default 0.02%%)",
    )
    prop.add_argument("--sampler", choices=SAMPLERS, default="aas", help="default aas")
    prop.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    prop.add_argument(
        "--out", type=Path, default=None, help="pairs CSV (default pairs.csv; none with --store)"
    )
    _add_clustering_args(prop)
    _add_calibrate_arg(
        prop,
        "ask C near pairs drawn at random (pool 'calibration', out of this round's budget "
        "until C are answered or queued) and, once answered, choose eps from their answers "
        "(default 0: eps from the data alone)",
    )
    prop.set_defaults(func=run)


def run(args):
    import numpy as np

    _check_calibrate(args)
    if args.out is None and args.store is None:
        args.out = Path("pairs.csv")  # the default is checked like a given --out
    # before anything is queued in a store (and again once the store is open)
    _check_out(args.out, "--out", _input_files(args))
    inputs = _load_inputs(args)
    X, constraints, store = inputs.X, inputs.constraints, inputs.store
    try:
        n = len(X)
        budget = _pair_budget(args.budget, n)
        sampler = _make_sampler(args.sampler, args.device)
        rng = np.random.default_rng(args.seed)
        state = _cluster(X, args, constraints, inputs.calibration)
        calibration = np.empty((0, 2), np.int64)
        if args.calibrate:
            calibration, answered, queued = _calibration_to_ask(args, state, inputs, budget, rng)
            print(
                f"calibration: {len(calibration)} near pairs drawn at random to ask now "
                f"({answered} answered and {queued} waiting of the {args.calibrate} asked for)"
            )
        if store is not None:  # what the sampler learnt from the round before
            load_sampler_state(store, sampler)
        prop = sampler.propose(X, constraints, budget - len(calibration), rng=rng, clusters=state)
        if store is not None:
            save_sampler_state(store, sampler)
        if len(calibration) and len(calibration) == budget:
            print(f"{_NAMES[args.sampler]}: none this round (the calibration took its budget)")
        else:
            print(f"{_NAMES[args.sampler]}: {prop.message}")
        prop = _with_calibration(prop, calibration, n)
        if store is not None:
            cycle = store.next_cycle()
            added = store.add_pairs(
                prop.pairs,
                sampler=args.sampler,
                cycle=cycle,
                prob=prop.prob,
                pool=prop.pool,
                kind=prop.kind,
            )
            print(
                f"queued {added} new pairs in {store.path} as cycle {cycle} "
                f"({len(prop) - added} already queued)"
            )
    finally:
        if store is not None:
            store.close()
    out = args.out
    if out is None:
        return 0
    _write_csv(out, _pair_rows(prop, inputs.paths), "--out")
    print(f"wrote {len(prop)} pairs to {out}" + ("" if len(prop) == 0 else _FILL_IN))
    return 0


def _with_calibration(prop, calibration, n):
    """``prop`` after the calibration pairs (pool and kind "calibration", no probability);
    a pair of the sampler's that is also a calibration pair is asked once, as the latter.
    n: the number of images."""
    import numpy as np

    from ..sampling.base import PairProposal

    if not len(calibration):
        return prop
    mine = _not_among(prop.pairs, calibration, n)
    m = len(calibration)
    return PairProposal(
        np.concatenate([calibration, prop.pairs[mine]]).astype(np.int64),
        np.concatenate([np.full(m, np.nan), prop.prob[mine]]),
        np.concatenate([np.full(m, CALIBRATION_POOL), prop.pool[mine]]),
        np.concatenate([np.full(m, CALIBRATION_POOL), prop.kind[mine]]),
        np.concatenate([np.full(m, -1, np.int64), prop.region[mine]]),
        prop.n_candidates,
        f"{m} calibration pairs and {prop.message}",
    )


_FILL_IN = (
    "; answer them in its 'same' column (same/different, yes/no or 1/0) and give the file "
    "back with --constraints"
)


def _pair_rows(prop, paths):
    """pairs.csv: the most useful pair first, image paths where known, an empty 'same'."""
    import numpy as np

    prob = np.asarray(prop.prob, np.float64)
    order = np.argsort(-np.where(np.isnan(prob), -np.inf, prob), kind="stable")
    head = ["i", "j", *(["path_i", "path_j"] if paths is not None else [])]
    rows = [[*head, "same", "probability", "pool", "kind", "region"]]
    pairs, region = prop.pairs.tolist(), prop.region.tolist()
    for k in order.tolist():
        i, j = pairs[k]
        p = float(prob[k])
        where = [paths[i], paths[j]] if paths is not None else []
        rows.append(
            [i, j, *where, "", "" if p != p else f"{p:.6g}", prop.pool[k], prop.kind[k], region[k]]
        )
    return rows
