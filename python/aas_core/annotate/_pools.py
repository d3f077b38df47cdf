"""The pools pairs are queued with that more than one command reads (kept free of heavy
imports: the command line reads them at start-up)."""

from __future__ import annotations

__all__ = ["CALIBRATION_POOL", "calibration_answers"]

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
