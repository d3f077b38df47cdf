"""Inputs of device="cuda": arrays in CUDA memory read in place (parsed on the CPU here
from fake objects that carry __cuda_array_interface__ or DLPack), torch CPU tensors on
the host path, faiss-gpu's errors through a fake faiss; and, marked gpu, real torch
CUDA tensors, cupy arrays and faiss-gpu giving the graph numpy gives."""

import ctypes
import sys
import types

import numpy as np
import pytest

import aas_core as aas
from aas_core import gpu
from aas_core.neighbors import normalize_rows

HAS_GPU = aas.cuda_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device, or aas-core built without CUDA")

PTR = 0x7F00_0000_0000


class FakeCuda:
    """Carries only __cuda_array_interface__; reading it as a host array fails the test."""

    def __init__(self, shape=(6, 4), typestr="<f4", strides=None, ptr=PTR, stream=None, **extra):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, False),
            "strides": strides,
            "version": 3,
            "stream": stream,
            **extra,
        }

    def __array__(self, *args, **kwargs):
        raise AssertionError("a device array was copied to the host")


class FakeTorchCuda(FakeCuda):
    __module__ = "torch"


class FakeCupy(FakeCuda):
    __module__ = "cupy._core.core"


class FakeCudaModule:
    """Stands in for aas_core._cuda: records what it is asked to read."""

    def __init__(self, norms=None, kind="device", device=0, current=0):
        self.norms, self.kind, self.device, self.current = norms, kind, device, current
        self.calls = []

    def device_count(self):
        return 1

    def current_device(self):
        return self.current

    def pointer_info(self, ptr):
        return self.kind, self.device

    def row_norms_ptr(self, ptr, n, d, stream=0):
        self.calls.append(("row_norms_ptr", ptr, n, d, stream))
        return np.ones(n) if self.norms is None else np.asarray(self.norms, np.float64)

    def knn_graph_ptr(self, ptr, n, d, k, include_self=True, norms=None, *rest, **kw):
        self.calls.append(("knn_graph_ptr", ptr, n, d, k, include_self, norms))
        idx = np.tile(np.arange(k, dtype=np.int64), (n, 1))
        return idx, np.ones((n, k), np.float32), np.zeros((n, d), np.float32)

    def to_host_ptr(self, ptr, n, d, stream=0):
        self.calls.append(("to_host_ptr", ptr, n, d, stream))
        return np.full((n, d), 2.0, np.float32)


@pytest.fixture
def fake_cuda(monkeypatch):
    def install(**kw):
        mod = FakeCudaModule(**kw)
        monkeypatch.setattr(gpu, "_load", lambda: mod)
        return mod

    return install


# ---- parsing: the CUDA array interface ---------------------------------------------------


def test_the_cuda_array_interface_is_read_without_touching_the_data():
    a = gpu.device_array(FakeTorchCuda(stream=7), owner="t")
    assert (a.ptr, a.shape, a.dtype, a.itemsize) == (PTR, (6, 4), "float32", 4)
    assert (a.strides, a.stream, a.readonly, a.device_id) == (None, 7, False, None)
    # v3's stream None: nothing to wait for; version 2 (torch's) says nothing: wait for all
    assert gpu.device_array(FakeCuda(stream=None), owner="t").stream == 0
    v2 = FakeCuda()
    del v2.__cuda_array_interface__["stream"]
    v2.__cuda_array_interface__["version"] = 2
    assert gpu.device_array(v2, owner="t").stream == -1
    assert a.source == "__cuda_array_interface__" and a.library == "torch" and a.c_contiguous
    ro = FakeCuda()
    ro.__cuda_array_interface__["data"] = (PTR, True)
    assert gpu.device_array(ro, owner="t").readonly
    # explicit C-order strides are contiguous; a column slice or a transpose is not
    assert gpu.device_array(FakeCuda(strides=(16, 4)), owner="t").c_contiguous
    assert gpu.device_array(FakeCuda(shape=(1, 4), strides=(64, 4)), owner="t").c_contiguous
    assert not gpu.device_array(FakeCuda(strides=(32, 4)), owner="t").c_contiguous
    assert not gpu.device_array(FakeCuda(strides=(4, 24)), owner="t").c_contiguous


@pytest.mark.parametrize("obj", [np.ones((3, 2), np.float32), [[1.0, 2.0]], None, 3.0])
def test_host_objects_are_not_device_arrays(obj):
    assert gpu.device_array(obj, owner="t") is None


