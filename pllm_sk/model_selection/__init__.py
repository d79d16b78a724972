"""Cold-start splitting over users and personal scorers backed by the oracle."""

from ._scorers import METRICS, make_personal_scorer, personal_scorers
from ._split import SUPPORT_STRATEGIES, ColdStartSplit

__all__ = [
    "METRICS",
    "SUPPORT_STRATEGIES",
    "ColdStartSplit",
    "make_personal_scorer",
    "personal_scorers",
]
