"""Progressive (test, then train) evaluation of an interaction log: regret over time."""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from ..utils import Interval, StrOptions, validate_arguments

__all__ = ["cumulative_regret", "paired_bootstrap", "plot_regret", "progressive_scores"]

_TIMES = ("step", "round")
_METRICS = ("cumulative_regret", "regret", "top1")
_LOG_FIX = "Pass the log of InteractionEnvironment.run (logs may be concatenated)."


def progressive_scores(log, *, by=None, time="step"):
    """Regret per step, cumulative regret and top-1 rate, as a tidy DataFrame.

    As River's ``progressive_val_score``: each served response was scored before
    its feedback was learned from, so every row of the log is a test.

    Parameters
    ----------
    log : DataFrame
        From :meth:`InteractionEnvironment.run`, possibly several logs
        concatenated with columns telling them apart (see ``by``).
    by : str or list of str, default=None
        Columns of the log that tell runs apart (for example ``"method"`` and
        ``"policy"``), kept as columns of the result.
    time : {"step", "round"}, default="step"
        ``"step"``: rounds since each user arrived; ``"round"``: the loop's
        clock (the same when every user arrives at round 0; use it to see a
        drift that happens at a given round).

    Returns
    -------
    scores : DataFrame
        One row per (``by``..., time): ``n_users`` (users scored then),
        ``regret`` (mean regret of the served responses), ``cumulative_regret``
        (mean over those users of their regret summed up to and including that
        time) and ``top1`` (share of users served a best response).

    Examples
    --------
    >>> import pandas as pd
    >>> from pllm_sk.simulation import progressive_scores
    >>> log = pd.DataFrame({"step": [0, 0, 1, 1], "user_id": [1, 2, 1, 2],
    ...                     "regret": [1.0, 0.0, 0.5, 0.0], "top1": [0, 1, 0, 1]})
    >>> progressive_scores(log)[["regret", "cumulative_regret", "top1"]].to_numpy().tolist()
    [[0.5, 0.5, 0.5], [0.25, 0.75, 0.5]]
    """
    validate_arguments({"time": [StrOptions(set(_TIMES))]}, {"time": time}, "progressive_scores")
    by = _columns(by)
    caller = "progressive_scores"
    _check_columns(log, ["user_id", time, "regret", "top1"], caller, "log", _LOG_FIX)
    _check_columns(log, by, caller, "log", _by_fix("by", "log"), parameter="by")
    log = log.sort_values(by + ["user_id", time], kind="stable")
    cumulative = log.groupby(by + ["user_id"], sort=False)["regret"].cumsum()
    return (
        log.assign(cumulative_regret=cumulative)
        .groupby(by + [time], sort=True)
        .agg(
            n_users=("user_id", "size"),
            regret=("regret", "mean"),
            cumulative_regret=("cumulative_regret", "mean"),
            top1=("top1", "mean"),
        )
        .reset_index()
    )


def cumulative_regret(log, n_steps, *, by=None):
    """Each user's regret summed over their first ``n_steps`` steps.

    Parameters
    ----------
    log : DataFrame
        From :meth:`InteractionEnvironment.run` (logs may be concatenated).
    n_steps : int
        Steps summed (steps ``0 .. n_steps - 1``), >= 1. Users with fewer steps
        in the log are left out.
    by : str or list of str, default=None
        Columns that tell runs apart, kept in the index.

    Returns
    -------
    regret : Series
        Indexed by (``by``..., ``user_id``). Empty, with a warning, when no
        user has ``n_steps`` steps in the log.

    Examples
    --------
    >>> import pandas as pd
    >>> from pllm_sk.simulation import cumulative_regret
    >>> log = pd.DataFrame({"step": [0, 1, 2, 0], "user_id": [1, 1, 1, 2],
    ...                     "regret": [1.0, 0.5, 9.0, 0.0]})
    >>> cumulative_regret(log, 2).to_dict()
    {1: 1.5}
    """
    validate_arguments(
        {"n_steps": [Interval(numbers.Integral, 1, None, closed="left")]},
        {"n_steps": n_steps},
        "cumulative_regret",
    )
    by = _columns(by)
    caller = "cumulative_regret"
    _check_columns(log, ["user_id", "step", "regret"], caller, "log", _LOG_FIX)
    _check_columns(log, by, caller, "log", _by_fix("by", "log"), parameter="by")
    early = log[log["step"] < n_steps]
    counts = early.groupby(by + ["user_id"])["regret"].count()
    totals = early.groupby(by + ["user_id"])["regret"].sum()
    if counts.size and not (counts == n_steps).any():
        warnings.warn(
            f"cumulative_regret: no user has n_steps={n_steps} steps in the log (the most "
            f"any user has is {counts.max()}), so every user is left out and the result "
            f"is empty. Pass n_steps <= {counts.max()}, or run the loop for at least "
            f"{n_steps} rounds after the users arrive.",
            UserWarning,
            stacklevel=2,
        )
    return totals[counts == n_steps]


