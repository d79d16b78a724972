"""Solvers of the low-rank factorisation: arrays in, arrays out.

The utility of a comparison's winner over its loser for user ``u`` is
``f_u . (A d + e_w - e_l)``: ``d`` the difference of the two rows' item features,
``A`` the item map (``rank x n_item_features``), ``e`` the free item embeddings.
:func:`fit_factorization` fits the user factors ``f``, ``A`` and ``e`` to every
user's comparisons under the Bradley-Terry loss with L2 penalties.
"""

from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.utils.extmath import randomized_svd

from ..core import fit_bradley_terry

__all__ = [
    "Factorization",
    "embedded_items",
    "factor_vectors",
    "FactorizationProblem",
    "fit_factorization",
    "pair_vectors",
    "spectral_embedding",
]

# Per alternation: Newton steps of the users' solve (the last solve converges) and
# block-Jacobi Newton steps of the embeddings.
_USER_STEPS = 2
_EMBEDDING_STEPS = 3
# Halvings of a block's Newton step tried at most before the block stays as it was.
_HALVINGS = 10
# Pairs per chunk of the map's Hessian sums.
_CHUNK = 1 << 16


class Factorization(NamedTuple):
    """The fitted item map, item embeddings and user factors."""

    basis: np.ndarray  # (rank, n_item_features)
    embedding: np.ndarray  # (n_items, rank)
    user_factors: np.ndarray  # (n_users, rank)
    n_iter: int  # alternations run; 0 when the map is the identity


def embedded_items(keys, winners, losers):
    """The distinct item keys, and each pair's two items as indices among them.

    Parameters
    ----------
    keys : ndarray of int64, shape (n_rows,)
        Item key of each row (see :func:`~pllm_sk.core.item_keys`), -1 for none.
    winners, losers : ndarray of int64, shape (n_pairs,)

    Returns
    -------
    item_keys : ndarray of int64
        The distinct non-negative keys, sorted.
    pair_items : ndarray of int64, shape (n_pairs, 2)
        Index in ``item_keys`` of each pair's winner and loser, -1 for none.
    """
    item_keys = np.unique(keys[keys >= 0])
    pair_items = np.column_stack(
        [np.searchsorted(item_keys, keys[rows]) for rows in (winners, losers)]
    )
    pair_items[keys[winners] < 0, 0] = -1
    pair_items[keys[losers] < 0, 1] = -1
    return item_keys, pair_items


def fit_factorization(
    differences, pair_user, n_users, pair_items, n_items, rank, *, user_l2, basis_l2,
    embedding_l2, max_iter, tol, pair_weight=None,
):
    """User factors, item map and embeddings of every user's comparisons.

    When ``rank`` is the number of item features and there are no embeddings
    (``pair_items`` None), the map is the identity without loss of generality and
    one batched Newton solve per user is exact. Otherwise block-coordinate Newton
    (:func:`_alternate`): each alternation takes two warm-started Newton steps for
    the users, one Newton step for the map (:meth:`FactorizationProblem.basis_step`)
    and three block-Jacobi Newton steps for the embeddings
    (:meth:`FactorizationProblem.embedding_step`), each halved until the objective
    falls, then extrapolates every block along its change when that lowers the
    objective; at most ``max_iter`` alternations, until the objective improves by
    less than ``tol`` of itself; a converged Newton solve for the users ends it.
    The map starts from the truncated SVD of the per-user weights (its rows scaled
    by ``sqrt(s / sqrt(n_users))`` with embeddings, which then start from
    :func:`spectral_embedding`). An alternation passes over every comparison a few
    dozen times, in NumPy and sparse products.

    Parameters
    ----------
    differences : ndarray of shape (n_pairs, n_item_features)
        Item features of each pair's winner minus its loser.
    pair_user : ndarray of int64, shape (n_pairs,)
    n_users : int
    pair_items : ndarray of int64, shape (n_pairs, 2), or None
        Each pair's two embedded items (see :func:`embedded_items`); None without
        embeddings.
    n_items : int
        Embedded items (0 without embeddings).
    rank : int
    user_l2, basis_l2, embedding_l2 : float
        L2 penalties on the user factors, the map and the embeddings.
    max_iter : int
    tol : float
    pair_weight : ndarray of shape (n_pairs,), default=None

    Returns
    -------
    Factorization
    """
    n_item_features = differences.shape[1]
    if pair_items is None and rank == n_item_features:
        weights = _fit_users(differences, pair_user, n_users, user_l2, pair_weight)
        return Factorization(np.eye(n_item_features), np.zeros((0, rank)), weights, 0)
    problem = FactorizationProblem(
        differences, pair_user, n_users, pair_items, n_items,
        (user_l2, basis_l2, embedding_l2), pair_weight,
    )
    weights = _fit_users(differences, pair_user, n_users, user_l2, pair_weight)
    _, values, right = np.linalg.svd(weights, full_matrices=False)
    basis = np.zeros((rank, n_item_features))
    n_kept = min(rank, right.shape[0])
    basis[:n_kept] = right[:n_kept]
    embedding = np.zeros((n_items, rank))
    if pair_items is not None:
        basis[:n_kept] *= np.sqrt(values[:n_kept] / np.sqrt(n_users))[:, np.newaxis]
        embedding = spectral_embedding(problem.cells, problem.pair_scale, n_items, rank)
    return _alternate(problem, basis, embedding, max_iter, tol)


