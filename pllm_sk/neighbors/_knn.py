"""Nearest historical users: predict a user's preference from the most similar users."""

import numbers
from functools import partial
from typing import NamedTuple

import numpy as np
from scipy.special import expit
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..base import (
    BaseRanker,
    IncrementalRankerMixin,
    PosteriorSamplingMixin,
    UserPreferenceMixin,
)
from ..core import (
    TEMPERATURES,
    UserComparisons,
    calibrate,
    calibration_split,
    fit_bradley_terry,
    fit_population,
    item_features,
    item_keys,
    log_likelihood_scores,
    log_sigmoid,
    pair_differences,
    positions_in,
    top_choice_accuracy,
)
from ..utils import Interval, StrOptions, fill_docstring

__all__ = ["SIMILARITIES", "UserKNNRanker"]

SIMILARITIES = ("likelihood", "cosine_chosen", "cosine_rejected", "cosine_difference")

# Float32 entries of one (comparisons x neighbours) block of the likelihood: 16 MiB,
# under glibc's largest mmap threshold (32 MiB), so that the blocks reuse freed
# heap memory instead of faulting in new pages each time.
_BLOCK_ENTRIES = 1 << 22
# Rows per block of the per-row passes of fit (the item-level table): 2 MiB per
# int64 temporary, where full-size ones (the candidates' rows, their utilities,
# 32 MB each at PersonalLLM's full size) would stay in the heap's resident memory.
_ROW_BLOCK = 1 << 18
# Candidate shares of item_imputation="auto".
IMPUTATIONS = np.array([0.0, 0.25, 0.5, 1.0])
# Summed weight of a row's labelers below which their labels are not imputed.
_LEAST_LABELER_WEIGHT = 1e-9
# Users whose neighbours are found together in predict.
_USERS_PER_CHUNK = 256


