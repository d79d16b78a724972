"""The interaction loop: users arrive, are shown responses, say which they prefer.

:class:`InteractionEnvironment` holds the oracle, and so the users' true (possibly
drifting) weights; a personalization estimator, fitted beforehand on historical
users, is given to :meth:`InteractionEnvironment.run` with a policy. Nothing here
imports an estimator: the environment uses the estimator's public methods
(``predict``, ``sample_y``, ``partial_fit``, ``fit``) only.
"""

import copy
import numbers
import time
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..utils import Interval, InvalidParameterError, StrOptions, validate_arguments
from ._oracle import PreferenceOracle
from ._policies import (
    GreedyPolicy,
    InformationSeekingPolicy,
    RandomPolicy,
    ThompsonPolicy,
)
from ._rows import _candidate_rows, _feedback_rows, _split_pipeline, _transform
from ._updates import _update_strategy
from ._users import sample_users

__all__ = ["INTERACTION_FEEDBACK", "InteractionEnvironment"]

INTERACTION_FEEDBACK = ("pair", "bradley_terry", "slate")

_POLICIES = (GreedyPolicy, ThompsonPolicy, InformationSeekingPolicy, RandomPolicy)
_POLICY_METHODS = ("validate", "needs", "choose")


class InteractionEnvironment:
    """Users who receive a new prompt each round and judge the responses shown.

    Each round, every active user gets a prompt they were never given before
    (from ``prompt_split``); the estimator scores the prompt's K candidates (its
    ``predict`` and, if the policy asks, its ``sample_y`` draws); the policy
    chooses the ``n_shown`` responses shown, the served one first; the user
    chooses among the shown responses under the ``feedback`` protocol; and the
    rows of the shown responses, with ``y = 1`` for the chosen one and ``0`` for
    the others, go back to the estimator. Nothing about a response that was not
    shown ever reaches it. Evaluation is progressive (test, then train): the
    served response is scored with the user's true reward before its feedback is
    learned from.

    Feedback protocols:

    - ``"pair"``: two responses shown; the user chooses the better one for them
      (ties to the lower ``response_id``).
    - ``"bradley_terry"``: the user chooses response ``k`` of the shown ones with
      probability proportional to ``exp(r_k / temperature)`` (Bradley-Terry for a
      pair, its Plackett-Luce first choice for a slate).
    - ``"slate"``: ``n_shown`` responses shown; the user chooses their best.

    Drift (the true weights change; the estimator is not told):

    - ``"mix"``: each user has a fresh ``Dirichlet(alpha)`` target drawn at the
      start; from round 1 on, each round moves the weights toward it,
      ``w <- (1 - drift_rate) w + drift_rate * target`` (staying on the simplex).
    - ``"jump"``: at round ``jump_round`` each user's weights are replaced by a
      fresh ``Dirichlet(alpha)`` draw.

    Parameters
    ----------
    oracle : PreferenceOracle
        Holds the corpus and the users' true weights at round 0.
    users : array-like of int, default=None
        The users of the loop (user ids of the oracle), new to the estimator;
        None takes every user of the oracle. :meth:`run` warns when some of
        them are users the estimator was fitted on (its ``users_``).
    feedback : {"pair", "bradley_terry", "slate"}, default="pair"
    n_shown : int, default=2
        Responses shown per round, >= 2; 2 for ``"pair"`` and ``"bradley_terry"``
        pairs (``"bradley_terry"`` also takes a slate).
    temperature : float, default=1.0
        Choice temperature of ``"bradley_terry"``, > 0.
    prompt_split : {"test", "train"} or None, default="test"
        Where each round's prompts come from; None means all prompts.
    arrivals : array-like of int, default=None
        Round at which each user of ``users`` arrives (>= 0); None: all at round 0.
        A user's *step* is the number of rounds since their arrival.
    drift : {None, "mix", "jump"}, default=None
    drift_rate : float, default=0.05
        Share of the way to the target moved per round under ``"mix"``, in (0, 1].
    jump_round : int, default=None
        Round of the ``"jump"``, >= 1 and below the ``n_rounds`` of :meth:`run`;
        required by it. Given with another ``drift``, it is ignored with a warning.
    alpha : float, default=0.05
        Concentration of the fresh Dirichlet draws of the drifts, > 0.
    random_state : int, RandomState instance or None, default=None
        Seeds independent streams for the prompts, the drift, the feedback
        noise, the policy and the posterior draws: for a fixed ``random_state``
        every run gives each user the same prompts and the same drifting weights,
        whatever the estimator and the policy, so that runs compare pairwise.

    See Also
    --------
    progressive_scores : Regret and top-1 rate per step, from the log.
    GreedyPolicy, ThompsonPolicy, InformationSeekingPolicy, RandomPolicy

    Examples
    --------
    >>> from pllm_sk.baselines import BayesRanker
    >>> from pllm_sk.datasets import make_personalllm
    >>> from pllm_sk.features import RewardFeatures
    >>> from pllm_sk.simulation import (GreedyPolicy, InteractionEnvironment,
    ...     PreferenceOracle, progressive_scores, sample_users, simulate_feedback)
    >>> from sklearn.pipeline import make_pipeline
    >>> corpus = make_personalllm(300, random_state=0)
    >>> oracle = PreferenceOracle(corpus, sample_users(20, random_state=0))
    >>> history = simulate_feedback(corpus, oracle.weights[:10], n_history=5,
    ...                             n_query=0, random_state=0)
    >>> model = make_pipeline(RewardFeatures(corpus), BayesRanker(n_draws=64, random_state=0))
    >>> model = model.fit(history.X, history.y)
    >>> environment = InteractionEnvironment(oracle, users=range(10, 20), random_state=0)
    >>> log = environment.run(model, GreedyPolicy(), n_rounds=3)
    >>> log.shape, list(log.columns[:4])
    ((30, 11), ['round', 'step', 'user_id', 'prompt_id'])
    >>> progressive_scores(log)[["step", "n_users"]].to_numpy().tolist()
    [[0, 10], [1, 10], [2, 10]]
    """

    _parameter_constraints = {
        "oracle": [PreferenceOracle],
        "users": ["array-like", None],
        "feedback": [StrOptions(set(INTERACTION_FEEDBACK))],
        "n_shown": [Interval(numbers.Integral, 2, None, closed="left")],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "prompt_split": [StrOptions({"train", "test"}), None],
        "arrivals": ["array-like", None],
        "drift": [StrOptions({"mix", "jump"}), None],
        "drift_rate": [Interval(numbers.Real, 0, 1, closed="right")],
        "jump_round": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        oracle,
        users=None,
        *,
        feedback="pair",
        n_shown=2,
        temperature=1.0,
        prompt_split="test",
        arrivals=None,
        drift=None,
        drift_rate=0.05,
        jump_round=None,
        alpha=0.05,
        random_state=None,
    ):
        self.oracle = oracle
        self.users = users
        self.feedback = feedback
        self.n_shown = n_shown
        self.temperature = temperature
        self.prompt_split = prompt_split
        self.arrivals = arrivals
        self.drift = drift
        self.drift_rate = drift_rate
        self.jump_round = jump_round
        self.alpha = alpha
        self.random_state = random_state

    def run(
        self,
        estimator,
        policy,
        n_rounds,
        *,
        history=None,
        decay=1.0,
        window=None,
        refit_every=1,
        population_refit_every=None,
    ):
        """Run the loop for ``n_rounds`` rounds and return its log.

        The estimator is copied first: the one given is left as it is.

        How the estimator learns from the feedback of the shown responses:

        - with ``partial_fit`` and no forgetting: each round's rows, as they come;
        - with forgetting (``decay < 1`` or ``window``), every ``refit_every``
          rounds: the population estimator as given (copied) plus, through
          ``partial_fit``, the loop's feedback so far, the rows of round ``s``
          weighted ``decay ** (t - s)`` at round ``t`` (``sample_weight``) and only
          the last ``window`` rounds kept;
        - without ``partial_fit``: ``fit`` anew every ``refit_every`` rounds on
          ``history`` (if given) and the loop's feedback, forgetting likewise;
        - ``population_refit_every=k``: each time ``k`` more users have arrived,
          the population part too is refitted, on ``history`` and all the loop's
          feedback (then incremental updates resume on that fit).

        Parameters
        ----------
        estimator : fitted ranker or Pipeline
            Fitted on historical users (other user ids than ``users``). A
            Pipeline's last step is the ranker and the steps before it transform
            the id rows (for example ``RewardFeatures``).
        policy : policy object
            An instance of :class:`GreedyPolicy`, :class:`ThompsonPolicy`,
            :class:`InformationSeekingPolicy` or :class:`RandomPolicy`
            (``GreedyPolicy()``, not the class), or any object with their
            ``validate`` / ``needs`` / ``choose`` methods.
        n_rounds : int
            Rounds to run, >= 1; more than ``jump_round`` under ``drift="jump"``.
        history : tuple (X, y), default=None
            Id rows and labels the estimator was fitted on: refits (estimators
            without ``partial_fit``, population refits) fit on them and the loop's
            feedback; without it they fit on the loop's feedback only.
        decay : float, default=1.0
            Weight factor per round of age of a user's feedback, in (0, 1]; < 1
            needs ``sample_weight`` in the estimator's ``partial_fit`` (or ``fit``
            when it has none).
        window : int, default=None
            Keep only the feedback of the last ``window`` rounds, >= 1.
        refit_every : int, default=1
            Rounds between refits (without ``partial_fit``, or with forgetting).
        population_refit_every : int, default=None
            Arrivals between population refits; None never refits the population.
            Needs ``history``; not combined with forgetting.

        Returns
        -------
        log : DataFrame
            One row per (round, active user): ``round``, ``step`` (rounds since
            the user arrived), ``user_id``, ``prompt_id``, ``served``, ``shown``
            (tuple of the shown response ids, served first), ``chosen`` (the
            user's choice among them), ``served_reward`` (true reward of the
            served response), ``best_reward`` (of the best candidate),
            ``regret`` (their difference) and ``top1`` (the served response is a
            best one). ``log.attrs`` holds ``"settings"`` (what was run) and
            ``"round_seconds"`` (wall time of each round, the update included).
        """
        self._validate()
        features, ranker = _split_pipeline(estimator)
        check_is_fitted(ranker)
        run_parameters = dict(
            n_rounds=n_rounds,
            decay=decay,
            window=window,
            refit_every=refit_every,
            population_refit_every=population_refit_every,
        )
        validate_arguments(_RUN_CONSTRAINTS, run_parameters, "InteractionEnvironment.run")
        self._check_run(ranker, policy, n_rounds)
        update = _update_strategy(
            ranker,
            features,
            history=history,
            decay=decay,
            window=window,
            refit_every=refit_every,
            population_refit_every=population_refit_every,
        )
        policy.validate(ranker, self.n_shown)
        # The ranker given is only ever copied or cloned: it is the population.
        ranker = copy.deepcopy(ranker)
        streams = _Streams.from_seed(self.random_state)
        prompts = _prompt_sequences(streams.prompt, self._pool_, self._users_.size, n_rounds)
        drift = self._drift(streams.drift)
        log, given, round_seconds = [], [], []
        for round_ in range(n_rounds):
            start = time.perf_counter()
            weights = drift.weights_at(round_)
            active = np.flatnonzero(self._arrivals_ <= round_)
            if active.size:
                round_log, feedback = self._play_round(
                    ranker, features, policy, round_, active, prompts, weights, streams
                )
                log.append(round_log)
                given.append(feedback)
                # Train on what was shown, after the round was scored.
                ranker = update(ranker, given, round_, active.size)
            round_seconds.append(time.perf_counter() - start)
        log = pd.concat(log, ignore_index=True)
        log.attrs["settings"] = dict(
            self._settings(),
            estimator=type(ranker).__name__,
            policy=repr(policy),
            **run_parameters,
        )
        log.attrs["round_seconds"] = round_seconds
        return log

    def _play_round(self, ranker, features, policy, round_, active, prompts, weights, streams):
        """Serve, show and collect the choices of the active users: one round.

        Returns the round's log and its feedback rows (see ``_feedback_rows``).
        """
        steps = round_ - self._arrivals_[active]
        users, user_prompts = self._users_[active], prompts[active, steps]
        n_candidates = self.oracle.corpus.n_responses
        X = _transform(features, _candidate_rows(users, user_prompts, n_candidates))
        shown = _show(ranker, X, policy, steps, self.n_shown, n_candidates, streams)
        true_reward = np.einsum(
            "nkb,nb->nk",
            self.oracle.corpus.rewards[user_prompts].astype(np.float64),
            weights[active],
        )
        chosen = self._choose(true_reward, shown, streams.feedback)
        return (
            _round_log(round_, steps, users, user_prompts, shown, chosen, true_reward),
            _feedback_rows(round_, users, user_prompts, shown, chosen),
        )

    def _drift(self, rng):
        """The users' true weights round by round; the targets drawn from ``rng``."""
        weights = np.array(self.oracle.weights[self._users_])
        target = sample_users(
            self._users_.size,
            alpha=self.alpha,
            n_reward_models=weights.shape[1],
            random_state=rng,
        )
        return _Drift(self.drift, self.drift_rate, self.jump_round, weights, target)

    # ------------------------------------------------------------------ helpers

    def _check_run(self, ranker, policy, n_rounds):
        """Check the policy and ``jump_round`` against ``n_rounds``; warn of known users."""
        _check_policy(policy)
        if self.drift == "jump" and self.jump_round >= n_rounds:
            raise ValueError(
                f"jump_round={self.jump_round} is not below n_rounds={n_rounds}: the rounds "
                f"run are 0 .. {n_rounds - 1}, so the jump would never happen. Pass "
                f"n_rounds > {self.jump_round}, or a jump_round below {n_rounds}."
            )
        known = np.intersect1d(self._users_, np.asarray(getattr(ranker, "users_", [])))
        if known.size:
            ids = ", ".join(map(str, known[:5])) + (", ..." if known.size > 5 else "")
            warnings.warn(
                f"{known.size} of the {self._users_.size} users of the loop ({ids}) have "
                f"feedback in the fitted {type(ranker).__name__} (its users_): their regret "
                "measures what the estimator already knew of them, not adaptation to new "
                "users. Pass as users ids the estimator was not fitted on.",
                UserWarning,
                stacklevel=3,
            )

    def _validate(self):
        """Check the parameters and set ``_users_``, ``_arrivals_`` and ``_pool_``."""
        validate_arguments(
            self._parameter_constraints,
            {name: getattr(self, name) for name in self._parameter_constraints},
            type(self).__name__,
        )
        n_responses = self.oracle.corpus.n_responses
        if self.n_shown > n_responses:
            raise ValueError(
                f"n_shown={self.n_shown} is more than the {n_responses} candidates of a "
                "prompt."
            )
        if self.feedback == "pair" and self.n_shown != 2:
            raise ValueError(
                f"feedback='pair' shows two responses; got n_shown={self.n_shown} "
                "(use feedback='slate' for more)."
            )
        if self.drift == "jump" and self.jump_round is None:
            raise ValueError("drift='jump' needs jump_round, the round of the jump.")
        if self.drift != "jump" and self.jump_round is not None:
            warnings.warn(
                f"jump_round={self.jump_round} is ignored with drift={self.drift!r}: only "
                "drift='jump' has a jump. Pass drift='jump' for it, or leave jump_round "
                "as None.",
                UserWarning,
                stacklevel=3,
            )
        self._users_ = self._check_users()
        self._arrivals_ = self._check_arrivals()
        self._pool_ = self.oracle.corpus.prompt_ids(self.prompt_split)

    def _check_users(self):
        if self.users is None:
            return np.arange(self.oracle.n_users, dtype=np.int64)
        users = np.asarray(self.users).reshape(-1)
        if users.dtype.kind not in "iu" or users.size == 0:
            raise ValueError(f"users must be a non-empty array of user ids; got {self.users!r}.")
        if users.min() < 0 or users.max() >= self.oracle.n_users:
            raise ValueError(
                f"users holds ids outside the oracle's 0 .. {self.oracle.n_users - 1}."
            )
        if np.unique(users).size != users.size:
            raise ValueError("users holds a user id twice.")
        return users.astype(np.int64)

    def _check_arrivals(self):
        n_users = self._users_.size
        if self.arrivals is None:
            return np.zeros(n_users, dtype=np.int64)
        arrivals = np.asarray(self.arrivals).reshape(-1)
        if arrivals.shape != (n_users,) or arrivals.dtype.kind not in "iu" or (
            arrivals.min() < 0
        ):
            raise ValueError(
                "arrivals must hold one non-negative integer round per user of users; "
                f"got {self.arrivals!r}."
            )
        return arrivals.astype(np.int64)

    def _choose(self, true_reward, shown, rng):
        """The response each user chooses among the shown ones."""
        # Shown ids sorted, so that argmax sends ties to the lower response_id.
        ordered = np.sort(shown, axis=1)
        reward = np.take_along_axis(true_reward, ordered, axis=1)
        if self.feedback == "bradley_terry":
            logits = reward / self.temperature
            probability = np.exp(logits - logits.max(axis=1, keepdims=True))
            cumulative = np.cumsum(probability / probability.sum(axis=1, keepdims=True), axis=1)
            uniform = rng.random_sample((shown.shape[0], 1))
            index = np.minimum((uniform > cumulative).sum(axis=1), shown.shape[1] - 1)
        else:
            index = np.argmax(reward, axis=1)
        return ordered[np.arange(shown.shape[0]), index]

    def _settings(self):
        return dict(
            corpus=self.oracle.corpus.name,
            n_users=int(self._users_.size),
            feedback=self.feedback,
            n_shown=self.n_shown,
            prompt_split=self.prompt_split,
            drift=self.drift,
            **({"drift_rate": self.drift_rate} if self.drift == "mix" else {}),
            **({"jump_round": self.jump_round} if self.drift == "jump" else {}),
            **({"temperature": self.temperature} if self.feedback == "bradley_terry" else {}),
        )


