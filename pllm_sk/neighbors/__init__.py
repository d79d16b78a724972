"""Nearest-user methods: predict a user's preference from the most similar users."""

from ._knn import SIMILARITIES, UserKNNRanker

__all__ = ["SIMILARITIES", "UserKNNRanker"]