@fill_docstring
class UserKNNRanker(
    UserPreferenceMixin, PosteriorSamplingMixin, IncrementalRankerMixin, BaseRanker
):
    """Predict each user's utility from the historical users most similar to them.

    Every user with at least ``min_neighbor_prompts`` labeled prompts in ``fit`` is
    a candidate neighbour, with a preference ``neighbor_coef_[v]``: the Bradley-Terry
    weights on the item features fitted to that user's within-(user, prompt)
    comparisons and shrunk toward the population weights, as in
    :class:`~pllm_sk.baselines.PerUserRanker`. A user ``u`` is compared with every
    candidate ``v != u`` from ``u``'s own comparisons:

    - ``similarity="likelihood"`` (default): how well ``v``'s preference explains
      ``u``'s comparisons, ``sum_pairs log sigmoid(m)`` divided by a temperature
      ``T``, with ``m`` the margin of ``v``'s utility for the chosen over the
      rejected row. With
      ``weights="similarity"`` the weights ``exp(loglik)`` make the prediction the
      posterior mean of ``u``'s preference when the historical users are a sample
      of the prior (an empirical Bayes estimate).
    - ``"cosine_chosen"``, ``"cosine_rejected"``, ``"cosine_difference"``: the
      PersonalLLM paper's user representations, the mean item-feature vector of the
      rows a user chose (top label of a prompt), of the rows they rejected (bottom
      label), or chosen minus rejected, compared by cosine similarity.

    The ``n_neighbors`` most similar candidates are combined with ``weights``; the
    prediction for a row ``(u, p, r)`` is the weighted mean of the neighbours'
    utilities: ``sum_v a_uv * (neighbor_coef_[v] . x_pr + b_v(p, r))``.

    Item-level labels. ``b_v(p, r)`` is zero unless neighbour ``v`` labeled the same
    (prompt_id, response_id) in ``fit``; then it moves ``v``'s utility by twice the
    spread of ``v``'s utilities over that prompt's labeled rows times the row's label
    level (centred), which reproduces ``v``'s own order of the rows they labeled. The
    same term enters the likelihood, so two users who agreed on a shared prompt are
    close. It matters on the ids track (no feature columns), where the item features
    are a one-hot of ``response_id`` (the response slot, i.e. which LLM wrote it, as
    in :class:`~pllm_sk.baselines.PopulationRanker`): the back-off goes from
    neighbours' labels on the same (prompt, response) id, to neighbours'
    response-slot preferences, to the population. In the PersonalLLM benchmark a
    query prompt comes from the test split that no one labeled, so its rows always
    take the slot level; the support prompts, labeled by other users too, sharpen
    the similarity.

    Most neighbours never labeled a given prompt (a historical user labels 50 of
    thousands), so their ``b_v(p, r)`` is unknown rather than zero. In the
    prediction, the neighbours who did not label ``p`` are given the weighted mean
    of the shifts of those who did, in the share ``item_imputation``: with ``W`` the
    summed weight of the neighbours who labeled ``p`` and ``S`` their weighted sum
    of shifts, the term is ``S (W + c (1 - W)) / W``. ``c = 0`` keeps unknown labels
    at zero (the term is ``S``); ``c = 1`` predicts the labelers' weighted mean for
    everyone. ``"auto"`` chooses ``c`` among ``IMPUTATIONS`` on the held-out users
    below, by their top-1 accuracy on held-out prompts that other users labeled,
    with the ``"one_standard_error"`` rule of :func:`~pllm_sk.core.calibrate`: the
    least imputation that the held-out users cannot tell from the best. The
    accuracy is a step function of ``c`` and only the held-out prompts that
    neighbours labeled move it, so the best of the four values is a noisy pick
    among near-ties, and imputing labels that no neighbour gave is the choice
    that needs the evidence.

    Temperature: how strongly a new user's comparisons pull them away from the
    population (the neighbourhood's bandwidth). One best/worst choice yields many
    correlated pairs, features may explain choices exactly (the reward track) or
    only partly (noisy choices, the ids track), and the candidates' preferences are
    themselves estimates, so how much one pair counts is calibrated:
    ``temperature="auto"`` reveals a few prompts of held-out candidates
    (:func:`~pllm_sk.core.calibration_split`) and scores their held-out
    comparisons whose winner is the prompt's top choice by the posterior
    predictive probability ``sum_v a_uv(T) sigmoid(m_v)`` over the neighbours
    found from the revealed prompts (the user left out); the ``T`` of
    ``TEMPERATURES`` of best mean log-probability is refined by the
    ``"log2_parabola"`` rule of :func:`~pllm_sk.core.calibrate`, so the choice is
    deterministic for a ``random_state`` and moves little with it. ``shrinkage``
    only keeps the candidates' own fits finite (a prior on them, not on the new
    user).

    A user with no labeled rows in ``fit`` or ``partial_fit`` gets the population
    prediction ``population_coef_ . x``. Neighbours are
    found in ``predict`` for the users predicted, so ``fit`` costs
    ``O(n_comparisons * n_features)`` and ``predict`` costs
    ``O(n_comparisons of the predicted users * n_candidates)``.

    Parameters
    ----------
    n_neighbors : int, default=1000
        Neighbours per user, at most the number of candidates. With the default
        likelihood weights a far neighbour gets a negligible weight, so a large
        value makes the estimate a posterior mean over all candidates; with cosine
        similarity and uniform weights the paper's 5 to 20 are typical.
    similarity : {"likelihood", "cosine_chosen", "cosine_rejected", \
            "cosine_difference"}, default="likelihood"
        How users are compared; see above.
    weights : {"similarity", "uniform"} or callable, default="similarity"
        ``"similarity"``: ``exp(log-likelihood)`` for the likelihood, the cosine
        clipped at 0 for the cosines. ``"uniform"``: every neighbour counts the
        same. A callable gets the similarities, shape (n_users, n_neighbors), and
        returns non-negative weights of the same shape.
    temperature : "auto" or float, default="auto"
        Divides the log-likelihood of the likelihood similarity, > 0; ``"auto"``
        chooses it on held-out prompts of sampled candidates (see above). Ignored
        by the cosine similarities.
    item_imputation : "auto" or float, default="auto"
        Share in [0, 1] of the neighbours' unknown item-level labels that the
        labels of the neighbours who labeled the prompt stand in for (see above).
        ``"auto"`` calibrates it with the likelihood similarity and means 1 with
        the cosine similarities.
    shrinkage : float, default=0.01
        Penalty pulling each candidate's preference toward the population's, > 0.
    {population_alpha_parameter}
    min_neighbor_prompts : int, default=10
        Labeled prompts a user needs in ``fit`` to be a candidate neighbour, >= 1;
        users with fewer have too uncertain a preference to stand in for another
        user. At least two users must qualify.
    max_iter : int, default=100
        Newton iterations at most for the population and candidate preferences.
    random_state : int, RandomState instance or None, default=None
        Draws the users and prompts of the calibration (``"auto"`` temperature and
        item imputation).

    Attributes
    ----------
    {population_coef_attribute}
    neighbor_users_ : ndarray of int64
        The candidate neighbours' user ids, sorted.
    neighbor_coef_ : ndarray of shape (n_candidates, n_item_features)
        The candidates' preferences, in the order of ``neighbor_users_``.
    temperature_ : float or None
        Temperature of the likelihood similarity: ``temperature``, or the one chosen
        with ``"auto"`` (1.0 with uniform weights, which do not depend on it); None
        for the cosine similarities.
    item_imputation_ : float
        The share of unknown item-level labels imputed (chosen when ``"auto"``).
    {users_attribute}
    {n_response_slots_attribute}
    {input_attributes}

    See Also
    --------
    pllm_sk.collaborative.LowRankRanker : A low-rank model of all users' comparisons.
    pllm_sk.baselines.PerUserRanker : Each user's own comparisons only.
    pllm_sk.baselines.BayesRanker : The Bayes limit on the reward track.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.neighbors import UserKNNRanker
    >>> # Users 0-3 prefer a high "x", users 4-7 a low "x"; each labels 2 prompts.
    >>> rows = [(u, p, r, x) for u in range(8) for p in (2 * u, 2 * u + 1)
    ...         for r, x in enumerate([1.0, -1.0])]
    >>> X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id", "x"])
    >>> y = np.where((X.user_id < 4) == (X.x > 0), 1.0, 0.0)
    >>> knn = UserKNNRanker(n_neighbors=4, min_neighbor_prompts=2).fit(X, y)
    >>> new = pd.DataFrame({"user_id": [9, 9], "prompt_id": [50, 50],
    ...                     "response_id": [0, 1], "x": [1.0, -1.0]})
    >>> _ = knn.partial_fit(new, [0.0, 1.0])   # user 9 prefers a low x
    >>> neighbors, weights = knn.user_neighbors([9])
    >>> sorted(neighbors[0].tolist())
    [4, 5, 6, 7]
    >>> utility = knn.predict(new)
    >>> bool(utility[1] > utility[0])
    True
    """

    _completed_fit_attribute = "neighbor_coef_"

    _parameter_constraints = {
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "similarity": [StrOptions(set(SIMILARITIES))],
        "weights": [StrOptions({"similarity", "uniform"}), callable],
        "temperature": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="neither")],
        "item_imputation": [StrOptions({"auto"}), Interval(numbers.Real, 0, 1, closed="both")],
        "shrinkage": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "min_neighbor_prompts": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_neighbors=1000,
        *,
        similarity="likelihood",
        weights="similarity",
        temperature="auto",
        item_imputation="auto",
        shrinkage=0.01,
        alpha=1.0,
        min_neighbor_prompts=10,
        max_iter=100,
        random_state=None,
    ):
        self.n_neighbors = n_neighbors
        self.similarity = similarity
        self.weights = weights
        self.temperature = temperature
        self.item_imputation = item_imputation
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.min_neighbor_prompts = min_neighbor_prompts
        self.max_iter = max_iter
        self.random_state = random_state

    def _partial_fit(self, feedback):
        """Add the users' comparisons to what they gave before, neighbours fixed.

        The candidates, their preferences, the population and the temperature stay
        as ``fit`` left them; the comparisons (formed within the rows of this call)
        are added to the users' earlier ones, so their neighbours and predictions
        update.
        """
        items = feedback.compact_items
        structure = feedback.comparisons(required=False)
        pair_keys = _pair_keys(item_keys(feedback.ids, self._n_response_keys), structure)
        self._store = self._store.merged(
            self._user_comparisons(feedback.ids, structure, pair_keys, items=items)
        )
        self._representations = _merge_sums(
            self._representations, _choice_sums(items, structure)
        )
        self.users_ = self._store.users

    def _user_preference(self, positions):
        """The neighbours' weighted mean preference ``sum_v a_uv neighbor_coef_[v]``.

        Shape (n_users, n_item_features): the preference-level part of ``predict``
        (the item-level term ``b_v(p, r)`` of labeled items is not in it).
        """
        preference = np.empty((positions.size, self.neighbor_coef_.shape[1]))
        for start in range(0, positions.size, _USERS_PER_CHUNK):
            neighbors, weights = self._neighbors(positions[start : start + _USERS_PER_CHUNK])
            preference[start : start + neighbors.shape[0]] = np.einsum(
                "nk,nkf->nf", weights, self.neighbor_coef_[neighbors]
            )
        return preference

    def user_neighbors(self, user_ids):
        """The neighbours of each user and their weights (behind ``user_preference``).

        Not scikit-learn's ``kneighbors`` (which returns distances and indices of
        rows): the neighbours here are users, and their weights are what the
        prediction averages with.

        Parameters
        ----------
        user_ids : array-like of int, shape (n_users,)
            Users with labeled rows in ``fit`` or ``partial_fit``.

        Returns
        -------
        neighbors : ndarray of int64, shape (n_users, n_neighbors)
            Neighbour user ids, most similar first.
        weights : ndarray of shape (n_users, n_neighbors)
            Their weights in the prediction, summing to 1 per user.
        """
        check_is_fitted(self)
        user_ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        positions, known = self._store.positions(user_ids)
        if not known.all():
            raise ValueError(
                f"User {int(user_ids[~known][0])} has no labeled rows in fit or "
                "partial_fit, so it has no neighbours (predict gives it the population "
                "prediction)."
            )
        neighbors, weights = self._neighbors(positions)
        return self.neighbor_users_[neighbors], weights

    def _fit(self, feedback):
        ids, items = feedback.ids, feedback.compact_items
        self.n_response_slots_ = feedback.n_response_slots
        self._n_response_keys = int(ids[:, 2].max()) + 1
        structure = feedback.comparisons()
        winners, losers = structure.winners, structure.losers
        # In float32, as the store keeps them for predict.
        differences = pair_differences(items, winners, losers)
        # PopulationRanker's model: the cold-user prediction.
        self.population_coef_ = fit_population(feedback, self.alpha, self.max_iter)

        users = structure.users
        n_prompts = np.bincount(structure.group_user, minlength=users.size)
        is_candidate = n_prompts >= self.min_neighbor_prompts
        if is_candidate.sum() < 2:
            raise ValueError(
                f"{int(is_candidate.sum())} user(s) have at least "
                f"min_neighbor_prompts={self.min_neighbor_prompts} labeled prompts; "
                "UserKNNRanker needs at least 2 candidate neighbours. Lower "
                "min_neighbor_prompts or add users with more feedback."
            )
        self.neighbor_users_ = users[is_candidate]
        # Each row's (and pair's) candidate neighbour, -1 for the others' rows.
        user_candidate = np.where(is_candidate, np.cumsum(is_candidate) - 1, -1)
        row_candidate = np.take(user_candidate[structure.group_user], structure.group_of_row)
        self.neighbor_coef_ = fit_bradley_terry(
            differences,
            np.take(row_candidate, winners),
            self.neighbor_users_.size,
            l2=float(self.shrinkage),
            prior_mean=self.population_coef_,
            max_iter=self.max_iter,
        )
        keys = item_keys(ids, self._n_response_keys)
        # The per-row tables before the store, whose columns then take memory
        # that the tables' temporaries and the rows' keys have just freed.
        self._item_table = self._item_level_table(keys, items, structure, row_candidate)
        self._prompt_table = _prompt_table(ids, structure, row_candidate)
        del row_candidate
        self._representations = _choice_sums(items, structure)
        pair_keys = _pair_keys(keys, structure)
        del keys
        self._store = self._user_comparisons(
            ids, structure, pair_keys, differences=differences
        )
        del differences, pair_keys
        self.users_ = self._store.users
        self._candidate_representation = _normalized(
            self._represent(self._store.positions(self.neighbor_users_)[0])
        )
        self.temperature_, self.item_imputation_ = self._calibrate()

    def _predict(self, ids, features):
        items = item_features(ids, features, self.n_response_slots_)
        utility = items @ self.population_coef_
        for rows, local, neighbors, weights, item_term in self._neighborhoods(ids):
            coef = np.einsum("nk,nkf->nf", weights, self.neighbor_coef_[neighbors])
            utility[rows] = np.einsum("nf,nf->n", items[rows], coef[local]) + item_term
        return utility

    def _sample_y(self, ids, features, n_samples, rng):
        """Utility draws: one neighbour per draw, drawn with its weight.

        With the likelihood weights, the weights are the posterior over the
        candidates of an empirical-Bayes model whose prior is the candidates
        themselves (uniform), and ``predict`` is that posterior's mean: a draw of
        one neighbour by weight is an exact draw from the same posterior, whereas
        a bootstrap of the neighbourhood would only shrink around the mean. The
        item-level term is the same in every draw (its weighted value, as in
        ``predict``). A cold user draws a candidate uniformly (the prior), so the
        draws of a cold user average to the mean candidate preference, not to
        ``population_coef_``.
        """
        items = item_features(ids, features, self.n_response_slots_)
        users, row_user = np.unique(ids[:, 0], return_inverse=True)
        drawn = rng.randint(self.neighbor_users_.size, size=(users.size, n_samples))
        utility = np.einsum(
            "nf,nsf->ns", items, self.neighbor_coef_[drawn[row_user.reshape(-1)]]
        )
        for rows, local, neighbors, weights, item_term in self._neighborhoods(ids):
            cumulative = np.cumsum(weights, axis=1)
            uniform = rng.random_sample((weights.shape[0], n_samples))
            choice = np.minimum(
                (uniform[:, :, np.newaxis] > cumulative[:, np.newaxis, :]).sum(axis=2),
                weights.shape[1] - 1,
            )
            chosen = np.take_along_axis(neighbors, choice, axis=1)
            utility[rows] = (
                np.einsum("nf,nsf->ns", items[rows], self.neighbor_coef_[chosen[local]])
                + item_term[:, np.newaxis]
            )
        return utility

    def _neighborhoods(self, ids):
        """Per chunk of users with feedback: their rows and neighbourhoods.

        Yields
        ------
        rows : ndarray of int64
            Rows of ``ids`` of the chunk's users.
        local : ndarray of int64
            Each row's user, as an index into ``neighbors`` and ``weights``.
        neighbors, weights : ndarray of shape (n_chunk_users, k)
            From :meth:`_neighbors`.
        item_term : ndarray of shape (len(rows),)
            The item-level term of each row.
        """
        positions, known = self._store.positions(ids[:, 0])
        rows = np.flatnonzero(known)
        users, row_user = np.unique(positions[rows], return_inverse=True)
        keys = item_keys(ids[rows], self._n_response_keys)
        prompts = ids[rows, 1]
        # Users in chunks: the neighbours' weights take (users x n_neighbors) memory.
        for start in range(0, users.size, _USERS_PER_CHUNK):
            neighbors, weights = self._neighbors(users[start : start + _USERS_PER_CHUNK])
            in_chunk = (row_user >= start) & (row_user < start + _USERS_PER_CHUNK)
            local = row_user[in_chunk] - start
            item_term = self._item_level_term(
                keys[in_chunk], prompts[in_chunk], local, neighbors, weights
            )
            yield rows[in_chunk], local, neighbors, weights, item_term

    # ----------------------------------------------------------------- neighbours

    def _neighbors(self, positions):
        """Neighbour candidates (indices into ``neighbor_users_``) and weights.

        Returns
        -------
        neighbors : ndarray of int64, shape (n_users, k)
            Most similar first; never the user itself.
        weights : ndarray of shape (n_users, k)
            Non-negative, summing to 1 per user.
        """
        own = self._own_candidate(positions)
        if self.similarity == "likelihood":
            rows, counts = self._store.rows(positions)
            neighbors, loglik = self._likelihood_neighbors(rows, counts, own)
            return neighbors, self._neighbor_weights(loglik / self.temperature_)
        representation = _normalized(self._represent(positions))
        similarity = representation @ self._candidate_representation.T
        is_candidate = own >= 0
        similarity[np.flatnonzero(is_candidate), own[is_candidate]] = -np.inf
        top = np.argpartition(-similarity, self._n_neighbors() - 1, axis=1)
        top = top[:, : self._n_neighbors()]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-top_similarity, axis=1, kind="stable")
        neighbors = np.take_along_axis(top, order, axis=1)
        top_similarity = np.take_along_axis(top_similarity, order, axis=1)
        return neighbors, self._neighbor_weights(top_similarity)

    def _own_candidate(self, positions):
        """Each user's own index among the candidates, or -1."""
        own, is_candidate = positions_in(
            self.neighbor_users_, self._store.users[positions]
        )
        return np.where(is_candidate, own, -1)

    def _n_neighbors(self):
        # One fewer than the candidates, so that a candidate never needs itself.
        return min(int(self.n_neighbors), self.neighbor_users_.size - 1)

    def _neighbor_weights(self, similarity):
        finite = np.isfinite(similarity)
        if callable(self.weights):
            weights = np.asarray(
                self.weights(np.where(finite, similarity, 0.0)), dtype=np.float64
            )
            if weights.shape != similarity.shape or (weights < 0).any():
                raise ValueError(
                    "The weights callable must return non-negative weights of shape "
                    f"{similarity.shape}; got shape {weights.shape}."
                )
        elif self.weights == "uniform":
            weights = np.ones_like(similarity)
        elif self.similarity == "likelihood":
            weights = np.exp(similarity - similarity[:, :1])
        else:
            weights = np.clip(similarity, 0.0, None)
        weights = np.where(finite, weights, 0.0)
        # No positive weight (all cosines <= 0): every finite neighbour counts the same.
        empty = weights.sum(axis=1) == 0
        weights[empty] = finite[empty]
        return weights / weights.sum(axis=1, keepdims=True)

    def _represent(self, positions):
        """The ``similarity``'s user representation of the users at ``positions``."""
        chosen, rejected, n_choices = (
            part[positions] for part in self._representations[1:]
        )
        scale = 1.0 / np.maximum(n_choices, 1)[:, np.newaxis]
        if self.similarity == "cosine_chosen":
            return chosen * scale
        if self.similarity == "cosine_rejected":
            return rejected * scale
        return (chosen - rejected) * scale

    def _likelihood_neighbors(self, rows, counts, own):
        """The ``_n_neighbors()`` candidates of highest log-likelihood, exactly.

        The log-likelihood (temperature 1, item-level labels included) of each group
        of comparisons under each candidate's preference. When few of the candidates
        are kept, ``sum min(m, 0)``, an upper bound of ``sum log sigmoid(m)`` that
        costs no transcendental function, prunes the candidates that cannot make the
        top: the exact value is computed for the top candidates by the bound, and for
        any other candidate whose bound reaches the lowest of those exact values. When
        the bound prunes little (preferences of small norm, as on the ids track, keep
        the margins small and the bound loose), the search stops trying.

        Parameters
        ----------
        rows : ndarray of int64
            Comparison indices into the store, grouped.
        counts : ndarray of int64, shape (n_groups,)
            Size of each group; a group without comparisons has log-likelihood 0.
        own : ndarray of int64, shape (n_groups,)
            Candidate index to leave out of each group (the user itself), or -1.

        Returns
        -------
        neighbors : ndarray of int64, shape (n_groups, k)
            Candidate indices by decreasing log-likelihood.
        loglik : ndarray of shape (n_groups, k)
        """
        n_candidates = self.neighbor_users_.size
        k = self._n_neighbors()
        prune = 2 * k < n_candidates
        n_tried = n_pruned = 0
        coef = self.neighbor_coef_.astype(np.float32)
        columns = self._store.columns
        neighbors = np.empty((counts.size, k), dtype=np.int64)
        loglik = np.empty((counts.size, k))
        ends = np.cumsum(counts)
        starts = ends - counts
        group = 0
        while group < counts.size:
            # A block of whole groups of about _BLOCK_ENTRIES entries.
            stop = group + 1
            while (
                stop < counts.size
                and (ends[stop] - starts[group]) * n_candidates <= _BLOCK_ENTRIES
            ):
                stop += 1
            block = rows[starts[group] : ends[stop - 1]]
            margin = columns["difference"][block] @ coef.T
            self._add_item_level(
                margin, columns["winner_key"][block], columns["loser_key"][block]
            )
            for g in range(group, stop):
                group_margin = margin[starts[g] - starts[group] : ends[g] - starts[group]]
                if prune and counts[g]:
                    bound = np.minimum(group_margin, 0.0).sum(axis=0)
                    if own[g] >= 0:
                        bound[own[g]] = -np.inf
                    kept = np.argpartition(-bound, k - 1)[:k]
                    exact = _summed_log_sigmoid(group_margin[:, kept])
                    reaches = bound >= exact.min()
                    reaches[kept] = False
                    extra = np.flatnonzero(reaches)
                    kept = np.concatenate([kept, extra])
                    values = np.concatenate(
                        [exact, _summed_log_sigmoid(group_margin[:, extra])]
                    )
                    n_tried += 1
                    n_pruned += n_candidates - kept.size
                    # Give up after a few groups if less than half was pruned.
                    prune = n_tried < 8 or 2 * n_pruned >= n_tried * n_candidates
                else:
                    kept = np.arange(n_candidates)
                    values = _summed_log_sigmoid(group_margin)
                    if own[g] >= 0:
                        values[own[g]] = -np.inf
                best = np.argpartition(-values, k - 1)[:k]
                best = best[np.argsort(-values[best], kind="stable")]
                neighbors[g], loglik[g] = kept[best], values[best]
            group = stop
        return neighbors, loglik

    # ----------------------------------------------------------- item-level labels

    def _item_level_table(self, keys, items, structure, row_candidate):
        """Item-level utility shifts ``b_v(p, r)`` of the candidates' labeled rows.

        ``keys`` are the rows' item keys (see ``item_keys``). Rows are read block
        by block (see ``_ROW_BLOCK``).

        Returns
        -------
        table : tuple of ndarrays (keys, candidate, shift)
            Sorted by item key; rows with a zero shift are left out.
        """
        group, level = structure.group_of_row, structure.level
        spread, mean_level = self._group_spreads(items, structure, row_candidate)
        # A row's shift is 0 where its level is its prompt's mean level, and only
        # there: the other rows are kept, and their shifts computed.
        keep = np.concatenate(
            [
                np.flatnonzero(
                    (row_candidate[block] >= 0)
                    & (level[block] != np.take(mean_level, group[block]))
                    & (keys[block] >= 0)
                )
                + block.start
                for block in _row_blocks(group.size)
            ]
        )
        keep = np.take(keep, _stable_argsort(np.take(keys, keep)))
        kept_group = np.take(group, keep)
        # Twice the spread (and never 0): levels always beat the preference's order.
        shift = np.maximum(2.0 * spread, 1e-9)[kept_group] * (
            np.take(level, keep) - mean_level[kept_group]
        )
        return np.take(keys, keep), np.take(row_candidate, keep), shift

    def _group_spreads(self, items, structure, row_candidate):
        """Per (user, prompt) group: the spread of its candidate's utilities over
        its rows (0 for the groups of users who are not candidates) and its mean
        label level; shapes (n_groups,)."""
        group, level = structure.group_of_row, structure.level
        n_groups = structure.group_user.size
        low = np.full(n_groups, np.inf)
        high = np.full(n_groups, -np.inf)
        level_sum = np.zeros(n_groups)
        for block in _row_blocks(group.size):
            own = np.flatnonzero(row_candidate[block] >= 0)
            own += block.start
            own_group = np.take(group, own)
            utility = _row_utilities(
                items, own, self.neighbor_coef_, np.take(row_candidate, own)
            )
            np.minimum.at(low, own_group, utility)
            np.maximum.at(high, own_group, utility)
            # Sums of integer levels: exact in any order of the blocks.
            level_sum += np.bincount(group[block], weights=level[block], minlength=n_groups)
        spread = np.zeros(n_groups)
        labeled = np.isfinite(low)
        spread[labeled] = (high - low)[labeled]
        return spread, level_sum / np.bincount(group, minlength=n_groups)

    def _add_item_level(self, margin, winner_keys, loser_keys):
        """Add the candidates' item-level shifts to the margins of comparisons."""
        _, candidate, shift = self._item_table
        for keys, sign in ((winner_keys, 1.0), (loser_keys, -1.0)):
            which, entry = _matching_entries(self._item_table[0], keys)
            if which.size:
                np.add.at(
                    margin, (which, candidate[entry]), sign * shift[entry].astype(margin.dtype)
                )

    def _item_level_term(self, keys, prompts, row_user, neighbors, weights):
        """The neighbours' labels on each row's item, the others' imputed.

        ``S = sum_{v in L} a_uv b_v(p, r)`` over the neighbours ``L`` of the row's
        user who labeled its prompt, whose weights sum to ``W``; the neighbours who
        did not are given the weighted mean ``S / W`` of the others' shifts, in the
        share ``item_imputation_``: the term is ``S (W + c (1 - W)) / W``.
        """
        labeled, mass = self._item_level_sums(keys, prompts, row_user, neighbors, weights)
        return labeled * _imputation_factor(mass, self.item_imputation_)

    def _item_level_sums(self, keys, prompts, row_user, neighbors, weights):
        """Per row: ``sum_v a_uv b_v(p, r)`` and the weight of the neighbours who labeled ``p``.

        Parameters
        ----------
        keys : ndarray of int64, shape (n_rows,) or (n_sides, n_rows)
            Item key (see ``item_keys``) of each row; several sides of the same
            rows (the winners and the losers of comparisons) share the work.
        prompts : ndarray of int64, shape (n_rows,)
            Prompt id of each row.
        row_user : ndarray of int64, shape (n_rows,)
            Index of each row's user into ``neighbors`` and ``weights``.
        neighbors, weights : ndarray of shape (n_users, k)
            From :meth:`_neighbors`.

        Returns
        -------
        labeled : ndarray of shape of ``keys``
        mass : ndarray of shape (n_rows,)
        """
        n_candidates = self.neighbor_users_.size
        neighbor_key = (
            np.arange(neighbors.shape[0])[:, np.newaxis] * n_candidates + neighbors
        ).ravel()
        # Distinct keys: any sort gives the order of the stable one.
        order = _stable_argsort(neighbor_key)
        sorted_key = neighbor_key[order]
        flat_weights = weights.ravel()[order]

        def weight_of(row, candidate):
            # a_uv of each (row's user, candidate) pair; 0 when not a neighbour.
            if row.size == 0:
                return np.zeros(0)
            wanted = row_user[row] * n_candidates + candidate
            found = np.minimum(np.searchsorted(sorted_key, wanted), sorted_key.size - 1)
            return np.where(sorted_key[found] == wanted, flat_weights[found], 0.0)

        table_keys, table_candidate, shift = self._item_table
        labeled = np.empty(keys.shape)
        for side_keys, side_labeled in zip(np.atleast_2d(keys), np.atleast_2d(labeled)):
            row, entry = _matching_entries(table_keys, side_keys)
            side_labeled[:] = np.bincount(
                row,
                weights=weight_of(row, table_candidate[entry]) * shift[entry],
                minlength=prompts.size,
            )
        prompt_keys, prompt_candidate = self._prompt_table
        row, entry = _matching_entries(prompt_keys, prompts)
        mass = np.bincount(
            row, weights=weight_of(row, prompt_candidate[entry]), minlength=prompts.size
        )
        return labeled, mass

    # --------------------------------------------------------------- calibration

    def _calibrate(self):
        """``(temperature_, item_imputation_)``: as given, or calibrated when ``"auto"``.

        Both are chosen on the same held-out cold users (see the class docstring):
        the temperature first, on the preference-level margins, then the
        imputation, on the margins with the item-level term at that temperature.
        """
        likelihood = self.similarity == "likelihood"
        temperature = None if not likelihood else self.temperature
        imputation = self.item_imputation
        if not likelihood and imputation == "auto":
            imputation = 1.0  # no calibration users without a likelihood
        if temperature == "auto" and self.weights == "uniform":
            temperature = 1.0  # the order of the neighbours does not depend on T
        if temperature != "auto" and imputation != "auto":
            return _float_or_none(temperature), float(imputation)
        users = self._calibration_users()
        if users is None:
            return (
                1.0 if temperature == "auto" else float(temperature),
                1.0 if imputation == "auto" else float(imputation),
            )
        if temperature == "auto":
            temperature = calibrate(
                partial(self._temperature_scores, users),
                TEMPERATURES,
                rule="log2_parabola",
                vectorized=True,
            ).best
        if imputation == "auto":
            imputation = calibrate(
                partial(self._imputation_scores, users, float(temperature)),
                IMPUTATIONS,
                rule="one_standard_error",
                vectorized=True,
            ).best
        return float(temperature), float(imputation)

    def _calibration_users(self):
        """Held-out cold users and their neighbours on their revealed prompts.

        Returns
        -------
        users : _CalibrationUsers or None
            None when no candidate has two prompts.
        """
        candidates, _ = self._store.positions(self.neighbor_users_)
        positions, support, held_out = calibration_split(
            self._store, candidates, check_random_state(self.random_state)
        )
        if positions.size == 0:
            return None
        neighbors, loglik = self._likelihood_neighbors(
            support[0],
            np.bincount(support[1], minlength=positions.size),
            self._own_candidate(positions),
        )
        rows, owner = held_out
        is_top = self._store.columns["top"][rows]
        return _CalibrationUsers(positions.size, neighbors, loglik, rows[is_top], owner[is_top])

    def _temperature_scores(self, users, temperatures):
        """Mean held-out log predictive probability of each user at each temperature."""
        probability = self._predictive_probability(
            users.neighbors, users.loglik, users.rows, users.owner, temperatures
        )
        return log_likelihood_scores(probability, users.owner, users.n_users)

    def _imputation_scores(self, users, temperature, imputations):
        """Held-out top-1 accuracy of each user at each item imputation share."""
        columns = self._store.columns
        rows, owner = users.rows, users.owner
        prompts = columns["prompt"][rows]
        weights = self._neighbor_weights(users.loglik / temperature)
        (winner, loser), mass = self._item_level_sums(
            np.stack([columns["winner_key"][rows], columns["loser_key"][rows]]),
            prompts, owner, users.neighbors, weights,
        )
        scaled = (winner - loser)[:, np.newaxis] * _imputation_factor(
            mass[:, np.newaxis], imputations
        )
        # The preference-level margins at the temperature: (comparisons, 1).
        coef = np.einsum(
            "nk,nkf->nf", weights, self.neighbor_coef_[users.neighbors]
        )[:, np.newaxis]
        margins = np.einsum("nf,ntf->nt", columns["difference"][rows], coef[owner])
        return top_choice_accuracy(margins + scaled, prompts, owner, users.n_users)

    def _predictive_probability(self, neighbors, loglik, rows, owner, temperatures):
        """Predictive probability of held-out comparisons at each of ``temperatures``.

        ``sum_v a_uv(T) sigmoid(m_v)``: each neighbour's probability that the winner
        is chosen, averaged with the neighbours' weights at temperature ``T`` (with
        the likelihood weights, the posterior over the candidates of the
        empirical-Bayes model whose prior sample is the candidates).

        Parameters
        ----------
        neighbors, loglik : ndarray of shape (n_users, k)
            From :meth:`_likelihood_neighbors` on the users' support comparisons.
        rows : ndarray of int64
            Held-out comparison indices into the store, grouped by user.
        owner : ndarray of int64, sorted
            Index into ``neighbors`` of each held-out comparison's user.
        temperatures : ndarray of shape (n_temperatures,)

        Returns
        -------
        probability : ndarray of shape (len(rows), n_temperatures)
        """
        weights = np.stack(
            [self._neighbor_weights(loglik / t) for t in temperatures], axis=2
        )
        coef = self.neighbor_coef_.astype(np.float32)
        differences = self._store.columns["difference"]
        bounds = np.searchsorted(owner, np.arange(neighbors.shape[0] + 1))
        probability = np.empty((rows.size, len(temperatures)))
        # Small products, one per user: BLAS threads would cost more than they save
        # (as in scikit-learn's KMeans).
        with threadpool_limits(limits=1, user_api="blas"):
            for user, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
                if stop > start:
                    margin = differences[rows[start:stop]] @ coef[neighbors[user]].T
                    probability[start:stop] = expit(margin) @ weights[user]
        return probability

    # ------------------------------------------------------------------- helpers

    def _user_comparisons(self, ids, structure, pair_keys, *, items=None, differences=None):
        """The store of comparisons, from the item keys of their winners and losers
        (``pair_keys``, from ``_pair_keys``) and either the rows' ``items`` or the
        comparisons' float32 item ``differences`` when already computed."""
        if differences is None:
            differences = pair_differences(items, structure.winners, structure.losers)
        winner_key, loser_key = pair_keys
        return UserComparisons.from_comparisons(
            ids, structure, difference=differences, winner_key=winner_key,
            loser_key=loser_key,
        )


