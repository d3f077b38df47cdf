"""The GPU path: the shared top-k code on the CPU, the clear errors without CUDA, and
(marked gpu, skipped without a device) parity of the CUDA kNN with the CPU one."""

import numpy as np
import pytest

import aas_core as aas
from aas_core import gpu

HAS_GPU = aas.cuda_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device, or aas-core built without CUDA")


def test_without_cuda_device_cuda_says_why_and_cpu_is_unchanged():
    X, _ = aas.datasets.make_reid_blobs(50, d=8, seed=0)
    if HAS_GPU:
        pytest.skip("this machine has CUDA")
    with pytest.raises(
        ValueError, match="knn_graph: device='cuda' needs an aas-core built|no CUDA device"
    ):
        aas.knn_graph(X, 5, device="cuda")
    with pytest.raises(ValueError, match="cluster_features|knn_graph"):
        aas.cluster_features(X, k1=5, device="cuda")
    with pytest.raises(ValueError, match="'device'.*'cpu', 'cuda'.*'gpu'"):
        aas.knn_graph(X, 5, device="gpu")
    with pytest.raises(ValueError, match="finch: device='cuda'"):
        aas.finch(X, device="cuda")
    with pytest.raises(ValueError, match="backend='cpu' runs on the CPU; with device='cuda'"):
        aas.knn_graph(X, 5, device="cuda", backend="cpu")
    assert aas.cuda_available() is False
    g = aas.knn_graph(X, 5, device="cpu")
    assert np.array_equal(g.indices, aas.knn_graph(X, 5).indices)


def test_the_cpu_top_k_is_exact_against_a_full_sort_with_ties():
    # the shared heap (cpp/include/aas/topk.hpp) under ties: equal similarities rank the
    # smaller index first, as a stable full sort does
    rng = np.random.default_rng(1)
    # rows of +-1 in 4 dimensions: unit rows of +-0.5, every cosine exact in float32,
    # and only 16 distinct rows, so ties everywhere (duplicates, and 5 cosine values)
    X = rng.choice([-1.0, 1.0], size=(300, 4)).astype(np.float32)
    Xn = X / 2.0
    for include_self in (True, False):
        g = aas.knn_graph(X, 9, include_self=include_self)
        S = Xn @ Xn.T
        np.fill_diagonal(S, -np.inf)
        for i in range(len(X)):
            order = np.lexsort((np.arange(len(X)), -np.clip(S[i], -1, 1)))
            want = order[: 8 if include_self else 9]
            got = g.indices[i, 1:] if include_self else g.indices[i]
            assert np.array_equal(got, want), i


def test_the_gpu_module_imports_where_it_was_built():
    mod = gpu._load()
    if mod is None:
        pytest.skip("aas-core built without CUDA (the default)")
    assert mod.device_count() >= 0
    if mod.device_count() == 0:
        with pytest.raises(RuntimeError, match="no device"):
            mod.knn_graph(np.ones((4, 2), np.float32), 2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("n, d, k", [(257, 33, 10), (5000, 256, 30)])
def test_cuda_knn_matches_the_cpu_up_to_near_ties(n, d, k):
    X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=n)
    cpu = aas.knn_graph(X, k)
    gpu_g = aas.knn_graph(X, k, device="cuda")
    assert gpu_g.indices.shape == (n, k) and (gpu_g.indices[:, 0] == np.arange(n)).all()
    np.testing.assert_allclose(gpu_g.sims, cpu.sims, atol=1e-5)
    differ = (gpu_g.indices != cpu.indices).any(axis=1)
    # rows may differ only where two candidates are within float rounding of each other
    for i in np.flatnonzero(differ):
        a, b = set(cpu.indices[i]), set(gpu_g.indices[i])
        assert len(a ^ b) <= 2 or abs(cpu.sims[i, -1] - cpu.sims[i, -2]) < 1e-5, i
    assert differ.mean() < 0.01


@pytest.mark.gpu
@needs_gpu
def test_cuda_finch_and_cluster_features_match_the_cpu():
    from aas_core.metrics.clustering import ari

    X, _ = aas.datasets.make_reid_blobs(3000, d=128, seed=3)
    cpu, gpu_r = aas.finch(X), aas.finch(X, device="cuda")
    assert cpu.n_clusters[:2] == gpu_r.n_clusters[:2]
    for p in range(min(len(cpu.n_clusters), len(gpu_r.n_clusters))):
        assert ari(cpu.labels[:, p], gpu_r.labels[:, p]) > 0.999
    a = aas.cluster_features(X, device="cuda")
    b = aas.cluster_features(X)
    assert ari(a.labels_a, b.labels_a) > 0.999 and ari(a.labels_b, b.labels_b) > 0.999