def _alternate(problem, basis, embedding, max_iter, tol):
    """The alternations of :func:`fit_factorization` from ``basis`` and ``embedding``.

    Each alternation: Newton steps for the users, the map, the embeddings; then
    the extrapolation ``2 * now - before`` of every block, kept when it lowers
    the objective.
    """
    factors, previous, before, n_iter = None, np.inf, None, 0
    while n_iter < max_iter:
        n_iter += 1
        factors = problem.user_step(basis, embedding, factors, _USER_STEPS)
        basis, objective = problem.basis_step(factors, basis, embedding)
        if problem.cells is not None:
            embedding, objective = problem.embedding_step(
                factors, basis, embedding, _EMBEDDING_STEPS
            )
        now = (factors, basis, embedding)
        if before is not None:
            candidate = tuple(2.0 * block - last for block, last in zip(now, before))
            value = problem.objective(*candidate)
            if value < objective:
                now, objective = candidate, value
        before = now
        factors, basis, embedding = now
        if previous - objective <= tol * abs(objective):
            break
        previous = objective
    factors = problem.user_step(basis, embedding, factors, 50)
    return Factorization(basis, embedding, factors, n_iter)


def _fit_users(vectors, pair_user, n_users, l2, pair_weight, start=None, max_iter=50):
    """Each user's MAP factor under the L2 penalty, the pairs' vectors given."""
    return fit_bradley_terry(
        vectors, pair_user, n_users, l2=float(l2), sample_weight=pair_weight,
        start=start, max_iter=max_iter,
    )


def spectral_embedding(cells, pair_scale, n_items, rank):
    """Item embeddings from the truncated SVD of the users x items net wins.

    Entry (user, item) is the weight of the user's comparisons the item won less
    that of those it lost; each item's row of the left singular vectors, times
    ``sqrt(s / s_max)`` (Randomized SVD, seeded with 0: a function of the data).

    Returns
    -------
    embedding : ndarray of shape (n_items, rank)
    """
    net = cells.sides @ np.broadcast_to(pair_scale, (cells.sides.shape[1],))
    matrix = cells.item_matrix(net)
    n_kept = min(rank, *matrix.shape)
    embedding = np.zeros((n_items, rank))
    if n_kept == 0 or matrix.nnz == 0:
        return embedding
    left, values, _ = randomized_svd(matrix, n_kept, random_state=0)
    if values[0] > 0:
        embedding[:, :n_kept] = left * np.sqrt(values / values[0])
    return embedding


class _Cells:
    """The (item, user) cells of the pairs' sides, sorted by item then user.

    ``sides`` (cells x pairs) holds +1 where the cell is the pair's winner, -1
    where it is its loser; ``touches`` its absolute values. Sums over a cell's
    sides and over an item's cells are sparse products.
    """

    def __init__(self, pair_items, pair_user, n_users, n_items):
        n_pairs = pair_items.shape[0]
        item = pair_items.T.ravel()
        pair = np.tile(np.arange(n_pairs), 2)
        sign = np.repeat([1.0, -1.0], n_pairs)
        known = item >= 0
        keys, cell = np.unique(
            item[known] * n_users + pair_user[pair[known]], return_inverse=True
        )
        self.item, self.user = keys // n_users, keys % n_users
        self.shape = (n_items, n_users)
        self.sides = sparse.csr_matrix(
            (sign[known], (cell, pair[known])), shape=(keys.size, n_pairs)
        )
        self.sides_of_pair = self.sides.T.tocsr()
        self.touches = abs(self.sides)

    def item_matrix(self, cell_values):
        """The (n_items, n_users) sparse matrix of values per cell."""
        bounds = np.searchsorted(self.item, np.arange(self.shape[0] + 1))
        return sparse.csr_matrix((cell_values, self.user, bounds), shape=self.shape)


