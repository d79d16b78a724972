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
from scipy.optimize import minimize
from scipy.special import expit

from ..core import fit_bradley_terry

__all__ = [
    "Factorization",
    "embedded_items",
    "factor_vectors",
    "fit_basis",
    "fit_embeddings",
    "fit_factorization",
    "fit_items",
    "pair_vectors",
]


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
    one batched Newton solve per user is exact. Otherwise the solver alternates
    batched Newton steps for the users with :func:`fit_items` for the map and the
    embeddings, starting from the truncated SVD of the per-user weights, for at
    most ``max_iter`` alternations, until the objective improves by less than
    ``tol`` of itself. Each alternation passes over every comparison a few dozen
    times.

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
    weights = _fit_users(differences, pair_user, n_users, user_l2, pair_weight)
    n_item_features = differences.shape[1]
    if pair_items is None and rank == n_item_features:
        return Factorization(np.eye(n_item_features), np.zeros((0, rank)), weights, 0)
    _, _, right = np.linalg.svd(weights, full_matrices=False)
    basis = np.zeros((rank, n_item_features))
    n_kept = min(rank, right.shape[0])
    basis[:n_kept] = right[:n_kept]
    embedding = np.zeros((n_items, rank))
    previous = np.inf
    n_iter = 0
    for _ in range(int(max_iter)):
        n_iter += 1
        factors = _fit_users(
            pair_vectors(differences, basis, embedding, pair_items),
            pair_user, n_users, user_l2, pair_weight,
        )
        basis, embedding, objective = fit_items(
            differences, pair_user, pair_items, factors, basis, embedding,
            basis_l2=basis_l2, embedding_l2=embedding_l2, tol=tol, pair_weight=pair_weight,
        )
        objective += user_l2 * np.sum(factors**2)
        if previous - objective <= tol * abs(objective):
            break
        previous = objective
    factors = _fit_users(
        pair_vectors(differences, basis, embedding, pair_items),
        pair_user, n_users, user_l2, pair_weight,
    )
    return Factorization(basis, embedding, factors, n_iter)


def _fit_users(vectors, pair_user, n_users, l2, pair_weight):
    """Each user's MAP factor under the L2 penalty, the pairs' vectors given."""
    return fit_bradley_terry(
        vectors, pair_user, n_users, l2=float(l2), sample_weight=pair_weight
    )


