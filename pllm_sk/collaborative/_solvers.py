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
from scipy.sparse.csgraph import connected_components
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

# Newton steps of the users' solve per alternation (the last solve converges).
_USER_STEPS = 1
# Halvings of a block's Newton step tried at most before the block stays as it was.
_HALVINGS = 10
# The users' and the embeddings' steps start at this multiple of the Newton step:
# over-relaxed block steps make the alternations converge faster (on the ids track
# of the default run, the objective after 10 alternations is that of about 16
# without).
_OVER_RELAXATION = 1.5
# A part of a block whose half Newton decrement is below _TOL * (1 + its objective)
# has converged: its step is not taken.
_TOL = 1e-10


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
    known = keys >= 0
    item_keys, index = np.unique(keys[known], return_inverse=True)
    row_item = np.full(keys.size, -1, dtype=np.int64)
    row_item[known] = index
    return item_keys, np.column_stack([row_item[winners], row_item[losers]])


def fit_factorization(
    differences, pair_user, n_users, pair_items, n_items, rank, *, user_l2, basis_l2,
    embedding_l2, max_iter, tol, pair_weight=None, solved_users=None,
):
    """User factors, item map and embeddings of every user's comparisons.

    When ``rank`` is the number of item features and there are no embeddings
    (``pair_items`` None), the map is the identity without loss of generality and
    one batched Newton solve per user is exact. Otherwise block-coordinate Newton
    (:func:`_alternate`): each alternation takes one Newton step for the users
    (:meth:`FactorizationProblem.user_newton_step`), one for the map
    (:meth:`FactorizationProblem.basis_step`) and one block-Jacobi Newton step for
    the embeddings (:meth:`FactorizationProblem.embedding_step`), each halved until
    the objective falls (the users' and the embeddings' per user and per connected
    component of items, whose parts of the objective are independent), then moves
    to the gauge that minimises the penalty with the margins unchanged
    (:func:`balanced`); at most ``max_iter`` alternations, until the objective
    improves by less than ``tol`` of itself; a converged Newton solve for the users
    ends it. The map starts from the truncated SVD of the per-user weights (its
    rows scaled by ``sqrt(s / sqrt(n_users))`` with embeddings, which then start
    from :func:`spectral_embedding`), the users from zero. Cost of an alternation:
    about a dozen passes over the pairs and the cells (float32 where they are
    products), a batched ``rank x rank`` solve per item and per user, and the
    map's ``(rank * n_item_features)``-square solve.

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
    solved_users : ndarray of int64, default=None
        With the identity map, the users whose factors are solved (the others'
        rows are NaN): the users are independent there, and only some factors
        may be needed. None solves every user's.

    Returns
    -------
    Factorization
    """
    n_item_features = differences.shape[1]
    if pair_items is None and rank == n_item_features:
        weights = _fit_some_users(
            differences, pair_user, n_users, user_l2, pair_weight, solved_users
        )
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

    Each alternation: Newton steps for the users, the map, the embeddings, then
    the gauge that balances the penalties (:func:`balanced`).
    """
    factors = np.zeros((problem.n_users, basis.shape[0]))
    margin, previous, n_iter = np.zeros(problem.pair_user.size), np.inf, 0
    losses = problem.pair_losses(margin)
    while n_iter < max_iter:
        n_iter += 1
        vectors = pair_vectors(problem.differences_32, basis, embedding, problem.pair_items)
        for _ in range(_USER_STEPS):
            factors, margin, losses = problem.user_newton_step(factors, vectors, margin, losses)
        del vectors
        basis, margin, losses = problem.basis_step(factors, basis, embedding, margin, losses)
        if problem.cells is not None:
            embedding, margin, losses = problem.embedding_step(
                factors, embedding, margin, losses
            )
        factors, basis, embedding = balanced(problem, factors, basis, embedding)
        objective = np.sum(losses) + problem.penalty(factors, basis, embedding)
        if previous - objective <= tol * abs(objective):
            break
        previous = objective
    factors = problem.user_step(basis, embedding, factors, 50)
    return Factorization(basis, embedding, factors, n_iter)


def balanced(problem, factors, basis, embedding):
    """The factorisation in the gauge that minimises the penalty, margins unchanged.

    ``f -> R^T f``, ``A -> R^-1 A``, ``e -> R^-1 e`` leaves every margin as it is;
    the penalty ``tr(R^T P R) + tr(R^-1 Q R^-T)`` (``P = user_l2 F^T F``,
    ``Q = basis_l2 A A^T + embedding_l2 E^T E``) is least at
    ``R R^T = P^-1/2 (P^1/2 Q P^1/2)^1/2 P^-1/2``. The blocks come back as they
    are when ``P`` or ``Q`` is near singular. A few ``rank x rank``
    eigendecompositions and one pass over the embeddings.
    """
    user_gram = problem.user_l2 * factors.T @ factors
    item_gram = problem.basis_l2 * basis @ basis.T + problem.embedding_l2 * embedding.T @ embedding
    grams = np.stack([user_gram, item_gram])
    if np.linalg.cond(grams).max() > 1e8:
        return factors, basis, embedding
    root, inverse_root = _roots(user_gram)
    middle = _roots(root @ item_gram @ root)[0]
    transform, inverse = _roots(inverse_root @ middle @ inverse_root)
    return factors @ transform, inverse @ basis, embedding @ inverse


def _roots(matrix):
    """The symmetric square root of a symmetric positive definite matrix, and its inverse."""
    values, vectors = np.linalg.eigh(matrix)
    values = np.sqrt(np.maximum(values, np.finfo(float).tiny))
    return (vectors * values) @ vectors.T, (vectors / values) @ vectors.T


def _fit_users(vectors, pair_user, n_users, l2, pair_weight, start=None, max_iter=50):
    """Each user's MAP factor under the L2 penalty, the pairs' vectors given."""
    return fit_bradley_terry(
        vectors, pair_user, n_users, l2=float(l2), sample_weight=pair_weight,
        start=start, max_iter=max_iter,
    )


def _fit_some_users(vectors, pair_user, n_users, l2, pair_weight, users):
    """:func:`_fit_users` of the ``users`` alone (all when None); NaN rows for the
    others, whose pairs the solver drops (a negative group)."""
    if users is None:
        return _fit_users(vectors, pair_user, n_users, l2, pair_weight)
    index = np.full(n_users, -1, dtype=np.int64)
    index[users] = np.arange(users.size)
    factors = np.full((n_users, vectors.shape[1]), np.nan)
    factors[users] = _fit_users(vectors, index[pair_user], users.size, l2, pair_weight)
    return factors


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

    ``item`` and ``user`` are each cell's, ``bounds`` each item's first cell (and
    the end). ``sides`` (cells x pairs) holds +1 where the cell is the pair's
    winner, -1 where it is its loser; ``touches`` its absolute values. Sums over
    a cell's sides and over an item's cells are sparse products.
    """

    def __init__(self, pair_items, pair_user, n_users, n_items):
        n_pairs = pair_items.shape[0]
        item = pair_items.T.ravel()
        pair = np.tile(np.arange(n_pairs), 2)
        sign = np.repeat([1.0, -1.0], n_pairs)
        known = item >= 0
        side_item, side_user = item[known], pair_user[pair[known]]
        # The distinct (item, user) cells, sorted: a sparse matrix's canonical form
        # (a sort per item row, cheaper than sorting all the sides' keys).
        grid = sparse.csr_matrix(
            (np.ones(side_item.size), (side_item, side_user)), shape=(n_items, n_users)
        )
        grid.sum_duplicates()
        self.item = np.repeat(np.arange(n_items), np.diff(grid.indptr))
        self.user = grid.indices.astype(np.int64)
        # Each side's cell: the position of its (item, user) entry in the grid.
        positions = sparse.csr_matrix(
            (np.arange(grid.nnz), grid.indices, grid.indptr), shape=grid.shape
        )
        cell = np.asarray(positions[side_item, side_user]).ravel()
        self.shape, self.bounds = (n_items, n_users), grid.indptr.astype(np.int64)
        self.sides = sparse.csr_matrix(
            (sign[known], (cell, pair[known])), shape=(grid.nnz, n_pairs)
        )
        self.sides_of_pair = self.sides.T.tocsr()
        self.touches = abs(self.sides)
        # Components of the items joined by pairs; a pair's is its items' (the
        # extra component n_components when it has none).
        links = pair_items[(pair_items[:, 0] >= 0) & (pair_items[:, 1] >= 0)]
        graph = sparse.csr_matrix(
            (np.ones(links.shape[0]), (links[:, 0], links[:, 1])), shape=(n_items, n_items)
        )
        self.n_components, self.item_component = connected_components(graph, directed=False)
        either = np.where(pair_items[:, 0] >= 0, pair_items[:, 0], pair_items[:, 1])
        self.pair_component = np.where(
            either >= 0, self.item_component[np.maximum(either, 0)], self.n_components
        )

    def item_matrix(self, cell_values):
        """The (n_items, n_users) sparse matrix of values per cell."""
        return sparse.csr_matrix((cell_values, self.user, self.bounds), shape=self.shape)