class _CalibrationUsers(NamedTuple):
    """Held-out cold users of the calibration, from :meth:`UserKNNRanker._calibration_users`.

    ``neighbors`` and ``loglik`` (n_users, k) are found from each user's revealed
    prompts; ``rows`` are their held-out comparisons whose winner is the prompt's
    top choice (indices into the store), ``owner`` each one's user, sorted.
    """

    n_users: int
    neighbors: np.ndarray
    loglik: np.ndarray
    rows: np.ndarray
    owner: np.ndarray


def _choice_sums(items, structure):
    """Per user: summed item features of chosen and of rejected rows, and the count.

    A prompt's chosen rows are those with its top label and its rejected rows those
    with its bottom label (each averaged within the prompt); a prompt with one label
    level gives no choice.

    Returns
    -------
    sums : tuple (users, chosen_sum, rejected_sum, n_choices)
    """
    group, level = structure.group_of_row, structure.level
    top = structure.n_levels - 1
    users, group_user = structure.users, structure.group_user
    top_of_row = np.take(top, group)
    has_choice = top_of_row > 0
    sums = []
    for selected in (has_choice & (level == top_of_row), has_choice & (level == 0)):
        rows = np.flatnonzero(selected)
        selected_group = np.take(group, rows)
        n_rows = np.bincount(selected_group, minlength=top.size)
        share = 1.0 / np.take(n_rows, selected_group)
        owner = np.take(group_user, selected_group)
        sums.append(
            np.column_stack(
                [
                    np.bincount(owner, weights=column * share, minlength=users.size)
                    for column in np.take(items, rows, axis=0).T
                ]
            ).reshape(users.size, items.shape[1])
        )
    n_choices = np.bincount(group_user, weights=(top > 0).astype(float), minlength=users.size)
    return users, sums[0], sums[1], n_choices


