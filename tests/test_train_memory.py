"""HybridMemory and the P x K batches of the SpCL driver."""

import numpy as np
import pytest

from _torch import importorskip

torch = importorskip("torch")

from aas_core.train.batches import identity_batches  # noqa: E402
from aas_core.train.memory import HybridMemory  # noqa: E402


def _spcl_reference_loss(inputs, features, labels, indexes, temp):
    """SpCL's HybridMemory.forward, written out with its masked softmax and epsilons."""
    x = inputs / np.linalg.norm(inputs, axis=1, keepdims=True)
    logits = x @ features.T / temp  # (B, n)
    n_labels = labels.max() + 1
    sim = np.zeros((n_labels, len(x)))
    np.add.at(sim, labels, logits.T)
    nums = np.bincount(labels, minlength=n_labels)[:, None].astype(float)
    mask = (nums > 0).astype(float)
    sim /= mask * nums + (1 - mask)
    exps = np.exp(sim.T) * mask.T
    soft = exps / (exps.sum(1, keepdims=True) + 1e-6)
    return -np.mean(np.log(soft[np.arange(len(x)), labels[indexes]] + 1e-6))


def test_loss_matches_spcl_reference():
    rng = np.random.default_rng(0)
    n, d, b = 40, 16, 8
    feats = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(0, 12, n)
    mem = HybridMemory(feats, temperature=0.5)
    mem.set_labels(labels)
    inputs = rng.normal(size=(b, d)).astype(np.float32)
    idx = rng.choice(n, b, replace=False)
    got = float(mem(torch.as_tensor(inputs), torch.as_tensor(idx)))
    F = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    _, codes = np.unique(labels, return_inverse=True)
    want = _spcl_reference_loss(inputs.astype(np.float64), F, codes, idx, 0.5)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_loss_is_stable_at_low_temperature_and_has_gradients():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(20, 8)).astype(np.float32)
    mem = HybridMemory(feats, temperature=0.001)
    mem.set_labels(np.repeat(np.arange(5), 4))
    x = torch.tensor(rng.normal(size=(4, 8)), dtype=torch.float32, requires_grad=True)
    loss = mem(x, torch.tensor([0, 5, 10, 15]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not mem.features.requires_grad


def test_update_moves_entries_with_momentum_and_renormalises():
    feats = np.eye(3, dtype=np.float32)
    caller = feats.copy()
    mem = HybridMemory(feats, momentum=0.2)
    mem.update(torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([0]))
    v = np.array([0.2, 0.8, 0.0])
    np.testing.assert_allclose(mem.features[0].numpy(), v / np.linalg.norm(v), rtol=1e-6)
    np.testing.assert_array_equal(mem.features[1:].numpy(), np.eye(3)[1:])
    np.testing.assert_array_equal(feats, caller)  # the caller's array is untouched


def test_set_labels_renumbers_and_validates():
    mem = HybridMemory(np.eye(4, dtype=np.float32))
    mem.set_labels(np.array([7, 3, 7, 9]))
    assert mem.labels.tolist() == [1, 0, 1, 2]
    with pytest.raises(ValueError, match="labels"):
        mem.set_labels(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="no -1"):
        mem.set_labels(np.array([0, -1, 1, 1]))
    with pytest.raises(ValueError, match="temperature"):
        HybridMemory(np.eye(2), temperature=0)
    with pytest.raises(ValueError, match="momentum"):
        HybridMemory(np.eye(2), momentum=1.0)


def test_batches_are_deterministic_distinct_and_grouped():
    labels = np.repeat(np.arange(30), np.arange(30) % 6 + 1)  # sizes 1..6
    a = identity_batches(labels, batch_size=16, num_instances=4, iters=20, seed=3, epoch=2)
    b = identity_batches(labels, batch_size=16, num_instances=4, iters=20, seed=3, epoch=2)
    c = identity_batches(labels, batch_size=16, num_instances=4, iters=20, seed=3, epoch=3)
    assert a.shape == (20, 16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for row in a:
        assert len(set(row.tolist())) == 16
        assert np.bincount(labels[row]).max() <= 8  # at most K, twice when the stream wraps
    # Over an epoch every pseudo-identity is visited before any is visited twice.
    seen = labels[a.ravel()[:60]]
    assert len(np.unique(seen)) >= 20


def test_batches_small_sets_and_bad_input():
    labels = np.array([0, 0, 1])
    out = identity_batches(labels, batch_size=64, num_instances=4, iters=3)
    assert out.shape == (3, 3)
    assert all(sorted(r.tolist()) == [0, 1, 2] for r in out)
    assert identity_batches(labels, iters=0).shape == (0, 3)
    with pytest.raises(ValueError, match="labels"):
        identity_batches(np.array([]), iters=1)
    with pytest.raises(ValueError, match="num_instances"):
        identity_batches(labels, num_instances=0)
