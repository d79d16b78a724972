"""The interaction loop: users arrive, are shown responses, say which they prefer.

:class:`InteractionEnvironment` holds the oracle, and so the users' true (possibly
drifting) weights; a personalization estimator, fitted beforehand on historical
users, is given to :meth:`InteractionEnvironment.run` with a policy. Nothing here
imports an estimator: the environment uses the estimator's public methods
(``predict``, ``sample_y``, ``partial_fit``, ``fit``) only.
"""

import copy
import inspect
import numbers
import time

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, has_fit_parameter

from ._oracle import PreferenceOracle
from ._users import sample_users

__all__ = ["INTERACTION_FEEDBACK", "InteractionEnvironment"]

INTERACTION_FEEDBACK = ("pair", "bradley_terry", "slate")
_DRIFTS = (None, "mix", "jump")


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
        None takes every user of the oracle.
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
        Round of the ``"jump"``, >= 1; required by it.
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
    >>> import numpy as np
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
    >>> environment = InteractionEnvironment(oracle, users=np.arange(10, 20),
    ...                                      random_state=0)
    >>> log = environment.run(model, GreedyPolicy(), n_rounds=3)
    >>> log.shape, list(log.columns[:4])
    ((30, 11), ['round', 'step', 'user_id', 'prompt_id'])
    >>> progressive_scores(log)[["step", "n_users"]].to_numpy().tolist()
    [[0, 10], [1, 10], [2, 10]]
    """

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
            :class:`GreedyPolicy`, :class:`ThompsonPolicy`,
            :class:`InformationSeekingPolicy`, :class:`RandomPolicy`, or any
            object with their ``validate`` / ``needs`` / ``choose`` methods.
        n_rounds : int
            Rounds to run, >= 1.
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
        _check_run_parameters(
            ranker, n_rounds, decay, window, refit_every, population_refit_every, history
        )
        policy.validate(ranker, self.n_shown)
        # The ranker given is only ever copied or cloned: it is the population.
        population, ranker = ranker, copy.deepcopy(ranker)
        streams = [
            np.random.RandomState(np.random.MT19937(child))
            for child in np.random.SeedSequence(
                check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            ).spawn(5)
        ]
        prompt_rng, drift_rng, feedback_rng, policy_rng, draw_rng = streams
        arrivals = self._arrivals_
        prompts = _prompt_sequences(
            prompt_rng, self._pool_, self._users_.size, n_rounds
        )
        weights = np.array(self.oracle.weights[self._users_])
        target = sample_users(
            self._users_.size,
            alpha=self.alpha,
            n_reward_models=weights.shape[1],
            random_state=drift_rng,
        )
        forgetting = decay < 1 or window is not None
        rewards = self.oracle.corpus.rewards
        n_candidates = self.oracle.corpus.n_responses
        log, given, round_seconds = [], [], []
        n_refitted = 0
        for round_ in range(n_rounds):
            start = time.perf_counter()
            if self.drift == "mix" and round_ > 0:
                weights = (1.0 - self.drift_rate) * weights + self.drift_rate * target
            elif self.drift == "jump" and round_ == self.jump_round:
                weights = target.copy()
            active = np.flatnonzero(arrivals <= round_)
            if active.size == 0:
                round_seconds.append(time.perf_counter() - start)
                continue
            steps = round_ - arrivals[active]
            users, user_prompts = self._users_[active], prompts[active, steps]
            X = _candidate_rows(users, user_prompts, n_candidates)
            X_model = _transform(features, X)
            needs_scores, n_draws = policy.needs(steps, self.n_shown)
            draw_seed = int(draw_rng.randint(np.iinfo(np.int32).max))
            scores = np.full((active.size, n_candidates), np.nan)
            if needs_scores:
                scores = ranker.predict(X_model).reshape(active.size, n_candidates)
            draws = None
            if n_draws:
                draws = ranker.sample_y(X_model, n_draws, random_state=draw_seed).reshape(
                    active.size, n_candidates, n_draws
                )
            shown = _check_shown(
                policy.choose(scores, draws, self.n_shown, steps, policy_rng),
                active.size,
                self.n_shown,
                n_candidates,
                type(policy).__name__,
            )
            true_reward = np.einsum(
                "nkb,nb->nk", rewards[user_prompts].astype(np.float64), weights[active]
            )
            chosen = self._choose(true_reward, shown, feedback_rng)
            log.append(
                _round_log(round_, steps, users, user_prompts, shown, chosen, true_reward)
            )
            given.append(_feedback_rows(round_, users, user_prompts, shown, chosen))
            # Train on what was shown, after the round was scored.
            n_arrived = int((arrivals <= round_).sum())
            if population_refit_every and n_arrived // population_refit_every > n_refitted:
                n_refitted = n_arrived // population_refit_every
                ranker = clone(ranker).fit(
                    *_training_rows(features, history, given, round_, None, None)
                )
            elif hasattr(ranker, "partial_fit") and not forgetting:
                rows = given[-1]
                ranker.partial_fit(
                    _transform(features, rows.drop(columns=["y", "round"])), rows["y"]
                )
            elif (round_ + 1) % refit_every == 0:
                ranker = _refit(
                    population, features, history, given, round_, decay, window
                )
            round_seconds.append(time.perf_counter() - start)
        log = pd.concat(log, ignore_index=True)
        log.attrs["settings"] = dict(
            self._settings(),
            estimator=type(ranker).__name__,
            policy=repr(policy),
            n_rounds=n_rounds,
            decay=decay,
            window=window,
            refit_every=refit_every,
            population_refit_every=population_refit_every,
        )
        log.attrs["round_seconds"] = round_seconds
        return log

    # ------------------------------------------------------------------ helpers

    def _validate(self):
        if not isinstance(self.oracle, PreferenceOracle):
            raise TypeError(
                f"oracle must be a PreferenceOracle; got {type(self.oracle).__name__}."
            )
        if self.feedback not in INTERACTION_FEEDBACK:
            raise ValueError(
                f"Unknown feedback {self.feedback!r}; choose one of {INTERACTION_FEEDBACK}."
            )
        n_responses = self.oracle.corpus.n_responses
        _check_integer("n_shown", self.n_shown, 2)
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
        if not isinstance(self.temperature, numbers.Real) or not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature!r}.")
        if self.drift not in _DRIFTS:
            raise ValueError(f"Unknown drift {self.drift!r}; choose one of {_DRIFTS}.")
        if not isinstance(self.drift_rate, numbers.Real) or not 0 < self.drift_rate <= 1:
            raise ValueError(f"drift_rate must be in (0, 1]; got {self.drift_rate!r}.")
        if self.drift == "jump":
            if self.jump_round is None:
                raise ValueError("drift='jump' needs jump_round, the round of the jump.")
            _check_integer("jump_round", self.jump_round, 1)
        if not isinstance(self.alpha, numbers.Real) or not self.alpha > 0:
            raise ValueError(f"alpha must be > 0; got {self.alpha!r}.")
        users = (
            np.arange(self.oracle.n_users)
            if self.users is None
            else np.asarray(self.users).reshape(-1)
        )
        if users.dtype.kind not in "iu" or users.size == 0:
            raise ValueError(f"users must be a non-empty array of user ids; got {self.users!r}.")
        if users.min() < 0 or users.max() >= self.oracle.n_users:
            raise ValueError(
                f"users holds ids outside the oracle's 0 .. {self.oracle.n_users - 1}."
            )
        if np.unique(users).size != users.size:
            raise ValueError("users holds a user id twice.")
        arrivals = (
            np.zeros(users.size, dtype=np.int64)
            if self.arrivals is None
            else np.asarray(self.arrivals).reshape(-1)
        )
        if arrivals.shape != users.shape or arrivals.dtype.kind not in "iu" or (
            arrivals.min() < 0
        ):
            raise ValueError(
                "arrivals must hold one non-negative integer round per user of users; "
                f"got {self.arrivals!r}."
            )
        self._users_ = users.astype(np.int64)
        self._arrivals_ = arrivals.astype(np.int64)
        self._pool_ = self.oracle.corpus.prompt_ids(self.prompt_split)

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


def _check_integer(name, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")


def _check_run_parameters(
    ranker, n_rounds, decay, window, refit_every, population_refit_every, history
):
    _check_integer("n_rounds", n_rounds, 1)
    _check_integer("refit_every", refit_every, 1)
    if not isinstance(decay, numbers.Real) or not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1]; got {decay!r}.")
    if window is not None:
        _check_integer("window", window, 1)
    if population_refit_every is not None:
        _check_integer("population_refit_every", population_refit_every, 1)
        if history is None:
            raise ValueError(
                "population_refit_every refits the population on the historical rows "
                "and the loop's feedback: pass history=(X, y)."
            )
        if decay < 1 or window is not None:
            raise ValueError("population_refit_every does not combine with decay or window.")
    if decay < 1:
        method = "partial_fit" if hasattr(ranker, "partial_fit") else "fit"
        accepts = (
            "sample_weight" in inspect.signature(ranker.partial_fit).parameters
            if method == "partial_fit"
            else has_fit_parameter(ranker, "sample_weight")
        )
        if not accepts:
            raise TypeError(
                f"decay={decay} weighs older feedback less through sample_weight, and "
                f"{type(ranker).__name__}.{method} does not accept sample_weight; "
                "forget with window=... instead."
            )


def _split_pipeline(estimator):
    """The feature steps (or None) and the ranker of a Pipeline or a bare ranker."""
    if hasattr(estimator, "steps"):
        return (estimator[:-1] if len(estimator.steps) > 1 else None), estimator[-1]
    return None, estimator


def _transform(features, X):
    return X if features is None else features.transform(X)


def _prompt_sequences(rng, pool, n_users, n_rounds):
    """Each user's prompts, one per step, never repeated: (n_users, n_rounds)."""
    if n_rounds > pool.size:
        raise ValueError(
            f"n_rounds={n_rounds} needs as many distinct prompts per user, and the "
            f"prompt split has {pool.size}."
        )
    return np.stack([rng.choice(pool, n_rounds, replace=False) for _ in range(n_users)])


