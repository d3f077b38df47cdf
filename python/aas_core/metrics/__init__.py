"""Evaluation metrics: clustering agreement.

Retrieval and open-set metrics come with the training driver.
"""

from . import clustering

__all__ = ["clustering"]