class FactorizationProblem:
    """The objective of the factorisation and its block Newton steps.

    The margin of a pair is ``f_u . (A d) + f_u . (e_w - e_l)``; the objective is
    the weighted pair losses ``log(1 + exp(-margin))`` plus the three L2 terms.
    """

    def __init__(
        self, differences, pair_user, n_users, pair_items, n_items, penalties, pair_weight
    ):
        self.differences, self.pair_user, self.n_users = differences, pair_user, n_users
        self.pair_items, self.pair_weight = pair_items, pair_weight
        self.user_l2, self.basis_l2, self.embedding_l2 = penalties
        self.pair_scale = 1.0 if pair_weight is None else pair_weight
        # Per user, the weighted sum of d d^T and the weight of the pairs.
        self.user_outer = np.zeros((n_users, differences.shape[1] ** 2))
        for chunk in range(0, pair_user.size, _CHUNK):
            rows = slice(chunk, chunk + _CHUNK)
            part = differences[rows].astype(np.float64)
            outer = (part[:, :, np.newaxis] * part[:, np.newaxis, :]).reshape(part.shape[0], -1)
            self.user_outer += self._user_sums(
                np.broadcast_to(self.pair_scale, pair_user.shape)[rows], outer, rows
            )
        self.user_weight = np.maximum(
            np.bincount(pair_user, np.broadcast_to(self.pair_scale, pair_user.shape), n_users),
            np.finfo(float).tiny,
        )
        self.cells = None
        if pair_items is not None:
            self.cells = _Cells(pair_items, pair_user, n_users, n_items)

    def loss(self, margin):
        return np.sum(self.pair_scale * np.logaddexp(0.0, -margin))

    def objective(self, factors, basis, embedding):
        margin = self.basis_margins(factors, basis) + self.embedding_margins(factors, embedding)
        return self.loss(margin) + self.penalty(factors, basis, embedding)

    def penalty(self, factors, basis, embedding):
        return (
            self.user_l2 * np.sum(factors**2) + self.basis_l2 * np.sum(basis**2)
            + self.embedding_l2 * np.sum(embedding**2)
        )

    def slope_and_curvature(self, margin):
        """Each pair's loss derivative and second derivative in its margin."""
        upset = expit(-margin)
        return -self.pair_scale * upset, self.pair_scale * upset * (1.0 - upset)

    def basis_margins(self, factors, basis):
        """``f_u . (A d)`` of every pair."""
        return np.einsum("pf,pf->p", self.differences, (factors @ basis)[self.pair_user])

    def embedding_margins(self, factors, embedding):
        """``f_u . (e_w - e_l)`` of every pair."""
        if self.cells is None:
            return 0.0
        scores = np.einsum(
            "cr,cr->c", factors[self.cells.user], embedding[self.cells.item]
        )
        return self.cells.sides_of_pair @ scores

    def user_step(self, basis, embedding, factors, max_iter):
        """Newton steps for the users (at most ``max_iter``) from ``factors``."""
        vectors = pair_vectors(self.differences, basis, embedding, self.pair_items)
        return _fit_users(
            vectors, self.pair_user, self.n_users, self.user_l2, self.pair_weight,
            start=factors, max_iter=max_iter,
        )

    def basis_step(self, factors, basis, embedding):
        """One Newton step for the map, halved until the objective falls.

        The Hessian in the map is ``sum_u f_u f_u^T (x) D_u``, ``D_u`` the
        curvature-weighted sum of the user's ``d d^T``; each user's curvature is
        replaced by its mean over the user's pairs, so ``D_u`` is the weighted sum
        of ``d d^T`` (summed once, in chunks of pairs) times that mean.

        Returns
        -------
        basis, objective
        """
        rank, n_item_features = basis.shape
        fixed = self.embedding_margins(factors, embedding)
        rest = self.user_l2 * np.sum(factors**2) + self.embedding_l2 * np.sum(embedding**2)

        def objective(candidate):
            margin = fixed + self.basis_margins(factors, candidate)
            return self.loss(margin) + self.basis_l2 * np.sum(candidate**2) + rest, None

        margin = fixed + self.basis_margins(factors, basis)
        value = self.loss(margin) + self.basis_l2 * np.sum(basis**2) + rest
        slope, curvature = self.slope_and_curvature(margin)
        gradient = factors.T @ self._user_sums(slope, self.differences)
        gradient += 2.0 * self.basis_l2 * basis
        user_curvature = self.user_outer * (
            np.bincount(self.pair_user, curvature, self.n_users) / self.user_weight
        )[:, np.newaxis]
        outer_factors = np.einsum("ua,ub->uab", factors, factors).reshape(self.n_users, -1)
        hessian = (outer_factors.T @ user_curvature).reshape(
            rank, rank, n_item_features, n_item_features
        ).transpose(0, 2, 1, 3).reshape(basis.size, basis.size)
        hessian += 2.0 * self.basis_l2 * np.eye(basis.size)
        step = -np.linalg.solve(hessian, gradient.ravel()).reshape(basis.shape)
        return _descend(objective, basis, step, value)[:2]

    def _user_sums(self, pair_values, columns, rows=slice(None)):
        """Per user, the sum over its pairs (of ``rows``) of ``pair_values * columns``."""
        users = self.pair_user[rows]
        by_user = sparse.csr_matrix(
            (pair_values, (users, np.arange(users.size))), shape=(self.n_users, users.size)
        )
        return by_user @ columns

    def embedding_step(self, factors, basis, embedding, n_steps=1):
        """Block-Jacobi Newton steps for the embeddings, each halved until the
        objective falls; the users and the map stay fixed.

        Each item's ``rank x rank`` block sums ``f_u f_u^T`` times the curvature
        of its cells; the coupling of a pair's two items is left out, which the
        halving makes up for. ``n_steps`` steps at most (fewer when a step finds
        no descent).

        Returns
        -------
        embedding, objective
        """
        cells, rank = self.cells, embedding.shape[1]
        fixed = self.basis_margins(factors, basis)
        cell_factor = factors[cells.user]
        rest = self.user_l2 * np.sum(factors**2) + self.basis_l2 * np.sum(basis**2)

        def objective(candidate):
            scores = np.einsum("cr,cr->c", cell_factor, candidate[cells.item])
            margin = fixed + cells.sides_of_pair @ scores
            value = self.loss(margin) + self.embedding_l2 * np.sum(candidate**2) + rest
            return value, margin

        l2 = 2.0 * self.embedding_l2
        outer_factors = np.einsum("ua,ub->uab", factors, factors).reshape(self.n_users, -1)
        value, margin = objective(embedding)
        for _ in range(n_steps):
            slope, curvature = self.slope_and_curvature(margin)
            gradient = l2 * embedding + cells.item_matrix(cells.sides @ slope) @ factors
            hessian = cells.item_matrix(cells.touches @ curvature) @ outer_factors
            hessian = hessian.reshape(-1, rank, rank) + l2 * np.eye(rank)
            step = -np.linalg.solve(hessian, gradient[..., np.newaxis])[..., 0]
            embedding, new_value, margin = _descend(objective, embedding, step, value, margin)
            if new_value == value:
                break
            value = new_value
        return embedding, value


