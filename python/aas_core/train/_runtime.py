"""Runtime helpers of the torch parts: importing torch, choosing the device.

Nothing here imports torch at module level, so ``aas_core.train`` can be
imported (and its errors explained) on a machine without torch.
"""

from __future__ import annotations

import os
import re

from .._extras import install_hint
from .._validation import _available_cpus

__all__ = ["require_torch", "resolve_device"]


def require_torch(what: str):
    """Imports and returns ``torch``, or raises an ImportError naming ``what`` needed it.

    Parameters
    ----------
    what : str
        The function or command that needs torch (for the message).

    Examples
    --------
    >>> require_torch("this example").__name__
    'torch'
    """
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"{what} needs PyTorch, which is not installed; install it with "
            f"{install_hint('torch')} (or pick a build for your CUDA version on pytorch.org)."
        ) from exc
    return torch


def loader_workers(num_workers: int) -> int:
    """The DataLoader worker processes to start for ``num_workers``: at most the CPUs this
    process may use (its affinity, not the machine's count). More would only compete for
    them, and torch warns about every such loader."""
    return min(num_workers, _available_cpus())


def _torch_build(torch) -> str:
    cuda = torch.version.cuda
    build = f"built for CUDA {cuda}" if cuda else "a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = "" if visible is None else f"; CUDA_VISIBLE_DEVICES={visible!r}"
    return f"torch {torch.__version__}, {build}{shown}"


def resolve_device(device: str = "auto"):
    """The ``torch.device`` to run on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (the first CUDA device if torch sees one, else the CPU),
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. The GPU is asked for at run
        time: a CUDA *build* of torch on a machine without a GPU gives
        ``"cpu"`` for ``"auto"``.

    Raises
    ------
    ValueError
        If CUDA is asked for and torch sees no CUDA device (the message names
        the torch build), if ``N`` is out of range, or for any other string.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    torch = require_torch("resolve_device")
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(
            "The 'device' parameter of resolve_device must be a string ('auto', 'cpu', "
            f"'cuda' or 'cuda:N'); got {device!r}."
        )
    text = device.strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise ValueError(
            "The 'device' parameter of resolve_device must be 'auto', 'cpu', 'cuda' or "
            f"'cuda:N'; got {device!r}."
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"The 'device' parameter asks for {device!r}, but torch sees no CUDA device "
            f"({_torch_build(torch)}). Use device='cpu' (or 'auto', which falls back to the "
            "CPU), or run on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
    if m.group(1) is None:
        return torch.device("cuda")
    index = int(m.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"The 'device' parameter asks for {device!r}, but torch sees {count} CUDA "
            f"device(s): cuda:0 to cuda:{count - 1} ({_torch_build(torch)})."
        )
    return torch.device("cuda", index)


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 is
    slower than fp32, so ``precision="auto"`` uses it only here."""
    torch = require_torch("cpu_has_bf16")
    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None and check():
            return True
    try:  # older torch: the kernel's own flags
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` ("auto", "bf16", "fp32") means on
    ``device``. "auto" is bf16 on a CPU that has it, fp32 elsewhere (a GPU keeps fp32, as
    before)."""
    if precision not in PRECISIONS:
        raise ValueError(f"'precision' must be one of {PRECISIONS}; got {precision!r}.")
    if precision != "auto":
        return precision
    return "bf16" if str(device).startswith("cpu") and cpu_has_bf16() else "fp32"


def autocast(precision: str, device):
    """The context the forward passes run in: bf16 autocast, or nothing for fp32."""
    import contextlib

    torch = require_torch("autocast")
    if precision != "bf16":
        return contextlib.nullcontext()
    kind = torch.device(device).type if not isinstance(device, str) else device.split(":")[0]
    return torch.autocast(kind, dtype=torch.bfloat16)
