"""Active-learning pair samplers (AAS and baselines) and their building blocks."""

from .regions import Regions, uncertainty_regions

__all__ = ["Regions", "uncertainty_regions"]
