"""Active-learning pair samplers (AAS and baselines) and their building blocks.

Every sampler is a :class:`PairSampler`: ``propose_from(X, labels_a, labels_b,
D, constraints, budget, *, rng)`` from one cycle's state, or ``propose(X,
constraints, budget, *, rng)`` from embeddings alone. None ever proposes a
pair that the answers so far already imply.
"""

from .aas import AmbiguityAwareSampler
from .base import PairProposal, PairSampler
from .baselines import GBAS, LBAS, NISSampler, RandomPairSampler
from .regions import Regions, uncertainty_regions

__all__ = [
    "AmbiguityAwareSampler",
    "GBAS",
    "LBAS",
    "NISSampler",
    "PairProposal",
    "PairSampler",
    "RandomPairSampler",
    "Regions",
    "uncertainty_regions",
]
