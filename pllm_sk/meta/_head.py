"""The meta-learned reward head: a torch model adapted to each user from few comparisons."""

import copy
import functools
import numbers

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if

from ..base import (
    BaseRanker,
    IncrementalRankerMixin,
    PosteriorSamplingMixin,
    UserPreferenceMixin,
)
from ..core import (
    UserComparisons,
    calibrate,
    comparisons,
    fit_bradley_terry,
    item_features,
    positions_in,
)
from ..runtime import resolve_device
from ..utils import Interval, StrOptions, fill_docstring
from ._episodes import draw_episodes
from ._modules import GradientAdapter, ParticleEncoder, RewardHead, make_tower
from ._training import EarlyStopping, EpisodeLoss, EpisodicTrainer, split_users

__all__ = ["MetaRewardHead"]

# Support comparisons per forward pass at predict time; bounds the memory.
_PREDICT_PAIRS = 1 << 15
# Log sharpness and log scale tried for the encoder's starting point, on the
# episodes of this many training users with at most this many query prompts.
_ENCODER_GRID = np.log(2.0) * np.arange(-2, 7)
_CALIBRATION_USERS = 128
_CALIBRATION_QUERY = 5
# A plateau of meta-training: this many optimizer steps, and at least one epoch,
# without an improvement of the held-out loss. A plateau halves the step size, up
# to this many times since the last improvement; the next plateau ends training.
_PLATEAU_STEPS = 30
_MAX_HALVINGS = 1