@pytest.mark.parametrize(
    "cai, match",
    [
        ({"shape": (6, 4), "typestr": "<f4"}, "malformed __cuda_array_interface__.*data"),
        ({"shape": (6, 4), "typestr": "nonsense", "data": (PTR, False)}, "malformed"),
        ({"shape": (6, 4), "typestr": "<f4", "data": (PTR, False), "strides": (4,)}, "strides"),
        ({"shape": (6, 4), "typestr": "<f4", "data": (PTR, False), "mask": object()}, "masked"),
    ],
)
def test_a_broken_cuda_array_interface_is_named(cai, match):
    obj = FakeCuda()
    obj.__cuda_array_interface__ = cai
    with pytest.raises(TypeError, match=f"knn_graph: 'X'.*{match}"):
        gpu.device_array(obj, owner="knn_graph")


def test_an_interface_that_raises_passes_on_the_producers_reason():
    class RequiresGrad:
        __module__ = "torch"

        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

    with pytest.raises(TypeError, match=r"requires grad\); pass X\.detach\(\)\.float\(\)"):
        gpu.device_array(RequiresGrad(), owner="knn_graph")


# ---- parsing: DLPack ------------------------------------------------------------------------

_DLTENSOR = b"dltensor"
_capsule_new = ctypes.PYFUNCTYPE(
    ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p
)(("PyCapsule_New", ctypes.pythonapi))


class FakeDLPack:
    """A DLPack producer only (no __cuda_array_interface__), over a made-up pointer."""

    def __init__(self, shape=(5, 3), strides=None, code=2, bits=32, device=(2, 0), offset=0):
        t = gpu._DLTensor()
        t.data, t.byte_offset = PTR, offset
        t.device.device_type, t.device.device_id = device
        t.ndim = len(shape)
        t.dtype.code, t.dtype.bits, t.dtype.lanes = code, bits, 1
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        t.shape = ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64))
        if strides is not None:
            self._strides = (ctypes.c_int64 * len(shape))(*strides)
            t.strides = ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64))
        self._t, self._device, self.streams = t, device, []

    def __dlpack_device__(self):
        return self._device

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        return _capsule_new(ctypes.addressof(self._t), _DLTENSOR, None)


def test_dlpack_on_a_cuda_device_is_read_from_its_capsule():
    obj = FakeDLPack(shape=(5, 3), offset=64, device=(2, 1))
    a = gpu.device_array(obj, owner="t")
    assert (a.ptr, a.shape, a.dtype, a.itemsize, a.strides) == (
        PTR + 64,
        (5, 3),
        "float32",
        4,
        None,
    )
    assert (a.device_id, a.stream, a.source) == (1, 0, "DLPack")
    assert obj.streams == [1]  # the producer orders its work before the legacy default stream
    # strides come in elements and are kept in bytes
    a = gpu.device_array(FakeDLPack(shape=(5, 3), strides=(1, 5)), owner="t")
    assert a.strides == (4, 20) and not a.c_contiguous
    assert gpu.device_array(FakeDLPack(code=2, bits=16), owner="t").dtype == "float16"
    assert gpu.device_array(FakeDLPack(code=4, bits=16), owner="t").dtype == "bfloat16"


def test_dlpack_on_the_host_or_elsewhere():
    assert gpu.device_array(FakeDLPack(device=(1, 0)), owner="t") is None  # the host
    assert gpu.device_array(FakeDLPack(device=(3, 0)), owner="t") is None  # pinned host
    with pytest.raises(
        TypeError, match="knn_graph: 'X'.*DLPack device type 8.*move it to the host"
    ):
        gpu.device_array(FakeDLPack(device=(8, 0)), owner="knn_graph")


def test_dlpack_producers_without_the_stream_argument_and_broken_capsules():
    class Old(FakeDLPack):
        def __dlpack__(self):
            return _capsule_new(ctypes.addressof(self._t), _DLTENSOR, None)

    assert gpu.device_array(Old(), owner="t").shape == (5, 3)

    class Used(FakeDLPack):
        def __dlpack__(self, stream=None):
            return _capsule_new(ctypes.addressof(self._t), b"used_dltensor", None)

    with pytest.raises(TypeError, match="did not return an unused 'dltensor' capsule"):
        gpu.device_array(Used(), owner="t")


# ---- what the kernels accept, and what to pass instead --------------------------------------


