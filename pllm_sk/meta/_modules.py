"""The torch modules of the meta-learned reward head: item tower, two adapters, loss.

A candidate's score for a user is ``u . h(x)``: ``h`` is the item tower applied to
the candidate's item features, ``u`` the user vector that an adapter computes from
the user's support comparisons, given as differences ``h(x_chosen) - h(x_rejected)``
with the position of their user in the batch (``owner``).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GradientAdapter",
    "ParticleEncoder",
    "RewardHead",
    "make_tower",
    "newton_refine",
    "pair_loss",
    "pair_margins",
]


class RewardHead(nn.Module):
    """Item tower and adapter: the whole model whose parameters are meta-learned."""

    def __init__(self, tower, adapter):
        super().__init__()
        self.tower = tower
        self.adapter = adapter

    def differences(self, winners, losers):
        """``h(x_chosen) - h(x_rejected)`` of each pair, ``(n_pairs, n_components)``."""
        return self.tower(winners) - self.tower(losers)

    def user_vectors(self, winners, losers, owner, n_users):
        """User vectors ``(n_users, n_components)`` from support item features."""
        return self.adapter(self.differences(winners, losers), owner, n_users)

    def margins(self, users, winners, losers, owner):
        """Score of each pair's winner minus its loser, for the pair's user."""
        return pair_margins(users, self.differences(winners, losers), owner)


def pair_margins(users, differences, owner):
    """``u . d`` of each pair, with ``u`` the vector of the pair's user, ``(n_pairs,)``."""
    return (users.index_select(0, owner) * differences).sum(dim=1)


def make_tower(n_inputs, hidden_layer_sizes, n_components, generator):
    """Identity, a linear map, or a ReLU MLP from item features to ``n_components``.

    The output layer has no bias: only differences of item representations within a
    prompt reach the scores. Weights are drawn from ``generator`` (uniform with the
    default scale of ``nn.Linear``), never from torch's global random state.
    """
    if not hidden_layer_sizes and n_components is None:
        return nn.Identity()
    layers, width = [], n_inputs
    for size in hidden_layer_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_components or n_inputs, bias=False))
    with torch.no_grad():
        for layer in layers[::2]:
            bound = 1.0 / layer.in_features**0.5
            for parameter in layer.parameters():
                parameter.copy_(
                    (torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound
                )
    return nn.Sequential(*layers)


class ParticleEncoder(nn.Module):
    """Amortised posterior over learned prototype users (``adaptation="encoder"``).

    Each support comparison ``d`` contributes ``log sigmoid(sharpness * p_m . d)``,
    its log-likelihood under prototype ``m`` at position ``p_m``; these are summed
    over the user's comparisons (a permutation-invariant pooling) and added to a
    learned log-prior over prototypes. The softmax of the total is the posterior over
    prototypes, and the user vector is ``scale`` times the posterior mean of the
    prototype positions. A user without comparisons gets the prior mean.

    The sharpness is ``exp(a + b * log(1 + n))`` for a user with ``n`` comparisons,
    ``a`` and ``b`` learned: with finitely many prototypes, none may satisfy all of
    many comparisons, and the posterior should not collapse onto one of them.

    A finite set of prototypes is still coarse for a user with many comparisons, so
    the posterior mean ``mu`` is then refined by ``n_newton_steps`` Newton steps
    (:func:`newton_refine`) toward the MAP of the user's Bradley-Terry likelihood
    ``sum log sigmoid(t * u . d)`` under the Gaussian prior ``N(mu, Sigma)``, where
    ``Sigma`` is the posterior covariance of the (scaled) prototypes plus a ridge:
    ``scale**2 * (Cov + r * I)``; the temperature ``t`` and the ridge ``r`` are
    learned. A user without comparisons has a zero gradient: they keep ``mu``.
    """

    def __init__(self, positions, n_newton_steps=1):
        super().__init__()
        n_prototypes = positions.shape[0]
        self.n_newton_steps = n_newton_steps
        self.positions = nn.Parameter(positions)
        self.log_prior = nn.Parameter(torch.zeros(n_prototypes))
        self.log_sharpness = nn.Parameter(torch.zeros(()))
        self.sharpness_slope = nn.Parameter(torch.zeros(()))
        self.log_scale = nn.Parameter(torch.zeros(()))
        # The refinement: ridge of its prior covariance, temperature of its likelihood.
        self.log_ridge = nn.Parameter(torch.tensor(math.log(0.05)))
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, differences, owner, n_users, posterior=None):
        # ``posterior``: this input's prototype_posterior, when the caller has it.
        if posterior is None:
            posterior = self.prototype_posterior(differences, owner, n_users)
        scale = self.log_scale.exp()
        mean = posterior @ self.positions
        # Models pickled before the refinement existed have no such attribute.
        n_steps = getattr(self, "n_newton_steps", 0)
        if n_steps == 0:
            return scale * mean
        n_prototypes, n_components = self.positions.shape
        outer = self.positions[:, :, None] * self.positions[:, None, :]
        second = (posterior @ outer.reshape(n_prototypes, -1)).reshape(
            n_users, n_components, n_components
        )
        eye = torch.eye(n_components, dtype=mean.dtype, device=mean.device)
        covariance = scale**2 * (
            second - mean[:, :, None] * mean[:, None, :] + self.log_ridge.exp() * eye
        )
        return newton_refine(
            scale * mean,
            covariance,
            differences,
            owner,
            self.log_temperature.exp(),
            n_steps,
        )

    def prototype_posterior(self, differences, owner, n_users):
        """Posterior probability of each prototype for each user, (n_users, n_prototypes)."""
        # A finite set of prototypes fits many comparisons less sharply than a few.
        n_pairs = torch.zeros(n_users, dtype=differences.dtype, device=owner.device)
        n_pairs = n_pairs.index_add(0, owner, torch.ones_like(differences[:, 0]))
        sharpness = torch.exp(
            self.log_sharpness + self.sharpness_slope * torch.log1p(n_pairs[owner])
        )
        log_likelihood = pooled_log_likelihood(
            differences, self.positions, owner, n_users, scale=sharpness
        )
        return torch.softmax(self.log_prior + log_likelihood, dim=1)