def _descend(objective, point, step, value, state=None):
    """``point + step``, the step halved until the objective falls below ``value``
    (``point`` itself when it never does).

    ``objective(candidate)`` returns the value and a state (the margins) that
    comes back with the point kept.

    Returns
    -------
    point, objective, state
    """
    for _ in range(_HALVINGS):
        candidate = point + step
        candidate_value, candidate_state = objective(candidate)
        if candidate_value <= value:
            return candidate, candidate_value, candidate_state
        step = 0.5 * step
    return point, value, state


def factor_vectors(items, basis, item_keys, embedding, keys=None):
    """Item factors ``A x (+ e)`` of rows with item features ``items``.

    ``keys`` (the rows' item keys) is needed when there are embedded items
    (``item_keys`` sorted, ``embedding`` theirs); a row of another item gets
    ``A x`` alone.
    """
    vectors = items @ basis.T
    if item_keys.size:
        found = np.minimum(np.searchsorted(item_keys, keys), item_keys.size - 1)
        embedded = (item_keys[found] == keys) & (keys >= 0)
        vectors[embedded] += embedding[found[embedded]]
    return vectors


def pair_vectors(differences, basis, embedding, pair_items):
    """Factor-space difference of each pair: ``A (x_w - x_l) + e_w - e_l``, float32."""
    vectors = differences.astype(np.float32, copy=False) @ basis.T.astype(np.float32)
    if pair_items is not None:
        vectors += _embedding_differences(embedding, pair_items)
    return vectors


def _embedding_differences(embedding, pair_items):
    """``e_w - e_l`` of each pair (float32), an unknown item (-1) counting as 0."""
    # Index -1 reads the appended zero row.
    padded = np.vstack([embedding, np.zeros((1, embedding.shape[1]))]).astype(np.float32)
    return np.take(padded, pair_items[:, 0], axis=0) - np.take(padded, pair_items[:, 1], axis=0)
