"""How the estimator of the interaction loop learns from each round's feedback.

:meth:`InteractionEnvironment.run` hands the update to one small object, chosen
once per run by :func:`_update_strategy`; the loop calls it after each played
round (after the round was scored) as ``update(ranker, given, round_, n_arrived)``
and goes on with the ranker it returns. ``given`` is the list of the rounds'
feedback rows so far (see ``_feedback_rows``), the current round's last;
``n_arrived`` is the number of users that have arrived by ``round_``.
"""

import copy
import inspect

from sklearn.base import clone
from sklearn.utils.validation import has_fit_parameter

from ._rows import _training_rows, _transform


class _IncrementalUpdate:
    """``partial_fit`` on each round's rows as they come: no forgetting."""

    def __init__(self, features):
        self.features = features

    def __call__(self, ranker, given, round_, n_arrived):
        rows = given[-1]
        ranker.partial_fit(
            _transform(self.features, rows.drop(columns=["y", "round"])), rows["y"]
        )
        return ranker


class _PeriodicRefit:
    """Every ``refit_every`` rounds, the population anew on the kept, weighted feedback.

    With ``partial_fit``: a copy of the population given, plus the loop's kept
    feedback through ``partial_fit``; without: ``fit`` anew on ``history`` and the
    kept feedback. The feedback of round ``s`` weighs ``decay ** (t - s)`` at
    round ``t``; only the last ``window`` rounds are kept (all with None).
    """

    def __init__(self, population, features, history, decay, window, refit_every):
        self.population = population
        self.features = features
        self.history = history
        self.decay = decay
        self.window = window
        self.refit_every = refit_every

    def __call__(self, ranker, given, round_, n_arrived):
        if (round_ + 1) % self.refit_every:
            return ranker
        if hasattr(self.population, "partial_fit"):
            rows = _training_rows(self.features, None, given, round_, self.decay, self.window)
            return copy.deepcopy(self.population).partial_fit(*rows)
        rows = _training_rows(
            self.features, self.history, given, round_, self.decay, self.window
        )
        return clone(self.population).fit(*rows)


class _PopulationRefit:
    """Each time ``every`` more users have arrived, refit on history and all feedback.

    Between those refits the rounds go to ``then``, the strategy of the estimator
    (incremental updates resume on the refitted estimator).
    """

    def __init__(self, every, features, history, then):
        self.every = every
        self.features = features
        self.history = history
        self.then = then
        self.n_refitted = 0

    def __call__(self, ranker, given, round_, n_arrived):
        if n_arrived // self.every <= self.n_refitted:
            return self.then(ranker, given, round_, n_arrived)
        self.n_refitted = n_arrived // self.every
        rows = _training_rows(self.features, self.history, given, round_, None, None)
        return clone(ranker).fit(*rows)


def _update_strategy(
    population, features, *, history, decay, window, refit_every, population_refit_every
):
    """The update of a run, its combinations of parameters checked.

    Parameters are those of :meth:`InteractionEnvironment.run`, already checked
    one by one; ``population`` is the fitted ranker given, which the strategies
    only copy or clone.
    """
    forgetting = decay < 1 or window is not None
    if population_refit_every is not None:
        if history is None:
            raise ValueError(
                "population_refit_every refits the population on the historical rows "
                "and the loop's feedback: pass history=(X, y)."
            )
        if forgetting:
            raise ValueError("population_refit_every does not combine with decay or window.")
    if decay < 1:
        _check_sample_weight(population, decay)
    if hasattr(population, "partial_fit") and not forgetting:
        update = _IncrementalUpdate(features)
    else:
        update = _PeriodicRefit(population, features, history, decay, window, refit_every)
    if population_refit_every:
        update = _PopulationRefit(population_refit_every, features, history, update)
    return update


def _check_sample_weight(ranker, decay):
    """``decay`` weighs rows through ``sample_weight``: the update method must take it."""
    if hasattr(ranker, "partial_fit"):
        method = "partial_fit"
        accepts = "sample_weight" in inspect.signature(ranker.partial_fit).parameters
    else:
        method, accepts = "fit", has_fit_parameter(ranker, "sample_weight")
    if not accepts:
        raise TypeError(
            f"decay={decay} weighs older feedback less through sample_weight, and "
            f"{type(ranker).__name__}.{method} does not accept sample_weight; "
            "forget with window=... instead."
        )