class _UserPairs:
    """The pairs of each user, contiguous after a stable sort by user."""

    def __init__(self, pair_user, n_users):
        self.order = np.argsort(pair_user, kind="stable")
        self.sorted = bool(np.all(self.order == np.arange(pair_user.size)))
        self.bounds = np.searchsorted(pair_user[self.order], np.arange(n_users + 1))

    def matrix(self, pair_values):
        """The (n_users, n_pairs) sparse matrix of ``pair_values`` at (user, pair)."""
        values = pair_values if self.sorted else pair_values[self.order]
        shape = (self.bounds.size - 1, self.order.size)
        return sparse.csr_matrix((values, self.order, self.bounds), shape=shape)

    def grams(self, columns, weights):
        """Per user, ``sum_p weights_p c_p c_p^T`` over its pairs' rows ``c_p`` of
        ``columns``: shape ``(n_users, n_columns, n_columns)``, one small matrix
        product per user with pairs."""
        weighted = columns * weights[:, np.newaxis].astype(columns.dtype)
        if not self.sorted:
            columns, weighted = columns[self.order], weighted[self.order]
        n_users, n_columns = self.bounds.size - 1, columns.shape[1]
        out = np.zeros((n_users, n_columns, n_columns))
        for user in np.flatnonzero(np.diff(self.bounds)):
            rows = slice(self.bounds[user], self.bounds[user + 1])
            out[user] = weighted[rows].T @ columns[rows]
        return out


