"""Evaluation metrics.

- :mod:`~aas_core.metrics.retrieval`: mAP, mINP and CMC top-k of a query x
  gallery ranking (Market-1501 protocol).
- :mod:`~aas_core.metrics.open_set`: the paper's open-set protocol (held-out
  identities, gallery exemplars), BAKS, BAUS and AUC-ROC.
- :mod:`~aas_core.metrics.clustering`: pairwise F1, ARI and NMI.

>>> from aas_core.metrics import clustering, open_set, retrieval
"""

from . import clustering, open_set, retrieval

__all__ = ["clustering", "open_set", "retrieval"]