def paired_bootstrap(
    first,
    second,
    *,
    statistic=None,
    groups=None,
    n_resamples=10_000,
    confidence=0.95,
    random_state=None,
):
    """A statistic of paired units (by default the mean of ``first - second``), bootstrapped.

    Units (users, or query groups) are resampled with replacement, keeping each
    unit's pair together; with ``groups``, whole groups of units are resampled
    instead (each user with all its (user, prompt) groups). The interval is the
    percentile interval of the resampled statistics.

    Parameters
    ----------
    first, second : Series, DataFrame or array-like of shape (n_units, ...)
        Paired values (for example each user's cumulative regret under two
        policies), one row per unit. When both are pandas objects they are
        aligned on their index; units missing from either are left out. Without
        ``statistic`` they must be one-dimensional.
    statistic : callable, default=None
        ``statistic(first_rows, second_rows)`` of one resample's rows (taken
        with ``.iloc`` from pandas objects), a scalar or a 1-D array-like (then
        every result has that shape). None: the mean of ``first - second``,
        vectorised over the resamples. Example, a ratio of means:
        ``lambda gain, gap: gain.mean() / gap.mean()``.
    groups : array-like of shape (n_units,), default=None
        Group label of each unit. Each resample draws as many groups as there
        are, with replacement, and takes the rows of the drawn groups in the
        order drawn (each group's rows in their order). None: every unit is
        its own group.
    n_resamples : int, default=10_000
    confidence : float, default=0.95
    random_state : int, RandomState instance, Generator or None, default=None
        Draws ``(n_resamples, n_groups)`` indices at once (``randint`` or
        ``integers``), the same as drawing one resample after another.

    Returns
    -------
    result : Bunch
        ``mean`` (the statistic on all units, in their order), ``low`` and
        ``high`` (the interval), ``std`` (standard deviation of the resampled
        statistics), ``resamples`` (the resampled statistics, shape
        (n_resamples, ...)), ``n_units`` and ``n_groups``. Resamples whose
        statistic is NaN (a ratio to a zero gap) are left out of ``low``,
        ``high`` and ``std``.

    Cost: ``n_resamples`` calls of ``statistic`` (one vectorised mean without).

    Examples
    --------
    >>> from pllm_sk.simulation import paired_bootstrap
    >>> result = paired_bootstrap([3.0, 4.0, 5.0], [1.0, 2.0, 3.0], random_state=0)
    >>> float(result.mean), float(result.low), float(result.high)
    (2.0, 2.0, 2.0)
    >>> ratio = paired_bootstrap([1.0, 3.0], [2.0, 2.0], groups=["u", "u"],
    ...                          statistic=lambda a, b: a.sum() / b.sum())
    >>> float(ratio.mean), float(ratio.std)
    (1.0, 0.0)
    """
    validate_arguments(
        {
            "statistic": [callable, None],
            "groups": ["array-like", None],
            "n_resamples": [Interval(numbers.Integral, 1, None, closed="left")],
            "confidence": [Interval(numbers.Real, 0, 1, closed="neither")],
            "random_state": ["random_state", np.random.Generator],
        },
        dict(statistic=statistic, groups=groups, n_resamples=n_resamples,
             confidence=confidence, random_state=random_state),
        "paired_bootstrap",
    )  # fmt: skip
    first, second = _paired_values(first, second, statistic)
    rng = random_state
    if not isinstance(rng, np.random.Generator):
        rng = check_random_state(random_state)
    resampled, n_groups = _resampled_units(len(first), groups, n_resamples, rng)
    if statistic is None and groups is None:
        difference = first - second
        resamples, point = difference[resampled].mean(axis=1), difference.mean()
    else:
        statistic = _mean_difference if statistic is None else statistic
        resamples = np.array(
            [statistic(_rows(first, rows), _rows(second, rows)) for rows in resampled]
        )
        point = np.asarray(statistic(first, second))[()]
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(resamples, [tail, 100 - tail], axis=0)
    return Bunch(
        mean=point, low=low, high=high, std=np.nanstd(resamples, axis=0),
        resamples=resamples, n_units=len(first), n_groups=n_groups,
    )  # fmt: skip


def _paired_values(first, second, statistic):
    """``first`` and ``second`` aligned (pandas) or as arrays, their lengths checked."""
    pandas = (pd.Series, pd.DataFrame)
    if isinstance(first, pandas) and isinstance(second, pandas):
        first, second = first.align(second, join="inner", axis=0)
    if statistic is None:
        first = np.asarray(first, dtype=np.float64)
        second = np.asarray(second, dtype=np.float64)
        if first.ndim != 1 or second.ndim != 1:
            raise ValueError("Without a statistic, first and second must be one-dimensional.")
    elif not (isinstance(first, pandas) and isinstance(second, pandas)):
        first, second = np.asarray(first), np.asarray(second)
    if len(first) == 0 or len(first) != len(second):
        raise ValueError("first and second must hold the same, non-zero number of units.")
    return first, second


