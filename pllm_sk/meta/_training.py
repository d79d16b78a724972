"""Episodic meta-training: the query loss, the training loop, and early stopping.

Each part has one job, as in Hugging Face's ``Trainer`` and its callbacks:
:class:`EpisodeLoss` scores a batch of episodes, :class:`EpisodicTrainer` runs
:class:`Adam` over batches of users epoch by epoch and records what it did, and
:class:`EarlyStopping`, called at the end of each epoch, keeps the best parameters,
halves the step size on a plateau and says when to stop.
"""

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ._modules import pair_loss, pair_margins

__all__ = [
    "Adam",
    "EarlyStopping",
    "EpisodeLoss",
    "EpisodicTrainer",
    "TrainingLog",
    "split_users",
]

# Comparisons whose differences are computed at once when EpisodeLoss builds its table.
_DIFFERENCE_BLOCK = 1 << 16


def split_users(n_groups, validation_fraction, rng):
    """Training users in a random order, and the held-out users, sorted.

    A share ``validation_fraction`` of the users with at least two labeled prompts
    is held out (a held-out user adapts on a support and is scored on a query: a
    user with one prompt would score the prior alone, and a noisy early stop);
    none when that would hold out all of them.

    Parameters
    ----------
    n_groups : ndarray of int64, shape (n_users,)
        Labeled prompts with comparisons of each user of the store.
    validation_fraction : float
    rng : numpy.random.Generator

    Returns
    -------
    train, validation : ndarray of int64
        Positions in the store's users.
    """
    trainable = np.flatnonzero(n_groups > 0)
    adaptable = np.flatnonzero(n_groups > 1)
    n_validation = int(np.ceil(validation_fraction * adaptable.size))
    if n_validation >= adaptable.size:
        n_validation = 0
    validation = np.sort(rng.permutation(adaptable)[:n_validation])
    train = rng.permutation(np.setdiff1d(trainable, validation))
    return train, validation


class EpisodeLoss:
    """Query loss of a batch of episodes, the labeled rows held on ``device``.

    Called as ``loss(n_users, episodes)`` with ``episodes`` as
    :func:`~pllm_sk.meta._episodes.draw_episodes` returns them: the mean over the
    batch's users of their query comparisons' Bradley-Terry loss, each user
    adapted on their support comparisons.

    With the identity tower a comparison's difference ``x_chosen - x_rejected``
    does not change during training: the differences of all the store's
    comparisons are computed once, ``(n_comparisons, n_features)`` (4 bytes per
    comparison and feature), and an episode gathers one row per comparison instead
    of two rows of item features and their difference: the same numbers, at a
    fraction of the gathering.
    """

    def __init__(self, module, store, items, device):
        self.module = module
        self.device = device
        self.items = torch.from_numpy(items).to(device)
        self.winners = torch.from_numpy(store.columns["winner"]).to(device)
        self.losers = torch.from_numpy(store.columns["loser"]).to(device)
        self.differences = None
        if isinstance(module.tower, torch.nn.Identity):
            self.differences = self.items.new_empty((self.winners.shape[0], items.shape[1]))
            # Block by block: the gathered winners and losers of every comparison
            # at once would double the table's memory for a moment.
            for start in range(0, self.winners.shape[0], _DIFFERENCE_BLOCK):
                rows = slice(start, start + _DIFFERENCE_BLOCK)
                torch.sub(
                    self.items.index_select(0, self.winners[rows]),
                    self.items.index_select(0, self.losers[rows]),
                    out=self.differences[rows],
                )

    def __call__(self, n_users, episodes):
        return self.score(n_users, *self.gather(episodes))

    def gather(self, episodes):
        """The comparisons of ``episodes`` on the device, as :meth:`score` takes them.

        ``(rows, owner)`` of the support and of the query: ``rows`` holds the
        comparisons' differences with the identity tower (they do not change in
        training), else the item features of their winners and of their losers.
        Episodes scored many times (the held-out users') are gathered once.
        """
        return tuple(
            (
                self._rows(torch.from_numpy(pairs).to(self.device)),
                torch.from_numpy(owner).to(self.device),
            )
            for pairs, owner in episodes
        )

    def score(self, n_users, support, query, posterior=None):
        """Query loss of gathered episodes (a scalar tensor).

        ``posterior``: the encoder's prototype posterior of the support, when the
        caller has it (see :meth:`ParticleEncoder.forward`).
        """
        (support_rows, support_owner), (query_rows, query_owner) = support, query
        given = {} if posterior is None else {"posterior": posterior}
        users = self.module.adapter(
            self.differences_of(support_rows), support_owner, n_users, **given
        )
        margins = pair_margins(users, self.differences_of(query_rows), query_owner)
        return pair_loss(margins, query_owner, n_users)

    def held_out(self, batches, n_users):
        """Mean loss over the users of ``batches``, no gradient.

        ``batches`` holds ``(n_batch_users, support, query)`` of each batch, its
        episodes gathered by :meth:`gather`.
        """
        with torch.no_grad():
            return (
                sum(self.score(*batch).item() * batch[0] for batch in batches) / n_users
            )

    def differences_of(self, rows):
        """``h(x_chosen) - h(x_rejected)`` of comparisons gathered by :meth:`gather`."""
        if self.differences is not None:
            return rows[0]
        return self.module.differences(*rows)

    def _rows(self, pairs):
        """What :meth:`differences_of` needs of the comparisons ``pairs``."""
        if self.differences is not None:
            return (self.differences.index_select(0, pairs),)
        # index_select gathers rows about twice as fast as indexing with a tensor.
        return tuple(
            self.items.index_select(0, side.index_select(0, pairs))
            for side in (self.winners, self.losers)
        )


