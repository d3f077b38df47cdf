"""Evaluation metrics: clustering agreement (retrieval and open-set come with the training driver)."""

from . import clustering

__all__ = ["clustering"]
