"""Personal scorers: pick each (user, prompt)'s top candidate, score it with the oracle."""

import numpy as np
import pandas as pd

from ..utils import ID_COLUMNS, check_id_input, id_column

__all__ = ["METRICS", "choice_outcomes", "make_personal_scorer", "personal_scorers"]

METRICS = ("reward", "gap_closed", "top1", "win_rate", "pairwise_accuracy")


def make_personal_scorer(oracle, metric="reward", *, reference_model="GPT-4o"):
    """Make a scorer that ranks each (user, prompt)'s candidates and asks the oracle.

    The scorer is called as ``scorer(estimator, X, y)``, the signature of
    ``scoring=`` in :func:`~sklearn.model_selection.cross_validate` and
    :class:`~sklearn.model_selection.GridSearchCV`. It predicts once on ``X`` (the
    test fold: query candidates), groups the rows by (user_id, prompt_id), chooses
    each group's top predicted candidate and scores the choice with the users' true
    rewards. ``y`` is ignored: the oracle is the ground truth.

    Every (user, prompt) of ``X`` must come with all K candidates of its prompt, as
    in the test folds of :class:`ColdStartSplit`: a choice among some of them is
    not the choice the metrics describe, so the scorer raises a ``ValueError``
    naming the first incomplete (user, prompt) and its missing response ids.

    Ties in the predictions are broken toward the lowest ``response_id``, as
    :meth:`PreferenceOracle.best_response` breaks ties in the true rewards.

    Metrics (all greater is better):

    - ``"reward"``: the mean over groups of the chosen response's true reward.
    - ``"gap_closed"``: the share of the way from zero-shot to the oracle closed,
      ``(R - R_zero) / (R_best - R_zero)``, where ``R`` is the ``"reward"``,
      ``R_zero`` the mean true reward of the response chosen by the population
      weights (:attr:`PreferenceOracle.population_weights`, the zero-shot choice of
      :meth:`PreferenceOracle.zero_shot_response`) and ``R_best`` the mean true
      reward of each group's best candidate. It is a ratio of means over the fold,
      not a mean of per-group ratios (many groups' own gap is 0). When
      ``R_best == R_zero`` (zero-shot already chose every group's best) the gap is
      undefined and the metric is ``nan``. It is 0 for zero-shot, 1 for the oracle
      and negative for a method worse than zero-shot.
    - ``"top1"``: the share of groups whose chosen response is the user's best
      candidate (ties in the true reward go to the lowest ``response_id``).
    - ``"win_rate"``: the share of groups whose chosen response has a true reward
      strictly greater than the ``reference_model`` response of that prompt (looked
      up in ``corpus.response_models``, whether or not it is in ``X``; the first
      such slot should several carry the name). A tie, including choosing the
      reference response itself, is not a win.
    - ``"pairwise_accuracy"``: in each group, the share of candidate pairs with
      different true rewards that the predictions order the same way, a predicted
      tie counting 0.5; averaged over the groups that have such a pair.

    Parameters
    ----------
    oracle : PreferenceOracle
        The true user rewards (from :func:`~pllm_sk.simulation.simulate_feedback`).
    metric : str or list of str, default="reward"
        One of :data:`METRICS`, or several: the scorer then returns a dict
        ``{name: value}`` computed from a single ``predict`` call, which
        ``cross_validate`` and ``GridSearchCV`` accept.
    reference_model : str, default="GPT-4o"
        The response model that ``"win_rate"`` compares against.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None)`` returning a float, or a dict of floats.

    See Also
    --------
    personal_scorers : A dict of single-metric scorers, for ``scoring=``.
    choice_outcomes : The per-(user, prompt) outcomes these metrics average.

    Notes
    -----
    Successive halving (:class:`~sklearn.model_selection.HalvingGridSearchCV`,
    :class:`~sklearn.model_selection.HalvingRandomSearchCV`) spends its budget on
    rows by default (``resource="n_samples"``): each round fits and scores on a
    subsample of the rows, which splits the candidates of a (user, prompt) apart,
    and the scorer refuses such folds. Spend the budget on an estimator parameter
    instead, an iteration count or a number of draws, named as in ``set_params``
    (``"<step>__<param>"`` in a pipeline), with ``max_resources`` its largest
    value; the rows are then never subsampled::

        search = HalvingGridSearchCV(
            make_pipeline(RewardFeatures(corpus), PerUserRanker()),
            {"peruserranker__shrinkage": [0.1, 1.0, 10.0]},
            resource="peruserranker__max_iter",
            min_resources=10,
            max_resources=100,
            factor=3,
            cv=ColdStartSplit(3, n_support=3, random_state=0),
            scoring=make_personal_scorer(oracle, "gap_closed"),
        )

    The resource must not be in the parameter grid. HalvingGridSearchCV is
    experimental in scikit-learn: import
    ``sklearn.experimental.enable_halving_search_cv`` first.

    Examples
    --------
    >>> import pandas as pd
    >>> from pllm_sk.datasets import Corpus
    >>> from pllm_sk.model_selection import make_personal_scorer
    >>> from pllm_sk.simulation import PreferenceOracle
    >>> corpus = Corpus(["Hi?"], [["Hello.", "Hey!"]], rewards=[[[1.0], [2.0]]],
    ...                 reward_models=["rm"], response_models=[["GPT-4o", "Other"]])
    >>> oracle = PreferenceOracle(corpus, [[1.0]])
    >>> class Fixed:  # an "estimator" that prefers the first candidate
    ...     def predict(self, X):
    ...         return -X["response_id"].to_numpy()
    >>> X = pd.DataFrame({"user_id": [0, 0], "prompt_id": [0, 0], "response_id": [0, 1]})
    >>> scorer = make_personal_scorer(oracle, ["reward", "top1", "win_rate"])
    >>> scorer(Fixed(), X, None)
    {'reward': 1.0, 'top1': 0.0, 'win_rate': 0.0}
    """
    _check_oracle(oracle)
    names = [metric] if isinstance(metric, str) else list(metric)
    if not names:
        raise ValueError(f"metric must name at least one of {METRICS}; got {metric!r}.")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {METRICS}.")
    if "win_rate" in names:
        _check_reference_model(oracle, reference_model)
    return _PersonalScorer(
        oracle, names if not isinstance(metric, str) else metric, reference_model
    )


