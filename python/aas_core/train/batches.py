"""Training batches of P pseudo-identities x K instances, reproducible per epoch."""

from __future__ import annotations

import numpy as np

__all__ = ["identity_batches"]


def identity_batches(labels, *, batch_size=64, num_instances=4, iters=400, seed=0, epoch=0):
    """The ``iters`` batches of one epoch, each a list of distinct image indexes.

    A stream runs over the pseudo-identities in a random order; each
    contributes ``min(num_instances, its size)`` of its images, drawn without
    replacement, so an un-clustered instance contributes itself alone (as in
    SpCL's sampler). Batches are cut from the stream ``batch_size`` images at
    a time, and a fresh order starts whenever the stream runs out. An image
    appears at most once per batch (the memory update needs that).

    Everything is drawn from ``numpy.random.default_rng([seed, epoch])``:
    the same (labels, seed, epoch) always gives the same batches, which
    makes a resumed run repeat the epochs it would have run.

    Returns
    -------
    (iters, batch_size) int64 array; rows are batches. With fewer than
    ``batch_size`` images in all, a batch holds every image once, so the
    array is (iters, n).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"identity_batches: 'labels' must be a non-empty 1-D integer array; got "
            f"{labels.dtype} {labels.shape}."
        )
    for name, value in (("batch_size", batch_size), ("num_instances", num_instances)):
        if int(value) < 1:
            raise ValueError(f"identity_batches: {name!r} must be >= 1; got {value!r}.")
    if int(iters) < 0:
        raise ValueError(f"identity_batches: 'iters' must be >= 0; got {iters!r}.")
    rng = np.random.default_rng([int(seed), int(epoch)])
    n = labels.size
    size = min(int(batch_size), n)
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    members = np.split(order, starts[1:])

    out = np.empty((int(iters), size), dtype=np.int64)
    stream: list = []
    row, fill = 0, 0
    in_batch = np.zeros(n, dtype=bool)
    while row < iters:
        if not stream:
            stream = list(rng.permutation(len(members))[::-1])  # pop() from the end
        group = members[stream.pop()]
        take = group if group.size <= num_instances else rng.choice(group, num_instances, False)
        for i in take:
            if in_batch[i]:  # only when the stream wrapped inside this batch
                continue
            out[row, fill] = i
            in_batch[i] = True
            fill += 1
            if fill == size:
                in_batch[out[row]] = False
                row, fill = row + 1, 0
                if row == iters:
                    break
    return out
