"""Reference rankers: population (zero-shot), per-user, oracle and the Bayes limit."""

from ._bayes import BayesRanker
from ._oracle import OracleRanker
from ._per_user import PerUserRanker
from ._population import PopulationRanker

__all__ = ["BayesRanker", "OracleRanker", "PerUserRanker", "PopulationRanker"]
