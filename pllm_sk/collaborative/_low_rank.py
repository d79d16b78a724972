"""A low-rank model of user utility, learned from every user's comparisons."""

import numbers

import numpy as np
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..base import (
    BaseRanker,
    IncrementalRankerMixin,
    PosteriorSamplingMixin,
    SampleWeightMixin,
)
from ..core import (
    TEMPERATURES,
    UserComparisons,
    best_grid_value,
    calibration_split,
    comparisons,
    count_response_slots,
    fit_bradley_terry,
    item_features,
    item_keys,
    laplace_predictive,
    log_likelihood_scores,
    pair_differences,
    pair_weights,
    require_comparisons,
)
from ..utils import Interval, StrOptions, fill_docstring

__all__ = ["LowRankRanker"]

# Users sampled for temperature="auto", and held-out prompts per user at most.
_CALIBRATION_USERS = 160
_HELD_OUT_PROMPTS = 10
# Candidate numbers of prior components of n_components="auto".
N_COMPONENTS = (16, 32)
# Prior users the mixture is fitted to at most (a random sample of them beyond).
_MIXTURE_USERS = 5_000


@fill_docstring
class LowRankRanker(
    SampleWeightMixin, IncrementalRankerMixin, PosteriorSamplingMixin, BaseRanker
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
       user factors) and one batched Newton solve per user is exact. Otherwise the
       solver alternates batched Newton steps for the users, L-BFGS for the map and
       block-Jacobi Newton steps for the embeddings (one ``rank x rank`` block per
       item), starting from the truncated SVD of per-user weights; each of the
       ``max_iter`` alternations passes over every comparison a few dozen times, so
       this path is the slow one at the paper's full size.
    2. A prior over user factors is learned from the users with at least
       ``min_prior_prompts`` labeled prompts: a Gaussian mixture with
       ``n_components_`` full-covariance components (one component is a Gaussian
       prior). Preferences in PersonalLLM sit near the faces of the simplex, which
       a single Gaussian describes poorly: at one prompt it closed 0.67 of the Bayes
       limit's gap where 16 components closed 0.98. Beyond 5,000 prior users the
       mixture is fitted to a random 5,000 of them: at the paper's full size
       (10,000 historical users) this took 0.8 s off the fit, and the gap closed by
       2,000 new users at 1, 3, 5 and 10 prompts moved by -0.000 to +0.003 (two
       seeds).

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
    see :func:`~pllm_sk.core._calibration.laplace_predictive`), in mean
    log-probability over users. The smallest of ``N_COMPONENTS`` is scored at every
    second value of ``TEMPERATURES``, the other candidates (each a mixture fitted
    to the same factors) at the best of those; the best candidate is kept, and its
    temperature climbs the full grid while a neighbour scores better, then is
    refined between grid points (the vertex of a parabola in ``log2 T``). The
    choice is deterministic for a ``random_state``. A proper, smooth score of the
    prediction replaced the share of held-out choices predicted with the 1-SE
    rule, which chose the most cautious temperature of a noisy band (one-shot
    users then stayed near the population: with Bradley-Terry feedback, 2,000
    historical users of the low-rank world, it chose ``T=2``, 0.82 of the Bayes
    limit's gap closed at one prompt on 1,000 test users, where this choice closes
    0.92). In the worlds tried
    (``benchmarks/robustness.py``) 32 components scored best nearly everywhere.

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
        the prior (predictions use the fold-in).
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
    """

    _completed_fit_attribute = "basis_"

    _parameter_constraints = {
        "rank": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_components": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "temperature": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="neither")],
        "user_l2": [Interval(numbers.Real, 0, None, closed="neither")],
        "basis_l2": [Interval(numbers.Real, 0, None, closed="neither")],
        "item_embeddings": ["boolean"],
        "embedding_l2": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "min_prior_prompts": [Interval(numbers.Integral, 1, None, closed="left")],
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

    def _partial_fit(self, feedback):
        """Add the users' comparisons to what they gave before, to be folded in.

        The item map, the embeddings, the prior and the temperature stay as ``fit``
        left them; the comparisons (formed within the rows of this call) are added
        to the users' earlier ones, so their factors and predictions update.
        """
        ids, features, y = feedback.ids, feedback.features, feedback.y
        sample_weight = feedback.sample_weight
        items = item_features(ids, features, self.n_response_slots_)
        structure = comparisons(ids, y)
        self._store = self._store.merged(
            self._user_comparisons(
                ids, items, structure, pair_weights(structure, sample_weight)
            )
        )
        self.users_ = self._store.users

    def user_factors(self, user_ids):
        """The folded-in factor of each user; ``population_factor_`` for cold users.

        Parameters
        ----------
        user_ids : array-like of int, shape (n_users,)

        Returns
        -------
        factors : ndarray of shape (n_users, rank_)
        """
        check_is_fitted(self)
        user_ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        positions, known = self._store.positions(user_ids)
        factors = np.tile(self.population_factor_, (user_ids.size, 1))
        if known.any():
            unique, inverse = np.unique(positions[known], return_inverse=True)
            factors[known] = self._fold_in(unique)[inverse]
        return factors

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
        pair_weight = self._pair_weights(rows)
        coef, posterior = self._component_posteriors(
            vectors, groups, users.size, self.temperature_, sample_weight=pair_weight
        )
        # Hessian of each (user, component) objective at its MAP.
        hessian = np.array(
            np.broadcast_to(self._prior_precisions, coef.shape + (self.rank_,))
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

    def _fit(self, feedback):
        ids, features, y = feedback.ids, feedback.features, feedback.y
        sample_weight = feedback.sample_weight
        rng = check_random_state(self.random_state)
        self.n_response_slots_ = count_response_slots(ids, features)
        self._n_response_keys = int(ids[:, 2].max()) + 1
        items = item_features(ids, features, self.n_response_slots_)
        structure = comparisons(ids, y)
        require_comparisons(structure, type(self).__name__)
        winners, losers = structure.winners, structure.losers
        # In float32, as the store keeps them for the fold-in.
        differences = pair_differences(items, winners, losers)
        users = structure.users
        pair_user = structure.group_user[structure.group_of_row[winners]]
        pair_weight = pair_weights(structure, sample_weight)
        n_item_features = items.shape[1]
        keys = item_keys(ids, self._n_response_keys)
        if self.item_embeddings:
            self.item_keys_ = np.unique(keys[keys >= 0])
            pair_items = np.column_stack(
                [np.searchsorted(self.item_keys_, keys[rows]) for rows in (winners, losers)]
            )
            pair_items[keys[winners] < 0, 0] = -1
            pair_items[keys[losers] < 0, 1] = -1
        else:
            self.item_keys_ = np.empty(0, dtype=np.int64)
            pair_items = None
        self.rank_ = (
            int(self.rank)
            if self.item_embeddings
            else min(int(self.rank), n_item_features)
        )

        weights = self._fit_users(differences, pair_user, users.size, pair_weight)
        if not self.item_embeddings and self.rank_ == n_item_features:
            self.basis_ = np.eye(n_item_features)
            self.item_embedding_ = np.zeros((0, self.rank_))
            self.user_factors_ = weights
            self.n_iter_ = 0
        else:
            self._alternate(differences, pair_user, pair_items, weights, pair_weight)

        # With the identity map, the factor-space vectors are the differences.
        self._store = self._user_comparisons(
            ids, items, structure, pair_weight, differences if self.n_iter_ == 0 else None
        )
        del differences
        n_prompts = np.bincount(structure.group_user, minlength=users.size)
        prior_users = self._prior_users(n_prompts, pair_user)
        self.users_ = self._store.users
        self.temperature_ = self._calibrate_prior(
            self.user_factors_[prior_users], users[prior_users], rng
        )

    def _predict(self, ids, features):
        item_vectors = self._item_vectors(
            ids, item_features(ids, features, self.n_response_slots_)
        )
        positions, known = self._store.positions(ids[:, 0])
        factors = np.tile(self.population_factor_, (ids.shape[0], 1))
        if known.any():
            users, row_user = np.unique(positions[known], return_inverse=True)
            factors[known] = self._fold_in(users)[row_user]
        return np.einsum("nr,nr->n", item_vectors, factors)

    # ------------------------------------------------------------ population part

    def _fit_users(self, vectors, pair_user, n_users, pair_weight=None):
        """Each user's MAP factor under the L2 penalty, vectors given."""
        return fit_bradley_terry(
            vectors, pair_user, n_users, l2=float(self.user_l2), sample_weight=pair_weight
        )

    def _alternate(self, differences, pair_user, pair_items, weights, pair_weight=None):
        """Alternate user factors (Newton) with the map and embeddings (L-BFGS)."""
        n_item_features = differences.shape[1]
        _, _, right = np.linalg.svd(weights, full_matrices=False)
        basis = np.zeros((self.rank_, n_item_features))
        n_kept = min(self.rank_, right.shape[0])
        basis[:n_kept] = right[:n_kept]
        n_items = self.item_keys_.size
        embedding = np.zeros((n_items, self.rank_))
        previous = np.inf
        self.n_iter_ = 0
        for _ in range(int(self.max_iter)):
            self.n_iter_ += 1
            factors = self._fit_users(
                _pair_vectors(differences, basis, embedding, pair_items),
                pair_user,
                weights.shape[0],
                pair_weight,
            )
            basis, embedding, objective = self._fit_items(
                differences, pair_user, pair_items, factors, basis, embedding,
                pair_weight,
            )
            objective += self.user_l2 * np.sum(factors**2)
            if previous - objective <= self.tol * abs(objective):
                break
            previous = objective
        self.basis_ = basis
        self.item_embedding_ = embedding
        self.user_factors_ = self._fit_users(
            _pair_vectors(differences, basis, embedding, pair_items),
            pair_user,
            weights.shape[0],
            pair_weight,
        )

    def _fit_items(
        self, differences, pair_user, pair_items, factors, basis, embedding,
        pair_weight=None,
    ):
        """The map and the embeddings with the user factors fixed.

        The map (``rank x n_item_features`` numbers) by L-BFGS, the embeddings held
        fixed; then the embeddings by block-Jacobi Newton steps, the map held
        fixed. Each embedding has its own ``rank x rank`` Hessian block (the pairs
        that the item is in), so a step costs a few passes over the pairs, whatever
        the number of items; a backtracking line search on the objective makes up
        for the coupling of a pair's two items that the blocks leave out.

        Returns
        -------
        basis, embedding, objective
            The objective without the users' L2 term.
        """
        pair_factor = factors[pair_user]
        offset = np.zeros(differences.shape[0])
        if pair_items is not None:
            offset = np.einsum(
                "pr,pr->p", pair_factor, _embedding_differences(embedding, pair_items)
            )
        basis, loss = self._fit_basis(differences, pair_factor, offset, basis, pair_weight)
        if pair_items is None:
            return basis, embedding, loss
        offset = np.einsum("pr,pr->p", pair_factor, differences @ basis.T)
        embedding, loss = self._fit_embeddings(
            pair_items, pair_user, factors, offset, embedding, pair_weight=pair_weight
        )
        return basis, embedding, loss + self.basis_l2 * np.sum(basis**2)

    def _fit_basis(self, differences, pair_factor, offset, basis, pair_weight=None):
        """L-BFGS over the map; margins ``f . (A d) + offset``."""
        n_pairs, n_item_features = differences.shape
        rank = self.rank_
        # A pair's weight multiplies its loss (and so its slope).
        pair_scale = 1.0 if pair_weight is None else pair_weight

        def objective(parameters):
            basis = parameters.reshape(rank, n_item_features)
            margin = np.einsum("pr,pr->p", pair_factor, differences @ basis.T) + offset
            loss = np.sum(pair_scale * np.logaddexp(0.0, -margin)) + self.basis_l2 * np.sum(
                basis**2
            )
            slope = -(pair_scale * expit(-margin))[:, np.newaxis] * pair_factor
            gradient = slope.T @ differences + 2.0 * self.basis_l2 * basis
            # The mean pair loss keeps L-BFGS's tolerances independent of the size.
            return loss / n_pairs, gradient.ravel() / n_pairs

        result = minimize(
            objective, basis.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": 100}
        )
        return result.x.reshape(rank, n_item_features), float(result.fun) * n_pairs

    def _fit_embeddings(
        self, pair_items, pair_user, factors, offset, embedding, n_steps=5,
        pair_weight=None,
    ):
        """Block-Jacobi Newton over the embeddings; margins ``f_u . (e_w - e_l) + offset``.

        ``factors[pair_user]`` is each pair's user factor ``f_u``. Returns the
        embeddings and the objective (pair losses plus their L2 term).
        """
        n_items, rank = embedding.shape
        n_users = factors.shape[0]
        l2 = self.embedding_l2
        pair_scale = np.ones(pair_items.shape[0]) if pair_weight is None else pair_weight
        # Each (pair, side) with a known item: the item, the pair and the sign.
        item = np.concatenate([pair_items[:, 0], pair_items[:, 1]])
        pair = np.tile(np.arange(pair_items.shape[0]), 2)
        sign = np.repeat([1.0, -1.0], pair_items.shape[0])
        known = item >= 0
        item, pair, sign = item[known], pair[known], sign[known]
        # A user's sides on one item share the factor f_u: the sums that build the
        # gradient and the Hessian blocks run over (item, user) cells, several
        # times fewer than the sides, sorted by item.
        cells, cell = np.unique(
            item.astype(np.int64) * n_users + pair_user[pair], return_inverse=True
        )
        cell_item = cells // n_users
        cell_factor = factors[cells % n_users]
        by_item = sparse.csr_matrix(
            (
                np.ones(cells.size),
                np.arange(cells.size),
                np.searchsorted(cell_item, np.arange(n_items + 1)),
            ),
            shape=(n_items, cells.size),
        )

        def per_cell(side_values):
            return np.bincount(cell, weights=side_values, minlength=cells.size)

        def item_sums(cell_weight, columns):
            """Per item, the sum over its cells of ``cell_weight * columns``."""
            by_item.data = cell_weight
            return by_item @ columns

        def margins(embedding):
            dot = np.einsum("cr,cr->c", cell_factor, embedding[cell_item])
            return offset + np.bincount(pair, weights=sign * dot[cell], minlength=offset.size)

        def objective(embedding, margin):
            return np.sum(pair_scale * np.logaddexp(0.0, -margin)) + l2 * np.sum(
                embedding**2
            )

        margin = margins(embedding)
        loss = objective(embedding, margin)
        for _ in range(n_steps):
            slope = -(pair_scale * expit(-margin))[pair] * sign
            gradient = 2.0 * l2 * embedding + item_sums(per_cell(slope), cell_factor)
            curvature = per_cell((pair_scale * expit(margin) * expit(-margin))[pair])
            hessian = np.empty((n_items, rank, rank))
            for a in range(rank):
                # Row a of each item's Hessian from the diagonal on, mirrored.
                block = item_sums(curvature, cell_factor[:, a:] * cell_factor[:, a, None])
                hessian[:, a, a:] = block
                hessian[:, a:, a] = block
            hessian += 2.0 * l2 * np.eye(rank)
            step = -np.linalg.solve(hessian, gradient[..., np.newaxis])[..., 0]
            for _ in range(20):
                candidate = embedding + step
                candidate_margin = margins(candidate)
                candidate_loss = objective(candidate, candidate_margin)
                if candidate_loss <= loss:
                    break
                step *= 0.5
            else:
                break
            improvement = loss - candidate_loss
            embedding, margin, loss = candidate, candidate_margin, candidate_loss
            if improvement <= self.tol * abs(loss):
                break
        return embedding, loss

    def _prior_users(self, n_prompts, pair_user):
        """Mask of the users that shape the prior (see ``min_prior_prompts``)."""
        has_comparisons = np.bincount(pair_user, minlength=n_prompts.size) > 0
        prior_users = has_comparisons & (n_prompts >= self.min_prior_prompts)
        if prior_users.sum() < 2:
            prior_users = has_comparisons
        return prior_users

    def _fit_prior(self, sample, n_components, rng):
        """Fit the mixture prior to the factors ``sample`` (in place)."""
        if sample.shape[0] < 2:
            # One user: the L2 penalty's own Gaussian around that user's factor.
            self._set_prior_state(
                (
                    np.ones(1),
                    sample.copy(),
                    (np.eye(self.rank_) / (2.0 * self.user_l2))[np.newaxis],
                )
            )
        else:
            scale = float(np.var(sample, axis=0).mean())
            mixture = GaussianMixture(
                min(n_components, sample.shape[0]),
                covariance_type="full",
                reg_covar=1e-3 * scale + 1e-9,
                random_state=rng,
            )
            # Rank-by-rank triangular solves: BLAS threads only add overhead.
            with threadpool_limits(limits=1, user_api="blas"):
                mixture.fit(sample)
            self._set_prior_state(
                (mixture.weights_, mixture.means_, mixture.covariances_)
            )

    # ------------------------------------------------------------------- fold-in

    def _fold_in(self, positions):
        """Posterior-mean factors of the users at ``positions`` of the store."""
        rows, counts = self._store.rows(positions)
        return self._posterior_factors(
            self._store.columns["vector"][rows],
            np.repeat(np.arange(positions.size), counts),
            positions.size,
            self.temperature_,
            sample_weight=self._pair_weights(rows),
        )[0]

    def _posterior_factors(
        self, vectors, groups, n_groups, temperature, start=None, sample_weight=None
    ):
        """Posterior-mean factors, and the per-component MAP factors.

        Returns
        -------
        factors : ndarray of shape (n_groups, rank_)
        component_factors : ndarray of shape (n_groups, n_components_, rank_)
        """
        coef, posterior = self._component_posteriors(
            vectors, groups, n_groups, temperature, start, sample_weight
        )
        return np.einsum("gc,gcr->gr", posterior, coef), coef

    def _component_posteriors(
        self, vectors, groups, n_groups, temperature, start=None, sample_weight=None
    ):
        """Per-component MAP factors and each component's posterior probability.

        Returns
        -------
        component_factors : ndarray of shape (n_groups, n_components_, rank_)
        posterior : ndarray of shape (n_groups, n_components_)
        """
        coef, log_evidence = fit_bradley_terry(
            vectors,
            groups,
            n_groups,
            prior_mean=self.prior_means_,
            prior_precision=self._prior_precisions,
            weight=1.0 / temperature,
            sample_weight=sample_weight,
            start=start,
            return_log_evidence=True,
        )
        log_posterior = np.log(self.prior_weights_) + log_evidence
        posterior = np.exp(log_posterior - log_posterior.max(axis=1, keepdims=True))
        posterior /= posterior.sum(axis=1, keepdims=True)
        return coef, posterior

    def _calibrate_prior(self, sample, prior_user_ids, rng):
        """Fit the prior and choose ``n_components_`` and ``temperature_``.

        With ``"auto"``, sampled prior users reveal a few prompts; their held-out
        comparisons (whose winner is the prompt's top choice) are scored by the
        posterior predictive probability of the fold-in (the Laplace mixture
        predictive, :func:`~pllm_sk.core._calibration.laplace_predictive`). The
        smallest candidate number of components is scored at every second
        temperature of ``TEMPERATURES``; the other candidates, each with its own
        mixture fitted to ``sample``, at the best of those; the best candidate is
        kept, and its temperature climbs the full grid while a neighbour scores
        better, then is refined between grid points
        (:func:`~pllm_sk.core._calibration.best_grid_value`).

        Returns
        -------
        temperature : float
        """
        if self.n_components == "auto":
            candidates = [k for k in N_COMPONENTS if k <= sample.shape[0]]
            candidates = candidates or [sample.shape[0]]
        else:
            candidates = [min(int(self.n_components), sample.shape[0])]
        tune = self.temperature == "auto"
        if sample.shape[0] > _MIXTURE_USERS:
            chosen = rng.choice(sample.shape[0], _MIXTURE_USERS, replace=False)
            sample = sample[np.sort(chosen)]
        if len(candidates) > 1 or tune:
            positions, support, held_out = calibration_split(
                self._store,
                self._store.positions(prior_user_ids)[0],
                rng,
                _CALIBRATION_USERS,
                n_held_out=_HELD_OUT_PROMPTS,
            )
        if (len(candidates) == 1 and not tune) or positions.size == 0:
            self._fit_prior(sample, candidates[-1], rng)
            return 1.0 if tune else float(self.temperature)

        vectors = self._store.columns["vector"]
        support_vectors = vectors[support[0]].astype(np.float64)
        support_weight = self._pair_weights(support[0])
        rows, owner = held_out
        is_top = self._store.columns["top"][rows]
        rows, owner = rows[is_top], owner[is_top]
        held_out_vectors = vectors[rows].astype(np.float64)

        def score(temperature, start):
            """Per-user held-out scores at ``temperature``, and the MAP factors."""
            coef, posterior = self._component_posteriors(
                support_vectors,
                support[1],
                positions.size,
                temperature,
                start,
                support_weight,
            )
            probability = laplace_predictive(
                held_out_vectors,
                owner,
                support_vectors,
                support[1],
                coef,
                posterior,
                self._prior_precisions,
                1.0 / temperature,
                support_weight=support_weight,
            )
            return log_likelihood_scores(probability[:, None], owner, positions.size), coef

        grid = TEMPERATURES if tune else np.array([float(self.temperature)])
        n_scored = np.unique(owner).size
        # The smallest candidate first (the cheapest to fold in), at every second
        # temperature of the grid from the softest down, each fold-in starting
        # where the last ended.
        first = candidates[0]
        self._fit_prior(sample, first, rng)
        priors, tables, solutions = {}, {}, {}
        priors[first] = self._prior_state()
        tables[first] = np.full((n_scored, grid.size), np.nan)
        coarse = np.arange(0, grid.size, 2)
        start = None
        for index in coarse[::-1]:
            tables[first][:, [index]], start = score(grid[index], start)
            solutions[first, index] = start
        at = coarse[int(np.argmax(tables[first][:, coarse].mean(axis=0)))]
        # The other candidates at that temperature; the best one is kept.
        for n_components in candidates:
            if n_components not in priors:
                self._fit_prior(sample, n_components, rng)
                priors[n_components] = self._prior_state()
                tables[n_components] = np.full((n_scored, grid.size), np.nan)
                tables[n_components][:, [at]], solutions[n_components, at] = score(
                    grid[at], None
                )
        chosen = max(candidates, key=lambda k: tables[k][:, at].mean())
        self._set_prior_state(priors[chosen])
        if not tune:
            return float(self.temperature)
        # Climb the full grid from there while a neighbour scores better.
        table = tables[chosen]
        while True:
            around = [i for i in (at - 1, at + 1) if 0 <= i < grid.size]
            for index in around:
                if np.isnan(table[0, index]):
                    table[:, [index]], solutions[chosen, index] = score(
                        grid[index], solutions[chosen, at]
                    )
            step = max(around, key=lambda i: table[:, i].mean())
            if table[:, step].mean() <= table[:, at].mean():
                return best_grid_value(table)
            at = step

    def _prior_state(self):
        return (self.prior_weights_, self.prior_means_, self.prior_covariances_)

    def _set_prior_state(self, state):
        """Set the mixture prior (weights, means, covariances) and what follows."""
        self.prior_weights_, self.prior_means_, self.prior_covariances_ = state
        self.n_components_ = self.prior_weights_.size
        self._prior_precisions = np.linalg.inv(self.prior_covariances_)
        self.population_factor_ = self.prior_weights_ @ self.prior_means_
        self.population_coef_ = self.basis_.T @ self.population_factor_

    # ------------------------------------------------------------------- helpers

    def _item_vectors(self, ids, items):
        """Item factors ``basis_ @ x (+ e)`` of rows with item features ``items``."""
        if self.n_iter_ == 0:
            return items  # no alternation ran: the map is the identity
        vectors = items @ self.basis_.T
        if self.item_keys_.size:
            keys = item_keys(ids, self._n_response_keys)
            found = np.minimum(
                np.searchsorted(self.item_keys_, keys), self.item_keys_.size - 1
            )
            embedded = (self.item_keys_[found] == keys) & (keys >= 0)
            vectors[embedded] += self.item_embedding_[found[embedded]]
        return vectors

    def _user_comparisons(self, ids, items, structure, pair_weight=None, vectors=None):
        """Factor-space comparison vectors, frozen map and embeddings applied
        (``vectors``, float32, when already computed), and their weights."""
        if vectors is None:
            item_vectors = self._item_vectors(ids, items)
            vectors = pair_differences(item_vectors, structure.winners, structure.losers)
        return UserComparisons.from_comparisons(
            ids,
            structure,
            vector=vectors,
            weight=np.ones(structure.winners.size) if pair_weight is None else pair_weight,
        )

    def _pair_weights(self, rows):
        """Stored weights of comparisons ``rows``; None when all are 1.

        Unit weights take the solver's unweighted path, so fits without
        ``sample_weight`` stay the same to the last bit.
        """
        weight = self._store.columns["weight"][rows]
        return None if (weight == 1.0).all() else weight


def _pair_vectors(differences, basis, embedding, pair_items):
    """Factor-space difference of each pair: ``A (x_w - x_l) + e_w - e_l``."""
    vectors = differences @ basis.T
    if pair_items is not None:
        vectors += _embedding_differences(embedding, pair_items)
    return vectors


def _embedding_differences(embedding, pair_items):
    """``e_w - e_l`` of each pair, an unknown item (-1) counting as 0."""
    vectors = np.zeros((pair_items.shape[0], embedding.shape[1]))
    for column, sign in ((0, 1.0), (1, -1.0)):
        known = pair_items[:, column] >= 0
        vectors[known] += sign * embedding[pair_items[known, column]]
    return vectors
