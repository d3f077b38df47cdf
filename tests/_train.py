"""Shared pieces of the training tests: a tiny CPU config and reading JSON-lines files."""

import json
from pathlib import Path


def tiny_reid_csv(tmp_path):
    """A tiny Re-ID image folder (16 identities x 6 images of 32 x 16): its labels.csv."""
    from aas_core.datasets import make_reid_images

    root = tmp_path / "reid"
    make_reid_images(root, 16, 6, size=(32, 16), test_fraction=0.25, seed=0)
    return root / "labels.csv"


def tiny_config(data, **kw):
    """A TrainConfig for the tiny backbone on 32 x 16 images, one cycle per epoch; ``kw`` wins."""
    from aas_core.train.driver import TrainConfig

    base = dict(
        data=str(data),
        arch="tiny",
        height=32,
        width=16,
        epochs=2,
        iters=3,
        batch_size=16,
        k1=10,
        k2=3,
        budget=30,
        al_every=1,
        al_cycles=1,
        num_workers=0,
        progress=False,
        device="cpu",
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def read_lines(path):
    """The JSON records of a JSON-lines file."""
    return [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]
