"""Splitters over new and seen users, and personal scorers backed by the oracle."""

from ._scorers import METRICS, choice_outcomes, make_personal_scorer, personal_scorers
from ._split import SUPPORT_STRATEGIES, ColdStartSplit, SeenUserSplit

__all__ = [
    "METRICS",
    "SUPPORT_STRATEGIES",
    "ColdStartSplit",
    "SeenUserSplit",
    "choice_outcomes",
    "make_personal_scorer",
    "personal_scorers",
]