def fit_items(
    differences, pair_user, pair_items, factors, basis, embedding, *, basis_l2,
    embedding_l2, tol, pair_weight=None,
):
    """The map and the embeddings with the user factors fixed.

    The map (``rank x n_item_features`` numbers) by L-BFGS (:func:`fit_basis`),
    the embeddings held fixed; then the embeddings by block-Jacobi Newton steps
    (:func:`fit_embeddings`), the map held fixed.

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
    basis, loss = fit_basis(differences, pair_factor, offset, basis, basis_l2, pair_weight)
    if pair_items is None:
        return basis, embedding, loss
    offset = np.einsum("pr,pr->p", pair_factor, differences @ basis.T)
    embedding, loss = fit_embeddings(
        pair_items, pair_user, factors, offset, embedding, l2=embedding_l2, tol=tol,
        pair_weight=pair_weight,
    )
    return basis, embedding, loss + basis_l2 * np.sum(basis**2)


def fit_basis(differences, pair_factor, offset, basis, l2, pair_weight=None):
    """L-BFGS over the map from ``basis``; margins ``f . (A d) + offset``.

    Returns
    -------
    basis : ndarray of shape (rank, n_item_features)
    objective : float
        The pair losses plus ``l2 * ||A||^2``.
    """
    n_pairs, n_item_features = differences.shape
    rank = basis.shape[0]
    # A pair's weight multiplies its loss (and so its slope).
    pair_scale = 1.0 if pair_weight is None else pair_weight

    def objective(parameters):
        basis = parameters.reshape(rank, n_item_features)
        margin = np.einsum("pr,pr->p", pair_factor, differences @ basis.T) + offset
        loss = np.sum(pair_scale * np.logaddexp(0.0, -margin)) + l2 * np.sum(basis**2)
        slope = -(pair_scale * expit(-margin))[:, np.newaxis] * pair_factor
        gradient = slope.T @ differences + 2.0 * l2 * basis
        # The mean pair loss keeps L-BFGS's tolerances independent of the size.
        return loss / n_pairs, gradient.ravel() / n_pairs

    result = minimize(
        objective, basis.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": 100}
    )
    return result.x.reshape(rank, n_item_features), float(result.fun) * n_pairs


def fit_embeddings(
    pair_items, pair_user, factors, offset, embedding, *, l2, tol, n_steps=5,
    pair_weight=None,
):
    """Block-Jacobi Newton over the embeddings; margins ``f_u . (e_w - e_l) + offset``.

    ``factors[pair_user]`` is each pair's user factor ``f_u``. Each embedding has
    its own ``rank x rank`` Hessian block (the pairs that the item is in), so a
    step costs a few passes over the pairs, whatever the number of items; a
    backtracking line search on the objective makes up for the coupling of a
    pair's two items that the blocks leave out. At most ``n_steps`` steps, until
    the objective improves by less than ``tol`` of itself.

    Returns
    -------
    embedding : ndarray of shape (n_items, rank)
    objective : float
        The pair losses plus ``l2 * ||e||^2``.
    """
    problem = _EmbeddingProblem(
        pair_items, pair_user, factors, offset, embedding.shape[0], l2, pair_weight
    )
    margin = problem.margins(embedding)
    loss = problem.objective(embedding, margin)
    for _ in range(n_steps):
        step = problem.newton_step(embedding, margin)
        for _ in range(20):
            candidate = embedding + step
            candidate_margin = problem.margins(candidate)
            candidate_loss = problem.objective(candidate, candidate_margin)
            if candidate_loss <= loss:
                break
            step *= 0.5
        else:
            break
        improvement = loss - candidate_loss
        embedding, margin, loss = candidate, candidate_margin, candidate_loss
        if improvement <= tol * abs(loss):
            break
    return embedding, loss


class _EmbeddingProblem:
    """The embeddings' objective and Newton step, summed over (item, user) cells.

    A user's sides on one item share the factor ``f_u``: the sums that build the
    gradient and the Hessian blocks run over (item, user) cells, several times
    fewer than the sides, sorted by item.
    """

    def __init__(self, pair_items, pair_user, factors, offset, n_items, l2, pair_weight):
        n_users = factors.shape[0]
        n_pairs = pair_items.shape[0]
        self.offset, self.l2 = offset, l2
        self.pair_scale = np.ones(n_pairs) if pair_weight is None else pair_weight
        # Each (pair, side) with a known item: the item, the pair and the sign.
        item = np.concatenate([pair_items[:, 0], pair_items[:, 1]])
        pair = np.tile(np.arange(n_pairs), 2)
        sign = np.repeat([1.0, -1.0], n_pairs)
        known = item >= 0
        item, self.pair, self.sign = item[known], pair[known], sign[known]
        cells, self.cell = np.unique(
            item.astype(np.int64) * n_users + pair_user[self.pair], return_inverse=True
        )
        self.cell_item = cells // n_users
        self.cell_factor = factors[cells % n_users]
        self.by_item = sparse.csr_matrix(
            (
                np.ones(cells.size),
                np.arange(cells.size),
                np.searchsorted(self.cell_item, np.arange(n_items + 1)),
            ),
            shape=(n_items, cells.size),
        )

    def margins(self, embedding):
        dot = np.einsum("cr,cr->c", self.cell_factor, embedding[self.cell_item])
        return self.offset + np.bincount(
            self.pair, weights=self.sign * dot[self.cell], minlength=self.offset.size
        )

    def objective(self, embedding, margin):
        return np.sum(self.pair_scale * np.logaddexp(0.0, -margin)) + self.l2 * np.sum(
            embedding**2
        )

    def newton_step(self, embedding, margin):
        """The block-Jacobi Newton step from ``embedding`` (with its ``margin``)."""
        n_items, rank = embedding.shape
        slope = -(self.pair_scale * expit(-margin))[self.pair] * self.sign
        gradient = 2.0 * self.l2 * embedding + self._item_sums(
            self._per_cell(slope), self.cell_factor
        )
        curvature = self._per_cell(
            (self.pair_scale * expit(margin) * expit(-margin))[self.pair]
        )
        hessian = np.empty((n_items, rank, rank))
        for a in range(rank):
            # Row a of each item's Hessian from the diagonal on, mirrored.
            block = self._item_sums(
                curvature, self.cell_factor[:, a:] * self.cell_factor[:, a, None]
            )
            hessian[:, a, a:] = block
            hessian[:, a:, a] = block
        hessian += 2.0 * self.l2 * np.eye(rank)
        return -np.linalg.solve(hessian, gradient[..., np.newaxis])[..., 0]

    def _per_cell(self, side_values):
        return np.bincount(self.cell, weights=side_values, minlength=self.cell_item.size)

    def _item_sums(self, cell_weight, columns):
        """Per item, the sum over its cells of ``cell_weight * columns``."""
        self.by_item.data = cell_weight
        return self.by_item @ columns


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