@pytest.mark.parametrize(
    "obj, err, match",
    [
        (FakeCuda(shape=(6,)), ValueError, r"'X' must be 2-D \(n_samples, n_features\); got 1-D"),
        (
            FakeTorchCuda(typestr="<f2"),
            TypeError,
            r"'X' is a float16 torch array.*X\.float\(\)\.contiguous\(\)",
        ),
        (
            FakeTorchCuda(typestr="<f8"),
            TypeError,
            r"'X' is a float64 torch array.*X\.float\(\)\.contiguous\(\)",
        ),
        (
            FakeCupy(typestr="<f8"),
            TypeError,
            r"'X' is a float64 cupy array.*cupy\.ascontiguousarray\(X, dtype=cupy\.float32\)",
        ),
        (FakeCuda(typestr=">f4"), TypeError, r"'X' is a >f4 .*a C-contiguous float32 array"),
        (
            FakeTorchCuda(strides=(4, 24)),
            TypeError,
            r"'X' is a non-contiguous float32 torch array.*X\.float\(\)\.contiguous\(\)",
        ),
        (FakeDLPack(code=4, bits=16), TypeError, r"'X' is a bfloat16 \S+ array"),
        (FakeCuda(shape=(1, 4)), ValueError, "'X' must have at least 2 rows; got 1"),
        (FakeCuda(shape=(6, 0)), ValueError, "'X' must have at least 1 feature column"),
        (FakeCuda(ptr=0), TypeError, r"'X' \(\S+\) has a null data pointer"),
    ],
)
def test_what_the_kernels_cannot_read_is_refused_saying_what_to_pass(fake_cuda, obj, err, match):
    mod = fake_cuda()
    with pytest.raises(err, match=f"knn_graph: {match}"):
        aas.knn_graph(obj, 1, device="cuda")
    assert mod.calls == []  # refused before any kernel ran


def test_an_array_on_another_device_or_in_host_memory_is_refused(fake_cuda):
    fake_cuda(device=1, current=0)
    with pytest.raises(ValueError, match=r"'X' is on cuda:1 but the kernels run on the current"):
        aas.knn_graph(FakeCuda(), 2, device="cuda")
    fake_cuda(kind="host", device=-1)
    with pytest.raises(TypeError, match="its data is in host memory; pass it as a numpy array"):
        aas.knn_graph(FakeCuda(), 2, device="cuda")
    mod = fake_cuda(kind="managed", device=-1)  # managed memory is readable from any device
    aas.knn_graph(FakeCuda(), 2, device="cuda")
    assert mod.calls[-1][0] == "knn_graph_ptr"


# ---- the no-copy decision ----------------------------------------------------------------


def test_a_device_array_goes_to_the_kernels_by_pointer_never_through_the_host(fake_cuda):
    mod = fake_cuda()  # unit rows
    g = aas.knn_graph(FakeCuda(shape=(6, 4), stream=9), 3, include_self=False, device="cuda")
    assert mod.calls == [
        ("row_norms_ptr", PTR, 6, 4, 9),  # waits for the producer's stream first
        ("knn_graph_ptr", PTR, 6, 4, 3, False, None),  # unit rows: searched as they are
    ]
    assert g.indices.shape == (6, 3) and g.features.shape == (6, 4)
    assert isinstance(g.features, np.ndarray)  # the graph's features are on the host


def test_rows_that_are_not_unit_norm_are_scaled_on_the_device_by_the_host_rule(fake_cuda):
    norms = np.array([1.0, 2.0, 1.0, 0.5, 1.0, 1.0])
    mod = fake_cuda(norms=norms)
    aas.knn_graph(FakeCuda(), 2, device="cuda")
    np.testing.assert_array_equal(mod.calls[-1][-1], norms)
    # within normalize_rows' tolerance every row is kept as it is
    mod = fake_cuda(norms=np.full(6, 1.00005))
    aas.knn_graph(FakeCuda(), 2, device="cuda")
    assert mod.calls[-1][-1] is None


