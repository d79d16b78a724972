"""Each user's own comparisons, shrunk toward the population preference."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..base import BaseRanker, UserPreferenceMixin
from ..core import (
    PairDifferences,
    UserComparisons,
    calibrate,
    calibration_split,
    fit_bradley_terry,
    fit_population,
    item_features,
    pair_differences,
    per_user_means,
    positions_in,
)
from ..utils import Interval, StrOptions, fill_docstring

__all__ = ["PerUserRanker"]

# Candidate values of shrinkage="auto", evenly spaced in log2.
SHRINKAGES = 2.0 ** np.arange(-6, 6)


@fill_docstring
class PerUserRanker(UserPreferenceMixin, BaseRanker):
    """A Bradley-Terry preference per user, from that user's comparisons only.

    First the population weights ``population_coef_`` are fitted as in
    :class:`PopulationRanker`. Then each user ``u`` with labeled rows gets

    ``coef_[u] = argmin sum_{u's pairs} log(1 + exp(-w . (x_chosen - x_rejected)))
    + shrinkage * ||w - population_coef_||^2``,

    so nothing is learned across users except the population prior. Users are solved
    all at once by batched Newton steps (see
    :func:`~pllm_sk.core._bradley_terry.fit_bradley_terry`), whose time grows
    as ``n_pairs * n_item_features ** 2``: this suits the reward track, the ids
    track and embeddings reduced to a few dozen dimensions (10,000 users x 50
    best/worst prompts on the reward track: under half a minute).

    Item features are as in :class:`PopulationRanker`: the feature columns of ``X``,
    or a one-hot of ``response_id`` when ``X`` has none. A user without labeled rows
    in ``fit`` gets the population prediction.

    Shrinkage. The penalty is a Gaussian prior ``N(population_coef_, I / (2 *
    shrinkage))`` on each user's weights. ``shrinkage="auto"`` chooses it on
    held-out cold users (:func:`~pllm_sk.core.calibration_split`): each is fitted
    on a few revealed prompts at each of ``SHRINKAGES``, and scored by the share
    of their held-out choices (comparisons whose winner is the prompt's top
    choice) that the fitted weights order right, a tie counting half; the best
    value is refined by the ``"log2_parabola"`` rule of
    :func:`~pllm_sk.core.calibrate`. The score is the share ordered right, not
    the held-out log-likelihood of the other families: a single Gaussian
    describes the population's preferences poorly, and the log-likelihood asks
    for more shrinkage than ranks best. Nor the marginal likelihood of the
    users' own comparisons: with choices that the features separate it grows
    without bound as the shrinkage goes to 0.

    Parameters
    ----------
    shrinkage : "auto" or float, default="auto"
        Strength of the pull toward the population weights, > 0. Large values give
        the population model; small values follow each user's own comparisons.
        ``"auto"`` chooses it (see above).
    {population_alpha_parameter}
    max_iter : int, default=100
        Newton steps at most, for the population and for each user.
    random_state : int, RandomState instance or None, default=None
        Draws the users and prompts of ``shrinkage="auto"``.

    Attributes
    ----------
    shrinkage_ : float
        The shrinkage used: ``shrinkage``, or the one chosen with ``"auto"``.
    coef_ : ndarray of shape (n_users, n_item_features)
        Weights of the users in ``users_``, in that order.
    {users_attribute}
    {population_coef_attribute}
        It is also the prior centre of every user's weights.
    {n_response_slots_attribute}
    {input_attributes}

    See Also
    --------
    PopulationRanker : The shared preference this estimator shrinks toward.
    BayesRanker : The Bayes-optimal per-user estimate on the reward track.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.baselines import PerUserRanker
    >>> X = pd.DataFrame({"user_id": [0, 0, 1, 1], "prompt_id": [0, 0, 0, 0],
    ...                   "response_id": [0, 1, 0, 1], "a": [1.0, 0.0, 1.0, 0.0]})
    >>> y = np.array([1.0, 0.0, 0.0, 1.0])
    >>> ranker = PerUserRanker(shrinkage=0.1).fit(X, y)
    >>> utility = ranker.predict(X)
    >>> bool(utility[0] > utility[1]), bool(utility[2] < utility[3])
    (True, True)
    """

    _parameter_constraints = {
        "shrinkage": [
            StrOptions({"auto"}),
            Interval(numbers.Real, 0, None, closed="neither"),
        ],
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, shrinkage="auto", *, alpha=1.0, max_iter=100, random_state=None):
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, feedback):
        self.n_response_slots_ = feedback.n_response_slots
        self.population_coef_ = fit_population(feedback, self.alpha, self.max_iter)
        structure = feedback.comparisons()
        # Gathered by the solver batch by batch: no (n_pairs, n_features) float64 array.
        differences = PairDifferences(
            feedback.compact_items, structure.winners, structure.losers
        )
        self.users_ = structure.users
        if self.shrinkage == "auto":
            store = UserComparisons.from_comparisons(feedback.ids, structure, rows=True)
            shrinkage = _held_out_shrinkage(
                store, feedback.compact_items, self.population_coef_, self.max_iter,
                check_random_state(self.random_state),
            )
        else:
            shrinkage = float(self.shrinkage)
        self.shrinkage_ = shrinkage
        self.coef_ = fit_bradley_terry(
            differences,
            np.take(structure.group_user[structure.group_of_row], structure.winners),
            self.users_.size,
            l2=self.shrinkage_,
            prior_mean=self.population_coef_,
            max_iter=self.max_iter,
        )

    def _user_preference(self, positions):
        """The users' weights ``coef_``, shape (n_users, n_item_features)."""
        return self.coef_[positions]

    def _predict(self, ids, features):
        position, known = positions_in(self.users_, ids[:, 0])
        coef = np.where(
            known[:, np.newaxis], self.coef_[position], self.population_coef_
        )
        items = item_features(ids, features, self.n_response_slots_)
        return np.einsum("nf,nf->n", items, coef)


def _held_out_shrinkage(store, items, prior_mean, max_iter, rng):
    """The value of ``SHRINKAGES`` that orders held-out choices best, refined.

    Parameters
    ----------
    store : UserComparisons
        Every user's comparisons, with their ``"winner"`` and ``"loser"`` rows.
    items : ndarray of shape (n_rows, n_item_features)
        The item features of those rows.
    prior_mean : ndarray of shape (n_item_features,)
    max_iter : int
    rng : RandomState
        Draws the calibration users (:func:`~pllm_sk.core.calibration_split`).

    Returns
    -------
    shrinkage : float
        1.0 when no held-out comparison's winner is its prompt's top choice.
    """
    positions, support, held_out = calibration_split(
        store, np.arange(store.users.size), rng
    )
    rows, owner = held_out
    is_top = store.columns["top"][rows]
    rows, owner = rows[is_top], owner[is_top]
    if rows.size == 0:
        return 1.0
    winner, loser = store.columns["winner"], store.columns["loser"]
    support_differences = pair_differences(
        items, winner[support[0]], loser[support[0]], np.float64
    )
    held_out_differences = pair_differences(items, winner[rows], loser[rows], np.float64)

    def score(shrinkage):
        coef = fit_bradley_terry(
            support_differences,
            support[1],
            positions.size,
            l2=shrinkage,
            prior_mean=prior_mean,
            max_iter=max_iter,
        )
        margin = np.einsum("nf,nf->n", held_out_differences, coef[owner])
        # A tie (no comparison moved the user) counts half.
        ordered = (margin > 0) + 0.5 * (margin == 0)
        return per_user_means(ordered[:, np.newaxis], owner, positions.size)

    return calibrate(score, SHRINKAGES, rule="log2_parabola").best
