"""The Bayes limit on the reward track: posterior-mean user weights under the prior."""

import numbers
import warnings

import numpy as np
from scipy import special
from scipy.optimize import linprog
from sklearn.utils import check_random_state

from ..base import BaseRanker, PosteriorSamplingMixin, UserPreferenceMixin
from ..core import positions_in
from ..utils import Interval, fill_docstring

__all__ = ["BayesRanker"]

# Padded comparisons per batch of users sampled together: bounds the memory.
_BATCH_COMPARISONS = 100_000


@fill_docstring
class BayesRanker(UserPreferenceMixin, PosteriorSamplingMixin, BaseRanker):
    """Posterior-mean user weights under the Dirichlet prior: the Bayes limit.

    On the reward track the feature columns of ``X`` are the B reward-model scores
    ``z`` and a simulated user's reward is ``w . z`` with ``w ~ Dirichlet(alpha)``
    on the simplex. Given a user's feedback, the utility that maximises the user's
    expected reward is ``E[w | feedback] . z``; this estimator computes that
    posterior mean for every user it predicts, so no method given the same feedback
    can choose better on average. It is the ceiling that learned methods are
    measured against, next to :class:`OracleRanker` (which knows ``w``).

    Likelihood. Within each (user, prompt), a row with a larger label than another
    was preferred: ``w . (z_a - z_b) > 0``.

    - ``temperature=None`` (default): deterministic choices, as in
      :func:`~pllm_sk.simulation.simulate_feedback`'s noiseless protocols. The
      posterior is the prior restricted to the polyhedral cone where every stated
      order holds. Only the transitive reduction of each prompt's order is kept
      (consecutive label levels: for best/worst feedback, the best above each middle
      row and each middle row above the worst), which is the same set of weights.
      A user whose orders no weight vector satisfies (ties in the scores, or noisy
      feedback) gets the prior mean, with a warning.
    - ``temperature=T``: each pair ``a`` above ``b`` of a prompt (all pairs, not
      only the reduction) has likelihood ``sigmoid(w . (z_a - z_b) / T)``, which is
      exact for the ``"bradley_terry"`` feedback protocol with the same temperature.

    Monte Carlo method. Write ``w = g / sum(g)`` with independent
    ``g_b ~ Gamma(alpha, 1)``. A constraint ``w . d > 0`` is the linear constraint
    ``g . d > 0``, so the posterior of ``g`` is a product of Gamma densities
    restricted to a polyhedral cone. Each sweep of the sampler, in every chain:

    1. redraws the scale ``sum(g)`` from its posterior ``Gamma(B * alpha)``, which
       is independent of ``w`` (an exact Gibbs step that keeps the scale healthy);
    2. proposes a fresh prior draw, kept when it satisfies every constraint (an
       independence Metropolis step whose acceptance probability is the likelihood
       indicator): with few prompts much of the prior is feasible, and this links
       distant modes at once;
    3. proposes to swap two coordinates, kept when every constraint still holds
       (the prior is exchangeable): a jump between vertices of the simplex;
    4. updates each ``g_b`` from its conditional, a Gamma density restricted to an
       interval computed from the constraints, by one exact slice step (a uniform
       level under ``exp(-g_b)``, then an inverse-CDF draw from
       ``g_b ** (alpha - 1)`` on the slice). It needs no tuning and follows the mass
       of ``Dirichlet(0.05)`` down to the faces of the simplex at every scale,
       where uniform or Gaussian proposals never land. For a coordinate holding
       most of the scale the interval is computed from the other coordinates
       directly, since subtracting it would cancel below round-off where
       ``Gamma(0.05)`` still has mass.

    Plain rejection from the prior (step 2 alone) keeps a vanishing share of
    draws after a few prompts; these chains do not depend on it. The Bradley-Terry
    likelihood uses the same sampler after augmenting each pair with a logistic
    noise ``e`` (``sigmoid(m) = P(m + e > 0)``): given the noise the constraints are
    again linear in ``g``, and given ``w`` the noise is a truncated logistic draw.
    Chains start at a point satisfying every constraint (a vertex or an edge
    midpoint of the simplex when one does, otherwise the max-margin point of a
    small linear program), run ``n_burnin`` sweeps, then average ``w`` over
    ``n_draws`` states in all. The estimates agree with closed-form posterior
    means (B = 2), numerical integration (Bradley-Terry, B = 2) and brute-force
    rejection sampling (B = 10, few prompts) within Monte Carlo error; see
    ``tests/test_baselines.py``. Users are sampled together in vectorised
    batches, each with its own random stream derived from ``random_state`` and its
    ``user_id``, so a user's estimate does not depend (beyond round-off) on which
    users are predicted with it. Cost: ``n_burnin + n_draws / n_chains`` sweeps,
    each ``O(n_chains * B * n_comparisons)`` per user (1,000 users x 10 best/worst
    prompts: about 35 s of one core with the defaults).

    A user's posterior mean is computed when the user is predicted (``predict`` and
    :meth:`user_preference` store nothing), so ``fit`` is fast and the many
    historical users of a cold-start split cost nothing unless predicted; predict
    once per fold (one scorer with several metrics) when the users are many. A user
    without labeled rows in ``fit`` gets the prior mean, ``1 / B`` on every score
    (the population prediction).

    Parameters
    ----------
    alpha : float, default=0.05
        Concentration of the symmetric Dirichlet prior, > 0: the value the users
        were simulated with (PersonalLLM uses 0.05).
    temperature : float or None, default=None
        None for deterministic choices; a positive float for the Bradley-Terry
        likelihood with that temperature.
    n_draws : int, default=4000
        Sampler states averaged per user, over all chains.
    n_chains : int, default=8
        Independent chains per user.
    n_burnin : int, default=50
        Sweeps discarded at the start of each chain.
    random_state : int, RandomState instance or None, default=None
        Seed of the users' random streams, drawn once in ``fit``.

    Attributes
    ----------
    {users_attribute}
    n_comparisons_ : ndarray of int64, shape (n_users,)
        Number of comparisons of each user of ``users_`` that constrain the
        weights (with ``temperature=None``, those that do not hold on the whole
        simplex anyway).
    population_coef_ : ndarray of shape (n_reward_models,)
        The prior mean, ``1 / B`` on every score: the cold-user weights.
    {input_attributes}

    See Also
    --------
    OracleRanker : The users' true rewards.
    PerUserRanker : A learned per-user Bradley-Terry fit.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.baselines import BayesRanker
    >>> scores = np.array([[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]])
    >>> X = np.column_stack([np.zeros(3), np.zeros(3), np.arange(3), scores])
    >>> ranker = BayesRanker(random_state=0).fit(X, [1.0, 0.0, 0.5])
    >>> weights = ranker.user_preference([0])
    >>> bool(weights[0, 0] > 0.5)
    True
    """

    _parameter_constraints = {
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "n_draws": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_chains": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_burnin": [Interval(numbers.Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        alpha=0.05,
        *,
        temperature=None,
        n_draws=4000,
        n_chains=8,
        n_burnin=50,
        random_state=None,
    ):
        self.alpha = alpha
        self.temperature = temperature
        self.n_draws = n_draws
        self.n_chains = n_chains
        self.n_burnin = n_burnin
        self.random_state = random_state

    def _fit(self, feedback):
        features = feedback.features
        n_reward_models = features.shape[1]
        if n_reward_models == 0:
            raise ValueError(
                "BayesRanker needs the reward-model scores as feature columns (the "
                "rewards track, e.g. RewardFeatures); X has no feature columns."
            )
        deterministic = self.temperature is None
        structure = feedback.comparisons(
            transitive_reduction=deterministic, required=False
        )
        winners, losers = structure.winners, structure.losers
        constraints = features[winners] - features[losers]
        if deterministic:
            # A constraint w . d > 0 with d >= 0 (and d != 0) holds on the whole
            # simplex: dropping it changes nothing and saves a third of the work.
            implied = (constraints >= 0).all(axis=1) & (constraints > 0).any(axis=1)
            winners, constraints = winners[~implied], constraints[~implied]
            # Scaling a constraint changes nothing either; unit rows keep the
            # feasibility tolerance scale-free.
            scale = np.abs(constraints).max(axis=1, keepdims=True)
            constraints = constraints / np.where(scale > 0, scale, 1.0)
        self.users_ = structure.users
        # Pairs are ordered by (user_id, prompt_id): a user's are contiguous.
        self.n_comparisons_ = np.bincount(
            np.searchsorted(self.users_, feedback.ids[winners, 0]),
            minlength=self.users_.size,
        )
        self.population_coef_ = np.full(n_reward_models, 1.0 / n_reward_models)
        self._constraints = constraints
        self._offsets = np.concatenate([[0], np.cumsum(self.n_comparisons_)])
        self._seed = int(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        )

    def _user_preference(self, positions):
        """Posterior-mean weights, shape (n_users, n_reward_models).

        The prior mean for users whose comparisons constrain nothing. Computed
        anew at each call (nothing is stored), deterministically for a fitted
        ``random_state``.
        """
        means = np.tile(self.population_coef_, (positions.size, 1))
        constrained = np.flatnonzero(self.n_comparisons_[positions] > 0)
        means[constrained] = self._sample(positions[constrained])
        return means

    def _sample_y(self, ids, features, n_samples, rng):
        """Utility draws: the user's weights drawn from the posterior, exactly.

        The draws are states of the sampler of ``predict`` (``n_chains`` chains,
        ``n_burnin`` sweeps of burn-in each) seeded from ``rng``: the first
        ``n_chains`` draws are independent, later ones follow in the chains. Users
        without constraints draw from the Dirichlet prior.
        """
        unique, row_user = np.unique(ids[:, 0], return_inverse=True)
        position, known = positions_in(self.users_, unique)
        draws = _dirichlet(rng, self.alpha, (unique.size, n_samples, features.shape[1]))
        constrained = np.flatnonzero(known & (self.n_comparisons_[position] > 0))
        if constrained.size:
            draws[constrained] = self._sample(
                position[constrained],
                n_draws=n_samples,
                seed=int(rng.randint(np.iinfo(np.int32).max)),
                fallback=lambda n: _dirichlet(
                    rng, self.alpha, (n, n_samples, features.shape[1])
                ),
            )
        return np.einsum("nb,nsb->ns", features, draws[row_user.reshape(-1)])

    def _predict(self, ids, features):
        return np.einsum("nb,nb->n", features, self.user_preference(ids[:, 0]))

    def _sample(self, positions, n_draws=None, seed=None, fallback=None):
        """Posterior means of the users at ``positions`` of ``users_``, in batches.

        With ``fallback`` (a callable ``n -> (n, n_draws, B)`` prior draws), the
        ``n_draws`` sampler states themselves instead of their mean.

        Returns
        -------
        means : ndarray of shape (len(positions), n_reward_models), or \
                (len(positions), n_draws, n_reward_models) with ``fallback``
        """
        n_draws = int(self.n_draws) if n_draws is None else n_draws
        seed = self._seed if seed is None else seed
        shape = (n_draws,) if fallback is not None else ()
        means = np.empty((positions.size,) + shape + (self.population_coef_.size,))
        # Batches of users with similar comparison counts keep the padding small.
        by_count = np.argsort(self.n_comparisons_[positions], kind="stable")
        n_inconsistent = 0
        start = 0
        while start < by_count.size:
            stop = start + 1
            while (
                stop < by_count.size
                and (stop - start + 1) * self.n_comparisons_[positions[by_count[stop]]]
                <= _BATCH_COMPARISONS
            ):
                stop += 1
            batch = positions[by_count[start:stop]]
            counts = self.n_comparisons_[batch]
            blocks = np.zeros((batch.size, counts.max(), self._constraints.shape[1]))
            valid = np.arange(counts.max()) < counts[:, np.newaxis]
            blocks[valid] = self._constraints[
                (self._offsets[batch][:, np.newaxis] + np.arange(counts.max()))[valid]
            ]
            batch_means = _posterior_means(
                blocks,
                valid,
                self.users_[batch],
                alpha=float(self.alpha),
                temperature=self.temperature,
                n_draws=n_draws,
                n_chains=int(self.n_chains),
                n_burnin=int(self.n_burnin),
                seed=seed,
                return_draws=fallback is not None,
            )
            inconsistent = np.isnan(batch_means).reshape(batch.size, -1).any(axis=1)
            n_inconsistent += int(inconsistent.sum())
            batch_means[inconsistent] = (
                self.population_coef_
                if fallback is None
                else fallback(int(inconsistent.sum()))
            )
            means[by_count[start:stop]] = batch_means
            start = stop
        if n_inconsistent:
            warnings.warn(
                f"{n_inconsistent} user(s) gave orders that no weight vector on the "
                "simplex satisfies (tied scores or noisy feedback); they get the prior "
                f"{'mean' if fallback is None else 'draws'}. Set temperature to model "
                "noisy choices.",
                UserWarning,
                stacklevel=4,
            )
        return means


# 0 * inf in the bound computations is NaN on purpose (see the coordinate loop).
@np.errstate(invalid="ignore")
def _posterior_means(
    blocks,
    valid,
    user_ids,
    *,
    alpha,
    temperature,
    n_draws,
    n_chains,
    n_burnin,
    seed,
    return_draws=False,
):
    """Posterior-mean weights of a batch of users by slice-within-Gibbs sampling.

    With ``return_draws``, the first ``n_draws`` states after the burn-in instead,
    sweep by sweep and chain by chain within a sweep (consecutive draws come from
    different, independent chains), shape (n_users, n_draws, B).

    Parameters
    ----------
    blocks : ndarray of shape (n_users, n_pad, B)
        ``z_winner - z_loser`` of each user's pairs, padded to a common length.
    valid : ndarray of bool, shape (n_users, n_pad)
        False on the padding rows.
    user_ids : ndarray of shape (n_users,)
        Keys of the users' random streams.

    Returns
    -------
    means : ndarray of shape (n_users, B)
        NaN rows for users whose deterministic constraints are infeasible.
    """
    n_users, n_pad, n_reward_models = blocks.shape
    streams = [
        np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(u,)))
        )
        for u in user_ids.tolist()
    ]
    by_user, rows = _constraint_layouts(blocks, valid)
    if temperature is None:
        start, feasible = _feasible_start(blocks, valid)
        shift = 0.0
        inverse_lower, inverse_upper = _inverse_bounds(rows)
    else:
        start = np.full((n_users, n_reward_models), 1.0 / n_reward_models)
        feasible = np.ones(n_users, dtype=bool)
        noise_uniform = np.full((n_users, n_pad, n_chains), 0.5)
        n_valid = valid.sum(axis=1).tolist()
    gamma = np.repeat(start.T[:, np.newaxis, :], n_chains, axis=1)
    buffer = np.empty((n_pad, n_chains, n_users))
    total = np.zeros((n_reward_models, n_users))
    states = []
    n_sweeps = n_burnin + -(-n_draws // n_chains)
    for sweep in range(n_sweeps):
        # Each user's stream gives the same numbers whatever batch it is in.
        uniform = np.stack(
            [s.random((2 * n_reward_models + 3, n_chains)) for s in streams], axis=2
        )
        proposal = np.stack(
            [s.standard_gamma(alpha, (n_reward_models, n_chains)) for s in streams],
            axis=2,
        )
        # Under the posterior the scale sum(g) ~ Gamma(B * alpha) is independent of
        # w = g / sum(g): redrawing it is an exact Gibbs step that keeps the scale
        # from drifting toward underflow.
        scale = special.gammaincinv(n_reward_models * alpha, uniform[-1])
        gamma *= scale / gamma.sum(axis=0)
        if temperature is not None:
            noise_uniform[valid] = np.concatenate(
                [s.random((n, n_chains)) for s, n in zip(streams, n_valid)]
            )
            shift = _noise_shift(rows, gamma, valid, noise_uniform, temperature)
            inverse_lower, inverse_upper = _inverse_bounds(rows + shift)
        # Recomputed each sweep so that round-off in the updates never accumulates.
        margin = _constraint_margins(rows, gamma) + shift * scale
        np.maximum(margin, 0.0, out=margin)
        margin = _prior_move(rows, gamma, margin, shift, proposal)
        margin = _swap_move(by_user, gamma, margin, uniform[-3:-1])
        _coordinate_moves(
            rows, by_user, gamma, margin, shift, (inverse_lower, inverse_upper),
            uniform, alpha, buffer,
        )
        if sweep >= n_burnin:
            total += (gamma / gamma.sum(axis=0)).sum(axis=1)
            if return_draws:
                states.append(gamma / gamma.sum(axis=0))
    if return_draws:
        # (sweeps, B, chains, users) -> (users, sweeps * chains, B)
        draws = np.stack(states).transpose(3, 0, 2, 1).reshape(n_users, -1, n_reward_models)
        draws = draws[:, :n_draws]
        draws[~feasible] = np.nan
        return draws
    means = total.T / ((n_sweeps - n_burnin) * n_chains)
    means[~feasible] = np.nan
    return means


def _constraint_layouts(blocks, valid):
    """The constraint rows as (n_users, B, n_pad) and as (B, n_pad, 1, n_users).

    Users on the last axis: every elementwise step runs over long contiguous
    rows, and reductions over constraints (axis 0) over whole (chain, user)
    slabs. Padding rows become ``1 . g > 0``, which always holds and bounds
    nothing.
    """
    by_user = np.ascontiguousarray(
        np.where(valid[..., np.newaxis], blocks, 1.0).transpose(0, 2, 1)
    )
    rows = np.ascontiguousarray(by_user.transpose(1, 2, 0))[:, :, np.newaxis, :]
    return by_user, rows


def _coordinate_moves(
    rows, by_user, gamma, margin, shift, inverse_bounds, uniform, alpha, buffer
):
    """One exact slice update of each coordinate ``g_b`` in turn, in place.

    ``gamma`` (B, n_chains, n_users) and the constraint margins ``margin``
    (n_pad, n_chains, n_users) are updated together; ``inverse_bounds`` are
    :func:`_inverse_bounds` of the constraint coefficients, ``uniform`` the
    sweep's uniforms (rows ``b`` and ``B + b`` are coordinate ``b``'s), ``buffer``
    scratch memory of ``margin``'s shape.
    """
    n_reward_models = gamma.shape[0]
    inverse_lower, inverse_upper = inverse_bounds
    scale = gamma.sum(axis=0)
    for b in range(n_reward_models):
        current = gamma[b]
        coefficient = rows[b] + shift
        # Margin m_c moves by coefficient_c * (x - current): x may go down by
        # m_c / coefficient_c when it is positive, up by m_c / |coefficient_c|.
        # A zero margin times an infinite inverse (a constraint that does not
        # bound b) gives NaN: the chain then keeps g_b for this sweep.
        down = np.multiply(margin, inverse_lower[b], out=buffer).min(axis=0)
        up = np.multiply(margin, inverse_upper[b], out=buffer).min(axis=0)
        lower = np.maximum(current - down, 0.0)
        upper = current + up
        # current - down cancels when g_b holds most of the scale: the true
        # bound can be far below current's round-off, where Gamma(0.05) still
        # puts mass. For those chains, bound from the other coordinates exactly.
        chain, user = np.nonzero(current > 0.5 * scale)
        if user.size:
            rest = _margins_without(by_user, gamma, shift, chain, user, b)
            selected = np.broadcast_to(coefficient, margin.shape)[:, chain, user]
            with np.errstate(divide="ignore"):
                bound = -rest / selected
            lower[chain, user] = np.maximum(
                np.where(selected > 0, bound, 0.0).max(axis=0), 0.0
            )
            upper[chain, user] = np.where(selected < 0, bound, np.inf).min(axis=0)
        new = _slice_gamma_step(
            current,
            lower,
            upper,
            alpha,
            uniform[b],
            uniform[n_reward_models + b],
        )
        margin += np.multiply(coefficient, new - current, out=buffer)
        if user.size:
            margin[:, chain, user] = rest + selected * new[chain, user]
        gamma[b] = new
        scale = gamma.sum(axis=0)


def _noise_shift(rows, gamma, valid, noise_uniform, temperature):
    """The Bradley-Terry noise of each constraint given ``w``, times ``temperature``.

    ``sigmoid(m / T) = P(m + T e > 0)`` for a logistic ``e``: given ``w`` the
    noise of a satisfied constraint is a logistic draw truncated to ``e > -m / T``
    (from ``noise_uniform``, shape (n_users, n_pad, n_chains)); padding rows get
    0. Returns shape (n_pad, n_chains, n_users).
    """
    utility = _constraint_margins(rows, gamma / gamma.sum(axis=0))
    noise = _truncated_logistic(-utility / temperature, noise_uniform.transpose(1, 2, 0))
    return np.where(valid.T[:, np.newaxis, :], temperature * noise, 0.0)


def _dirichlet(rng, alpha, shape):
    """Draws of ``Dirichlet(alpha * 1)`` on the last axis of ``shape``.

    Normalised Gamma draws; a draw that underflows to all zeros (tiny ``alpha``)
    goes to one vertex, as in :func:`~pllm_sk.simulation.sample_users`.
    """
    gamma = rng.standard_gamma(float(alpha), shape)
    total = gamma.sum(axis=-1)
    empty = ~(total > 0)
    if empty.any():
        gamma[empty] = np.eye(shape[-1])[rng.randint(shape[-1], size=int(empty.sum()))]
        total[empty] = 1.0
    return gamma / total[..., np.newaxis]


def _inverse_bounds(coefficients):
    """``1 / c`` where ``c > 0`` and ``1 / |c|`` where ``c < 0``, inf elsewhere.

    ``coefficients`` has shape (B, n_pad, 1 or n_chains, n_users); the results
    have the same shape. A margin times these is how far a coordinate may move down
    (resp. up) before that constraint breaks.
    """
    with np.errstate(divide="ignore"):
        inverse = 1.0 / coefficients
    return (
        np.where(coefficients > 0, inverse, np.inf),
        np.where(coefficients < 0, -inverse, np.inf),
    )


def _constraint_margins(rows, gamma):
    """``rows[:, c, 0, u] . gamma[:, chain, u]``, shape (n_pad, n_chains, n_users).

    Summed coordinate by coordinate rather than by BLAS, whose blocking would make
    a user's round-off depend on the users sampled with it.
    """
    margins = rows[0] * gamma[0]
    for b in range(1, rows.shape[0]):
        margins += rows[b] * gamma[b]
    return margins


def _margins_without(by_user, gamma, shift, chain, user, b):
    """Exact margins of the selected chains without coordinate ``b``'s term.

    ``by_user`` holds the constraint rows as (n_users, B, n_pad).

    Returns
    -------
    rest : ndarray of shape (n_pad, n_selected)
    """
    others = gamma[:, chain, user].T
    others[:, b] = 0.0
    rest = np.einsum("nbp,nb->pn", by_user[user], others)
    if np.ndim(shift):
        rest += shift[:, chain, user] * others.sum(axis=1)
    return rest


def _prior_move(rows, gamma, margin, shift, proposal):
    """Independence Metropolis move from the prior, per chain, in place.

    With the prior as proposal the acceptance probability is the likelihood
    indicator: a fresh prior draw is kept exactly when it satisfies every
    constraint. Few prompts leave a sizeable share of the prior feasible, and then
    this move jumps between distant modes that local moves would take long to link.

    Returns
    -------
    margin : ndarray of shape (n_pad, n_chains, n_users)
        The constraint margins after the move.
    """
    total = proposal.sum(axis=0)
    proposed = _constraint_margins(rows, proposal) + shift * total
    accept = (proposed.min(axis=0) > 0) & (total > 0)
    gamma[:, accept] = proposal[:, accept]
    return np.where(accept, proposed, margin)


def _swap_move(by_user, gamma, margin, uniform):
    """Metropolis swap of two coordinates of ``gamma`` per chain, in place.

    The prior is exchangeable, so a swap is accepted exactly when every constraint
    still holds. It jumps between the vertices of the simplex near which
    ``Dirichlet(0.05)`` puts its mass, which coordinate moves cross slowly.
    ``by_user`` holds the constraint rows as (n_users, B, n_pad).

    Returns
    -------
    margin : ndarray of shape (n_pad, n_chains, n_users)
        The constraint margins after the move.
    """
    n_reward_models, n_chains, n_users = gamma.shape
    first = np.minimum(
        (uniform[0] * n_reward_models).astype(np.int64), n_reward_models - 1
    )
    offset = np.minimum(
        (uniform[1] * (n_reward_models - 1)).astype(np.int64), n_reward_models - 2
    )
    second = (first + 1 + offset) % n_reward_models
    chain = np.arange(n_chains)[:, np.newaxis]
    user = np.arange(n_users)[np.newaxis, :]
    g_first, g_second = gamma[first, chain, user], gamma[second, chain, user]
    # A common shift of every coefficient (the Bradley-Terry noise) cancels out.
    change = by_user[user, first] - by_user[user, second]
    proposed = margin + change.transpose(2, 0, 1) * (g_second - g_first)
    accept = proposed.min(axis=0) >= 0
    gamma[first, chain, user] = np.where(accept, g_second, g_first)
    gamma[second, chain, user] = np.where(accept, g_first, g_second)
    return np.where(accept, proposed, margin)


def _slice_gamma_step(current, lower, upper, alpha, level_uniform, draw_uniform):
    """One slice-sampling update of ``x ~ Gamma(alpha, 1)`` restricted to [lower, upper].

    A uniform level under ``exp(-x)`` bounds the slice at ``current + Exp(1)``; on
    the slice the density is ``x ** (alpha - 1)``, drawn by its inverse CDF.
    """
    top = np.minimum(upper, current - np.log1p(-level_uniform))
    # Round-off can leave an empty interval at the boundary; then stay put.
    empty = ~(top > lower)
    top = np.where(empty, current, top)
    low_power, top_power = lower**alpha, top**alpha
    new = (low_power + draw_uniform * (top_power - low_power)) ** (1.0 / alpha)
    return np.where(empty, current, np.clip(new, lower, top))


def _truncated_logistic(lower, uniform):
    """Logistic draws conditioned on exceeding ``lower``, by the inverse survival function."""
    # log P(e > lower) = -log(1 + exp(lower)); e = -logit(v) for v = u * P(e > lower).
    log_v = np.log(uniform) - np.logaddexp(0.0, lower)
    return np.log1p(-np.exp(log_v)) - log_v


def _feasible_start(blocks, valid):
    """A point of the simplex with ``blocks[u] @ w > 0`` for each user, and a mask.

    Vertices and edge midpoints of the simplex are tried first (``Dirichlet(0.05)``
    users sit near them); a linear program finds the max-margin point otherwise.
    """
    n_users, _, n_reward_models = blocks.shape
    vertices = np.eye(n_reward_models)
    first, second = np.triu_indices(n_reward_models, k=1)
    candidates = np.vstack([vertices, (vertices[first] + vertices[second]) / 2])
    margins = np.where(valid[..., np.newaxis], blocks @ candidates.T, np.inf)
    worst = margins.min(axis=1)
    best = worst.argmax(axis=1)
    start = candidates[best]
    feasible = worst[np.arange(n_users), best] > _MARGIN_TOL
    objective = np.append(np.zeros(n_reward_models), -1.0)
    for user in np.flatnonzero(~feasible):
        rows = blocks[user, valid[user]]
        # Maximise t subject to rows @ w >= t, w on the simplex.
        result = linprog(
            objective,
            A_ub=np.hstack([-rows, np.ones((rows.shape[0], 1))]),
            b_ub=np.zeros(rows.shape[0]),
            A_eq=np.append(np.ones(n_reward_models), 0.0)[np.newaxis],
            b_eq=[1.0],
            bounds=[(0.0, None)] * n_reward_models + [(None, 1.0)],
            method="highs",
        )
        if result.status == 0 and result.x[-1] > _MARGIN_TOL:
            weights = np.clip(result.x[:-1], 0.0, None)
            start[user] = weights / weights.sum()
            feasible[user] = True
    return start, feasible


# Smallest margin of a feasible start, on comparisons scaled to unit max-norm.
_MARGIN_TOL = 1e-9
