"""The ceiling: predict each user's true reward."""

import numpy as np

from ..base import BaseRanker
from ..utils import HasMethods, fill_docstring

__all__ = ["OracleRanker"]


@fill_docstring
class OracleRanker(BaseRanker):
    """Predict the true reward of each row, read from the oracle (the ceiling).

    The prediction for a row is ``oracle.reward(user_id, prompt_id, response_id)``:
    feature columns and feedback are ignored, so no user ever falls back to the
    population. ``fit`` only checks the oracle and that it knows the rows' ids. Only
    reference estimators and scorers hold an oracle; it is a parameter here so the
    ceiling runs through the same cross-validation and scorers as every method.

    Parameters
    ----------
    oracle : object, default=None
        An object with a method ``reward(user_ids, prompt_ids, response_ids)``
        returning one float per row and an attribute ``n_users``, such as
        :class:`~pllm_sk.simulation.PreferenceOracle`. Required; ``None`` raises in
        ``fit``.

    Attributes
    ----------
    n_users_ : int
        Number of users the oracle knows.
    {input_attributes}

    See Also
    --------
    BayesRanker : The best any method can do from the users' feedback.
    PopulationRanker : The zero-shot floor.

    Examples
    --------
    >>> from pllm_sk.baselines import OracleRanker
    >>> from pllm_sk.datasets import Corpus
    >>> from pllm_sk.simulation import PreferenceOracle
    >>> corpus = Corpus(["Hi?"], [["Hello.", "Hey!"]], [[[1.0, 0.0], [0.0, 1.0]]],
    ...                 reward_models=["a", "b"])
    >>> oracle = PreferenceOracle(corpus, [[0.25, 0.75]])
    >>> X = [[0, 0, 0], [0, 0, 1]]
    >>> OracleRanker(oracle).fit(X, [1.0, 0.0]).predict(X).tolist()
    [0.25, 0.75]
    """

    _parameter_constraints = {"oracle": [HasMethods(["reward"]), None]}

    def __init__(self, oracle=None):
        self.oracle = oracle

    def _fit(self, feedback):
        ids = feedback.ids
        if self.oracle is None:
            raise ValueError(
                "OracleRanker needs an oracle: pass oracle=..., for example the "
                "oracle returned by simulate_feedback."
            )
        # Raises a ValueError naming the id when a row is unknown to the oracle.
        self.oracle.reward(ids[:, 0], ids[:, 1], ids[:, 2])
        self.n_users_ = int(self.oracle.n_users)

    def _has_feedback(self, user_ids):
        # The oracle knows every user: no one falls back to the population.
        return np.ones(np.shape(user_ids), dtype=bool)

    def _predict(self, ids, features):
        return self.oracle.reward(ids[:, 0], ids[:, 1], ids[:, 2])
