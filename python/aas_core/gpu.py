"""The GPU path: whether this aas-core has its CUDA kernels and a device to run them.

The kernels live in ``aas_core._cuda``, built only when the package is compiled with
``-DAAS_CUDA=ON`` (or ``AUTO`` with nvcc found; see docs/development.md). That module imports on
any machine, with or without a GPU; :func:`cuda_available` says whether it is there and
sees a device. Functions with a ``device`` parameter take ``"cpu"`` (the default) or
``"cuda"``; asking for CUDA where it is absent raises a ValueError that says why.

What takes ``device="cuda"``: the kNN graph (:func:`aas_core.knn_graph`), the Jaccard
step (:func:`aas_core.k_reciprocal_jaccard`), FINCH (:func:`aas_core.finch`), the
closest-pair search of the AAS sampler (``AmbiguityAwareSampler(device=)``), and
:func:`aas_core.cluster_features` / :class:`aas_core.ActiveLoop`, which pass it on.
DBSCAN, NP3 and the rest of the samplers run on the CPU.

Arrays already on the GPU (a torch CUDA tensor, a cupy array, anything with
``__cuda_array_interface__`` or a DLPack CUDA device) are read where they are by
``knn_graph(X, k, device="cuda")``: their pointer goes to the kernels and X is not
copied to the host for the search (see :func:`device_array`). They must be float32 and
C-contiguous (``X.float().contiguous()`` in torch); anything else is refused rather
than converted, since a conversion would be a hidden copy of X on the device. The
kernels run on the calling thread's current CUDA device (``torch.cuda.set_device``,
``cupy.cuda.Device(i).use()``), and X must be on that device.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_option, check_rows_columns

__all__ = [
    "DEVICES",
    "DeviceArray",
    "check_current_device",
    "check_device",
    "check_device_features",
    "cuda_available",
    "cuda_module",
    "device_array",
    "host_array",
]

DEVICES = ("cpu", "cuda")


def _load():
    try:
        from . import _cuda
    except ImportError:
        return None
    return _cuda


def cuda_available() -> bool:
    """True when the CUDA kernels were built into this aas-core and a GPU is visible."""
    mod = _load()
    return mod is not None and mod.device_count() > 0


def check_device(device, owner) -> str:
    """``device`` as given, after checking it is "cpu" or "cuda" (ValueError naming it)."""
    check_option("device", device, DEVICES, owner=owner)
    return device


def cuda_module(owner):
    """The compiled kernels, or a ValueError saying why CUDA cannot be used here."""
    mod = _load()
    if mod is None:
        raise ValueError(
            f"{owner}: device='cuda' needs an aas-core built with its CUDA kernels "
            "(pip install --no-build-isolation -C cmake.define.AAS_CUDA=ON . in the "
            "source folder, with nvcc on the PATH); this one was built for the CPU only."
        )
    if mod.device_count() < 1:
        raise ValueError(
            f"{owner}: device='cuda' but no CUDA device is visible (no GPU, no driver, or "
            "CUDA_VISIBLE_DEVICES hides it); use device='cpu'."
        )
    return mod


# ---- arrays that live in CUDA memory -------------------------------------------------

# DLPack device types (dlpack.h): host memory, a CUDA GPU, pinned host memory, managed
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DL_CODES = {0: "int", 1: "uint", 2: "float", 4: "bfloat", 5: "complex", 6: "bool"}


@dataclass(frozen=True)
class DeviceArray:
    """An array in CUDA memory as its producer describes it; nothing has been copied.

    Attributes
    ----------
    ptr : int
        Address of the first element.
    shape : tuple of int
    dtype : str
        numpy's name of the element type ("float32", "float16", "bfloat16", ...); the
        byte-order string (">f4") for non-native byte order.
    itemsize : int
        Bytes per element.
    strides : tuple of int or None
        In bytes; None where the producer says C-contiguous.
    readonly : bool
        The producer's flag; aas-core never writes to the array either way.
    device_id : int or None
        The CUDA device where the producer says (DLPack); None otherwise (the driver is
        asked before the kernels read it).
    stream : int
        The producer's stream to wait for before reading (CUDA array interface v3:
        1 legacy default, 2 per-thread default, else a cudaStream_t); 0: none; -1: the
        producer does not say (version 2, as torch writes it), so the whole device is
        waited for.
    source : str
        "__cuda_array_interface__" or "DLPack".
    library : str
        Top-level module of the object's type ("torch", "cupy", ...), for messages.
    """

    ptr: int
    shape: tuple
    dtype: str
    itemsize: int
    strides: tuple | None
    readonly: bool
    device_id: int | None
    stream: int
    source: str
    library: str
    keepalive: object = field(default=None, repr=False, compare=False)

    @property
    def c_contiguous(self) -> bool:
        """True when the rows are packed in C order (what the kernels read)."""
        if self.strides is None or 0 in self.shape:
            return True
        expected = self.itemsize
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True


def _kind(obj) -> str:
    return f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"


def _fix(library, name) -> str:
    """How to get a C-contiguous float32 array on the GPU, in the producer's own words."""
    if library == "torch":
        return f"{name}.float().contiguous()"
    if library == "cupy":
        return f"cupy.ascontiguousarray({name}, dtype=cupy.float32)"
    return "a C-contiguous float32 array"


