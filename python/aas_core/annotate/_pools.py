"""The pools pairs are queued with that more than one command reads (kept free of heavy
imports: the command line reads them at start-up)."""

from __future__ import annotations

__all__ = [
    "CALIBRATION_POOL",
    "SAMPLER_STATE_KEY",
    "calibration_answers",
    "calibration_to_ask",
    "load_sampler_state",
    "save_sampler_state",
]

# the pool (and kind) of the near pairs a calibration asks (drawn uniformly among the kNN
# edges by aas_core.cluster.calibration_pairs), in stores and CSVs
CALIBRATION_POOL = "calibration"


def calibration_answers(store):
    """An annotation store's current answers to pairs queued in pool "calibration":
    (pairs (m, 2) int64 with i < j, same (m,) bool)."""
    import numpy as np

    table = store.answer_table()
    keep = (table["pool"] == CALIBRATION_POOL) & (table["origin"] == "pair")
    pairs = np.sort(np.stack([table["i"][keep], table["j"][keep]], axis=1), axis=1)
    return pairs.reshape(-1, 2).astype(np.int64), np.asarray(table["same"][keep], bool)


def calibration_to_ask(graph, calibrate, answered, budget, rng, known, store=None, listed=None):
    """The near pairs to ask now for a calibration from ``calibrate`` answers, and how
    many calibration pairs wait in ``store`` for an answer: ((m, 2) int64 with i < j,
    waiting).

    Drawn uniformly among ``graph``'s kNN edges (calibration_pairs), as many as
    ``calibrate`` still lacks after the ``answered`` ones and the waiting ones, at most
    ``budget``. A pair already queued in ``store`` (any pool) or known (``known``:
    Constraints) is never drawn again. A calibration pair answered "can't tell" or
    skipped is settled, not waiting: it is no answer, so another pair takes its place.
    ``listed``: ``store.pairs()`` when the caller has read it already.
    """
    import numpy as np

    from ..cluster import calibration_pairs

    queued_pairs = [] if store is None else store.pairs() if listed is None else listed
    settled = set() if store is None else {a["pair_id"] for a in store.answers()}
    waiting = sum(
        1 for p in queued_pairs if p["pool"] == CALIBRATION_POOL and p["pair_id"] not in settled
    )
    want = min(max(0, int(calibrate) - int(answered) - waiting), int(budget))
    if want == 0:
        return np.empty((0, 2), np.int64), waiting
    queued = {(min(p["i"], p["j"]), max(p["i"], p["j"])) for p in queued_pairs}
    drawn = calibration_pairs(graph, want + len(queued), rng, known)
    fresh = [t for t, (a, b) in enumerate(drawn.tolist()) if (a, b) not in queued]
    pick = np.sort(rng.permutation(len(fresh))[:want])
    return drawn[np.asarray(fresh, np.int64)[pick]].reshape(-1, 2), waiting


# the store's meta key for what the sampler learnt from its last proposal
# (PairSampler.get_state), so that rounds in separate processes go on from it
SAMPLER_STATE_KEY = "sampler_state"


def load_sampler_state(store, sampler) -> bool:
    """Gives ``sampler`` the state a round before saved in ``store`` for a sampler of its
    kind; True when it did. A state that does not fit (another sampler, another version)
    is passed over: it only steers how the budget is shared, no answer is in it."""
    import json

    raw = store.meta.get(SAMPLER_STATE_KEY)
    if not raw:
        return False
    try:
        saved = json.loads(raw)
        if saved.get("sampler") != type(sampler).__name__ or saved.get("state") is None:
            return False
        sampler.set_state(saved["state"])
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def save_sampler_state(store, sampler) -> None:
    """Records ``sampler``'s state (PairSampler.get_state) in ``store`` for the next round."""
    import json

    state = sampler.get_state()
    if state is None:  # a sampler that learns nothing leaves another's state alone
        return
    store.set_meta(
        SAMPLER_STATE_KEY, json.dumps({"sampler": type(sampler).__name__, "state": state})
    )
