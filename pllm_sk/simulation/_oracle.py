"""The oracle: the only object that knows every simulated user's true reward."""

import numpy as np

from ._users import check_weights

__all__ = ["PreferenceOracle"]


class PreferenceOracle:
    """True rewards of simulated users on a corpus.

    User ``u``'s reward for response ``k`` of prompt ``p`` is
    ``weights[u] @ corpus.rewards[p, k]``. Scorers and reference estimators use the
    oracle; learned estimators never see it.

    Parameters
    ----------
    corpus : Corpus
        The corpus whose normalised rewards define the users' rewards.
    weights : array-like of shape (n_users, n_reward_models)
        One simplex weight vector per user; ``user_id`` indexes its rows.

    Attributes
    ----------
    population_weights : ndarray of shape (n_reward_models,)
        The mean of the users' weights: the zero-shot (population) preference that
        the "gap closed" metric starts from.

    Examples
    --------
    >>> from pllm_sk.datasets import make_personalllm
    >>> from pllm_sk.simulation import PreferenceOracle, sample_users
    >>> corpus = make_personalllm(50, random_state=0)
    >>> oracle = PreferenceOracle(corpus, sample_users(4, random_state=0))
    >>> oracle.best_response([0, 1], [3, 3]).shape
    (2,)
    """

    def __init__(self, corpus, weights):
        self.corpus = corpus
        self._weights = check_weights(weights, corpus.n_reward_models)

    def __deepcopy__(self, memo):
        # Immutable like the corpus it wraps: clone() shares it instead of copying.
        return self

    @property
    def weights(self):
        """True user weights, shape (n_users, n_reward_models); a read-only view."""
        view = self._weights.view()
        view.flags.writeable = False
        return view

    @property
    def n_users(self):
        return self._weights.shape[0]

    @property
    def population_weights(self):
        return self._weights.mean(axis=0)

    def _check_users(self, user_ids):
        user_ids = np.asarray(user_ids).reshape(-1)
        if user_ids.dtype.kind not in "iu":
            raise TypeError(f"user_id must hold integers; got dtype {user_ids.dtype}.")
        if user_ids.size and (user_ids.min() < 0 or user_ids.max() >= self.n_users):
            bad = user_ids.min() if user_ids.min() < 0 else user_ids.max()
            raise ValueError(
                f"user_id={bad} is unknown to the oracle, which knows {self.n_users} "
                "users (ids 0 .. n_users - 1)."
            )
        return user_ids.astype(np.int64)

    def reward(self, user_ids, prompt_ids, response_ids):
        """True reward of each (user, prompt, response) row, shape (n_rows,)."""
        user_ids = self._check_users(user_ids)
        prompt_ids, response_ids = self.corpus.check_ids(prompt_ids, response_ids)
        if user_ids.shape != prompt_ids.shape:
            raise ValueError("user_id, prompt_id and response_id must have one length.")
        z = self.corpus.rewards[prompt_ids, response_ids].astype(np.float64)
        return np.einsum("nb,nb->n", z, self._weights[user_ids])

    def candidate_rewards(self, user_ids, prompt_ids, weights=None):
        """True reward of every candidate of each (user, prompt), shape (n, K).

        ``weights`` replaces the users' weights by one vector for everyone (used for
        the zero-shot choice); ``user_ids`` is then only checked.
        """
        user_ids = self._check_users(user_ids)
        prompt_ids = self.corpus.check_ids(prompt_ids)
        if user_ids.shape != prompt_ids.shape:
            raise ValueError("user_id and prompt_id must have the same length.")
        z = self.corpus.rewards[prompt_ids].astype(np.float64)
        if weights is not None:
            return z @ np.asarray(weights, dtype=np.float64)
        return np.einsum("nkb,nb->nk", z, self._weights[user_ids])

    def best_response(self, user_ids, prompt_ids):
        """The user's best response id per (user, prompt); ties go to the lowest id."""
        return self.candidate_rewards(user_ids, prompt_ids).argmax(axis=1)

    def zero_shot_response(self, prompt_ids):
        """The response chosen by the population weights, ties to the lowest id."""
        prompt_ids = self.corpus.check_ids(prompt_ids)
        z = self.corpus.rewards[prompt_ids].astype(np.float64)
        return (z @ self.population_weights).argmax(axis=1)

    def __repr__(self):
        return f"PreferenceOracle(corpus={self.corpus.name!r}, n_users={self.n_users})"
