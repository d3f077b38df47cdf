"""SpCL's hybrid memory: one feature per training image, compared with clusters.

Every training image keeps a unit feature in a bank (n x d). Given the
pseudo-labels, a cluster is represented by the mean of its members' logits
(equivalently, the unnormalised mean of their features), and an un-clustered
instance by its own feature, so one softmax covers "cluster centroids +
un-clustered instances" as in SpCL (Ge et al., NeurIPS 2020, Eq. 2-3). The
bank moves towards each batch's features with momentum 0.2 and is
renormalised.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["HybridMemory"]


class HybridMemory(torch.nn.Module):
    """Instance bank with the cluster-level contrastive loss of SpCL.

    Parameters
    ----------
    features : (n, d) float tensor or array
        Initial features of the n training images (rows are L2-normalised
        here, in a copy).
    temperature : float > 0
        Softmax temperature (SpCL: 0.05).
    momentum : float in [0, 1)
        Weight of the old bank entry in an update (SpCL: 0.2).

    Notes
    -----
    SpCL averages the exponentiated logits over a masked softmax with
    epsilons of 1e-6; here the same loss is a cross-entropy over the mean
    logits of the present labels (log-sum-exp, no epsilon), which equals it
    up to those epsilons and does not overflow.
    """

    def __init__(self, features, *, temperature=0.05, momentum=0.2):
        super().__init__()
        if not 0 < float(temperature):
            raise ValueError(f"HybridMemory: 'temperature' must be > 0; got {temperature!r}.")
        if not 0 <= float(momentum) < 1:
            raise ValueError(f"HybridMemory: 'momentum' must be in [0, 1); got {momentum!r}.")
        feats = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features)
        if feats.ndim != 2 or feats.shape[0] < 1:
            raise ValueError(
                f"HybridMemory: 'features' must be (n, d) with n >= 1; got {tuple(feats.shape)}."
            )
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.register_buffer("features", F.normalize(feats.detach().float().clone(), dim=1))
        self.register_buffer("labels", torch.arange(feats.shape[0], dtype=torch.int64))
        self._counts = None

    @property
    def n(self) -> int:
        return self.features.shape[0]

    def set_labels(self, labels) -> None:
        """Pseudo-labels of the n images, renumbered 0..C-1 (each image labelled)."""
        lab = np.asarray(labels)
        if lab.shape != (self.n,) or lab.dtype.kind not in "iu":
            raise ValueError(
                f"HybridMemory.set_labels: 'labels' must be ({self.n},) integers; got "
                f"{lab.dtype} {lab.shape}."
            )
        if lab.min(initial=0) < 0:
            raise ValueError("HybridMemory.set_labels: every image needs a label (no -1).")
        _, codes = np.unique(lab, return_inverse=True)
        self.labels.copy_(torch.as_tensor(codes.astype(np.int64)))
        self._counts = None

    def _cluster_counts(self):
        if self._counts is None or self._counts.device != self.labels.device:
            n_labels = int(self.labels.max()) + 1
            self._counts = torch.bincount(self.labels, minlength=n_labels).to(self.features.dtype)
        return self._counts

    def forward(self, inputs, indexes):
        """Loss of a batch: ``inputs`` (B, d) features of images ``indexes`` (B,)."""
        x = F.normalize(inputs, dim=1)
        counts = self._cluster_counts()
        # The mean logit of a label is x . (mean of its members' features) / temperature
        # (the logits are linear in the features), so one (C, d) matrix of unnormalised
        # centroids replaces the (B, n) logits of every instance: O(n d + B C d), not
        # O(B n d), and C < n once anything is clustered.
        centroids = torch.zeros(
            counts.numel(), x.shape[1], dtype=self.features.dtype, device=x.device
        )
        centroids.index_add_(0, self.labels, self.features)
        centroids /= counts[:, None]
        mean_logits = x @ centroids.t() / self.temperature  # (B, C)
        return F.cross_entropy(mean_logits, self.labels[indexes])

    @torch.no_grad()
    def update(self, inputs, indexes) -> None:
        """Moves the bank entries of ``indexes`` towards the (normalised) ``inputs``."""
        x = F.normalize(inputs.detach().to(self.features.dtype), dim=1)
        mixed = self.momentum * self.features[indexes] + (1.0 - self.momentum) * x
        self.features[indexes] = F.normalize(mixed, dim=1)
