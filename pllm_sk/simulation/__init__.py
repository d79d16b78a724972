"""Simulated users, their feedback, and the oracle that knows their true rewards."""

from ._diversity import (
    CALIBRATION_TOLERANCES,
    PAPER_POPULATION_STATISTICS,
    compare_with_paper,
    population_statistics,
)
from ._feedback import FEEDBACK_PROTOCOLS, simulate_feedback
from ._oracle import PreferenceOracle
from ._users import check_weights, sample_users

__all__ = [
    "CALIBRATION_TOLERANCES",
    "PAPER_POPULATION_STATISTICS",
    "compare_with_paper",
    "FEEDBACK_PROTOCOLS",
    "PreferenceOracle",
    "check_weights",
    "population_statistics",
    "sample_users",
    "simulate_feedback",
]