_RUN_CONSTRAINTS = {
    "n_rounds": [Interval(numbers.Integral, 1, None, closed="left")],
    "decay": [Interval(numbers.Real, 0, 1, closed="right")],
    "window": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "refit_every": [Interval(numbers.Integral, 1, None, closed="left")],
    "population_refit_every": [Interval(numbers.Integral, 1, None, closed="left"), None],
}


class _Streams(NamedTuple):
    """Independent random streams of a run, so that runs compare pairwise."""

    prompt: np.random.RandomState
    drift: np.random.RandomState
    feedback: np.random.RandomState
    policy: np.random.RandomState
    draw: np.random.RandomState

    @classmethod
    def from_seed(cls, random_state):
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        return cls(
            *(
                np.random.RandomState(np.random.MT19937(child))
                for child in np.random.SeedSequence(seed).spawn(5)
            )
        )


class _Drift:
    """The users' true weights at each round; see :class:`InteractionEnvironment`.

    ``weights_at`` is called once per round, in order: ``"mix"`` moves the weights
    a step toward ``target`` from round 1 on, ``"jump"`` replaces them by
    ``target`` at ``jump_round``.
    """

    def __init__(self, kind, rate, jump_round, weights, target):
        self.kind = kind
        self.rate = rate
        self.jump_round = jump_round
        self.weights = weights
        self.target = target

    def weights_at(self, round_):
        if self.kind == "mix" and round_ > 0:
            self.weights = (1.0 - self.rate) * self.weights + self.rate * self.target
        elif self.kind == "jump" and round_ == self.jump_round:
            self.weights = self.target.copy()
        return self.weights


