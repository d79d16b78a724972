"""Policies of the interaction loop: which candidates each user is shown.

A policy sees, for each user of a round, the estimator's predicted utilities of the
K candidates of the user's prompt and, when it asks for them, posterior draws of
those utilities (the estimator's ``sample_y``). It returns the responses shown to
each user, the served one first; the user's feedback is about these only.

The protocol, used by :class:`InteractionEnvironment` and open to new policies:

- ``validate(estimator, n_shown)``: once per run, before the first round;
  checks the parameters and that the estimator can do what the policy needs.
- ``needs(steps, n_shown)``: ``(scores, n_draws)``, whether the round needs
  ``predict`` and how many posterior draws per candidate (0 for none), given each
  user's step (rounds since the user arrived).
- ``choose(scores, draws, n_shown, steps, rng)``: the shown response ids, an int
  array of shape (n_users, n_shown), the served response in column 0. ``scores``
  has shape (n_users, K), NaN when the policy did not ask for them; ``draws`` has
  shape (n_users, K, n_draws), or is None without draws; ``rng`` is a NumPy
  ``RandomState``.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator

from ..utils import Interval, StrOptions, validate_params

__all__ = [
    "GreedyPolicy",
    "InformationSeekingPolicy",
    "RandomPolicy",
    "ThompsonPolicy",
    "preference_uncertainty",
]


class _BasePolicy(BaseEstimator):
    """Parameters validated once per run; no draws unless a subclass asks."""

    _parameter_constraints: dict = {}

    def validate(self, estimator, n_shown):
        """Check the parameters, and that ``estimator`` can give what is needed.

        Raises
        ------
        TypeError
            When the policy needs posterior draws and ``estimator`` has no
            ``sample_y`` method.
        """
        validate_params(self)
        if self._uses_draws() and not hasattr(estimator, "sample_y"):
            raise TypeError(
                f"{type(self).__name__} needs posterior draws of the utilities, from "
                f"the estimator's sample_y method, and {type(estimator).__name__} has "
                "no sample_y method. Use GreedyPolicy or RandomPolicy with it, or a "
                "ranker with sample_y (BayesRanker, LowRankRanker, UserKNNRanker, "
                "MetaRewardHead with adaptation='encoder')."
            )

    def _uses_draws(self):
        return False


class RandomPolicy(_BasePolicy):
    """Show ``n_shown`` distinct candidates drawn uniformly: the floor of every table.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.simulation import RandomPolicy
    >>> scores = np.full((3, 8), np.nan)  # not asked for
    >>> shown = RandomPolicy().choose(scores, None, 2, np.zeros(3, int),
    ...                               np.random.RandomState(0))
    >>> shown.shape, bool((shown[:, 0] != shown[:, 1]).all())
    ((3, 2), True)
    """

    def needs(self, steps, n_shown):
        return False, 0

    def choose(self, scores, draws, n_shown, steps, rng):
        keys = rng.random_sample(scores.shape)
        return np.argsort(keys, axis=1)[:, :n_shown]


class GreedyPolicy(_BasePolicy):
    """Serve the candidate of highest predicted utility; the others shown at random.

    Ties go to the lowest ``response_id``. The second (and further) shown
    responses are drawn uniformly among the other candidates, so that pair
    feedback still compares the served response with something.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.simulation import GreedyPolicy
    >>> scores = np.array([[0.1, 0.9, 0.5], [2.0, 1.0, 0.0]])
    >>> GreedyPolicy().choose(scores, None, 1, np.zeros(2, int),
    ...                       np.random.RandomState(0)).ravel().tolist()
    [1, 0]
    """

    def needs(self, steps, n_shown):
        return True, 0

    def choose(self, scores, draws, n_shown, steps, rng):
        return _serve_then_random(np.argmax(scores, axis=1), scores.shape[1], n_shown, rng)


class ThompsonPolicy(_BasePolicy):
    """Thompson sampling: each shown slot is the best candidate under its own draw.

    The served response is the argmax of one posterior draw of the user's
    utilities (``sample_y``, drawn jointly over the user's candidates); each
    further shown response is the argmax, among the candidates not yet shown, of
    a further independent draw (double Thompson sampling for pairs).

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.simulation import ThompsonPolicy
    >>> draws = np.array([[[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]])  # 1 user, K=3, 2 draws
    >>> ThompsonPolicy().choose(np.full((1, 3), np.nan), draws, 2, np.zeros(1, int),
    ...                         None).tolist()
    [[1, 0]]
    """

    def needs(self, steps, n_shown):
        return False, n_shown

    def _uses_draws(self):
        return True

    def choose(self, scores, draws, n_shown, steps, rng):
        n_users, n_candidates, _ = draws.shape
        shown = np.empty((n_users, n_shown), dtype=np.int64)
        available = np.ones((n_users, n_candidates), dtype=bool)
        for slot in range(n_shown):
            pick = np.argmax(np.where(available, draws[:, :, slot], -np.inf), axis=1)
            shown[:, slot] = pick
            available[np.arange(n_users), pick] = False
        return shown


class InformationSeekingPolicy(_BasePolicy):
    """Ask about the comparisons the posterior is least sure of, then serve greedily.

    For the first ``n_rounds`` steps of a user, the posterior probability that
    candidate ``a`` beats ``b`` is estimated from ``n_draws`` joint draws of the
    user's utilities (``sample_y``), and a comparison's uncertainty is
    ``p (1 - p)``, the variance of its outcome (largest at ``p = 1/2``), as in
    :func:`preference_uncertainty`.

    - ``anchor="top"``: serve the candidate of highest predicted utility (as
      greedy does, so the served response costs no more regret) and show beside it
      the ``n_shown - 1`` candidates whose comparison with it is least certain.
    - ``anchor=None``: show the pair of candidates (of all K (K - 1) / 2) whose
      comparison is least certain, serving the one of higher predicted utility;
      pairs only (``n_shown=2``).

    After ``n_rounds`` steps the policy is :class:`GreedyPolicy`.

    Parameters
    ----------
    n_rounds : int, default=10
        Steps of each user spent seeking information, >= 0.
    n_draws : int, default=32
        Posterior draws per round that estimate the probabilities, >= 2.
    anchor : {"top"} or None, default="top"
        What the shown pair is built around; see above.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.simulation import InformationSeekingPolicy
    >>> scores = np.array([[1.0, 0.0, 0.5]])
    >>> # Candidate 2 beats the top one in half the draws, candidate 1 never.
    >>> draws = np.array([[[1.0, 1.0], [0.0, 0.0], [0.0, 2.0]]])
    >>> policy = InformationSeekingPolicy(n_rounds=3, n_draws=2)
    >>> policy.choose(scores, draws, 2, np.zeros(1, int), np.random.RandomState(0)).tolist()
    [[0, 2]]
    """

    _parameter_constraints = {
        "n_rounds": [Interval(numbers.Integral, 0, None, closed="left")],
        "n_draws": [Interval(numbers.Integral, 2, None, closed="left")],
        "anchor": [StrOptions({"top"}), None],
    }

    def __init__(self, n_rounds=10, *, n_draws=32, anchor="top"):
        self.n_rounds = n_rounds
        self.n_draws = n_draws
        self.anchor = anchor

    def validate(self, estimator, n_shown):
        super().validate(estimator, n_shown)
        if self.anchor is None and n_shown != 2:
            raise ValueError(
                f"InformationSeekingPolicy(anchor=None) shows a pair; got n_shown={n_shown}."
            )

    def _uses_draws(self):
        return self.n_rounds > 0

    def needs(self, steps, n_shown):
        return True, int(self.n_draws) if (np.asarray(steps) < self.n_rounds).any() else 0

    def choose(self, scores, draws, n_shown, steps, rng):
        shown = GreedyPolicy().choose(scores, None, n_shown, steps, rng)
        seeking = np.flatnonzero(np.asarray(steps) < self.n_rounds)
        if seeking.size == 0:
            return shown
        uncertainty = preference_uncertainty(draws[seeking])
        if self.anchor == "top":
            served = shown[seeking, 0]
            row = uncertainty[np.arange(seeking.size), served]
            row[np.arange(seeking.size), served] = -np.inf
            # Most uncertain first; ties to the lower response_id (stable sort).
            others = np.argsort(-row, axis=1, kind="stable")[:, : n_shown - 1]
            shown[seeking] = np.column_stack([served, others])
            return shown
        n_candidates = uncertainty.shape[1]
        first, second = np.triu_indices(n_candidates, k=1)
        best = np.argmax(uncertainty[:, first, second], axis=1)
        a, b = first[best], second[best]
        user_scores = scores[seeking]
        a_first = user_scores[np.arange(seeking.size), a] >= user_scores[np.arange(seeking.size), b]
        shown[seeking] = np.column_stack([np.where(a_first, a, b), np.where(a_first, b, a)])
        return shown


def preference_uncertainty(draws):
    """``p (1 - p)`` of every comparison, ``p`` the share of draws where ``a`` beats ``b``.

    Parameters
    ----------
    draws : ndarray of shape (n_users, n_candidates, n_draws)
        Joint posterior draws of each user's candidate utilities; a tie in a
        draw counts one half.

    Returns
    -------
    uncertainty : ndarray of shape (n_users, n_candidates, n_candidates)
        Symmetric, in [0, 1/4]; 0 on the diagonal.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.simulation import preference_uncertainty
    >>> draws = np.array([[[1.0, 1.0], [0.0, 2.0]]])
    >>> preference_uncertainty(draws)[0].tolist()
    [[0.0, 0.25], [0.25, 0.0]]
    """
    draws = np.asarray(draws, dtype=np.float64)
    difference = draws[:, :, np.newaxis, :] - draws[:, np.newaxis, :, :]
    p = (np.sign(difference) * 0.5 + 0.5).mean(axis=3)
    uncertainty = p * (1.0 - p)
    diagonal = np.arange(draws.shape[1])
    uncertainty[:, diagonal, diagonal] = 0.0  # a candidate against itself
    return uncertainty


def _serve_then_random(served, n_candidates, n_shown, rng):
    """The served candidates, then ``n_shown - 1`` distinct others at random."""
    n_users = served.size
    keys = rng.random_sample((n_users, n_candidates))
    keys[np.arange(n_users), served] = -1.0  # the served one sorts first
    return np.argsort(keys, axis=1)[:, :n_shown]
