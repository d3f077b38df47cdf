"""Data sets: synthetic generators shared by tests, benchmarks and the demo, and
loaders for image datasets on disk.

- :func:`make_reid_blobs`: synthetic embeddings with look-alike identities.
- :func:`make_reid_family`: its family (spread, sizes, Zipf imbalance, dimension,
  singletons, camera-trap bursts, sub-modes, anisotropy); :data:`GENERATOR_SUITE`
  names members of it (:func:`make_suite_member`).
- :func:`make_reid_images`: a tiny synthetic image dataset (PNG + CSV; Pillow).
- :func:`image_folder_csv`, :func:`wildlife_metadata`, :func:`market1501`:
  image datasets as :class:`ImageDataset` records.
"""

from .family import GENERATOR_SUITE, make_reid_family, make_suite_member
from .images import (
    ImageDataset,
    SkippedImage,
    image_folder_csv,
    market1501,
    parse_market1501_name,
    wildlife_metadata,
)
from .synthetic import make_reid_blobs, make_reid_images

__all__ = [
    "GENERATOR_SUITE",
    "ImageDataset",
    "SkippedImage",
    "image_folder_csv",
    "make_reid_blobs",
    "make_reid_family",
    "make_reid_images",
    "make_suite_member",
    "market1501",
    "parse_market1501_name",
    "wildlife_metadata",
]