def _pair_keys(keys, structure):
    """The item keys (see ``item_keys``) of the comparisons' winners and losers,
    from the rows' ``keys``: the rows' keys can be freed before the store is built."""
    return np.take(keys, structure.winners), np.take(keys, structure.losers)


def _merge_sums(old, new):
    """Per-user sums of two ``_choice_sums`` results, over the union of their users."""
    users = np.union1d(old[0], new[0])
    merged = [np.zeros((users.size,) + part.shape[1:]) for part in old[1:]]
    for part in (old, new):
        position = np.searchsorted(users, part[0])
        for total, values in zip(merged, part[1:]):
            total[position] += values
    return (users, *merged)


def _summed_log_sigmoid(margin):
    """``sum(log(sigmoid(margin)), axis=0)`` in float64."""
    return log_sigmoid(margin).sum(axis=0, dtype=np.float64)


def _normalized(vectors):
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)


def _prompt_table(ids, structure, row_candidate):
    """(prompt ids, candidate) of every prompt a candidate neighbour labeled, sorted."""
    n_groups = structure.group_user.size
    prompt = np.empty(n_groups, dtype=np.int64)
    prompt[structure.group_of_row] = ids[:, 1]
    candidate = np.full(n_groups, -1, dtype=np.int64)
    candidate[structure.group_of_row] = row_candidate
    keep = np.flatnonzero(candidate >= 0)
    keep = np.take(keep, _stable_argsort(np.take(prompt, keep)))
    return np.take(prompt, keep), np.take(candidate, keep)