@fill_docstring
class MetaRewardHead(
    PosteriorSamplingMixin, IncrementalRankerMixin, UserPreferenceMixin, BaseRanker
):
    """A torch reward head meta-learned across users to adapt from a few comparisons.

    A candidate row's utility for a user is ``u . h(x)``: ``x`` are the row's item
    features (the feature columns of ``X``, or a one-hot of ``response_id`` when
    ``X`` has none, as in :class:`~pllm_sk.baselines.PopulationRanker`), ``h`` is an
    item tower shared by all users, and ``u`` is the user vector, computed from the
    user's comparisons by an adapter. Comparisons are the pairs of rows of the same
    (user, prompt) with different labels, so only the order of labels is used.

    Adaptation (how ``u`` is computed from a user's comparisons):

    - ``"encoder"`` (default): an amortised posterior over ``n_prototypes`` learned
      prototype users ``p_m``, a permutation-invariant encoder of the comparisons as
      in neural-process preference models. Each comparison
      ``d = h(x_chosen) - h(x_rejected)`` is embedded as its log-likelihood under
      every prototype, ``log sigmoid(s * p_m . d)``; the embeddings are summed over
      the user's comparisons and added to a learned log-prior; the softmax of the
      total is the posterior over prototypes, and ``u`` is the posterior mean of
      the ``p_m`` (times a learned scale). The sharpness ``s`` is learned, as a
      power of the user's number of comparisons (a finite set of prototypes must
      read many comparisons less sharply than a few). When users are linear in the
      features, as on the reward track, this is the form of the Bayes estimator
      (posterior-mean weights) with a learned, discrete prior. With the identity
      tower the prototypes start at the unit-norm Bradley-Terry fits (nearly
      unpenalised, ``l2=0.01``) of the users with the most comparisons (an
      empirical prior); otherwise at random. How sharply a comparison selects
      among the starting prototypes and the scale of ``u`` (the prototypes'
      temperature, and so how far one comparison moves a new user from the
      population) start at the best of a grid of powers of 2 (``_ENCODER_GRID``)
      for the query loss of episodes of up to 128 training users, each chosen in
      turn with the other fixed (sharpness, scale, sharpness): meta-training
      starts from a calibrated empirical prior instead of travelling there by
      small steps.
      Finitely many prototypes are coarse for a user with many comparisons, so the
      posterior mean is then refined by ``n_newton_steps`` Newton steps of a
      Laplace fold-in: toward the MAP of the user's Bradley-Terry log-likelihood
      (with a learned temperature) under a Gaussian prior centred on the posterior
      mean, with the posterior covariance of the prototypes plus a learned ridge.
      The steps are differentiable and part of meta-training; a user without
      comparisons keeps the posterior mean, the prior.
    - ``"gradient"``: a learned initialisation plus ``n_inner_steps`` gradient steps
      on the user's Bradley-Terry loss with a pull toward the initialisation, with
      learned per-component step sizes (MAML with Meta-SGD step sizes; the steps are
      written out, so no second-order autograd is needed).

    Meta-training is episodic over the users of ``fit``: each step takes a batch of
    users, splits each user's labeled prompts at random into a support part (a size
    drawn uniformly from ``1..max_support``, at most all but one prompt) and a query
    part (the other prompts, at most ``max_query``), adapts ``u`` on the support
    comparisons, and takes the Bradley-Terry loss of the query comparisons under
    ``u`` (averaged per user); Adam updates the tower and the adapter. A share
    ``validation_fraction`` of the users with at least two labeled prompts (a
    support and a query) is held out: their loss on episodes drawn once is
    measured before training and after each epoch, and the best parameters are
    kept, the calibrated starting point included. A plateau is 30 optimizer
    steps, and at least one epoch, without an improvement of ``tol``: training
    goes on from the best parameters with half the learning rate, and a second
    plateau since the last improvement ends it, as do ``n_iter_no_change`` epochs
    without an improvement. With few users (an epoch of a few steps) training
    stops on ``n_iter_no_change`` before a plateau; with many, each stale epoch
    is a plateau.

    At predict time every user with labeled rows is adapted the same way, from all
    their comparisons in ``fit`` and ``partial_fit`` (the labeled rows are kept,
    their item features in float32); a user without any (a cold
    user) gets the prior ``population_coef_``: the adapter's output for an empty
    support. :meth:`partial_fit` adds the feedback of new or
    returning users and leaves the meta-parameters frozen.

    Prediction runs in float64 on a copy of the model, so a user's utilities do not
    depend on the other users predicted with them; utilities come back as NumPy.
    Torch is imported with :mod:`pllm_sk.meta`, not with :mod:`pllm_sk`.

    Parameters
    ----------
    adaptation : {"encoder", "gradient"}, default="encoder"
        How the user vector is computed from the user's comparisons.
    n_prototypes : int, default=256
        Prototype users of the encoder.
    n_newton_steps : int, default=1
        Newton steps that refine the encoder's posterior mean (see above); 0 keeps
        the plain posterior mean of the prototypes. Each step solves one
        ``(n_components, n_components)`` system per user. Ignored by the
        ``"gradient"`` adaptation.
    n_inner_steps : int, default=5
        Gradient steps of the ``"gradient"`` adaptation.
    hidden_layer_sizes : tuple of int, default=()
        Hidden layers of the item tower (ReLU MLP). Empty with ``n_components=None``
        makes the tower the identity: the utility is linear in the item features.
    n_components : int or None, default=None
        Size of the item representation and of the user vector; None keeps the
        number of item features.
    max_support : int, default=10
        Largest support set of a meta-training episode, in prompts.
    max_query : int or None, default=None
        Largest query set of a meta-training episode, in prompts; None takes all the
        user's prompts outside the support (query comparisons are cheap: one dot
        product each).
    batch_size : int, default=256
        Users per meta-training step.
    learning_rate : float, default=0.01
        Step size of the Adam optimiser.
    max_epochs : int, default=200
        Passes over the training users at most.
    max_steps : int or None, default=None
        Optimiser steps at most, if set.
    validation_fraction : float, default=0.1
        Share of the meta-training users held out for early stopping, in [0, 1);
        0 stops on the training loss instead.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` before training stops (a plateau
        of 30 steps halves the learning rate first; see above).
    tol : float, default=1e-4
        Smallest improvement of the held-out loss that counts.
    device : str, default="auto"
        Torch device of meta-training and prediction; ``"auto"`` takes CUDA when it
        is available, then MPS, then the CPU, resolved again at each call
        (prediction runs in float64, on the CPU in place of MPS). The fitted
        model is kept on the CPU, so it pickles and loads on any machine; predict
        moves a copy to the device.
    verbose : int, default=0
        0 for silence; 1 shows a progress bar over epochs.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial parameters, the held-out users and the episodes. Fitting
        on the CPU with a fixed seed gives the same model every time.

    Attributes
    ----------
    module_ : torch.nn.Module
        The meta-learned model, on the CPU.
    device_ : str
        The device that meta-training ran on.
    population_coef_ : ndarray of shape (n_components,)
        The user vector of a cold user (no labeled rows): the adapter's output for
        an empty support. With the identity tower, a cold user's utility is
        ``x . population_coef_``.
    {users_attribute}
    {n_response_slots_attribute}
    n_epochs_ : int
        Epochs of meta-training run.
    n_steps_ : int
        Optimiser steps run.
    loss_curve_ : list of float
        Mean meta-training loss of each epoch.
    validation_scores_ : list of float
        Held-out loss after each epoch (empty when ``validation_fraction=0``).
    best_loss_ : float
        The loss (held-out, else training) of the parameters kept.
    initial_sharpness_, initial_scale_ : float or None
        The encoder's sharpness and scale chosen before meta-training (see
        ``"encoder"`` above); None with ``adaptation="gradient"``.
    {input_attributes}

    See Also
    --------
    pllm_sk.baselines.BayesRanker : The Bayes limit the encoder approaches on the
        reward track.
    pllm_sk.baselines.PerUserRanker : Per-user fits shrunk toward the population.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.meta import MetaRewardHead
    >>> rng = np.random.default_rng(0)
    >>> user, prompt, response = np.meshgrid(
    ...     np.arange(60), np.arange(8), np.arange(4), indexing="ij")
    >>> X = pd.DataFrame({"user_id": user.ravel(), "prompt_id": prompt.ravel(),
    ...                   "response_id": response.ravel(),
    ...                   "a": rng.normal(size=user.size), "b": rng.normal(size=user.size)})
    >>> taste = pd.Series(np.where(X["user_id"] % 2 == 0, X["a"], X["b"]))  # 2 kinds
    >>> y = taste.groupby([X["user_id"], X["prompt_id"]]).rank().to_numpy()
    >>> head = MetaRewardHead(n_prototypes=16, max_epochs=50, random_state=0).fit(X, y)
    >>> # A new user chooses the candidate with the higher "b" once ...
    >>> support = pd.DataFrame({"user_id": [99, 99], "prompt_id": [50, 50],
    ...                         "response_id": [0, 1], "a": [1.0, 0.0], "b": [0.0, 1.0]})
    >>> _ = head.partial_fit(support, [0.0, 1.0])
    >>> # ... and the head now ranks a high-"b" candidate first for them.
    >>> query = support.assign(prompt_id=51)
    >>> utility = head.predict(query)
    >>> bool(utility[1] > utility[0])
    True
    """

    _completed_fit_attribute = "module_"

    _parameter_constraints = {
        "adaptation": [StrOptions({"encoder", "gradient"})],
        "n_prototypes": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_newton_steps": [Interval(numbers.Integral, 0, None, closed="left")],
        "n_inner_steps": [Interval(numbers.Integral, 0, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "max_support": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_query": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_steps": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        adaptation="encoder",
        *,
        n_prototypes=256,
        n_newton_steps=1,
        n_inner_steps=5,
        hidden_layer_sizes=(),
        n_components=None,
        max_support=10,
        max_query=None,
        batch_size=256,
        learning_rate=0.01,
        max_epochs=200,
        max_steps=None,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        device="auto",
        verbose=0,
        random_state=None,
    ):
        self.adaptation = adaptation
        self.n_prototypes = n_prototypes
        self.n_newton_steps = n_newton_steps
        self.n_inner_steps = n_inner_steps
        self.hidden_layer_sizes = hidden_layer_sizes
        self.n_components = n_components
        self.max_support = max_support
        self.max_query = max_query
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting

    def _fit(self, feedback):
        if not all(
            isinstance(size, numbers.Integral) and size > 0
            for size in self.hidden_layer_sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a tuple of positive ints; got "
                f"{self.hidden_layer_sizes!r}."
            )
        device = resolve_device(self.device)
        random_state = check_random_state(self.random_state)
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        store = UserComparisons.from_comparisons(
            feedback.ids, feedback.comparisons(), rows=True
        )
        # In float32: the precision the model trains in.
        items = feedback.compact_items.astype(np.float32)
        module = self._initial_module(store, items, rng, generator).to(device)
        start, log = self._meta_train(module, store, items, rng, device)

        self.n_response_slots_ = feedback.n_response_slots
        self._ids, self._items, self._y = feedback.ids, items, feedback.y
        self._store = store
        self.users_ = store.users
        self.module_ = module.cpu()
        self.device_ = str(device)
        self.initial_sharpness_, self.initial_scale_ = start
        self.n_epochs_, self.n_steps_ = log.n_epochs, log.n_steps
        self.loss_curve_, self.validation_scores_ = log.loss_curve, log.validation_scores
        self.best_loss_ = log.best_loss
        # Ids are non-negative, so user -1 is cold: the adapter's output for an
        # empty support, the prior.
        cold = self._unique_user_vectors(np.array([-1]), self._module_for_predict())
        self.population_coef_ = cold.cpu().numpy()[0]

    def _partial_fit(self, feedback):
        """Store the users' rows; the meta-parameters stay frozen.

        Rows whose (user_id, prompt_id, response_id) were already given replace the
        old ones; other rows are appended. The users are adapted at predict time,
        like every user.
        """
        ids, y = feedback.ids, feedback.y
        items = feedback.compact_items.astype(np.float32)
        # The stored rows of the users in X, then X's rows; the last of a repeat wins.
        old = np.flatnonzero(np.isin(self._ids[:, 0], np.unique(ids[:, 0])))
        ids = np.concatenate([self._ids[old], ids])
        _, last = np.unique(ids[::-1], axis=0, return_index=True)
        fresh = np.sort(ids.shape[0] - 1 - last)
        ids = ids[fresh]
        items = np.concatenate([self._items[old], items])[fresh]
        y = np.concatenate([self._y[old], y])[fresh]
        kept = np.ones(self._ids.shape[0], dtype=bool)
        kept[old] = False
        n_kept = int(kept.sum())
        # The users' comparisons are formed anew over all their rows; the other
        # users' keep theirs, with their rows renumbered.
        store = self._store.without(ids[:, 0])
        renumber = np.cumsum(kept) - 1
        for side in ("winner", "loser"):
            store.columns[side] = renumber[store.columns[side]]
        added = UserComparisons.from_comparisons(ids, comparisons(ids, y), rows=True)
        for side in ("winner", "loser"):
            added.columns[side] = added.columns[side] + n_kept
        self._store = store.merged(added)
        self._ids = np.concatenate([self._ids[kept], ids])
        self._items = np.concatenate([self._items[kept], items])
        self._y = np.concatenate([self._y[kept], y])
        self.users_ = self._store.users

    def _initial_module(self, store, items, rng, generator):
        """The item tower and the adapter before meta-training."""
        tower = make_tower(
            items.shape[1], tuple(self.hidden_layer_sizes), self.n_components, generator
        )
        n_components = self.n_components or items.shape[1]
        if self.adaptation == "encoder":
            noise = torch.randn(self.n_prototypes, n_components, generator=generator)
            if isinstance(tower, torch.nn.Identity):
                positions = _empirical_prototypes(store, items, noise, rng)
            else:
                positions = noise / n_components**0.5
            adapter = ParticleEncoder(positions, self.n_newton_steps)
        else:
            adapter = GradientAdapter(n_components, self.n_inner_steps, generator)
        return RewardHead(tower, adapter)

    # ------------------------------------------------------------ meta-training

    def _meta_train(self, module, store, items, rng, device):
        """Episodic meta-training with early stopping on held-out users (in place).

        Returns
        -------
        start : tuple of two floats
            The encoder's calibrated sharpness and scale; ``(None, None)`` with
            the ``"gradient"`` adaptation.
        log : TrainingLog
        """
        groups = store.prompt_groups()
        n_groups = np.diff(groups[1])
        train, validation = split_users(n_groups, self.validation_fraction, rng)
        loss = EpisodeLoss(module, store, items, device)
        draw = functools.partial(
            draw_episodes, groups, rng=rng, max_support=self.max_support,
            max_query=self.max_query,
        )
        n_batches = max(1, -(-validation.size // self.batch_size))
        held_out = [
            (batch.size, *loss.gather(draw(batch)))
            for batch in np.array_split(validation, n_batches)
            if batch.size
        ]
        start = (None, None)
        if isinstance(module.adapter, ParticleEncoder):
            start = self._calibrate_start(module.adapter, loss, groups, train, rng)
        trainer = EpisodicTrainer(
            module, loss, draw, batch_size=self.batch_size,
            learning_rate=self.learning_rate, max_epochs=self.max_epochs,
            max_steps=self.max_steps, verbose=self.verbose,
        )
        stopping = EarlyStopping(
            self.tol, self.n_iter_no_change, plateau_steps=_PLATEAU_STEPS,
            max_halvings=_MAX_HALVINGS,
        )
        validate = (lambda: loss.held_out(held_out, validation.size)) if held_out else None
        return start, trainer.train(train, rng, stopping, validate)

    def _calibrate_start(self, encoder, loss, groups, train, rng):
        """Set the encoder's starting sharpness and scale (see ``"encoder"``).

        Returns
        -------
        sharpness, scale : float
        """
        n_groups = np.diff(groups[1])
        sample = train[n_groups[train] > 1][:_CALIBRATION_USERS]
        if sample.size:
            support, query = loss.gather(
                draw_episodes(
                    groups, sample, rng, max_support=self.max_support,
                    max_query=_CALIBRATION_QUERY,
                )
            )
            _calibrate_encoder(
                encoder,
                lambda: encoder.prototype_posterior(
                    loss.differences_of(support[0]), support[1], sample.size
                ),
                lambda posterior: loss.score(sample.size, support, query, posterior),
            )
        return encoder.log_sharpness.exp().item(), encoder.log_scale.exp().item()

    # --------------------------------------------------------------- prediction

    def _user_preference(self, positions):
        """The adapted user vectors of the users at ``positions`` of ``users_``."""
        module = self._module_for_predict()
        return self._unique_user_vectors(self.users_[positions], module).cpu().numpy()

    # A prototype posterior is a posterior over user vectors; the "gradient"
    # adaptation has none.
    sample_y = available_if(lambda self: self.adaptation == "encoder")(
        PosteriorSamplingMixin.sample_y
    )

    def _sample_y(self, ids, features, n_samples, rng):
        """Utility draws (``adaptation="encoder"``): a prototype per draw.

        A draw is a prototype drawn with its posterior probability (times the
        learned scale), moved by the Newton refinement's step: the user vector of
        ``predict`` plus the drawn prototype's deviation from the posterior mean.
        With ``n_newton_steps=0`` this is the prototype itself. The draws average
        to the ``predict`` vector, and a cold user draws from the prior over
        prototypes.
        """
        module = self._module_for_predict()
        device = next(module.parameters()).device
        unique, inverse = np.unique(ids[:, 0], return_inverse=True)

        def draw(winners, losers, owner, n_users):
            differences = module.tower(winners) - module.tower(losers)
            return _posterior_draws(
                module.adapter, differences, owner, n_users, n_samples, rng
            )

        vectors = self._unique_user_vectors(unique, module, adapt=draw)
        items = item_features(ids, features, self.n_response_slots_)
        with torch.no_grad():
            representations = module.tower(torch.from_numpy(items).to(device))
            inverse = torch.from_numpy(inverse.reshape(-1)).to(device)
            utility = torch.einsum("nk,nsk->ns", representations, vectors[inverse])
        return utility.cpu().numpy()

    def _predict(self, ids, features):
        module = self._module_for_predict()
        device = next(module.parameters()).device
        unique, inverse = np.unique(ids[:, 0], return_inverse=True)
        vectors = self._unique_user_vectors(unique, module)
        items = item_features(ids, features, self.n_response_slots_)
        with torch.no_grad():
            representations = module.tower(torch.from_numpy(items).to(device))
            inverse = torch.from_numpy(inverse.reshape(-1)).to(device)
            utility = (representations * vectors[inverse]).sum(dim=1)
        return utility.cpu().numpy()

    def _module_for_predict(self):
        """A float64 copy of ``module_`` on the ``device`` parameter as resolved now.

        Float64 makes a user's vector independent, to round-off, of the other users
        predicted with them; MPS has no float64, so there the copy runs on the CPU.
        """
        device = resolve_device(self.device)
        if device.type == "mps":
            device = torch.device("cpu")
        return copy.deepcopy(self.module_).to(device, torch.float64)

    def _unique_user_vectors(self, unique, module, adapt=None):
        """User vectors of sorted distinct users, a float64 tensor.

        Users without labeled rows get the prior. ``adapt`` replaces
        ``module.user_vectors`` (same arguments).
        """
        adapt = module.user_vectors if adapt is None else adapt
        device = next(module.parameters()).device
        position, known = positions_in(self._store.users, unique)
        pairs, owner = _user_pairs(self._store, position[known])
        winners, losers = (self._store.columns[side][pairs] for side in ("winner", "loser"))
        # Cold users own no pairs: the same forward pass gives them the prior.
        owner = np.flatnonzero(known)[owner]

        def rows(index):
            return torch.from_numpy(self._items[index]).to(device, torch.float64)

        vectors = []
        with torch.no_grad():
            counts = np.bincount(owner, minlength=unique.size)
            for first, last in _chunks_by_count(counts):
                chosen = slice(*np.searchsorted(owner, [first, last]))
                vectors.append(
                    adapt(
                        rows(winners[chosen]),
                        rows(losers[chosen]),
                        torch.from_numpy(owner[chosen] - first).to(device),
                        last - first,
                    )
                )
        return torch.cat(vectors)


def _user_pairs(store, positions):
    """Comparisons of the users at ``positions`` of ``store.users``, and their owner.

    Returns
    -------
    pairs : ndarray of int64
        Indices into the store's comparisons, user by user.
    owner : ndarray of int64
        Index into ``positions`` of each comparison's user.
    """
    pairs, counts = store.rows(positions)
    return pairs, np.repeat(np.arange(counts.size), counts)


def _empirical_prototypes(store, items, noise, rng):
    """Starting prototypes of the identity tower, a float32 tensor like ``noise``.

    The unit-norm Bradley-Terry fits of the users with the most comparisons (an
    empirical prior; cycled with a little ``noise`` when there are fewer users
    than prototypes).
    """
    n_prototypes, n_components = noise.shape
    n_groups = np.diff(store.prompt_groups()[1])
    most = np.lexsort((rng.random(n_groups.size), -n_groups))
    most = most[n_groups[most] > 0][:n_prototypes]
    pairs, owner = _user_pairs(store, most)
    differences = (
        items[store.columns["winner"][pairs]] - items[store.columns["loser"][pairs]]
    )
    coef = fit_bradley_terry(differences.astype(np.float64), owner, most.size, l2=0.01)
    coef /= np.maximum(np.linalg.norm(coef, axis=1, keepdims=True), 1e-12)
    positions = torch.from_numpy(np.resize(coef, (n_prototypes, n_components)))
    repeated = torch.arange(n_prototypes) >= most.size
    return (positions + 0.1 * repeated[:, None] * noise / n_components**0.5).float()


def _posterior_draws(encoder, differences, owner, n_users, n_samples, rng):
    """Draws of user vectors from an encoder's posterior, (n_users, n_samples, k).

    See :meth:`MetaRewardHead._sample_y`; ``rng`` (NumPy) gives the randomness.
    """
    posterior = encoder.prototype_posterior(differences, owner, n_users)
    cumulative = torch.cumsum(posterior, dim=1)
    uniform = torch.from_numpy(rng.random_sample((n_users, n_samples)))
    chosen = torch.searchsorted(
        cumulative, uniform.to(cumulative.device, cumulative.dtype).contiguous()
    ).clamp(max=posterior.shape[1] - 1)
    scale = encoder.log_scale.exp()
    users = encoder(differences, owner, n_users, posterior=posterior)
    # The drawn prototype's deviation from the posterior mean, around the refined vector.
    deviation = scale * (encoder.positions[chosen] - (posterior @ encoder.positions)[:, None])
    return users[:, None, :] + deviation


def _calibrate_encoder(encoder, posterior, loss):
    """Start the encoder's sharpness and scale at the best of a grid (in place).

    The prototypes start at unit-norm preferences; how sharply a comparison
    selects among them and how large the user vector is are set, before
    meta-training, to the ``_ENCODER_GRID`` values with the lowest query loss of a
    sample of training episodes, one parameter at a time (sharpness, scale,
    sharpness), each chosen by :func:`~pllm_sk.core.calibrate` (``rule="argmax"``
    of minus the loss) with the others fixed. ``posterior()`` is the prototype
    posterior of the sample's support, ``loss(posterior)`` their query loss given
    it. Of the parameters calibrated, the posterior depends on the sharpness
    alone: it is computed once per sharpness, 9 times instead of 27.
    """
    posteriors = {}

    def sample_loss():
        sharpness = encoder.log_sharpness.item()
        if sharpness not in posteriors:
            posteriors[sharpness] = posterior()
        return loss(posteriors[sharpness]).item()

    with torch.no_grad():
        # One at a time, the loss being smooth in each: a full grid would cost a
        # forward pass per combination.
        for parameter in (encoder.log_sharpness, encoder.log_scale, encoder.log_sharpness):

            def score(value, parameter=parameter):
                parameter.fill_(value)
                return np.array([-sample_loss()])

            parameter.fill_(calibrate(score, _ENCODER_GRID, rule="argmax").best)


def _chunks_by_count(counts, limit=_PREDICT_PAIRS):
    """Consecutive ranges ``[first, last)`` of users with at most ``limit`` pairs each.

    A single user with more pairs than ``limit`` gets a range of their own.
    """
    chunks, first, total = [], 0, 0
    for user, count in enumerate(counts.tolist()):
        if user > first and total + count > limit:
            chunks.append((first, user))
            first, total = user, 0
        total += count
    chunks.append((first, counts.size))
    return chunks
