"""Training and embedding with PyTorch: the only part of aas-core that imports torch.

Install with ``pip install ".[torch]"`` in the aas-core source folder. The rest of the package works
without torch, and so does :func:`aas_core.train.evaluate.evaluate_embeddings`.
Names are imported on first use, so ``import aas_core.train`` never needs torch.

>>> from aas_core.train import TrainConfig, train            # doctest: +SKIP
>>> train(TrainConfig(data="labels.csv", arch="tiny", epochs=2), "runs/demo")  # doctest: +SKIP
"""

from importlib import import_module

_WHERE = {
    "TrainConfig": "driver",
    "train": "driver",
    "load_datasets": "driver",
    "HybridMemory": "memory",
    "identity_batches": "batches",
    "ReIDModel": "models",
    "build_backbone": "architectures",
    "load_backbone": "backbones",
    "backbone_names": "_names",
    "EfficientNetLite": "efficientnet",
    "Preprocess": "transforms",
    "save_model": "models",
    "load_model": "models",
    "embed_images": "embed",
    "train_transform": "transforms",
    "test_transform": "transforms",
    "load_image": "transforms",
    "ImageTensors": "transforms",
    "resolve_device": "_runtime",
    "evaluate_embeddings": "evaluate",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