def test_zero_and_non_finite_rows_on_the_device_give_the_cpus_messages(fake_cuda):
    X = np.ones((6, 4), np.float32)
    X[2] = 0
    with pytest.raises(ValueError) as cpu:
        aas.knn_graph(X, 2)
    fake_cuda(norms=[1, 1, 0, 1, 1, 1])
    with pytest.raises(ValueError) as dev:
        aas.knn_graph(FakeCuda(), 2, device="cuda")
    assert (
        str(dev.value)
        == str(cpu.value)
        == ("knn_graph: row 2 of 'X' is all zeros; cosine similarity is undefined.")
    )
    X[2], X[1, 3] = 1, np.nan
    with pytest.raises(ValueError) as cpu:
        aas.knn_graph(X, 2)
    fake_cuda(norms=[1, np.nan, 1, np.inf, 1, 1])
    with pytest.raises(ValueError) as dev:
        aas.knn_graph(FakeCuda(), 2, device="cuda")
    assert (
        str(dev.value) == str(cpu.value) == "knn_graph: 'X' contains NaN or inf (first in row 1)."
    )


def test_k_is_checked_against_the_device_arrays_rows(fake_cuda):
    fake_cuda()
    with pytest.raises(ValueError, match=r"'k' parameter of knn_graph must be an int in \[1, 5\]"):
        aas.knn_graph(FakeCuda(shape=(6, 4)), 6, device="cuda")


def test_without_cuda_kernels_a_device_array_is_refused_before_any_copy():
    if gpu._load() is not None:
        pytest.skip("this aas-core has its CUDA kernels")
    with pytest.raises(ValueError, match="knn_graph: device='cuda' needs an aas-core built"):
        aas.knn_graph(FakeTorchCuda(), 2, device="cuda")


def test_device_arrays_with_device_cpu_are_refused_saying_what_to_do():
    with pytest.raises(
        TypeError,
        match=r"knn_graph: 'X' \(torch.FakeTorchCuda\) is on a CUDA device; knn_graph reads "
        r"host memory with device='cpu': pass device='cuda' to use it where it is, or move it "
        r"to the host first \(X.cpu\(\) in torch, X.get\(\) in cupy\)",
    ):
        aas.knn_graph(FakeTorchCuda(), 2)
    with pytest.raises(TypeError, match="cluster_features: 'X'.*pass device='cuda'"):
        aas.cluster_features(FakeCupy(), device="cpu")
    with pytest.raises(TypeError, match=r"finch: 'X_or_graph'.*pass device='cuda'"):
        aas.finch(FakeCuda())
    with pytest.raises(TypeError, match=r"k_reciprocal_jaccard: 'X'.*pass device='cuda'"):
        aas.k_reciprocal_jaccard(FakeCuda(), k1=2)
    # a function without a device parameter says to move it
    from aas_core.metrics.open_set import protocol_split

    with pytest.raises(
        TypeError, match=r"protocol_split: 'features'.*protocol_split reads host memory: move it"
    ):
        protocol_split(np.arange(4), features=FakeCuda())


def test_faiss_reads_host_memory_and_backend_cpu_is_no_gpu_backend(fake_cuda):
    mod = fake_cuda()
    with pytest.raises(ValueError, match=r"backend='faiss' reads X from host memory; pass X\.cpu"):
        aas.knn_graph(FakeTorchCuda(), 2, device="cuda", backend="faiss")
    with pytest.raises(ValueError, match="backend='cpu' runs on the CPU"):
        aas.knn_graph(FakeTorchCuda(), 2, device="cuda", backend="cpu")
    assert mod.calls == []


def test_functions_that_run_on_the_host_copy_a_device_array_there_once(fake_cuda):
    mod = fake_cuda()
    X = normalize_rows(FakeCuda(shape=(6, 4), stream=2), owner="cluster_features", device="cuda")
    assert mod.calls == [("to_host_ptr", PTR, 6, 4, 2)]
    np.testing.assert_allclose(X, 0.5)  # the copy (rows of 2.0), normalised on the host


# ---- torch CPU tensors on the host path -------------------------------------------------


def test_torch_cpu_tensors_are_read_on_the_host_without_a_copy():
    torch = pytest.importorskip("torch")
    X, _ = aas.datasets.make_reid_blobs(120, d=16, seed=0)
    t = torch.from_numpy(X)
    want = aas.knn_graph(X, 6)
    got = aas.knn_graph(t, 6)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.sims, want.sims)
    assert np.shares_memory(got.features, X)  # unit rows: the tensor's own memory
    got = aas.knn_graph(t.clone().requires_grad_(True), 6)
    np.testing.assert_array_equal(got.indices, want.indices)
    got = aas.knn_graph(t.double(), 6)  # converted on the host as a float64 array is
    np.testing.assert_array_equal(got.indices, want.indices)
    assert aas.finch(t).n_clusters == aas.finch(X).n_clusters
    a, b = aas.k_reciprocal_jaccard(t, k1=6, k2=3), aas.k_reciprocal_jaccard(X, k1=6, k2=3)
    assert (a != b).nnz == 0
    with pytest.raises(TypeError, match=r"'X' is a torch torch.bfloat16 tensor numpy cannot read"):
        aas.knn_graph(t.bfloat16(), 6)
    with pytest.raises(TypeError, match=r"'X' is a torch tensor on meta; move it to the host"):
        aas.knn_graph(torch.empty((4, 2), device="meta"), 2)