def _candidate_rows(users, prompts, n_candidates):
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n_candidates),
            "prompt_id": np.repeat(prompts, n_candidates),
            "response_id": np.tile(np.arange(n_candidates), users.size),
        }
    )


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


def _feedback_rows(round_, users, prompts, shown, chosen):
    """The id rows of the shown responses: y = 1 for the chosen one, 0 otherwise."""
    n_shown = shown.shape[1]
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n_shown),
            "prompt_id": np.repeat(prompts, n_shown),
            "response_id": shown.reshape(-1),
            "y": (shown == chosen[:, np.newaxis]).reshape(-1).astype(np.float64),
            "round": round_,
        }
    )


def _training_rows(features, history, given, round_, decay, window):
    """``(X, y, sample_weight)`` of history and the kept feedback, for ``fit``.

    ``sample_weight`` is None when ``decay`` is None or 1.
    """
    rows = pd.concat(given, ignore_index=True)
    if window is not None:
        rows = rows[rows["round"] > round_ - window]
    weight = None
    if decay is not None and decay < 1:
        weight = decay ** (round_ - rows["round"].to_numpy()).astype(np.float64)
    X, y = rows[["user_id", "prompt_id", "response_id"]], rows["y"].to_numpy()
    if history is not None:
        X_history, y_history = history
        X = pd.concat([X_history[["user_id", "prompt_id", "response_id"]], X], ignore_index=True)
        y = np.concatenate([np.asarray(y_history, dtype=np.float64), y])
        if weight is not None:
            weight = np.concatenate([np.ones(len(X_history)), weight])
    X = _transform(features, X.reset_index(drop=True))
    return (X, y) if weight is None else (X, y, weight)


def _refit(population, features, history, given, round_, decay, window):
    """The estimator anew from the kept (and weighted) feedback; see ``run``."""
    if hasattr(population, "partial_fit"):
        ranker = copy.deepcopy(population)
        return ranker.partial_fit(
            *_training_rows(features, None, given, round_, decay, window)
        )
    return clone(population).fit(
        *_training_rows(features, history, given, round_, decay, window)
    )