def _stable_argsort(keys):
    """``np.argsort(keys, kind="stable")`` of integer keys, faster when they are small.

    Non-negative keys below ``2**32`` are sorted by two stable passes on 16-bit
    digits, low then high: NumPy's stable sort of 16-bit integers is a radix
    sort, linear in the keys (four times faster than the merge sort of int64
    keys at a million keys).
    """
    if keys.size == 0 or keys.min() < 0 or keys.max() >= 1 << 32:
        return np.argsort(keys, kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    high = np.take(keys, order) >> 16
    if not high.any():
        return order
    return np.take(order, np.argsort(high.astype(np.uint16), kind="stable"))


def _row_utilities(items, rows, coef, candidate, block=1 << 15):
    """``items[rows[i]] @ coef[candidate[i]]`` for every ``i``, block by block.

    Each block gathers its rows and their candidates' coefficients (a few MiB),
    multiplies them feature-major in float64, then sums feature by feature, in
    the order of a loop over the columns: the (rows x features) gathers of all
    rows at once would be memory new to the process, and columns of row-major
    blocks are strided reads.
    """
    utility = np.zeros(rows.size)
    for start in range(0, rows.size, block):
        products = np.take(items, rows[start : start + block], axis=0).T.astype(np.float64)
        products *= np.take(coef, candidate[start : start + block], axis=0).T
        u = utility[start : start + block]
        for column in products:
            u += column
    return utility


def _row_blocks(n_rows):
    """Slices of ``_ROW_BLOCK`` consecutive rows covering ``range(n_rows)``."""
    return [slice(start, start + _ROW_BLOCK) for start in range(0, n_rows, _ROW_BLOCK)]


def _matching_entries(table_keys, keys):
    """Entries of a sorted table matching ``keys``: (index into keys, table entry)."""
    low = np.searchsorted(table_keys, keys, side="left")
    high = np.searchsorted(table_keys, keys, side="right")
    n_matches = high - low
    total = int(n_matches.sum())
    which = np.repeat(np.arange(keys.size), n_matches)
    entry = np.repeat(low, n_matches) + (
        np.arange(total) - np.repeat(np.cumsum(n_matches) - n_matches, n_matches)
    )
    return which, entry


def _imputation_factor(mass, imputation):
    """``(W + c (1 - W)) / W``, and 0 where ``W`` is (about) 0.

    Below ``_LEAST_LABELER_WEIGHT`` the neighbours who labeled the item carry no
    weight worth extrapolating from (and ``1 / W`` would overflow to inf, then
    NaN in ``S * inf``, a margin that no comparison can fail).
    """
    mass = np.asarray(mass, dtype=np.float64)
    known = mass > _LEAST_LABELER_WEIGHT
    safe = np.where(known, mass, 1.0)
    return np.where(known, (mass + imputation * (1.0 - mass)) / safe, 0.0)


def _float_or_none(value):
    return None if value is None else float(value)
