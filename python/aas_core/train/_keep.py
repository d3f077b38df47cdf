"""Never worse than where it started: held-out answers judge each cycle's weights.

A share of the answers (``TrainConfig.holdout``, by
:func:`~aas_core.catalogue.embedding.heldout_mask`: stable per pair, so an
answer held out stays held out as more arrive) never reaches the
pseudo-labels. At the end of each cycle the embedding of the training images
under the new weights and under the weights kept so far (at first the
untrained model) are measured on them (:func:`compare_auc`); the new weights
stay only when they separate "same" from "different" better, by DeLong's paired
test at the one-sided 5% level (:func:`keep_decision`, the rule of ``aas
catalogue --learn``), else the model and the memory bank go back to the kept
ones. A run without a sampler (SpCL alone) has no answers and no guard.

With too few held-out answers to judge, ``unsure`` decides. The head on a frozen
backbone goes on with its update (True): a projection and a BN neck of features
that stay as they are. Trained blocks go back (False): with nothing to judge by,
an update of the backbone itself is not kept. On the lion crops at 0.02% of the
pairs a cycle (2 held-out "same" answers after five cycles: no cycle judged) the
head, kept unjudged, ended above the untrained backbone in each of 3 seeds (test
mAP 12.68-12.84 against 12.07); the last two blocks, kept unjudged, ended below
it (10.92 and 11.59).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..catalogue.embedding import compare_auc, heldout_mask, keep_decision
from ..constraints import PairConstraints


def _copy_state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class KeepGuard:
    """The kept weights and their embedding of the training images, and the rule."""

    def __init__(self, share: float, seed: int, state: dict, embeddings, *, unsure: bool):
        self.share, self.seed, self.unsure = float(share), int(seed), bool(unsure)
        self.state = state
        self.embeddings = np.asarray(embeddings, np.float32)

    @classmethod
    def start(cls, share, seed, model, embeddings, *, unsure):
        return cls(share, seed, _copy_state(model), embeddings, unsure=unsure)

    def held(self, constraints) -> np.ndarray:
        return heldout_mask(constraints.pairs, self.share, seed=self.seed)

    def training_answers(self, constraints):
        """The answers the pseudo-labels may use (all but the held-out ones), in order."""
        held = self.held(constraints)
        if not held.any():
            return constraints
        out = PairConstraints(n=constraints.n)
        out.add(constraints.pairs[~held], constraints.is_must_link[~held])
        return out

    def judge(self, model, embeddings, constraints) -> dict:
        """Keeps the model's weights or puts the kept ones back; returns the record."""
        held = self.held(constraints)
        pairs, same = constraints.pairs[held], constraints.is_must_link[held]
        n_same, n_diff = int(same.sum()), int((~same).sum())
        auc_new, auc_kept, z = compare_auc(embeddings, self.embeddings, pairs, same)
        keep, reason = keep_decision(auc_new, auc_kept, n_same, n_diff, z=z, unsure=self.unsure)
        if keep:
            self.state = _copy_state(model)
            self.embeddings = np.asarray(embeddings, np.float32)
        else:
            model.load_state_dict(self.state)
        return {
            "auc_kept": None if not np.isfinite(auc_kept) else round(float(auc_kept), 4),
            "auc_new": None if not np.isfinite(auc_new) else round(float(auc_new), 4),
            "auc_gain_z": None if not np.isfinite(z) else round(float(z), 3),
            "heldout_same": n_same,
            "heldout_different": n_diff,
            "kept": bool(keep),
            "keep_reason": reason,
        }

    def follow(self, model, kept: bool):
        """Another process's verdict: keep the model's weights, or put the kept ones back."""
        if kept:
            self.state = _copy_state(model)
        else:
            model.load_state_dict(self.state)

    def reset_memory(self, memory):
        """The memory bank back at the kept weights' embedding (after a rejected update)."""
        with torch.no_grad():
            feats = torch.as_tensor(self.embeddings, device=memory.features.device)
            memory.features.copy_(F.normalize(feats.to(memory.features.dtype), dim=1))

    def to_state(self) -> dict:
        return {"state": self.state, "embeddings": torch.from_numpy(self.embeddings.copy())}

    @classmethod
    def from_state(cls, share, seed, st: dict, *, unsure):
        return cls(share, seed, dict(st["state"]), st["embeddings"].numpy(), unsure=unsure)
