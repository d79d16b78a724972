"""A low-rank model of user utility, learned from every user's comparisons."""

import numbers

import numpy as np
from scipy.special import expit
from sklearn.utils import check_random_state

from ..base import (
    BaseRanker,
    IncrementalRankerMixin,
    PosteriorSamplingMixin,
    SampleWeightMixin,
    UserPreferenceMixin,
)
from ..core import UserComparisons, item_features, item_keys, pair_differences
from ..utils import Interval, StrOptions, fill_docstring
from ._prior import (
    HeldOutComparisons,
    choose_prior,
    component_posteriors,
    posterior_factors,
    stored_weights,
)
from ._solvers import embedded_items, factor_vectors, fit_factorization

__all__ = ["LowRankRanker"]

# Users sampled for temperature="auto", and held-out prompts per user at most.
_CALIBRATION_USERS = 160
_HELD_OUT_PROMPTS = 10
# Candidate numbers of prior components of n_components="auto".
N_COMPONENTS = (16, 32)
# Prior users the mixture is fitted to at most (a random sample of them beyond).
_MIXTURE_USERS = 5_000

_POSITIVE = Interval(numbers.Real, 0, None, closed="neither")
_AT_LEAST_ONE = Interval(numbers.Integral, 1, None, closed="left")


@fill_docstring
class LowRankRanker(
    SampleWeightMixin,
    IncrementalRankerMixin,
    PosteriorSamplingMixin,
    UserPreferenceMixin,
    BaseRanker,
):
    """Low-rank utility ``u_user . (A x_item + e_item)``, folded in per user.

    The utility of row ``(u, p, r)`` is ``factor_u . v_pr`` with a user factor of
    dimension ``rank`` and an item factor ``v_pr = basis_ @ x_pr (+ e_pr)``: a
    learned linear map of the item's feature columns (on the ids track, a one-hot
    of ``response_id``, the response slot, as in
    :class:`~pllm_sk.baselines.PopulationRanker`), plus, with
    ``item_embeddings=True``, a free embedding per (prompt_id, response_id) labeled
    in ``fit`` (zero for any other item, which then gets the feature-level factor).

    Fitting the population part (``fit``):

    1. All users' factors and the item map minimise the Bradley-Terry loss of every
       within-(user, prompt) comparison plus ``user_l2 * ||u||^2``,
       ``basis_l2 * ||A||^2`` and ``embedding_l2 * ||e||^2``. When ``rank`` is at
       least the number of item features and there are no embeddings, the map is
       the identity without loss of generality (any invertible map folds into the
       user factors) and one batched Newton solve per user is exact; it solves
       the users the prior's mixture is fitted to (step 2), the only factors used
       then. Otherwise the solver alternates a Newton step for the users (one
       ``rank x rank`` block per user), one for the map and a block-Jacobi one
       for the embeddings (one block per item); the users' and the embeddings'
       steps start at 1.5 times the Newton step and are halved per user, and per
       group of items that share comparisons, until that part of the objective
       falls. After each alternation the factors move to the gauge (an
       invertible ``rank x rank`` map between users and items) that minimises the
       penalties, margins unchanged. The map starts from the truncated SVD of
       per-user weights, the embeddings from the truncated SVD of the users x
       items matrix of net wins; each of the ``max_iter`` alternations passes
       over every comparison about a dozen times (about 0.3 s at the default
       benchmark's 689k comparisons and 75k items), so this path is the slow one.
    2. A prior over user factors is learned from the users with at least
       ``min_prior_prompts`` labeled prompts: a Gaussian mixture with
       ``n_components_`` full-covariance components (one component is a Gaussian
       prior), since preferences in PersonalLLM sit near the faces of the simplex,
       which a single Gaussian describes poorly. Beyond 5,000 prior users the mixture is
       fitted to a random 5,000 of them.

    Folding a user in (``predict``, LoRe-style: the basis frozen, only the user's
    factor fitted): for each prior component the MAP factor of the user's
    comparisons with that component as prior, and its Laplace evidence; the user's
    factor is the mean of the component MAPs weighted by their posterior
    probabilities. Every user with feedback is folded in the same way, whether the
    feedback came in ``fit`` or in ``partial_fit``; a user without comparisons gets
    the prior mean ``population_factor_``, and a user without labeled rows the
    population prediction ``population_coef_ . x``.

    Choosing the prior (``n_components="auto"``, ``temperature="auto"``). The
    comparisons' log-likelihood is divided by ``temperature``: how strongly a new
    user's comparisons pull them away from the prior. Both are chosen on held-out
    prompts of up to 160 sampled prior users, who reveal 1, 2, 3 or 5 prompts as a
    cold-start user would and are folded in; up to 10 of their other prompts are
    scored by the posterior predictive probability of their comparisons whose
    winner is the prompt's top choice (the Laplace approximation of each
    component's posterior, weighted by the components' posterior probabilities;
    see :func:`~pllm_sk.core.laplace_predictive`), in mean
    log-probability over users. The smallest of ``N_COMPONENTS`` is scored at every
    second value of ``TEMPERATURES``, the other candidates (each a mixture fitted
    to the same factors) at the best of those; the best candidate is kept, and its
    temperature climbs the full grid while a neighbour scores better, then is
    refined between grid points (the vertex of a parabola in ``log2 T``). The
    choice is deterministic for a ``random_state``; both choices are made by
    :func:`~pllm_sk.core.calibrate`.

    Parameters
    ----------
    rank : int, default=10
        Dimension of the user and item factors, >= 1.
    n_components : "auto" or int, default="auto"
        Components of the Gaussian-mixture prior over user factors, >= 1 (at most
        the number of prior users); ``"auto"`` chooses among ``N_COMPONENTS`` on
        held-out prompts (see above).
    temperature : "auto" or float, default="auto"
        Divides the log-likelihood in the fold-in, > 0; ``"auto"`` chooses it on
        held-out prompts (see above).
    user_l2 : float, default=0.01
        L2 penalty on the user factors in ``fit``, > 0.
    basis_l2 : float, default=1.0
        L2 penalty on the item map, > 0 (used when the map is learned).
    item_embeddings : bool, default=False
        Learn a free embedding per labeled (prompt_id, response_id).
    embedding_l2 : float, default=1.0
        L2 penalty on the embeddings, > 0.
    max_iter : int, default=10
        Alternations at most when the map or the embeddings are learned.
    tol : float, default=1e-4
        Stop alternating when the objective improves by less than this fraction.
    min_prior_prompts : int, default=10
        Labeled prompts a user needs to shape the prior, >= 1; when fewer than two
        users qualify, every user with comparisons does.
    random_state : int, RandomState instance or None, default=None
        Seeds the mixture fits and the calibration users and prompts.

    Attributes
    ----------
    rank_ : int
        Factor dimension used: ``min(rank, n_item_features)`` without embeddings.
    basis_ : ndarray of shape (rank_, n_item_features)
        The item map ``A``.
    item_keys_ : ndarray of int64
        ``prompt_id * n_response_keys + response_id`` of the embedded items, sorted
        (empty without embeddings).
    item_embedding_ : ndarray of shape (n_items, rank_)
        Their embeddings.
    user_factors_ : ndarray of shape (n_fit_users, rank_)
        Factors of the users of ``fit`` from the joint fit, which shaped the map and
        the prior (predictions use the fold-in). With the identity map
        (``n_iter_ == 0``) only the factors the mixture prior was fitted to are
        solved; the other rows are NaN.
    n_components_ : int
        Components of the prior: ``n_components`` (or the one chosen with
        ``"auto"``), at most the number of prior users.
    prior_weights_ : ndarray of shape (n_components_,)
    prior_means_ : ndarray of shape (n_components_, rank_)
    prior_covariances_ : ndarray of shape (n_components_, rank_, rank_)
        The Gaussian-mixture prior over user factors.
    population_factor_ : ndarray of shape (rank_,)
        The prior mean factor.
    population_coef_ : ndarray of shape (n_item_features,)
        ``basis_.T @ population_factor_``: the cold-user weights on item features.
    temperature_ : float
        Temperature of the fold-in: ``temperature``, or the one chosen with
        ``"auto"``.
    n_iter_ : int
        Alternations run (0 when the map is the identity).
    {users_attribute}
    {n_response_slots_attribute}
    {input_attributes}

    See Also
    --------
    pllm_sk.neighbors.UserKNNRanker : Predict from the most similar users.
    pllm_sk.baselines.PerUserRanker : Each user's own comparisons only.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.collaborative import LowRankRanker
    >>> # Users 0-5 prefer a high "x", users 6-11 a low "x"; each labels 3 prompts.
    >>> rows = [(u, 3 * u + q, r, x) for u in range(12) for q in range(3)
    ...         for r, x in enumerate([1.0, -1.0])]
    >>> X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id", "x"])
    >>> y = np.where((X.user_id < 6) == (X.x > 0), 1.0, 0.0)
    >>> model = LowRankRanker(rank=1, n_components=2, min_prior_prompts=3,
    ...                       random_state=0).fit(X, y)
    >>> new = pd.DataFrame({"user_id": [20, 20], "prompt_id": [99, 99],
    ...                     "response_id": [0, 1], "x": [1.0, -1.0]})
    >>> _ = model.partial_fit(new, [0.0, 1.0])   # user 20 prefers a low x
    >>> utility = model.predict(new)
    >>> bool(utility[1] > utility[0])
    True
    >>> model.user_preference([20]).shape   # its folded-in factor
    (1, 1)
    """

    _completed_fit_attribute = "basis_"

    _parameter_constraints = {
        "rank": [_AT_LEAST_ONE],
        "n_components": [StrOptions({"auto"}), _AT_LEAST_ONE],
        "temperature": [StrOptions({"auto"}), _POSITIVE],
        "user_l2": [_POSITIVE],
        "basis_l2": [_POSITIVE],
        "item_embeddings": ["boolean"],
        "embedding_l2": [_POSITIVE],
        "max_iter": [_AT_LEAST_ONE],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "min_prior_prompts": [_AT_LEAST_ONE],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        rank=10,
        *,
        n_components="auto",
        temperature="auto",
        user_l2=0.01,
        basis_l2=1.0,
        item_embeddings=False,
        embedding_l2=1.0,
        max_iter=10,
        tol=1e-4,
        min_prior_prompts=10,
        random_state=None,
    ):
        self.rank = rank
        self.n_components = n_components
        self.temperature = temperature
        self.user_l2 = user_l2
        self.basis_l2 = basis_l2
        self.item_embeddings = item_embeddings
        self.embedding_l2 = embedding_l2
        self.max_iter = max_iter
        self.tol = tol
        self.min_prior_prompts = min_prior_prompts
        self.random_state = random_state

    def partial_fit(self, X, y, sample_weight=None):
        """Add the weighted feedback of new or returning users; the population stays fixed.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows with the same feature columns as in ``fit``.
        y : array-like of shape (n_rows,)
            Feedback labels; NaN marks an unlabeled row, which is ignored.
        sample_weight : array-like of shape (n_rows,), default=None
            Non-negative weight of each row, as in :meth:`fit`.

        Returns
        -------
        self : object
        """
        return self._partial_fit_labeled(X, y, sample_weight)

    # ------------------------------------------------------------------ fitting

    def _fit(self, feedback):
        rng = check_random_state(self.random_state)
        ids, structure = feedback.ids, feedback.comparisons()
        # Float32 feature columns stay so: their differences are float32 anyway.
        items = feedback.compact_items
        winners, losers = structure.winners, structure.losers
        n_response_keys = int(ids[:, 2].max()) + 1
        keys = item_keys(ids, n_response_keys)
        embedded, pair_items = np.empty(0, dtype=np.int64), None
        if self.item_embeddings:
            embedded, pair_items = embedded_items(keys, winners, losers)
        rank = int(self.rank) if self.item_embeddings else min(int(self.rank), items.shape[1])
        pair_user = structure.group_user[structure.group_of_row[winners]]
        prior_users, sample = self._prior_sample(structure, pair_user, rng)
        # In float32, as the store keeps them for the fold-in.
        differences = pair_differences(items, winners, losers)
        factorization = fit_factorization(
            differences,
            pair_user,
            structure.users.size,
            pair_items,
            embedded.size,
            rank,
            user_l2=self.user_l2,
            basis_l2=self.basis_l2,
            embedding_l2=self.embedding_l2,
            max_iter=self.max_iter,
            tol=self.tol,
            pair_weight=feedback.pair_weight,
            solved_users=sample,  # with the identity map, the prior's users alone
        )
        if factorization.n_iter:  # else the map is the identity: vectors = differences
            vectors = factor_vectors(
                feedback.items, factorization.basis, embedded, factorization.embedding, keys
            )
            differences = pair_differences(vectors, winners, losers)
        store = _store(ids, structure, differences, feedback.pair_weight)
        del differences
        prior, temperature = self._fit_prior(
            store, structure.users[prior_users], factorization.user_factors[sample], rng
        )

        self.n_response_slots_ = feedback.n_response_slots
        self._n_response_keys = n_response_keys
        self.rank_ = rank
        self.basis_ = factorization.basis
        self.item_keys_ = embedded
        self.item_embedding_ = factorization.embedding
        self.user_factors_ = factorization.user_factors
        self.n_iter_ = factorization.n_iter
        self._store, self.users_ = store, store.users
        self._prior = prior
        self.prior_weights_, self.prior_means_ = prior.weights, prior.means
        self.prior_covariances_ = prior.covariances
        self.n_components_ = prior.weights.size
        self.population_factor_ = prior.weights @ prior.means
        self.population_coef_ = self.basis_.T @ self.population_factor_
        self.temperature_ = temperature

    def _prior_sample(self, structure, pair_user, rng):
        """The users who shape the prior, and the sample the mixture is fitted to.

        Prior users have comparisons and at least ``min_prior_prompts`` prompts
        (every user with comparisons when fewer than two qualify); beyond
        ``_MIXTURE_USERS`` of them the mixture is fitted to a random sample.

        Returns
        -------
        prior_users : ndarray of bool, shape (n_users,)
            Over ``structure.users``.
        sample : ndarray of int64
            Positions in ``structure.users`` of the mixture's users, sorted.
        """
        n_users = structure.users.size
        n_prompts = np.bincount(structure.group_user, minlength=n_users)
        has_comparisons = np.bincount(pair_user, minlength=n_users) > 0
        prior_users = has_comparisons & (n_prompts >= self.min_prior_prompts)
        if prior_users.sum() < 2:
            prior_users = has_comparisons
        sample = np.flatnonzero(prior_users)
        if sample.size > _MIXTURE_USERS:
            chosen = rng.choice(sample.size, _MIXTURE_USERS, replace=False)
            sample = sample[np.sort(chosen)]
        return prior_users, sample

    def _fit_prior(self, store, prior_users, sample, rng):
        """The mixture prior and the fold-in temperature (see "Choosing the prior").

        Parameters
        ----------
        store : UserComparisons
        prior_users : ndarray of int64
            Ids of the users who shape the prior (the calibration users among them).
        sample : ndarray of shape (n_sample, rank)
            The factors the mixtures are fitted to.
        rng : RandomState

        Returns
        -------
        prior : MixturePrior
        temperature : float
        """
        if self.n_components == "auto":
            candidates = [k for k in N_COMPONENTS if k <= sample.shape[0]]
            candidates = candidates or [sample.shape[0]]
        else:
            candidates = [min(int(self.n_components), sample.shape[0])]
        tune = self.temperature == "auto"
        held_out = None
        if len(candidates) > 1 or tune:
            held_out = HeldOutComparisons(
                store,
                store.positions(prior_users)[0],
                rng,
                _CALIBRATION_USERS,
                _HELD_OUT_PROMPTS,
            )
        temperature = None if tune else float(self.temperature)
        return choose_prior(sample, candidates, temperature, held_out, rng, self.user_l2)

    def _partial_fit(self, feedback):
        """Add the users' comparisons to what they gave before, to be folded in.

        The item map, the embeddings, the prior and the temperature stay as ``fit``
        left them; the comparisons (formed within the rows of this call) are added
        to the users' earlier ones, so their factors and predictions update.
        """
        ids, structure = feedback.ids, feedback.comparisons(required=False)
        vectors = pair_differences(
            self._item_vectors(ids, feedback.items), structure.winners, structure.losers
        )
        self._store = self._store.merged(
            _store(ids, structure, vectors, feedback.pair_weight)
        )
        self.users_ = self._store.users

    # --------------------------------------------------------------- prediction

    def _predict(self, ids, features):
        item_vectors = self._item_vectors(
            ids, item_features(ids, features, self.n_response_slots_)
        )
        positions, known = self._store.positions(ids[:, 0])
        factors = np.tile(self.population_factor_, (ids.shape[0], 1))
        if known.any():
            users, row_user = np.unique(positions[known], return_inverse=True)
            factors[known] = self._user_preference(users)[row_user]
        return np.einsum("nr,nr->n", item_vectors, factors)

    def _user_preference(self, positions):
        """Folded-in factors of the users at ``positions`` of ``users_``."""
        rows, counts = self._store.rows(positions)
        return posterior_factors(
            self._prior,
            self._store.columns["vector"][rows],
            np.repeat(np.arange(positions.size), counts),
            positions.size,
            self.temperature_,
            sample_weight=stored_weights(self._store, rows),
        )

    def _cold_user_preference(self):
        return self.population_factor_

    def _sample_y(self, ids, features, n_samples, rng):
        """Utility draws: a user's factor drawn from the Laplace mixture posterior.

        Per user: a prior component drawn with its posterior probability (the
        weights that average the component MAPs in ``predict``), then a factor from
        the Gaussian at that component's MAP with the inverse Hessian of its
        objective (the Laplace approximation); a user without comparisons draws
        from the mixture prior. The draws' mean is the ``predict`` factor.
        """
        items = item_features(ids, features, self.n_response_slots_)
        item_vectors = self._item_vectors(ids, items)
        users, row_user = np.unique(ids[:, 0], return_inverse=True)
        positions, known = self._store.positions(users)
        rows, counts = self._store.rows(positions[known])
        groups = np.repeat(np.flatnonzero(known), counts)
        vectors = self._store.columns["vector"][rows].astype(np.float64)
        pair_weight = stored_weights(self._store, rows)
        coef, posterior = component_posteriors(
            self._prior, vectors, groups, users.size, self.temperature_,
            sample_weight=pair_weight,
        )
        # Hessian of each (user, component) objective at its MAP.
        hessian = np.array(
            np.broadcast_to(self._prior.precisions, coef.shape + (self.rank_,))
        )
        margin = np.einsum("pr,pcr->pc", vectors, coef[groups])
        curvature = expit(margin) * expit(-margin) / self.temperature_
        if pair_weight is not None:
            curvature *= pair_weight[:, np.newaxis]
        outer = vectors[:, :, np.newaxis] * vectors[:, np.newaxis, :]
        for component in range(coef.shape[1]):
            np.add.at(
                hessian[:, component],
                groups,
                curvature[:, component, np.newaxis, np.newaxis] * outer,
            )
        cumulative = np.cumsum(posterior, axis=1)
        uniform = rng.random_sample((users.size, n_samples))
        component = np.minimum(
            (uniform[:, :, np.newaxis] > cumulative[:, np.newaxis, :]).sum(axis=2),
            coef.shape[1] - 1,
        )
        user = np.arange(users.size)[:, np.newaxis]
        # x = L^-T z has covariance (L L^T)^-1 = H^-1.
        lower = np.linalg.cholesky(hessian)[user, component]
        noise = rng.standard_normal((users.size, n_samples, self.rank_, 1))
        factors = coef[user, component] + np.linalg.solve(
            np.swapaxes(lower, -1, -2), noise
        )[..., 0]
        return np.einsum("nr,nsr->ns", item_vectors, factors[row_user.reshape(-1)])

    def _item_vectors(self, ids, items):
        """Item factors ``basis_ @ x (+ e)`` of rows with item features ``items``."""
        if self.n_iter_ == 0:
            return items  # no alternation ran: the map is the identity
        keys = item_keys(ids, self._n_response_keys) if self.item_keys_.size else None
        return factor_vectors(items, self.basis_, self.item_keys_, self.item_embedding_, keys)


def _store(ids, structure, vectors, pair_weight):
    """The comparisons of ``structure`` by user, with their factor-space ``vectors``
    (float32) and weights."""
    return UserComparisons.from_comparisons(
        ids,
        structure,
        vector=vectors,
        weight=np.ones(structure.winners.size) if pair_weight is None else pair_weight,
    )