class Adam:
    """Adam (Kingma and Ba, 2015), the update of ``torch.optim.Adam``, number for number.

    The same operations, in the same order, as the for-loop implementation of
    ``torch.optim.Adam`` (its default on the CPU) without weight decay or AMSGrad,
    so that a fit gives the same parameters bit for bit. ``torch.optim`` imports
    ``torch._dynamo`` on first use: a second of CPU in every process that fits. As
    in torch, ``param_groups[0]["lr"]`` is the step size a callback may change,
    and a parameter without a gradient is left as it is (its moments too).

    Parameters
    ----------
    parameters : iterable of Tensor
    lr : float
    betas : tuple of two floats, default=(0.9, 0.999)
    eps : float, default=1e-8
    """

    def __init__(self, parameters, lr, betas=(0.9, 0.999), eps=1e-8):
        self.param_groups = [{"params": list(parameters), "lr": lr}]
        self.betas, self.eps = betas, eps
        self.state = {}

    def zero_grad(self):
        """Forget the gradients (``set_to_none``, torch's default)."""
        for parameter in self.param_groups[0]["params"]:
            parameter.grad = None

    @torch.no_grad()
    def step(self):
        """One update of every parameter that has a gradient."""
        beta1, beta2 = self.betas
        lr = self.param_groups[0]["lr"]
        for parameter in self.param_groups[0]["params"]:
            if parameter.grad is None:
                continue
            if parameter not in self.state:
                self.state[parameter] = {
                    "step": 0,
                    "exp_avg": torch.zeros_like(parameter),
                    "exp_avg_sq": torch.zeros_like(parameter),
                }
            state, grad = self.state[parameter], parameter.grad
            state["step"] += 1
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1 ** state["step"]
            bias_correction2_sqrt = (1 - beta2 ** state["step"]) ** 0.5
            denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(self.eps)
            parameter.addcdiv_(state["exp_avg"], denom, value=-(lr / bias_correction1))


@dataclass
class TrainingLog:
    """What a run of :class:`EpisodicTrainer` did."""

    n_epochs: int = 0
    n_steps: int = 0
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_loss: float = np.inf