class GradientAdapter(nn.Module):
    """Learned initialisation plus inner gradient steps (``adaptation="gradient"``).

    Every user starts from the learned ``init``; each of ``n_steps`` steps moves the
    user vector down the gradient of the user's support loss
    ``sum_pairs log(1 + exp(-u . d)) + pull / 2 * ||u - init||^2``, with a learned
    step size per component (MAML with learned step sizes, as in Meta-SGD). The
    gradient of the linear score is written out, so the steps are differentiable
    without second-order autograd. A user without comparisons keeps ``init``.
    """

    def __init__(self, n_components, n_steps, generator):
        super().__init__()
        self.n_steps = n_steps
        init = torch.randn(n_components, generator=generator) / n_components**0.5
        self.init = nn.Parameter(init)
        self.log_step = nn.Parameter(torch.full((n_components,), -2.0))
        self.log_pull = nn.Parameter(torch.zeros(()))

    def forward(self, differences, owner, n_users):
        users = self.init.expand(n_users, -1)
        step, pull = self.log_step.exp(), self.log_pull.exp()
        for _ in range(self.n_steps):
            margins = (users.index_select(0, owner) * differences).sum(dim=1)
            descent = torch.zeros_like(users).index_add(
                0, owner, torch.sigmoid(-margins)[:, None] * differences
            )
            users = users + step * (descent - pull * (users - self.init))
        return users


def newton_refine(prior_mean, covariance, differences, owner, temperature, n_steps):
    """Newton steps toward the MAP of a Gaussian prior times a Bradley-Terry likelihood.

    Each user's log posterior is ``sum over their pairs of log sigmoid(t * u . d)``
    minus ``(u - mu)^T Sigma^-1 (u - mu) / 2``. From ``u = mu``, each step is
    ``u += (Sigma^-1 + H)^-1 (g - Sigma^-1 (u - mu))`` with ``g`` and ``H`` the
    gradient and the negative Hessian of the log-likelihood at ``u``, solved as
    ``(I + Sigma H)^-1 (Sigma g - (u - mu))`` so that ``Sigma`` is never inverted.
    A user without pairs has ``g = 0``, ``H = 0``: they stay at ``mu`` exactly.

    Parameters
    ----------
    prior_mean : Tensor of shape (n_users, n_components)
    covariance : Tensor of shape (n_users, n_components, n_components)
        Symmetric positive definite.
    differences : Tensor of shape (n_pairs, n_components)
    owner : Tensor of int64, shape (n_pairs,)
    temperature : Tensor or float
        ``t``, positive.
    n_steps : int

    Returns
    -------
    users : Tensor of shape (n_users, n_components)
    """
    users = prior_mean
    n_users, n_components = users.shape
    eye = torch.eye(n_components, dtype=users.dtype, device=users.device)
    for _ in range(n_steps):
        margins = temperature * (users.index_select(0, owner) * differences).sum(dim=1)
        # d log sigmoid(m) / dm = sigmoid(-m); -d2 / dm2 = sigmoid(m) sigmoid(-m).
        slope = torch.sigmoid(-margins)
        gradient = torch.zeros_like(users).index_add(
            0, owner, (temperature * slope)[:, None] * differences
        )
        hessian = pooled_gram(
            temperature**2 * slope * (1 - slope), differences, owner, n_users
        )
        target = (covariance @ gradient[:, :, None])[:, :, 0] - (users - prior_mean)
        step = torch.linalg.solve(eye + covariance @ hessian, target[:, :, None])
        users = users + step[:, :, 0]
    return users