def personal_scorers(oracle, metrics=METRICS, *, reference_model="GPT-4o"):
    """A dict of single-metric personal scorers, for ``scoring=``.

    Each scorer predicts on its own; when speed matters, prefer one
    :func:`make_personal_scorer` with a list of metrics, which predicts once.

    Parameters
    ----------
    oracle : PreferenceOracle
    metrics : sequence of str, default=METRICS
        Names from :data:`METRICS`.
    reference_model : str, default="GPT-4o"
        The response model that ``"win_rate"`` compares against.

    Returns
    -------
    scorers : dict
        ``{name: scorer}``, see :func:`make_personal_scorer`.

    Examples
    --------
    >>> from pllm_sk.datasets import Corpus
    >>> from pllm_sk.model_selection import personal_scorers
    >>> from pllm_sk.simulation import PreferenceOracle
    >>> corpus = Corpus(["Hi?"], [["Hello.", "Hey!"]], rewards=[[[1.0], [2.0]]],
    ...                 reward_models=["rm"], response_models=[["GPT-4o", "Other"]])
    >>> sorted(personal_scorers(PreferenceOracle(corpus, [[1.0]])))
    ['gap_closed', 'pairwise_accuracy', 'reward', 'top1', 'win_rate']
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    return {
        name: make_personal_scorer(oracle, name, reference_model=reference_model)
        for name in metrics
    }


def _check_oracle(oracle):
    # Duck-typed: the simulation layer sits above this one (see pyproject.toml).
    if callable(getattr(oracle, "reward", None)) and hasattr(oracle, "corpus"):
        return
    hint = (
        f" This {type(oracle).__name__} has one: pass its `.oracle`."
        if hasattr(oracle, "oracle")
        else ""
    )
    raise TypeError(
        "oracle must be a PreferenceOracle, the ground truth that scores the chosen "
        f"candidates (e.g. simulate_feedback(...).oracle); got {type(oracle).__name__}."
        + hint
    )


def _check_reference_model(oracle, reference_model):
    if not np.any(oracle.corpus.response_models == reference_model):
        raise ValueError(
            f"reference_model={reference_model!r} wrote no response of the corpus; "
            f"its response models are {sorted(set(oracle.corpus.response_models.flat))}."
        )


class _PersonalScorer:
    """Callable ``(estimator, X, y) -> float or dict``; a class so that it pickles."""

    def __init__(self, oracle, metric, reference_model):
        self.oracle = oracle
        self.metric = metric
        self.reference_model = reference_model

    def __repr__(self):
        return (
            f"make_personal_scorer({self.oracle!r}, metric={self.metric!r}, "
            f"reference_model={self.reference_model!r})"
        )

    def __call__(self, estimator, X, y=None):
        ids = _candidate_ids(X)
        predicted = _checked_utility(estimator.predict(X), ids[0].size, "predict returned")
        names = [self.metric] if isinstance(self.metric, str) else self.metric
        reference_model = self.reference_model if "win_rate" in names else None
        outcomes = _outcome_table(self.oracle, ids, predicted, reference_model)
        values = {name: float(_METRIC_FUNCTIONS[name](outcomes)) for name in names}
        return values[self.metric] if isinstance(self.metric, str) else values


def choice_outcomes(oracle, X, utility, *, reference_model="GPT-4o"):
    """The outcome of each (user, prompt)'s choice under ``utility``, one row each.

    The rows of ``X`` are grouped by (user_id, prompt_id); each group's candidate
    of highest ``utility`` is chosen (ties to the lowest ``response_id``) and
    looked up in the oracle. The personal scorers of :func:`make_personal_scorer`
    are means of these columns over the groups; per-group outcomes serve paired
    comparisons and bootstraps over users. Every (user, prompt) of ``X`` must come
    with all K candidates of its prompt, each once (a ``ValueError`` says which
    are missing or repeated). Cost: O(n_rows log n_rows + n_groups K^2).

    Parameters
    ----------
    oracle : PreferenceOracle
        The true user rewards.
    X : DataFrame or ndarray of shape (n_rows, n_columns)
        Candidate rows: ``user_id``, ``prompt_id``, ``response_id`` columns (the
        first three columns of an array).
    utility : array-like of shape (n_rows,)
        The utility of each row, as ``predict`` returns it; no NaN.
    reference_model : str or None, default="GPT-4o"
        The response model of the ``reference_reward`` and ``win`` columns, which
        need its response on every prompt of ``X``; ``None`` leaves them out.

    Returns
    -------
    outcomes : DataFrame of shape (n_groups, n_outcomes)
        Sorted by (user_id, prompt_id), with columns:

        - ``user_id``, ``prompt_id``: the group;
        - ``response_id``: the chosen candidate;
        - ``reward``: its true reward;
        - ``zero_shot_reward``: the true reward of the population weights' choice
          (:meth:`PreferenceOracle.zero_shot_response`);
        - ``best_reward``: the true reward of the user's best candidate;
        - ``top1``: whether the chosen candidate is the user's best (ties in the
          true reward to the lowest ``response_id``);
        - ``reference_reward`` and ``win`` (``reward > reference_reward``,
          strictly), unless ``reference_model`` is None;
        - ``pairwise_accuracy``: the share of candidate pairs with different true
          rewards that ``utility`` orders the same way, a tie in ``utility``
          counting 0.5; NaN when all candidates have one true reward.

    Examples
    --------
    >>> import pandas as pd
    >>> from pllm_sk.datasets import Corpus
    >>> from pllm_sk.model_selection import choice_outcomes
    >>> from pllm_sk.simulation import PreferenceOracle
    >>> corpus = Corpus(["Hi?"], [["Hello.", "Hey!"]], rewards=[[[1.0], [2.0]]],
    ...                 reward_models=["rm"], response_models=[["GPT-4o", "Other"]])
    >>> oracle = PreferenceOracle(corpus, [[1.0]])
    >>> X = pd.DataFrame({"user_id": [0, 0], "prompt_id": [0, 0], "response_id": [0, 1]})
    >>> outcomes = choice_outcomes(oracle, X, [0.3, 0.1])
    >>> outcomes[["response_id", "reward", "best_reward", "top1", "win"]]
       response_id  reward  best_reward   top1    win
    0            0     1.0          2.0  False  False
    """
    _check_oracle(oracle)
    if reference_model is not None:
        _check_reference_model(oracle, reference_model)
    ids = _candidate_ids(X)
    utility = _checked_utility(utility, ids[0].size, "utility holds")
    return _outcome_table(oracle, ids, utility, reference_model)


def _checked_utility(utility, n_rows, source):
    utility = np.asarray(utility, dtype=np.float64).reshape(-1)
    if utility.shape[0] != n_rows:
        raise ValueError(f"{source} {utility.shape[0]} values for {n_rows} rows of X.")
    if np.isnan(utility).any():
        raise ValueError(f"{source} NaN; every candidate needs a utility.")
    return utility


def _outcome_table(oracle, ids, utility, reference_model):
    """:func:`choice_outcomes` of checked ids and utilities."""
    groups = _CandidateGroups(oracle, *ids)
    scores = groups.grid(utility[groups.order])
    chosen = scores.argmax(axis=1)
    reward = groups.reward_at(chosen)
    outcomes = {
        "user_id": groups.user_ids,
        "prompt_id": groups.prompt_ids,
        "response_id": chosen,
        "reward": reward,
        "zero_shot_reward": groups.reward_at(groups.zero_shot),
        "best_reward": groups.reward_at(groups.best),
        "top1": chosen == groups.best,
    }
    if reference_model is not None:
        outcomes["reference_reward"] = _reference_reward(groups, reference_model)
        outcomes["win"] = reward > outcomes["reference_reward"]
    outcomes["pairwise_accuracy"] = _pairwise_accuracy(groups.true_reward, scores)
    return pd.DataFrame(outcomes)


def _candidate_ids(X):
    X = check_id_input(X)
    ids = tuple(id_column(X, name) for name in ID_COLUMNS)
    if ids[0].size == 0:
        raise ValueError("X has no rows to score.")
    return ids


class _CandidateGroups:
    """The K candidates of each (user, prompt) of X, laid out as a (n_groups, K) grid.

    Rows are sorted by (user_id, prompt_id, response_id): column ``k`` of a group is
    its ``response_id`` ``k``, so argmax breaks ties toward the lowest response_id.
    """

    def __init__(self, oracle, user_ids, prompt_ids, response_ids):
        self.oracle = oracle
        order = np.lexsort((response_ids, prompt_ids, user_ids))
        users, prompts, responses = (
            user_ids[order],
            prompt_ids[order],
            response_ids[order],
        )
        # Checks the users against the oracle and the ids against its corpus.
        true_reward = oracle.reward(users, prompts, responses)
        new_group = np.ones(order.size, dtype=bool)
        new_group[1:] = (users[1:] != users[:-1]) | (prompts[1:] != prompts[:-1])
        duplicated = ~new_group[1:] & (responses[1:] == responses[:-1])
        if duplicated.any():
            row = order[1:][duplicated][0]
            raise ValueError(
                f"X holds the candidate (user_id={user_ids[row]}, prompt_id="
                f"{prompt_ids[row]}, response_id={response_ids[row]}) more than once."
            )
        starts = np.flatnonzero(new_group)
        _check_complete_groups(
            users[starts], prompts[starts], responses, starts, oracle.corpus.n_responses
        )
        self.order = order
        self.shape = (starts.size, oracle.corpus.n_responses)
        self.user_ids, self.prompt_ids = users[starts], prompts[starts]
        self.true_reward = self.grid(true_reward)
        zero_shot_utility = (
            oracle.corpus.rewards[prompts, responses].astype(np.float64)
            @ oracle.population_weights
        )
        self.zero_shot = self.grid(zero_shot_utility).argmax(axis=1)
        self.best = self.true_reward.argmax(axis=1)

    def grid(self, sorted_values):
        """Values given in sorted row order, laid out as (n_groups, K)."""
        return np.asarray(sorted_values).reshape(self.shape)

    def reward_at(self, columns):
        """True reward of one candidate per group, given by its grid column."""
        return self.true_reward[np.arange(columns.size), columns]


def _check_complete_groups(group_users, group_prompts, responses, starts, n_responses):
    """Refuse a (user, prompt) whose K candidates are not all in X.

    ``responses`` are the sorted rows' response ids and ``starts`` the first row of
    each group; ids are known to lie in ``[0, n_responses)`` without duplicates.
    """
    sizes = np.diff(np.r_[starts, responses.size])
    incomplete = np.flatnonzero(sizes < n_responses)
    if not incomplete.size:
        return
    group = incomplete[0]
    present = responses[starts[group] : starts[group] + sizes[group]]
    missing = np.setdiff1d(np.arange(n_responses), present).tolist()
    raise ValueError(
        f"The candidates of (user_id={group_users[group]}, prompt_id="
        f"{group_prompts[group]}) are incomplete: X lacks its response_id(s) {missing} "
        f"({sizes[group]} of the prompt's {n_responses} candidates are present; "
        f"{incomplete.size} of {sizes.size} (user, prompt) groups are incomplete). "
        "A personal scorer ranks all the candidates of a prompt, as the test folds of "
        "ColdStartSplit hold them. HalvingGridSearchCV and HalvingRandomSearchCV "
        "subsample rows unless their resource is an estimator parameter: pass "
        "resource='<step>__<param>' and max_resources (see make_personal_scorer)."
    )


def _reference_reward(groups, reference_model):
    """True reward of each group's ``reference_model`` response."""
    is_reference = groups.oracle.corpus.response_models[groups.prompt_ids] == (
        reference_model
    )
    missing = ~is_reference.any(axis=1)
    if missing.any():
        raise ValueError(
            f"Prompt prompt_id={groups.prompt_ids[missing][0]} has no response by "
            f"reference_model={reference_model!r}; win_rate needs one on every prompt."
        )
    return groups.oracle.reward(
        groups.user_ids, groups.prompt_ids, is_reference.argmax(axis=1)
    )


