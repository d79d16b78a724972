"""Simulated users, their feedback, the oracle, and the interaction loop."""

from ._active import ACTIVE_STRATEGIES, active_cold_start
from ._diversity import (
    CALIBRATION_TOLERANCES,
    PAPER_POPULATION_STATISTICS,
    compare_with_paper,
    population_statistics,
)
from ._feedback import FEEDBACK_PROTOCOLS, SCORE_SCALES, simulate_feedback
from ._interaction import INTERACTION_FEEDBACK, InteractionEnvironment
from ._oracle import PreferenceOracle
from ._policies import (
    GreedyPolicy,
    InformationSeekingPolicy,
    RandomPolicy,
    ThompsonPolicy,
    preference_uncertainty,
)
from ._progressive import (
    cumulative_regret,
    paired_bootstrap,
    plot_regret,
    progressive_scores,
)
from ._users import check_weights, sample_users

__all__ = [
    "ACTIVE_STRATEGIES",
    "CALIBRATION_TOLERANCES",
    "INTERACTION_FEEDBACK",
    "PAPER_POPULATION_STATISTICS",
    "compare_with_paper",
    "FEEDBACK_PROTOCOLS",
    "GreedyPolicy",
    "InformationSeekingPolicy",
    "InteractionEnvironment",
    "PreferenceOracle",
    "SCORE_SCALES",
    "RandomPolicy",
    "ThompsonPolicy",
    "active_cold_start",
    "check_weights",
    "cumulative_regret",
    "paired_bootstrap",
    "plot_regret",
    "population_statistics",
    "preference_uncertainty",
    "progressive_scores",
    "sample_users",
    "simulate_feedback",
]