class FactorizationProblem:
    """The objective of the factorisation and its block Newton steps.

    The margin of a pair is ``f_u . (A d) + f_u . (e_w - e_l)``; the objective is
    the weighted pair losses ``log(1 + exp(-margin))`` plus the three L2 terms.
    The steps take and return the pairs' margins and weighted losses
    (:meth:`pair_losses`), so that an alternation computes them from the blocks
    once (products in float32, sums in float64) and each loss once.
    """

    def __init__(
        self, differences, pair_user, n_users, pair_items, n_items, penalties, pair_weight
    ):
        self.differences, self.pair_user, self.n_users = differences, pair_user, n_users
        self.differences_32 = differences.astype(np.float32, copy=False)
        self.pair_items, self.pair_weight = pair_items, pair_weight
        self.user_l2, self.basis_l2, self.embedding_l2 = penalties
        self.pair_scale = 1.0 if pair_weight is None else pair_weight
        # Per user, the weighted sum of d d^T and the weight of the pairs.
        self.user_pairs = _UserPairs(pair_user, n_users)
        scale = np.broadcast_to(self.pair_scale, pair_user.shape)
        self.user_outer = self.user_pairs.grams(differences, scale).reshape(n_users, -1)
        self.user_weight = np.maximum(
            np.bincount(pair_user, np.broadcast_to(self.pair_scale, pair_user.shape), n_users),
            np.finfo(float).tiny,
        )
        self.cells = None
        if pair_items is not None:
            self.cells = _Cells(pair_items, pair_user, n_users, n_items)

    def loss(self, margin):
        return np.sum(self.pair_losses(margin))

    def pair_losses(self, margin, pairs=slice(None)):
        """The weighted losses ``log(1 + exp(-margin))`` of the pairs ``pairs``
        (all by default), ``margin`` theirs."""
        losses = np.logaddexp(0.0, -margin)
        return losses if self.pair_weight is None else self.pair_weight[pairs] * losses

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
        """``f_u . (A d)`` of every pair (products in float32, the margins float64)."""
        weights = (factors @ basis).astype(np.float32)
        products = np.einsum(
            "pf,pf->p", self.differences_32, np.take(weights, self.pair_user, axis=0)
        )
        return products.astype(np.float64)

    def embedding_margins(self, factors, embedding):
        """``f_u . (e_w - e_l)`` of every pair (products in float32, the margins float64)."""
        if self.cells is None:
            return 0.0
        scores = np.einsum(
            "cr,cr->c",
            np.take(factors.astype(np.float32), self.cells.user, axis=0),
            np.take(embedding.astype(np.float32), self.cells.item, axis=0),
        )
        return self.cells.sides_of_pair @ scores.astype(np.float64)

    def user_step(self, basis, embedding, factors, max_iter):
        """Newton steps for the users (at most ``max_iter``) from ``factors``, by
        :func:`~pllm_sk.core.fit_bradley_terry`."""
        vectors = pair_vectors(self.differences_32, basis, embedding, self.pair_items)
        return _fit_users(
            vectors, self.pair_user, self.n_users, self.user_l2, self.pair_weight,
            start=factors, max_iter=max_iter,
        )

    def basis_step(self, factors, basis, embedding, margin, losses=None):
        """One Newton step for the map, halved until the objective falls.

        The Hessian in the map is ``sum_u f_u f_u^T (x) D_u``, ``D_u`` the
        curvature-weighted sum of the user's ``d d^T``; each user's curvature is
        replaced by its mean over the user's pairs, so ``D_u`` is the weighted sum
        of ``d d^T`` (summed once, in chunks of pairs) times that mean. The map
        margins are linear in the map, so a halving costs one loss pass.

        Parameters
        ----------
        factors : ndarray of shape (n_users, rank)
        basis : ndarray of shape (rank, n_item_features)
        embedding : ndarray of shape (n_items, rank)
        margin : ndarray of shape (n_pairs,)
            The pairs' margins at ``factors``, ``basis`` and ``embedding``.
        losses : ndarray of shape (n_pairs,), default=None
            :meth:`pair_losses` at ``margin``; None computes them.

        Returns
        -------
        basis : ndarray of shape (rank, n_item_features)
        margin, losses : ndarrays of shape (n_pairs,)
            The pairs' margins and losses at the new map.
        """
        rank, n_item_features = basis.shape
        losses = self.pair_losses(margin) if losses is None else losses
        basis_margin = self.basis_margins(factors, basis)
        # The embeddings' share of the margins, which the map's step leaves as it is.
        fixed = 0.0 if self.cells is None else margin - basis_margin
        rest = self.user_l2 * np.sum(factors**2) + self.embedding_l2 * np.sum(embedding**2)
        value = np.sum(losses) + self.basis_l2 * np.sum(basis**2) + rest
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
        change = self.basis_margins(factors, step)
        last = {}  # the margins and losses of the last fraction tried

        def objective(fraction):
            candidate = basis + fraction * step
            moved = fixed + (basis_margin + fraction * change)
            last.update(margin=moved, losses=self.pair_losses(moved))
            return np.sum(last["losses"]) + self.basis_l2 * np.sum(candidate**2) + rest

        fraction = _halved_step(objective, value)
        if fraction:  # the last fraction tried
            basis, margin, losses = basis + fraction * step, last["margin"], last["losses"]
        return basis, margin, losses

    def _user_sums(self, pair_values, columns):
        """Per user, the sum over its pairs of ``pair_values * columns``."""
        return self.user_pairs.matrix(pair_values) @ columns

    def embedding_step(self, factors, embedding, margin, losses=None):
        """One block-Jacobi Newton step for the embeddings, over-relaxed and halved
        per component until the component's objective falls; the users and the map
        stay fixed.

        Each item's ``rank x rank`` block sums ``f_u f_u^T`` times the curvature
        of its cells; the coupling of a pair's two items is left out, which the
        halving makes up for. Given the users and the map the objective is a sum
        over the connected components of the items (items joined by a pair: on
        the ids track, the responses of one prompt), so each component keeps the
        largest of ``_OVER_RELAXATION`` times the Newton step, half that, a
        quarter, ... (``_HALVINGS`` tries) that lowers its own part, or stays as
        it was (:meth:`_descend_by_part`). Cost: two passes over the cells (the
        blocks' lower triangles, the margins' change), a Cholesky solve vectorised
        over the items (:func:`_cholesky_solve`), and one loss pass over the pairs
        per halving, of the components that halve.

        Parameters
        ----------
        factors : ndarray of shape (n_users, rank)
        embedding : ndarray of shape (n_items, rank)
        margin : ndarray of shape (n_pairs,)
            The pairs' margins at ``factors`` and ``embedding`` (and the map).
        losses : ndarray of shape (n_pairs,), default=None
            :meth:`pair_losses` at ``margin``; None computes them.

        Returns
        -------
        embedding : ndarray of shape (n_items, rank)
        margin, losses : ndarrays of shape (n_pairs,)
            The pairs' margins and losses at the new embedding.
        """
        cells, rank = self.cells, embedding.shape[1]
        l2 = 2.0 * self.embedding_l2
        slope, curvature = self.slope_and_curvature(margin)
        gradient = l2 * embedding + cells.item_matrix(cells.sides @ slope) @ factors
        # The blocks' lower triangles summed in float32 (a fifth of the time),
        # solved in float64.
        lower = np.tril_indices(rank)
        outer_factors = (factors[:, lower[0]] * factors[:, lower[1]]).astype(np.float32)
        blocks = cells.item_matrix((cells.touches @ curvature).astype(np.float32)) @ outer_factors
        blocks = np.array(blocks.T, dtype=np.float64, order="C")
        blocks[lower[0] == lower[1]] += l2  # the penalty on each block's diagonal
        step = -_OVER_RELAXATION * _cholesky_solve(blocks, gradient)
        # Margins are linear in the embeddings: along the step they move by ``change``.
        change = self.embedding_margins(factors, step)
        n_parts = cells.n_components + 1
        parts = (cells.item_component, cells.pair_component, n_parts)
        decrement = -np.bincount(
            cells.item_component, np.einsum("ir,ir->i", gradient, step), n_parts
        )
        return self._descend_by_part(
            embedding, step, margin, change, parts, self.embedding_l2, decrement, losses
        )

    def user_newton_step(self, factors, vectors, margin, losses=None):
        """One Newton step per user, over-relaxed and halved per user until the
        user's part of the objective falls; the map and the embeddings stay fixed.

        Given the items the users are independent: user ``u``'s block is the
        curvature-weighted sum of ``v v^T`` over its pairs (``v`` the pairs'
        factor-space vectors) plus ``2 user_l2 I``, summed by one small matrix
        product per user; the step starts at ``_OVER_RELAXATION`` times the
        Newton step (:meth:`_descend_by_part`). Cost: a few passes over the pairs'
        vectors.

        Parameters
        ----------
        factors : ndarray of shape (n_users, rank)
        vectors : ndarray of shape (n_pairs, rank)
            :func:`pair_vectors` at the map and the embeddings.
        margin : ndarray of shape (n_pairs,)
            The pairs' margins at ``factors``.
        losses : ndarray of shape (n_pairs,), default=None
            :meth:`pair_losses` at ``margin``; None computes them.

        Returns
        -------
        factors : ndarray of shape (n_users, rank)
        margin, losses : ndarrays of shape (n_pairs,)
            The margins and losses at the new factors.
        """
        rank, l2 = factors.shape[1], 2.0 * self.user_l2
        slope, curvature = self.slope_and_curvature(margin)
        gradient = self._user_sums(slope.astype(vectors.dtype), vectors) + l2 * factors
        hessian = self.user_pairs.grams(vectors, curvature) + l2 * np.eye(rank)
        step = -_OVER_RELAXATION * np.linalg.solve(hessian, gradient[..., np.newaxis])[..., 0]
        change = np.einsum(
            "pr,pr->p", vectors, np.take(step.astype(vectors.dtype), self.pair_user, axis=0)
        )
        parts = (np.arange(self.n_users), self.pair_user, self.n_users)
        decrement = -np.einsum("ur,ur->u", gradient, step)
        return self._descend_by_part(
            factors, step, margin, change.astype(np.float64), parts, self.user_l2,
            decrement, losses,
        )

    def _descend_by_part(self, point, step, margin, change, parts, l2, decrement, losses):
        """``point + t * step`` with ``t`` the largest of ``1, 1/2, 1/4, ...``
        (``_HALVINGS`` tries, else 0) that lowers each part's share of the objective.

        ``parts`` is ``(row_part, pair_part, n_parts)``: the part of each row of
        ``point`` and of each pair, whose losses and ``l2 * ||row||^2`` make up the
        part's share; ``margin + t * change`` are the pairs' margins along the step.
        A part whose Newton decrement ``decrement`` (``-gradient . step``) is at most
        ``2 * _TOL * (1 + share)`` has converged and stays as it is. ``losses``
        (:meth:`pair_losses` at ``margin``, or None) spares their pass.

        Returns
        -------
        point : ndarray of the shape of ``point``
        margin, losses : ndarrays of shape (n_pairs,)
        """
        row_part, pair_part, n_parts = parts

        def shares(pairs, rows, candidate, pair_losses):
            norms = np.einsum("ir,ir->i", candidate[rows], candidate[rows])
            return np.bincount(pair_part[pairs], pair_losses, n_parts) + l2 * np.bincount(
                row_part[rows], norms, n_parts
            )

        losses = self.pair_losses(margin) if losses is None else losses
        everything = slice(None)
        value = shares(everything, everything, point, losses)
        pending = 0.5 * decrement > _TOL * (1.0 + np.abs(value))
        candidate, moved, moved_losses = point.copy(), margin.copy(), losses.copy()
        fraction = 1.0
        for _ in range(_HALVINGS):
            pending_rows = pending[row_part]
            if not pending_rows.any():
                break
            pairs, rows = _indices(pending[pair_part]), _indices(pending_rows)
            candidate[rows] = point[rows] + fraction * step[rows]
            moved[pairs] = margin[pairs] + fraction * change[pairs]
            pair_losses = self.pair_losses(moved[pairs], pairs)
            moved_losses[pairs] = pair_losses
            pending &= ~(shares(pairs, rows, candidate, pair_losses) <= value)
            fraction *= 0.5
        rows, pairs = np.flatnonzero(pending[row_part]), np.flatnonzero(pending[pair_part])
        candidate[rows] = point[rows]
        moved[pairs], moved_losses[pairs] = margin[pairs], losses[pairs]
        return candidate, moved, moved_losses


