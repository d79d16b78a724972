"""Collaborative methods: models of utility learned from every user's comparisons."""

from ._low_rank import LowRankRanker

__all__ = ["LowRankRanker"]