def test_a_torch_cpu_tensor_with_device_cuda_is_uploaded_like_numpy():
    torch = pytest.importorskip("torch")
    if HAS_GPU:
        pytest.skip("this machine has CUDA")
    X, _ = aas.datasets.make_reid_blobs(50, d=8, seed=0)
    with pytest.raises(
        ValueError, match="knn_graph: device='cuda' (needs an aas-core|but no CUDA)"
    ):
        aas.knn_graph(torch.from_numpy(X), 5, device="cuda")


# ---- faiss-gpu ------------------------------------------------------------------------------


def _fake_faiss(monkeypatch, *, gpus=None, gpu_index=True):
    """A faiss module: exact inner products in numpy; GPU parts only where asked."""
    made = []

    class IndexFlatIP:
        def __init__(self, d, *rest):
            self.d, self.X = d, None
            made.append(type(self).__name__)

        def add(self, X):
            self.X = np.array(X, np.float32)

        def search(self, Q, kk):
            S = Q @ self.X.T
            idx = np.argsort(-S, axis=1, kind="stable")[:, :kk]
            return np.take_along_axis(S, idx, axis=1), idx

    mod = types.ModuleType("faiss")
    mod.IndexFlatIP = IndexFlatIP
    if gpus is not None:
        mod.get_num_gpus = lambda: gpus
    if gpu_index:

        class GpuIndexFlatIP(IndexFlatIP):
            def __init__(self, res, d, config):
                assert isinstance(res, mod.StandardGpuResources) and config.device == 0
                super().__init__(d)

        mod.GpuIndexFlatIP = GpuIndexFlatIP
        mod.StandardGpuResources = type("StandardGpuResources", (), {})
        mod.GpuIndexFlatConfig = type("GpuIndexFlatConfig", (), {"device": 0})
    monkeypatch.setitem(sys.modules, "faiss", mod)
    return made


def test_faiss_without_gpu_support_says_how_to_get_it(monkeypatch):
    X, _ = aas.datasets.make_reid_blobs(40, d=8, seed=0)
    _fake_faiss(monkeypatch, gpus=None, gpu_index=False)  # a faiss-cpu build
    with pytest.raises(ValueError, match=r"this faiss is CPU-only\. pip install faiss-gpu-cu12"):
        aas.knn_graph(X, 5, backend="faiss", device="cuda")
    _fake_faiss(monkeypatch, gpus=0)  # GPU build, no GPU visible
    with pytest.raises(ValueError, match="faiss sees no GPU.*faiss-gpu-cu12"):
        aas.knn_graph(X, 5, backend="faiss", device="cuda")
    _fake_faiss(monkeypatch, gpus=1)
    X = np.random.default_rng(0).standard_normal((2100, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="faiss-gpu returns at most 2048 neighbours per row"):
        aas.knn_graph(X, 2048, backend="faiss", device="cuda")


@pytest.mark.parametrize("include_self", [True, False])
def test_faiss_gpu_runs_the_gpu_index_with_the_cpu_paths_layout(monkeypatch, include_self):
    X, _ = aas.datasets.make_reid_blobs(200, d=16, seed=4)
    made = _fake_faiss(monkeypatch, gpus=1)
    got = aas.knn_graph(X, 7, include_self=include_self, backend="faiss", device="cuda")
    assert made == ["GpuIndexFlatIP"]
    cpu = aas.knn_graph(X, 7, include_self=include_self, backend="faiss")
    assert made[-1] == "IndexFlatIP"
    np.testing.assert_array_equal(got.indices, cpu.indices)
    ref = aas.knn_graph(X, 7, include_self=include_self)  # no near-ties in this data
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.sims, ref.sims, atol=1e-6)