def _pairwise_accuracy(true_reward, scores):
    """Per group: credit over the candidate pairs of different true rewards, or NaN."""
    true_diff = true_reward[:, :, None] - true_reward[:, None, :]
    predicted_diff = scores[:, :, None] - scores[:, None, :]
    width = scores.shape[1]
    upper = np.triu(np.ones((width, width), dtype=bool), k=1)
    informative = upper & (true_diff != 0)
    credit = np.where(
        predicted_diff == 0, 0.5, np.sign(predicted_diff) == np.sign(true_diff)
    )
    n_pairs = informative.sum(axis=(1, 2))
    agreed = np.where(informative, credit, 0.0).sum(axis=(1, 2))
    accuracy = np.full(n_pairs.shape, np.nan)
    np.divide(agreed, n_pairs, out=accuracy, where=n_pairs > 0)
    return accuracy


# Metric functions: each a mean over the groups of columns of choice_outcomes.


def _reward(outcomes):
    return outcomes["reward"].to_numpy().mean()


def _gap_closed(outcomes):
    reward, zero_shot, best = (
        outcomes[column].to_numpy().mean()
        for column in ("reward", "zero_shot_reward", "best_reward")
    )
    # Zero-shot already optimal everywhere: no gap to close, the share is undefined.
    if best - zero_shot <= 0:
        return np.nan
    return (reward - zero_shot) / (best - zero_shot)


def _top1(outcomes):
    return outcomes["top1"].to_numpy().mean()


def _win_rate(outcomes):
    return outcomes["win"].to_numpy().mean()


def _pairwise_accuracy_mean(outcomes):
    accuracy = outcomes["pairwise_accuracy"].to_numpy()
    has_pairs = ~np.isnan(accuracy)
    if not has_pairs.any():
        return np.nan
    return accuracy[has_pairs].mean()


_METRIC_FUNCTIONS = {
    "reward": _reward,
    "gap_closed": _gap_closed,
    "top1": _top1,
    "win_rate": _win_rate,
    "pairwise_accuracy": _pairwise_accuracy_mean,
}