def device_array(obj, name="X", *, owner) -> DeviceArray | None:
    """What the kernels need to read ``obj`` in place, when it is an array in CUDA memory.

    None for anything on the host (numpy arrays, lists, torch CPU tensors). Reads the
    CUDA array interface (versions 2 and 3: shape, typestr, data pointer and read-only
    flag, strides, stream; torch CUDA tensors, cupy, numba) or, failing that, DLPack: a
    ``__dlpack_device__()`` of kDLCUDA (2) or kDLCUDAManaged (13), then
    ``__dlpack__(stream=1)``, which asks the producer to order its pending work before
    CUDA's legacy default stream, where the kernels run. An object on any other device
    raises TypeError; so does an interface that cannot be read.

    Examples
    --------
    >>> import numpy as np
    >>> device_array(np.zeros((2, 2), np.float32), owner="example") is None
    True
    """
    if obj is None or isinstance(obj, np.ndarray):
        return None
    library = type(obj).__module__.split(".")[0]
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        cai = None
    except Exception as exc:  # torch says why (a tensor that requires grad, bfloat16)
        fix = f"{name}.detach().float().contiguous()" if library == "torch" else _fix(library, name)
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}) is on a CUDA device but its "
            f"__cuda_array_interface__ cannot be read ({exc}); pass {fix}."
        ) from None
    if cai is not None:
        return _from_cuda_array_interface(cai, obj, name, owner)
    if not callable(getattr(obj, "__dlpack_device__", None)):
        return None
    try:
        dev_type, dev_id = (int(v) for v in obj.__dlpack_device__())
    except Exception:  # not a DLPack producer after all: leave it to numpy
        return None
    if dev_type in (_DL_CPU, _DL_CUDA_HOST):
        return None
    if dev_type not in (_DL_CUDA, _DL_CUDA_MANAGED):
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}) is on DLPack device type {dev_type}, neither "
            "the host nor a CUDA GPU; move it to the host first."
        )
    return _from_dlpack(obj, dev_id, name, owner)


def _from_cuda_array_interface(cai, obj, name, owner) -> DeviceArray:
    try:
        shape = tuple(int(v) for v in cai["shape"])
        dt = np.dtype(cai["typestr"])
        ptr, readonly = cai["data"]
        strides = cai.get("strides")
        strides = None if strides is None else tuple(int(v) for v in strides)
        # v3's stream: None means nothing to wait for; a producer that does not say
        # (v2, torch) or says 0 (not valid) gets -1: the device is waited for
        stream = cai.get("stream", -1)
        stream = 0 if stream is None else int(stream) or -1
        mask = cai.get("mask")
        ptr = int(ptr or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}) has a malformed __cuda_array_interface__ "
            f"({type(exc).__name__}: {exc})."
        ) from None
    if mask is not None:
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}) is a masked CUDA array; pass its data without "
            "the mask."
        )
    if strides is not None and len(strides) != len(shape):
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}) has a malformed __cuda_array_interface__ "
            f"(strides {strides} for shape {shape})."
        )
    return DeviceArray(
        ptr=ptr,
        shape=shape,
        dtype=dt.name if dt.isnative else dt.str,
        itemsize=dt.itemsize,
        strides=strides,
        readonly=bool(readonly),
        device_id=None,
        stream=stream,
        source="__cuda_array_interface__",
        library=type(obj).__module__.split(".")[0],
        keepalive=obj,
    )


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    # dlpack.h's DLTensor, which is also the head of the (unversioned) DLManagedTensor
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


# Own prototypes: setting argtypes on ctypes.pythonapi's shared objects would change
# them for every other user in the process.
_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi)
)
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)


