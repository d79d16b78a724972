"""The papers' metrics per user: accuracy on test comparisons, choice outcomes."""

import numpy as np
import pandas as pd

from ..model_selection import choice_outcomes
from ..utils import ID_COLUMNS, check_id_input, id_column

__all__ = ["comparison_accuracy", "user_scores", "summarize"]


def comparison_accuracy(oracle, comparisons, X, utility):
    """Each user's share of test comparisons that ``utility`` orders correctly.

    A comparison is a (user, prompt, chosen, rejected) row, as
    :func:`~pllm_sk.simulation.simulate_feedback` draws them with
    ``query_feedback``. It counts 1 when the chosen candidate's utility is the
    larger, 0.5 on a tie, 0 otherwise; comparisons whose two candidates have the
    same true reward, or whose rows are not both in ``X``, are left out. This is
    the pairwise accuracy of LoRe (best against worst of each test prompt) and CoPL
    (a random pair the reward models disagree on).

    Parameters
    ----------
    oracle : PreferenceOracle
    comparisons : DataFrame
        Columns ``user_id``, ``prompt_id``, ``chosen_id``, ``rejected_id``.
    X : DataFrame or ndarray
        Candidate rows with the id columns.
    utility : array-like of shape (n_rows,)
        The utility of each row of ``X``.

    Returns
    -------
    accuracy : Series
        Indexed by ``user_id``: the mean over that user's comparisons.
    """
    X = check_id_input(X)
    rows = pd.DataFrame({name: id_column(X, name) for name in ID_COLUMNS})
    rows["utility"] = np.asarray(utility, dtype=np.float64).reshape(-1)
    keys = ["user_id", "prompt_id"]
    pairs = comparisons.merge(
        rows.rename(columns={"response_id": "chosen_id", "utility": "chosen"}),
        on=keys + ["chosen_id"],
    ).merge(
        rows.rename(columns={"response_id": "rejected_id", "utility": "rejected"}),
        on=keys + ["rejected_id"],
    )
    users = pairs["user_id"].to_numpy()
    margin = oracle.reward(
        users, pairs["prompt_id"].to_numpy(), pairs["chosen_id"].to_numpy()
    ) - oracle.reward(
        users, pairs["prompt_id"].to_numpy(), pairs["rejected_id"].to_numpy()
    )
    predicted = pairs["chosen"].to_numpy() - pairs["rejected"].to_numpy()
    credit = np.where(predicted == 0, 0.5, (predicted > 0) == (margin > 0))
    informative = margin != 0
    return (
        pd.Series(credit[informative], index=users[informative], name="accuracy")
        .groupby(level=0)
        .mean()
        .rename_axis("user_id")
    )


def user_scores(oracle, X, utility, *, comparisons=None, reference_model=None):
    """Per-user outcomes of the choices ``utility`` makes on the rows of ``X``.

    Sums over each user's (user, prompt) groups of :func:`choice_outcomes`
    (``reward``, ``zero_shot_reward``, ``best_reward``, ``win``), their count
    ``n_prompts``, and the user's ``comparison_accuracy`` when ``comparisons`` are
    given.

    Returns
    -------
    table : DataFrame
        One row per user of ``X``, indexed by ``user_id``.
    """
    outcomes = choice_outcomes(oracle, X, utility, reference_model=reference_model)
    columns = ["reward", "zero_shot_reward", "best_reward"]
    if reference_model is not None:
        columns.append("win")
    table = outcomes.groupby("user_id")[columns].sum().astype(np.float64)
    table["n_prompts"] = outcomes.groupby("user_id").size()
    if comparisons is not None:
        table["pairwise_accuracy"] = comparison_accuracy(
            oracle, comparisons, X, utility
        )
    return table


def summarize(table, metrics):
    """Mean and standard error over users of each metric of a :func:`user_scores` table.

    ``"pairwise_accuracy"`` is the mean of the users' accuracies (LoRe's average over
    users); ``"reward"`` and ``"win_rate"`` are means over the (user, prompt) groups;
    ``"gap_closed"`` is the ratio of sums ``(R - R_zero) / (R_best - R_zero)`` of
    :func:`~pllm_sk.model_selection.make_personal_scorer`, with a delta-method
    standard error over users.

    Returns
    -------
    summary : dict
        ``{metric: (value, standard_error)}``.
    """
    n_users = len(table)
    counts = table["n_prompts"].to_numpy(np.float64)
    summary = {}
    for metric in metrics:
        if metric == "pairwise_accuracy":
            values = table["pairwise_accuracy"].dropna().to_numpy()
            summary[metric] = (values.mean(), _standard_error(values))
            continue
        if metric in ("reward", "win_rate"):
            totals = table["reward" if metric == "reward" else "win"].to_numpy()
            gained, scale = totals, counts
        else:
            gained = (table["reward"] - table["zero_shot_reward"]).to_numpy()
            scale = (table["best_reward"] - table["zero_shot_reward"]).to_numpy()
        value = gained.sum() / scale.sum() if scale.sum() > 0 else np.nan
        # Delta method for a ratio of sums over users.
        residual = gained - value * scale
        se = (
            _standard_error(residual) * n_users / scale.sum() if n_users > 1 else np.nan
        )
        summary[metric] = (value, se)
    return summary


def _standard_error(values):
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return np.nan
    return values.std(ddof=1) / np.sqrt(values.size)