def test_faiss_rows_remove_self_wherever_faiss_put_it():
    from aas_core.neighbors import _faiss_rows

    # row 0: a duplicate (row 1) ranked before itself; row 1: out of order; row 2: self
    # missing (duplicates filled its k + 1 places); row 3: ties to the smaller index
    idx = np.array([[1, 0, 2, 3], [0, 1, 3, 2], [0, 1, 3, 4], [3, 2, 1, 0], [4, 0, 1, 2]])
    sims = np.array(
        [
            [1.0, 1.0, 0.5, 0.5],
            [1.0, 1.0, 0.2, 0.5],
            [0.9, 0.9, 0.9, 0.1],
            [1.0, 0.3, 0.3, 0.3],
            [1.0, 0.8, 0.7, 0.6],
        ]
    )
    i, s = _faiss_rows(idx, sims, 3, include_self=False)
    assert i.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2]]
    i, s = _faiss_rows(idx, sims, 3, include_self=True)
    assert i.tolist() == [[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, 0, 1], [4, 0, 1]]
    assert s[:, 0].tolist() == [1.0] * 5 and s.dtype == np.float32


# ---- on a GPU: real torch / cupy arrays ----------------------------------------------------


def _device_data(n=2000, d=96, scaled=False):
    X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=n)
    if scaled:  # rows that are not unit norm: normalised on the device
        X = X * np.random.default_rng(0).uniform(0.5, 3.0, (n, 1)).astype(np.float32)
    return X


def _same_graph(got, X, k=15):
    want = aas.knn_graph(X, k, device="cuda")  # a host copy through the same kernels
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.sims, want.sims)
    # the host rule's rows, to the last bit but for a rare double-rounding tie
    np.testing.assert_allclose(got.features, normalize_rows(X), rtol=2e-7, atol=0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("scaled", [False, True])
def test_torch_cuda_tensors_give_the_graph_of_their_numpy_copy(scaled):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    X = _device_data(scaled=scaled)
    t = torch.from_numpy(X).cuda()
    before = t.clone()
    _same_graph(aas.knn_graph(t, 15, device="cuda"), X)
    assert torch.equal(t, before)  # never written
    # produced on a side stream: its work is waited for before the kernels read it
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        u = torch.from_numpy(X).cuda(non_blocking=False) * 1.0
        g = aas.knn_graph(u, 15, device="cuda")
    _same_graph(g, X)
    with pytest.raises(TypeError, match=r"float16 torch array.*X\.float\(\)\.contiguous\(\)"):
        aas.knn_graph(t.half(), 15, device="cuda")
    with pytest.raises(TypeError, match=r"non-contiguous float32 torch array"):
        aas.knn_graph(t[:, ::2], 15, device="cuda")
    with pytest.raises(TypeError, match=r"requires grad.*X\.detach\(\)"):
        aas.knn_graph(t.clone().requires_grad_(True), 15, device="cuda")
    with pytest.raises(TypeError, match="pass device='cuda'"):
        aas.knn_graph(t, 15)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("scaled", [False, True])
def test_cupy_arrays_give_the_graph_of_their_numpy_copy(scaled):
    cupy = pytest.importorskip("cupy")
    X = _device_data(scaled=scaled)
    _same_graph(aas.knn_graph(cupy.asarray(X), 15, device="cuda"), X)


@pytest.mark.gpu
@needs_gpu
def test_cluster_features_takes_a_cuda_tensor_with_device_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    X = _device_data(1500, 64)
    a = aas.cluster_features(torch.from_numpy(X).cuda(), device="cuda")
    b = aas.cluster_features(X, device="cuda")
    np.testing.assert_array_equal(a.labels_a, b.labels_a)
    np.testing.assert_array_equal(a.labels_b, b.labels_b)


@pytest.mark.gpu
@needs_gpu
def test_mem_info_reports_the_current_device():
    free, total = gpu._load().mem_info()
    assert 0 < free <= total


@pytest.mark.gpu
def test_faiss_gpu_agrees_with_the_cpu_graph():
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
        pytest.skip("faiss without GPU support, or no GPU")
    X = _device_data(3000, 128)
    cpu = aas.knn_graph(X, 20)
    for include_self in (True, False):
        got = aas.knn_graph(X, 20, include_self=include_self, backend="faiss", device="cuda")
        ref = cpu if include_self else aas.knn_graph(X, 20, include_self=False)
        np.testing.assert_allclose(got.sims, ref.sims, atol=1e-5)
        assert (got.indices != ref.indices).any(axis=1).mean() < 0.01