def _from_dlpack(obj, dev_id, name, owner) -> DeviceArray:
    try:
        try:
            capsule = obj.__dlpack__(stream=1)
        except TypeError:  # a producer older than the stream argument
            capsule = obj.__dlpack__()
    except Exception as exc:
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}) is on a CUDA device but could not be exported "
            f"through DLPack ({exc})."
        ) from None
    if not _capsule_is_valid(capsule, b"dltensor"):
        raise TypeError(
            f"{owner}: {name!r} ({_kind(obj)}): __dlpack__ did not return an unused "
            "'dltensor' capsule."
        )
    # Not renamed 'used_dltensor': the capsule stays the producer's, and its destructor
    # releases the tensor once the DeviceArray (which keeps it) is gone.
    t = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    code, bits, lanes = int(t.dtype.code), int(t.dtype.bits), int(t.dtype.lanes)
    dtype = f"{_DL_CODES.get(code, f'code{code}_')}{bits}" + (f"x{lanes}" if lanes != 1 else "")
    itemsize = max(1, bits * lanes // 8)
    ndim = int(t.ndim)
    shape = tuple(int(t.shape[i]) for i in range(ndim))
    strides = tuple(int(t.strides[i]) * itemsize for i in range(ndim)) if t.strides else None
    return DeviceArray(
        ptr=int(t.data or 0) + int(t.byte_offset),
        shape=shape,
        dtype=dtype,
        itemsize=itemsize,
        strides=strides,
        readonly=False,
        device_id=int(t.device.device_id) if t.device.device_type == _DL_CUDA else dev_id,
        stream=0,  # the producer ordered its work before stream 1 (legacy default)
        source="DLPack",
        library=type(obj).__module__.split(".")[0],
        keepalive=(obj, capsule),
    )


def check_device_features(arr: DeviceArray, name="X", *, owner, min_rows=1) -> tuple:
    """(n, d) of a device array the kernels can read in place, or an error saying what to pass.

    The kernels read C-contiguous float32 rows; other dtypes and layouts are refused
    rather than converted, since converting would be a hidden copy of X on the device.
    """
    if len(arr.shape) != 2:
        raise ValueError(
            f"{owner}: {name!r} must be 2-D (n_samples, n_features); got {len(arr.shape)}-D "
            f"with shape {arr.shape}."
        )
    if arr.dtype != "float32" or not arr.c_contiguous:
        what = arr.dtype if arr.c_contiguous else f"non-contiguous {arr.dtype}"
        raise TypeError(
            f"{owner}: {name!r} is a {what} {arr.library} array on the GPU; device='cuda' "
            "reads C-contiguous float32 rows in place and converts nothing (that would be a "
            f"hidden copy on the device). Pass {_fix(arr.library, name)}."
        )
    n, d = check_rows_columns(arr.shape, name, owner=owner, min_rows=min_rows)
    if arr.ptr == 0:
        raise TypeError(f"{owner}: {name!r} ({arr.library}) has a null data pointer.")
    return n, d


def check_current_device(mod, arr: DeviceArray, name="X", *, owner) -> None:
    """Refuses a device array that is not on the current device (where the kernels run)."""
    kind, dev = mod.pointer_info(arr.ptr)
    if kind in ("host", "pinned"):
        raise TypeError(
            f"{owner}: {name!r} ({arr.library}) says it is on a CUDA device but its data is "
            "in host memory; pass it as a numpy array."
        )
    current = mod.current_device()
    if kind == "device" and dev != current:
        raise ValueError(
            f"{owner}: {name!r} is on cuda:{dev} but the kernels run on the current CUDA "
            f"device, cuda:{current}; make cuda:{dev} current first "
            f"(torch.cuda.set_device({dev}) or cupy.cuda.Device({dev}).use())."
        )


def host_array(X, name="X", *, owner, device=None):
    """X in a form numpy reads on the host, for the code that needs it there.

    A torch CPU tensor becomes a numpy view of it (no copy). An array in CUDA memory is
    copied to the host when ``device="cuda"`` (the caller runs on the host what follows);
    otherwise it is refused with a message saying what to do: with ``device="cpu"``, pass
    device="cuda" or move it; with None (a function without a device), move it. Anything
    else is returned as it is.
    """
    arr = device_array(X, name, owner=owner)
    if arr is not None:
        if device != "cuda":
            where = (
                f"{owner} reads host memory with device='cpu': pass device='cuda' to use it "
                "where it is, or"
                if device == "cpu"
                else f"{owner} reads host memory:"
            )
            raise TypeError(
                f"{owner}: {name!r} ({_kind(X)}) is on a CUDA device; {where} move it to the "
                f"host first ({name}.cpu() in torch, {name}.get() in cupy)."
            )
        mod = cuda_module(owner)
        n, d = check_device_features(arr, name, owner=owner)
        check_current_device(mod, arr, name, owner=owner)
        return mod.to_host_ptr(arr.ptr, n, d, arr.stream)
    if type(X).__module__.split(".")[0] == "torch" and callable(getattr(X, "detach", None)):
        device_type = getattr(getattr(X, "device", None), "type", "cpu")
        if device_type != "cpu":
            raise TypeError(
                f"{owner}: {name!r} is a torch tensor on {X.device}; move it to the host "
                f"first ({name}.cpu())."
            )
        try:
            return X.detach().numpy()  # shares the tensor's memory
        except (TypeError, RuntimeError) as exc:  # bfloat16, conjugate views, ...
            raise TypeError(
                f"{owner}: {name!r} is a torch {X.dtype} tensor numpy cannot read ({exc}); "
                f"pass {name}.float()."
            ) from None
    return X
