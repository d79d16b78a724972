"""The mixture prior over user factors: its fit, the fold-in under it, its choice.

Module-level functions that take arrays (and a :class:`MixturePrior`) and return
arrays; :class:`~pllm_sk.collaborative.LowRankRanker` assigns what they return.
"""

from typing import NamedTuple

import numpy as np
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from ..core import (
    TEMPERATURES,
    calibrate,
    calibration_split,
    fit_bradley_terry,
    laplace_predictive,
    log_likelihood_scores,
)

__all__ = [
    "HeldOutComparisons",
    "MixturePrior",
    "choose_prior",
    "component_posteriors",
    "fit_mixture_prior",
    "posterior_factors",
    "stored_weights",
]


class MixturePrior(NamedTuple):
    """A Gaussian-mixture prior over user factors, with its precisions."""

    weights: np.ndarray  # (n_components,)
    means: np.ndarray  # (n_components, rank)
    covariances: np.ndarray  # (n_components, rank, rank)
    precisions: np.ndarray  # (n_components, rank, rank)

    @classmethod
    def of(cls, weights, means, covariances):
        return cls(weights, means, covariances, np.linalg.inv(covariances))


def fit_mixture_prior(sample, n_components, user_l2, rng):
    """The mixture prior fitted to the factors ``sample`` (n_users, rank).

    ``min(n_components, n_users)`` full-covariance components; one user gets the
    L2 penalty's own Gaussian (variance ``1 / (2 user_l2)``) around their factor.
    """
    if sample.shape[0] < 2:
        covariance = np.eye(sample.shape[1]) / (2.0 * user_l2)
        return MixturePrior.of(np.ones(1), sample.copy(), covariance[np.newaxis])
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
    return MixturePrior.of(mixture.weights_, mixture.means_, mixture.covariances_)