def test_the_commands_take_device_and_say_why_cuda_is_not_there(tmp_path, capsys):
    if HAS_GPU:
        pytest.skip("this machine has CUDA")
    from aas_core.cli import main

    X, y = aas.datasets.make_reid_blobs(60, d=8, seed=0)
    np.save(tmp_path / "X.npy", X)
    assert (
        main(
            [
                "propose",
                str(tmp_path / "X.npy"),
                "--device",
                "cuda",
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    # an aas-core without its kernels, or with them and no device
    assert (
        err.startswith(
            (
                "aas propose: error: device='cuda' needs",
                "aas propose: error: device='cuda' but no CUDA device",
            )
        )
        and not (tmp_path / "p.csv").exists()
    )
    with pytest.raises(ValueError, match="ActiveLoop: device='cuda'|device='cuda'"):
        aas.ActiveLoop(
            X,
            aas.sampling.RandomPairSampler(),
            aas.LabelOracle(y),
            budget_per_cycle=5,
            cycles=1,
            device="cuda",
        ).run()


def test_tf32_is_for_the_cuda_kernels_only():
    X, _ = aas.datasets.make_reid_blobs(40, d=8, seed=0)
    with pytest.raises(ValueError, match="precision='tf32' is for aas-core's CUDA kernels"):
        aas.knn_graph(X, 5, precision="tf32")
    with pytest.raises(ValueError, match="precision='bf16' is for aas-core's own kernels"):
        aas.knn_graph(X, 5, precision="bf16", backend="faiss")
    with pytest.raises(ValueError, match="'precision'.*'fp32', 'tf32', 'bf16'.*'fp16'"):
        aas.knn_graph(X, 5, precision="fp16")
    assert np.array_equal(
        aas.knn_graph(X, 5, precision="fp32").indices, aas.knn_graph(X, 5).indices
    )


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("include_self", [True, False])
def test_tensor_core_candidates_give_exactly_the_fp32_graph(precision, include_self):
    X, _ = aas.datasets.make_reid_blobs(6000, d=200, seed=11)  # d not a multiple of 16
    ref = aas.knn_graph(X, 30, include_self=include_self, device="cuda")
    got = aas.knn_graph(X, 30, include_self=include_self, device="cuda", precision=precision)
    assert np.array_equal(got.indices, ref.indices) and np.array_equal(got.sims, ref.sims)
    # and the fp32 tiles are the host's dot_fma, bit for bit
    from aas_core import _core

    emu = _core._knn_emulated(ref.features[:1500].copy(), 10, include_self, 24, 0)
    dev = aas.knn_graph(ref.features[:1500].copy(), 10, include_self=include_self, device="cuda")
    assert np.array_equal(emu[0], dev.indices) and np.array_equal(emu[1], dev.sims)


@pytest.mark.gpu
@needs_gpu
def test_near_ties_go_through_the_fp32_fallback_on_the_device():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64))
    X = centres[rng.integers(0, 20, 3000)] + rng.normal(scale=3e-3, size=(3000, 64))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    mod = gpu.cuda_module("test")
    ref = mod.knn_graph(X, 10, True)
    for bits in (8, 11):
        idx, sims, fallback = mod.knn_graph_precision(X, 10, True, bits, 12)
        assert fallback > 100  # certified rows would be wrong here: they are recomputed
        assert np.array_equal(idx, ref[0]) and np.array_equal(sims, ref[1])


@pytest.mark.gpu
@needs_gpu
def test_features_streamed_from_the_host_give_the_same_graph():
    X, _ = aas.datasets.make_reid_blobs(3000, d=96, seed=2)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    mod = gpu.cuda_module("test")
    whole = mod.knn_graph(X, 20, True)
    for resident in (64, 640, 2999):  # some blocks resident, columns copied over
        part = mod.knn_graph(X, 20, True, block=64, resident_rows=resident)
        assert np.array_equal(part[0], whole[0]) and np.array_equal(part[1], whole[1])
    # what the planner keeps resident: all rows when they fit, else whole blocks
    assert mod.resident_rows_for(1_000_000, 2048, 30, 4096, 80 * 2**30) == 1_000_000
    assert mod.resident_rows_for(20_000_000, 2048, 30, 4096, 80 * 2**30) % 4096 == 0


@pytest.mark.gpu
@needs_gpu
def test_jaccard_from_a_torch_cuda_tensor_reads_it_in_place():
    torch = pytest.importorskip("torch")
    X, _ = aas.datasets.make_reid_blobs(2000, d=64, seed=4)
    host = aas.k_reciprocal_jaccard(X, k1=20, k2=6, max_distance=0.8, device="cuda")
    dev = aas.k_reciprocal_jaccard(
        torch.from_numpy(X).cuda(), k1=20, k2=6, max_distance=0.8, device="cuda"
    )
    assert np.array_equal(host.indices, dev.indices)
    assert np.array_equal(host.data, dev.data)
