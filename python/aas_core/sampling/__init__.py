"""Active-learning pair samplers (AAS and baselines) and their building blocks."""

from .aas import AmbiguityAwareSampler, PairProposal
from .baselines import GBAS, LBAS, NISSampler, RandomPairSampler
from .regions import Regions, uncertainty_regions

__all__ = [
    "AmbiguityAwareSampler",
    "GBAS",
    "LBAS",
    "NISSampler",
    "PairProposal",
    "RandomPairSampler",
    "Regions",
    "uncertainty_regions",
]