def _check_policy(policy):
    """Raise unless ``policy`` is an object with the policy methods (not a class)."""
    if not isinstance(policy, type) and all(
        callable(getattr(policy, method, None)) for method in _POLICY_METHODS
    ):
        return
    accepted = ", ".join(f"{cls.__name__}()" for cls in _POLICIES)
    if isinstance(policy, type):
        got = f"the class {policy.__name__}; pass an instance, {policy.__name__}()"
    else:
        got = f"{policy!r}"
    raise InvalidParameterError(
        "The 'policy' parameter of InteractionEnvironment.run must be a policy instance: "
        f"one of {accepted}, or an object with validate, needs and choose methods. "
        f"Got {got} instead."
    )


def _show(ranker, X, policy, steps, n_shown, n_candidates, streams):
    """The responses the policy shows each user, from the ranker's scores and draws."""
    n_users = steps.size
    needs_scores, n_draws = policy.needs(steps, n_shown)
    draw_seed = int(streams.draw.randint(np.iinfo(np.int32).max))
    scores = np.full((n_users, n_candidates), np.nan)
    if needs_scores:
        scores = ranker.predict(X).reshape(n_users, n_candidates)
    draws = None
    if n_draws:
        draws = ranker.sample_y(X, n_draws, random_state=draw_seed).reshape(
            n_users, n_candidates, n_draws
        )
    return _check_shown(
        policy.choose(scores, draws, n_shown, steps, streams.policy),
        n_users,
        n_shown,
        n_candidates,
        type(policy).__name__,
    )