def _mean_difference(first, second):
    return (first - second).mean()


def _rows(values, rows):
    return values.iloc[rows] if isinstance(values, (pd.Series, pd.DataFrame)) else values[rows]


def _resampled_units(n_units, groups, n_resamples, rng):
    """Each resample's unit indices (all at once without ``groups``), and the
    number of groups."""
    draw = rng.integers if isinstance(rng, np.random.Generator) else rng.randint
    if groups is None:
        return draw(n_units, size=(n_resamples, n_units)), n_units
    groups = np.asarray(groups)
    if groups.shape != (n_units,):
        raise ValueError(f"groups must hold one label per unit ({n_units}), got {groups.shape}.")
    distinct, group_of = np.unique(groups, return_inverse=True)
    n_groups = distinct.size
    members = np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[members], np.arange(n_groups + 1))
    drawn = draw(n_groups, size=(n_resamples, n_groups))
    resampled = [
        np.concatenate([members[bounds[g] : bounds[g + 1]] for g in groups_drawn])
        for groups_drawn in drawn
    ]
    return resampled, n_groups


def plot_regret(
    scores, *, hue=None, style=None, metric="cumulative_regret", time="step", ax=None
):
    """Plot a score of :func:`progressive_scores` against time, one line per run.

    Uses matplotlib's object-oriented interface without pyplot, so it needs no
    display (save the figure with ``figure.savefig``).

    Parameters
    ----------
    scores : DataFrame
        From :func:`progressive_scores` (not the log itself).
    hue : str or list of str, default=None
        Columns whose values make the lines' colours (and their labels).
    style : str, default=None
        A column whose values make the lines' dash styles (and their labels).
    metric : {"cumulative_regret", "regret", "top1"}, default="cumulative_regret"
    time : {"step", "round"}, default="step"
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    figure : matplotlib Figure
    """
    from matplotlib.figure import Figure

    validate_arguments(
        {"metric": [StrOptions(set(_METRICS))], "time": [StrOptions(set(_TIMES))]},
        {"metric": metric, "time": time},
        "plot_regret",
    )
    hue, styles = _columns(hue), _columns(style)
    _check_columns(
        scores, [time, metric], "plot_regret", "scores",
        "plot_regret plots the scores of a log, not the log: pass progressive_scores(log).",
    )  # fmt: skip
    for parameter, columns in (("hue", hue), ("style", styles)):
        fix = _by_fix(parameter, "scores")
        _check_columns(scores, columns, "plot_regret", "scores", fix, parameter=parameter)
    if ax is None:
        figure = Figure(figsize=(6, 4))
        ax = figure.subplots()
    else:
        figure = ax.figure
    colours = {key: f"C{i}" for i, key in enumerate(_keys(scores, hue))}
    dashes = dict(zip(_keys(scores, styles), ["-", "--", ":", "-.", (0, (5, 1))] * 10))
    for key, table in scores.groupby(hue + styles, sort=False) if hue + styles else [
        ((), scores)
    ]:
        key = key if isinstance(key, tuple) else (key,)
        colour_key, style_key = key[: len(hue)], key[len(hue) :]
        ax.plot(
            table[time],
            table[metric],
            color=colours.get(colour_key),
            linestyle=dashes.get(style_key, "-"),
            label=" / ".join(str(k) for k in key) or None,
        )
    ax.set(
        xlabel=f"{time} (rounds since arrival)" if time == "step" else "round",
        ylabel=metric.replace("_", " "),
    )
    if hue or styles:
        ax.legend(fontsize="small")
    return figure


def _keys(scores, columns):
    """Distinct value tuples of ``columns`` in order of appearance."""
    if not columns:
        return [()]
    return list(dict.fromkeys(map(tuple, scores[columns].itertuples(index=False))))


def _check_columns(frame, columns, caller, frame_name, fix, parameter=None):
    """Raise a ValueError naming the ``columns`` missing from ``frame``, and ``fix``.

    ``parameter``: the argument that named the columns (``"by"``, ``"hue"``...);
    None for the columns ``caller`` needs in any case.
    """
    missing = [column for column in columns if column not in frame.columns]
    if not missing:
        return
    if parameter is None:
        problem = f"{frame_name} has no column"
    else:
        given = columns[0] if len(columns) == 1 else columns
        what = "a column" if len(missing) == 1 else "columns"
        problem = f"{parameter}={given!r} names {what} the {frame_name} does not have:"
    raise ValueError(
        f"{caller}: {problem} {', '.join(map(repr, missing))}; its columns are "
        f"{', '.join(map(repr, frame.columns))}. {fix}"
    )


def _by_fix(parameter, frame_name):
    return f"Pass as {parameter} columns of the {frame_name}, or None."


def _columns(by):
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)
