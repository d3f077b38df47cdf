"""knn_graph's precision: which kernels run it on this machine (aas_core.neighbors)."""

from __future__ import annotations

from . import _core
from ._validation import check_option

# significant bits of each precision's inputs (the kernels' `bits`)
_PRECISION_BITS = {"fp32": 24, "tf32": 11, "bf16": 8}
_BITS_PRECISION = {v: key for key, v in _PRECISION_BITS.items()}


def _cpu_bf16_kernel() -> str | None:
    """The CPU's bf16 candidate kernel: "amx" (AMX-BF16 tiles, granted by the OS and
    checked against their C++ emulation once per process), "avx512" (AVX512-BF16 dot
    products) or None (neither)."""
    if _core.cpu_amx_ready():
        return "amx"
    if _core.cpu_has_avx512_bf16():
        return "avx512"
    return None


def _cpu_has_bf16() -> bool:
    """Whether this CPU (and OS) runs a bf16 candidate kernel (tests patch it)."""
    return _cpu_bf16_kernel() is not None


def cpu_precision() -> str:
    """The candidate search ``knn_graph(..., precision="auto")`` runs on this CPU: "bf16"
    (AMX tiles or AVX512-BF16 dot products, re-ranked and certified in fp32) or "fp32"
    (BLAS tiles).

    Checked at run time (cpuid, the OS's saved register state and, for AMX, the
    permission Linux asks for), so one build serves every x86-64 CPU; other
    architectures get "fp32". Every kernel gives the same graph.
    """
    return "bf16" if _cpu_has_bf16() else "fp32"


def resolve_precision(precision, device, backend, owner) -> int:
    """The kernels' bits for knn_graph's precision on this device and backend; raises
    ValueError, naming the argument, for a precision they do not run."""
    check_option("precision", precision, ("auto", *_PRECISION_BITS), owner=owner)
    if backend == "faiss":
        if precision not in ("auto", "fp32"):
            raise ValueError(
                f"{owner}: precision={precision!r} is for aas-core's own kernels; with "
                "backend='faiss' use 'fp32' or 'auto'."
            )
        return 24
    if device == "cuda":
        return 24 if precision == "auto" else _PRECISION_BITS[precision]
    if precision == "tf32":
        raise ValueError(
            f"{owner}: precision='tf32' is for aas-core's CUDA kernels (device='cuda'); on "
            "the CPU use 'auto', 'bf16' (AMX or AVX512-BF16) or 'fp32'."
        )
    if precision == "bf16" and not _cpu_has_bf16():
        raise ValueError(
            f"{owner}: precision='bf16' on the CPU needs AMX or AVX512-BF16 instructions, "
            "which this CPU lacks; use precision='auto' (bf16 where the CPU has them, else fp32) "
            "or 'fp32'."
        )
    if precision == "auto":
        return 8 if _cpu_has_bf16() else 24
    return _PRECISION_BITS[precision]
