"""Simulated users: Dirichlet weights over reward models."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["sample_users", "check_weights"]


def sample_users(n_users, *, alpha=0.05, n_reward_models=10, random_state=None):
    """Draw user weight vectors ``w ~ Dirichlet(alpha * 1)``, one row per user.

    A user's reward for a response is ``w . z``, where ``z`` holds the response's
    normalised reward-model scores (in the corpus's ``reward_models`` order). Small
    ``alpha`` puts users near single reward models; large ``alpha`` makes every user
    alike. The PersonalLLM experiments use ``alpha=0.05``.

    Parameters
    ----------
    n_users : int
        Number of users, at least 1.
    alpha : float, default=0.05
        Concentration of the symmetric Dirichlet prior, > 0.
    n_reward_models : int, default=10
        Length of each weight vector.
    random_state : int, RandomState instance or None, default=None
        Seed for the draws.

    Returns
    -------
    weights : ndarray of shape (n_users, n_reward_models)
        Non-negative rows summing to one.

    Examples
    --------
    >>> from pllm_sk.simulation import sample_users
    >>> weights = sample_users(3, alpha=0.05, random_state=0)
    >>> weights.shape, bool(abs(weights.sum(axis=1) - 1).max() < 1e-9)
    ((3, 10), True)
    """
    if not isinstance(n_users, numbers.Integral) or isinstance(n_users, bool):
        raise TypeError(f"n_users must be an integer; got {n_users!r}.")
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1; got {n_users}.")
    if not isinstance(n_reward_models, numbers.Integral) or n_reward_models < 1:
        raise ValueError(
            f"n_reward_models must be a positive integer; got {n_reward_models!r}."
        )
    if not isinstance(alpha, numbers.Real) or not alpha > 0 or not np.isfinite(alpha):
        raise ValueError(f"alpha must be a positive finite number; got {alpha!r}.")
    rng = check_random_state(random_state)
    weights = rng.dirichlet(np.full(n_reward_models, float(alpha)), size=n_users)
    # Tiny alpha underflows to all-zero rows; put such a user on one reward model.
    empty = ~(weights.sum(axis=1) > 0)
    if empty.any():
        weights[empty] = 0.0
        weights[empty, rng.randint(n_reward_models, size=empty.sum())] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def check_weights(weights, n_reward_models=None, *, atol=1e-6):
    """Validate a user weight matrix: 2-d, finite, non-negative, rows summing to one.

    Returns
    -------
    weights : ndarray of float64, shape (n_users, n_reward_models)
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        weights = weights[np.newaxis, :]
    if weights.ndim != 2 or weights.shape[0] == 0:
        raise ValueError(
            f"weights must have shape (n_users, n_reward_models); got {weights.shape}."
        )
    if n_reward_models is not None and weights.shape[1] != n_reward_models:
        raise ValueError(
            f"weights have {weights.shape[1]} columns but the corpus has "
            f"{n_reward_models} reward models."
        )
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights must be finite.")
    if np.any(weights < -atol) or np.any(np.abs(weights.sum(axis=1) - 1) > atol):
        bad = int(
            np.flatnonzero(
                (weights < -atol).any(axis=1) | (np.abs(weights.sum(axis=1) - 1) > atol)
            )[0]
        )
        raise ValueError(
            "weights must lie on the simplex (non-negative, rows summing to 1); "
            f"user {bad} has weights {np.round(weights[bad], 4).tolist()}."
        )
    return np.clip(weights, 0.0, None)
