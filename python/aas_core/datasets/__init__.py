"""Data sets: the synthetic Re-ID generator shared by tests, benchmarks and the demo."""

from .synthetic import make_reid_blobs

__all__ = ["make_reid_blobs"]