def pooled_gram(weights, differences, owner, n_users):
    """``sum over each user's pairs of weight * d d^T``, shape (n_users, k, k).

    Computed over blocks of pairs, so that the (pairs, k, k) outer products never
    take more than a few MiB at once.
    """
    n_components = differences.shape[1]
    total = differences.new_zeros(n_users, n_components, n_components)
    for block in _blocks(differences.shape[0], n_components**2, entries=1 << 18):
        weighted = weights[block, None] * differences[block]
        total = total.index_add(
            0, owner[block], weighted[:, :, None] * differences[block, None, :]
        )
    return total


def pooled_log_likelihood(differences, positions, owner, n_users, scale=None):
    """``sum over each user's pairs of log sigmoid(scale * differences @ positions.T)``.

    Parameters
    ----------
    differences : Tensor of shape (n_pairs, n_components)
    positions : Tensor of shape (n_prototypes, n_components)
    owner : Tensor of int64, shape (n_pairs,)
        User of each pair, in ``[0, n_users)``.
    n_users : int
    scale : Tensor of shape (n_pairs,), default=None
        Multiplies each pair's margins; ones when None.

    Returns
    -------
    log_likelihood : Tensor of shape (n_users, n_prototypes)
    """
    if scale is None:
        scale = differences.new_ones(differences.shape[0])
    return _PooledLogLikelihood.apply(differences, positions, owner, n_users, scale)


class _PooledLogLikelihood(torch.autograd.Function):
    """:func:`pooled_log_likelihood`, computed over blocks of pairs.

    The (n_pairs, n_prototypes) margins are the largest tensor of meta-training and
    would be written and read several times by the unfused operations. Here each
    block of pairs is small enough to stay in the CPU cache, and the backward pass
    recomputes the margins of a block instead of keeping them: faster, and memory
    that does not grow with the number of prototypes. The scale of a pair (the
    encoder's sharpness) multiplies its difference, ``n_components`` numbers rather
    than ``n_prototypes`` margins. In the backward pass every product over the
    prototypes is a matrix product: the gradient of the positions is accumulated
    transposed, ``(n_components, n_prototypes)``, the layout in which that product
    runs several times faster, and the gradients of the differences and of the
    scale both come from ``G = grad_margins @ positions``, ``(block, n_components)``.
    """

    @staticmethod
    def forward(ctx, differences, positions, owner, n_users, scale):
        total = differences.new_zeros(n_users, positions.shape[0])
        for block in _blocks(differences.shape[0], positions.shape[0]):
            scaled = differences[block] * scale[block, None]
            total.index_add_(0, owner[block], F.logsigmoid(scaled @ positions.T))
        ctx.save_for_backward(differences, positions, owner, scale)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        differences, positions, owner, scale = ctx.saved_tensors
        needs_differences, needs_positions = ctx.needs_input_grad[:2]
        needs_scale = ctx.needs_input_grad[4]
        grad_differences = torch.empty_like(differences) if needs_differences else None
        grad_positions = positions.new_zeros(positions.shape[::-1])
        grad_scale = torch.empty_like(scale) if needs_scale else None
        blocks = _blocks(differences.shape[0], positions.shape[0])
        # Two block-sized buffers that each block overwrites: allocating them per
        # block would cost more than the products that fill them.
        size = min(differences.shape[0], _block_size(positions.shape[0]))
        margins, gathered = positions.new_empty((2, size, positions.shape[0]))
        for block in blocks:
            scaled = differences[block] * scale[block, None]
            rows = slice(0, scaled.shape[0])
            # d log sigmoid(m) / dm = sigmoid(-m), at m = scale * d . p.
            grad_margins = torch.sigmoid_(torch.mm(-scaled, positions.T, out=margins[rows]))
            grad_margins *= torch.index_select(
                grad_total, 0, owner[block], out=gathered[rows]
            )
            if needs_differences or needs_scale:
                along = (positions.T @ grad_margins.T).T
                if needs_scale:
                    grad_scale[block] = (along * differences[block]).sum(dim=1)
                if needs_differences:
                    grad_differences[block] = along * scale[block, None]
            if needs_positions:
                grad_positions.addmm_(scaled.T, grad_margins)
        return (
            grad_differences,
            grad_positions.T if needs_positions else None,
            None,
            None,
            grad_scale,
        )


def _blocks(n_pairs, n_prototypes, entries=1 << 18):
    """Slices of at most ``entries`` pair-prototype margins (1 MiB of float32)."""
    size = _block_size(n_prototypes, entries)
    return [slice(start, start + size) for start in range(0, n_pairs, size)]


def _block_size(n_prototypes, entries=1 << 18):
    """Pairs per block of :func:`_blocks`."""
    return max(1, entries // max(n_prototypes, 1))


def pair_loss(margins, owner, n_users):
    """Bradley-Terry loss ``log(1 + exp(-margin))``, averaged per user, then over users.

    Users without pairs do not count.
    """
    losses = F.softplus(-margins)
    total = torch.zeros(n_users, dtype=losses.dtype, device=losses.device)
    count = torch.zeros_like(total)
    total = total.index_add(0, owner, losses)
    count = count.index_add(0, owner, torch.ones_like(losses))
    present = count > 0
    return (total[present] / count[present]).mean()
