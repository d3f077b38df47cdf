"""The GPU path: whether this aas-core has its CUDA kernels and a device to run them.

The kernels live in ``aas_core._cuda``, built only when the package is compiled with
``-DAAS_CUDA=ON`` (or ``AUTO`` with nvcc found; see the README). That module imports on
any machine, with or without a GPU; :func:`cuda_available` says whether it is there and
sees a device. Functions with a ``device`` parameter take ``"cpu"`` (the default) or
``"cuda"``; asking for CUDA where it is absent raises a ValueError that says why.

What runs on the GPU so far: the exact neighbour searches, which are the costly part
-- the kNN graph (:func:`aas_core.knn_graph`) and FINCH's first neighbours, level 0 from
features and the 1-NN among cluster means of every further level
(:func:`aas_core.finch`); :func:`aas_core.cluster_features` uses both. The Jaccard
step, DBSCAN, FINCH's linking and means, NP3 and the samplers run on the CPU.
"""

from __future__ import annotations

from ._validation import check_option

__all__ = ["DEVICES", "check_device", "cuda_available", "cuda_module"]

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