class EarlyStopping:
    """Keeps the best parameters; halves the step size on a plateau; stops.

    An epoch improves when its loss is below the best one by more than ``tol``;
    the parameters are then copied. A plateau is ``plateau_steps`` optimizer steps,
    and at least one epoch, without an improvement: training goes on from the best
    parameters with half the learning rate, up to ``max_halvings`` times since the
    last improvement; the next plateau ends training, as do ``n_iter_no_change``
    epochs without an improvement. At the end the best parameters are restored.
    """

    def __init__(self, tol, n_iter_no_change, *, plateau_steps, max_halvings):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.plateau_steps = plateau_steps
        self.max_halvings = max_halvings
        self.best_loss, self.best_state = np.inf, None
        self.n_stale = self.stale_steps = self.n_halvings = 0

    def on_train_begin(self, module, loss):
        """The starting parameters compete when there is a loss to compare (held out)."""
        if loss is not None:
            self.best_loss = loss
            self.best_state = copy.deepcopy(module.state_dict())

    def on_epoch_end(self, module, optimizer, loss, n_epoch_steps):
        """Record the epoch's ``loss``; True when training should stop."""
        if loss < self.best_loss - self.tol:
            self.best_loss, self.n_stale, self.stale_steps, self.n_halvings = loss, 0, 0, 0
            self.best_state = copy.deepcopy(module.state_dict())
            return False
        self.n_stale += 1
        self.stale_steps += n_epoch_steps
        if self.n_stale >= self.n_iter_no_change:
            return True
        if self.stale_steps >= self.plateau_steps:
            if self.n_halvings >= self.max_halvings:
                return True
            # A plateau: go on from the best parameters with half the step.
            if self.best_state is not None:
                module.load_state_dict(self.best_state)
            for group in optimizer.param_groups:
                group["lr"] /= 2.0
            self.stale_steps, self.n_halvings = 0, self.n_halvings + 1
        return False

    def on_train_end(self, module):
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


class EpisodicTrainer:
    """Adam over batches of users, one episode each, until a callback stops it.

    Each epoch visits the training users in a new random order, ``batch_size`` at a
    time; each batch draws its episodes (``draw(users)``) and takes one Adam step
    on their query loss. After each epoch the monitored loss (the held-out loss
    from ``validate()``, else the epoch's mean training loss) goes to the
    callback's ``on_epoch_end``.
    """

    def __init__(
        self, module, loss, draw, *, batch_size, learning_rate, max_epochs, max_steps,
        verbose,
    ):
        self.module = module
        self.loss = loss
        self.draw = draw
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.max_steps = max_steps or np.inf
        self.verbose = verbose

    def train(self, users, rng, callback, validate=None):
        """Train on ``users`` (positions in the store); returns a :class:`TrainingLog`."""
        optimizer = Adam(self.module.parameters(), lr=self.learning_rate)
        log = TrainingLog()
        callback.on_train_begin(self.module, None if validate is None else validate())
        progress = tqdm(total=self.max_epochs, disable=not self.verbose, desc="meta-training")
        while log.n_epochs < self.max_epochs and log.n_steps < self.max_steps:
            first_step = log.n_steps
            log.loss_curve.append(self._epoch(optimizer, rng.permutation(users), log))
            log.n_epochs += 1
            current = log.loss_curve[-1]
            if validate is not None:
                current = validate()
                log.validation_scores.append(current)
            progress.update()
            progress.set_postfix(loss=f"{current:.4f}")
            if callback.on_epoch_end(self.module, optimizer, current, log.n_steps - first_step):
                break
        progress.close()
        callback.on_train_end(self.module)
        log.best_loss = float(callback.best_loss)
        return log

    def _epoch(self, optimizer, order, log):
        """One pass over ``order`` (or up to ``max_steps``); the mean training loss."""
        total, n_users = 0.0, 0
        for start in range(0, order.size, self.batch_size):
            batch = order[start : start + self.batch_size]
            loss = self.loss(batch.size, self.draw(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, n_users = total + loss.item() * batch.size, n_users + batch.size
            log.n_steps += 1
            if log.n_steps >= self.max_steps:
                break
        return total / n_users
