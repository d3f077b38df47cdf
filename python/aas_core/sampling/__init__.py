"""Active-learning pair samplers (AAS and baselines) and their building blocks."""

from .aas import AmbiguityAwareSampler, PairProposal
from .regions import Regions, uncertainty_regions

__all__ = ["AmbiguityAwareSampler", "PairProposal", "Regions", "uncertainty_regions"]
