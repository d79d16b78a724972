"""Id rows shared by the interaction loop, its update strategies and the active cold start."""

import numpy as np
import pandas as pd


def _split_pipeline(estimator):
    """The feature steps (or None) and the ranker of a Pipeline or a bare ranker."""
    if hasattr(estimator, "steps"):
        return (estimator[:-1] if len(estimator.steps) > 1 else None), estimator[-1]
    return None, estimator


def _transform(features, X):
    return X if features is None else features.transform(X)


def _candidate_rows(users, prompts, n_candidates):
    """The K candidate rows of each (user, prompt): user-major, response ids in order."""
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n_candidates),
            "prompt_id": np.repeat(prompts, n_candidates),
            "response_id": np.tile(np.arange(n_candidates), users.size),
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
    """``(X, y[, sample_weight])`` of history and the kept feedback, for ``fit``.

    ``given`` is the list of each round's :func:`_feedback_rows`; ``window`` keeps
    the rows of the last ``window`` rounds; ``sample_weight`` (``decay`` to the
    power of the rows' age in rounds, 1 for history) is left out when ``decay`` is
    None or 1.
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