def _prompt_sequences(rng, pool, n_users, n_rounds):
    """Each user's prompts, one per step, never repeated: (n_users, n_rounds)."""
    if n_rounds > pool.size:
        raise ValueError(
            f"n_rounds={n_rounds} needs as many distinct prompts per user, and the "
            f"prompt split has {pool.size}."
        )
    return np.stack([rng.choice(pool, n_rounds, replace=False) for _ in range(n_users)])


def _check_shown(shown, n_users, n_shown, n_candidates, policy_name):
    shown = np.asarray(shown)
    if shown.shape != (n_users, n_shown) or shown.dtype.kind not in "iu":
        raise ValueError(
            f"{policy_name}.choose must return integer response ids of shape "
            f"{(n_users, n_shown)}; got {shown.dtype} of shape {shown.shape}."
        )
    ordered = np.sort(shown, axis=1)
    if (shown < 0).any() or (shown >= n_candidates).any() or (
        ordered[:, 1:] == ordered[:, :-1]
    ).any():
        raise ValueError(
            f"{policy_name}.choose must return distinct response ids in "
            f"[0, {n_candidates}) per user."
        )
    return shown.astype(np.int64)


def _round_log(round_, steps, users, prompts, shown, chosen, true_reward):
    rows = np.arange(users.size)
    served_reward = true_reward[rows, shown[:, 0]]
    best_reward = true_reward.max(axis=1)
    return pd.DataFrame(
        {
            "round": round_,
            "step": steps,
            "user_id": users,
            "prompt_id": prompts,
            "served": shown[:, 0],
            "shown": [tuple(row) for row in shown.tolist()],
            "chosen": chosen,
            "served_reward": served_reward,
            "best_reward": best_reward,
            "regret": best_reward - served_reward,
            "top1": served_reward >= best_reward,
        }
    )