def component_posteriors(
    prior, vectors, groups, n_groups, temperature, start=None, sample_weight=None
):
    """Per-component MAP factors and each component's posterior probability.

    For each group (user) and prior component, the MAP factor of the group's
    comparisons ``vectors`` (log-likelihood divided by ``temperature``) with that
    component as prior, and its Laplace evidence, which weighs the components.

    Returns
    -------
    component_factors : ndarray of shape (n_groups, n_components, rank)
    posterior : ndarray of shape (n_groups, n_components)
    """
    coef, log_evidence = fit_bradley_terry(
        vectors,
        groups,
        n_groups,
        prior_mean=prior.means,
        prior_precision=prior.precisions,
        weight=1.0 / temperature,
        sample_weight=sample_weight,
        start=start,
        return_log_evidence=True,
    )
    log_posterior = np.log(prior.weights) + log_evidence
    posterior = np.exp(log_posterior - log_posterior.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    return coef, posterior


def posterior_factors(prior, vectors, groups, n_groups, temperature, sample_weight=None):
    """Posterior-mean factors (n_groups, rank): the component MAPs, weighted."""
    coef, posterior = component_posteriors(
        prior, vectors, groups, n_groups, temperature, sample_weight=sample_weight
    )
    return np.einsum("gc,gcr->gr", posterior, coef)


def stored_weights(store, rows):
    """Stored weights of comparisons ``rows``; None when all are 1.

    Unit weights take the solver's unweighted path, so fits without
    ``sample_weight`` stay the same to the last bit.
    """
    weight = store.columns["weight"][rows]
    return None if (weight == 1.0).all() else weight


class HeldOutComparisons:
    """Support and held-out comparisons of sampled prior users, to score a prior.

    Sampled users reveal 1, 2, 3 or 5 prompts as a cold-start user would
    (:func:`~pllm_sk.core.calibration_split`); up to ``n_held_out`` of their
    other prompts are held out, and of those the comparisons whose winner is the
    prompt's top choice are scored.
    """

    def __init__(self, store, positions, rng, n_users, n_held_out):
        self.positions, support, held_out = calibration_split(
            store, positions, rng, n_users, n_held_out=n_held_out
        )
        vectors = store.columns["vector"]
        self.support_vectors = vectors[support[0]].astype(np.float64)
        self.support_owner = support[1]
        self.support_weight = stored_weights(store, support[0])
        rows, owner = held_out
        is_top = store.columns["top"][rows]
        self.vectors = vectors[rows[is_top]].astype(np.float64)
        self.owner = owner[is_top]

    def score(self, prior, temperature, start=None):
        """Per-user held-out scores of the fold-in, and its component MAP factors.

        The posterior predictive probability of each held-out comparison (the
        Laplace mixture predictive, :func:`~pllm_sk.core.laplace_predictive`), in
        mean log-probability per user.

        Returns
        -------
        scores : ndarray of shape (n_scored_users, 1)
        component_factors : ndarray of shape (n_users, n_components, rank)
            The warm start of a fold-in at a nearby temperature.
        """
        n_users = self.positions.size
        coef, posterior = component_posteriors(
            prior, self.support_vectors, self.support_owner, n_users, temperature, start,
            self.support_weight,
        )
        probability = laplace_predictive(
            self.vectors,
            self.owner,
            self.support_vectors,
            self.support_owner,
            coef,
            posterior,
            prior.precisions,
            1.0 / temperature,
            support_weight=self.support_weight,
        )
        return log_likelihood_scores(probability[:, None], self.owner, n_users), coef


def choose_prior(sample, candidates, temperature, held_out, rng, user_l2):
    """The mixture prior and the fold-in temperature, chosen on held-out prompts.

    The smallest candidate number of components (the first of ``candidates``, the
    cheapest to fold in) is scored at every second value of ``TEMPERATURES``, from
    the softest down, each fold-in starting where the last ended; the other
    candidates, each a mixture fitted to ``sample``, at the best of those; the
    best candidate is kept (:func:`~pllm_sk.core.calibrate`, ``rule="argmax"``),
    and its temperature climbs the full grid while a neighbour scores better, then
    is refined between grid points (``rule="log2_parabola"``).

    Parameters
    ----------
    sample : ndarray of shape (n_prior_users, rank)
        Factors the mixtures are fitted to.
    candidates : list of int
        Numbers of components, the smallest first.
    temperature : float or None
        A fixed temperature; None chooses it.
    held_out : HeldOutComparisons or None
        None (or no sampled user) keeps the last candidate and ``temperature``
        (1.0 when None) without scoring.
    rng : RandomState
        Seeds the mixture fits.
    user_l2 : float

    Returns
    -------
    prior : MixturePrior
    temperature : float
    """
    if held_out is None or held_out.positions.size == 0:
        prior = fit_mixture_prior(sample, candidates[-1], user_l2, rng)
        return prior, 1.0 if temperature is None else temperature
    grid = TEMPERATURES if temperature is None else np.array([temperature])
    priors = {candidates[0]: fit_mixture_prior(sample, candidates[0], user_l2, rng)}
    solutions = {}

    def scorer(n_components):
        """The held-out scores of candidate ``n_components`` at a temperature."""

        def score(value, previous):
            scores, solutions[n_components, value] = held_out.score(
                priors[n_components], value, solutions.get((n_components, previous))
            )
            return scores

        return score

    coarse = np.arange(0, grid.size, 2)
    sweep = calibrate(
        scorer(candidates[0]), grid, rule="argmax", order=coarse[::-1], warm_start=True
    )
    at = sweep.index

    def score_candidate(n_components):
        n_components = int(n_components)
        priors[n_components] = fit_mixture_prior(sample, n_components, user_l2, rng)
        return scorer(n_components)(grid[at], None)

    table = np.full((sweep.table.shape[0], len(candidates)), np.nan)
    table[:, 0] = sweep.table[:, at]
    choice = calibrate(
        score_candidate, np.array(candidates), rule="argmax", table=table,
        order=np.arange(1, len(candidates)),
    )
    chosen = candidates[choice.index]
    if temperature is not None:
        return priors[chosen], temperature
    # Its temperature climbs from there, with what was scored of it.
    start = sweep.table if choice.index == 0 else np.full_like(sweep.table, np.nan)
    start[:, at] = choice.table[:, choice.index]
    final = calibrate(scorer(chosen), grid, table=start, climb_from=at, warm_start=True)
    return priors[chosen], final.best