def _cholesky_solve(lower, rhs):
    """The solutions of symmetric positive definite systems, vectorised over them.

    Parameters
    ----------
    lower : ndarray of float64, shape (rank * (rank + 1) // 2, n_systems)
        The matrices' lower triangles: row ``k`` holds every system's entry
        ``(rows[k], columns[k])``, ``rows, columns = np.tril_indices(rank)``;
        overwritten by their Cholesky factors.
    rhs : ndarray of shape (n_systems, rank)

    Returns
    -------
    solution : ndarray of shape (n_systems, rank)
        ``np.linalg.solve(matrices, rhs[..., np.newaxis])[..., 0]`` up to rounding.

    A Cholesky factorisation and two triangular solves whose every operation
    runs over all the systems (about ``rank^3 / 6 + rank^2`` multiply-subtract
    passes over rows of ``n_systems`` values): for small ranks and many systems
    about 3x faster than the per-matrix LAPACK calls of ``np.linalg.solve``.
    """
    rank = rhs.shape[1]
    factor = {(i, j): lower[k] for k, (i, j) in enumerate(zip(*np.tril_indices(rank)))}
    product = np.empty(lower.shape[1])
    for j in range(rank):
        for k in range(j):
            for i in range(j, rank):
                factor[i, j] -= np.multiply(factor[i, k], factor[j, k], out=product)
        np.sqrt(factor[j, j], out=factor[j, j])
        for i in range(j + 1, rank):
            factor[i, j] /= factor[j, j]
    solution = np.array(rhs.T, dtype=np.float64, order="C")
    for i in range(rank):  # L y = rhs
        for k in range(i):
            solution[i] -= np.multiply(factor[i, k], solution[k], out=product)
        solution[i] /= factor[i, i]
    for i in reversed(range(rank)):  # L^T x = y
        for k in range(i + 1, rank):
            solution[i] -= np.multiply(factor[k, i], solution[k], out=product)
        solution[i] /= factor[i, i]
    return solution.T


def _indices(mask):
    """The indices where ``mask`` holds: a slice when it holds everywhere (no copies)."""
    return slice(None) if mask.all() else np.flatnonzero(mask)


def _halved_step(objective, value):
    """The largest of ``1, 1/2, 1/4, ...`` (``_HALVINGS`` tries) at which
    ``objective(fraction)`` is at most ``value``, else 0."""
    fraction = 1.0
    for _ in range(_HALVINGS):
        if objective(fraction) <= value:
            return fraction
        fraction *= 0.5
    return 0.0


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
    projected = differences.astype(np.float32, copy=False) @ basis.T.astype(np.float32)
    if pair_items is None:
        return projected
    vectors = _embedding_differences(embedding, pair_items)
    vectors += projected
    return vectors


def _embedding_differences(embedding, pair_items):
    """``e_w - e_l`` of each pair (float32), an unknown item (-1) counting as 0."""
    # Index -1 reads the appended zero row.
    padded = np.vstack([embedding, np.zeros((1, embedding.shape[1]))]).astype(np.float32)
    differences = np.take(padded, pair_items[:, 0], axis=0)
    differences -= np.take(padded, pair_items[:, 1], axis=0)
    return differences
