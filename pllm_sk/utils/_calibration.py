"""Calibration on held-out prompts of historical users: temperatures and the 1-SE rule.

The rankers that learn across users calibrate how much one comparison counts as
evidence about a user (a likelihood temperature) by revealing a few prompts of
sampled historical users, as a cold-start test user would, and scoring their
predictions on the held-out prompts.
"""

import numpy as np

__all__ = [
    "TEMPERATURES",
    "best_temperature",
    "calibration_split",
    "temperature_scores",
    "within_one_standard_error",
]

# Candidate temperatures of ``temperature="auto"``: the log-likelihood of a user's
# comparisons is divided by T. Below 1 sharpens (choices that the features explain
# exactly, as on the reward track); above 1 softens (choices that the features only
# partly explain, and the many correlated pairs that one best/worst choice yields).
TEMPERATURES = 2.0 ** np.arange(-3, 6)

# Support sizes (prompts) cycled over the calibration users.
_CALIBRATION_SUPPORT = (1, 3, 5, 10)


def temperature_scores(margins, prompts, owner, n_users):
    """Held-out top-1 accuracy of each user at each candidate temperature.

    Parameters
    ----------
    margins : ndarray of shape (n_comparisons, n_temperatures)
        Predicted utility of the winner minus the loser, for the held-out
        comparisons whose winner is their prompt's top choice.
    prompts, owner : ndarray of int64, shape (n_comparisons,)
        Prompt id and calibration user of each comparison.
    n_users : int

    Returns
    -------
    scores : ndarray of shape (n_scored_users, n_temperatures)
        For each user with held-out prompts, the share of them whose chosen row the
        prediction puts above every row it was compared with.
    """
    n_prompt_keys = int(prompts.max()) + 1 if prompts.size else 1
    keys, prompt_group = np.unique(owner * n_prompt_keys + prompts, return_inverse=True)
    wrong = np.zeros((keys.size, margins.shape[1]))
    np.add.at(wrong, prompt_group.reshape(-1), (margins <= 0).astype(float))
    user_of_group = keys // n_prompt_keys
    per_user = np.zeros((n_users, margins.shape[1]))
    np.add.at(per_user, user_of_group, (wrong == 0).astype(float))
    n_prompts = np.bincount(user_of_group, minlength=n_users)
    scored = n_prompts > 0
    return per_user[scored] / n_prompts[scored, np.newaxis]


def best_temperature(scores):
    """The largest temperature within one standard error of the best (the 1-SE rule).

    The largest is the most cautious: the closest to the population. A temperature
    qualifies when its mean score over users falls short of the best one's by at
    most the standard error of that paired difference.

    Parameters
    ----------
    scores : ndarray of shape (n_users, n_temperatures)
        Per-user scores, from :func:`temperature_scores`; greater is better.
    """
    if scores.shape[0] == 0:
        return 1.0
    return float(TEMPERATURES[within_one_standard_error(scores).max()])


def within_one_standard_error(scores):
    """Indices of the settings whose mean score is within one SE of the best one's.

    Parameters
    ----------
    scores : ndarray of shape (n_users, n_settings)
        Per-user scores, greater is better; at least one user.

    Returns
    -------
    qualified : ndarray of int64
        Column indices, increasing; the best column is always among them. The
        standard error is that of the paired per-user difference to the best.
    """
    mean = scores.mean(axis=0)
    best = int(np.argmax(mean))
    difference = scores - scores[:, [best]]
    error = difference.std(axis=0) / np.sqrt(scores.shape[0])
    return np.flatnonzero(mean >= mean[best] - error)


def calibration_split(store, candidates, rng, n_users):
    """Support and held-out comparisons of a sample of users, for calibration.

    Each sampled user (with at least two prompts) reveals the comparisons of a few
    random prompts, 1, 3, 5 or 10 in turn (at most all but one), as a cold-start test
    user would; the comparisons of their other prompts are held out.

    Parameters
    ----------
    store : UserComparisons
        With a ``"prompt"`` column.
    candidates : ndarray of int64
        Positions in ``store.users`` to sample from.
    rng : RandomState
    n_users : int
        Users to sample at most.

    Returns
    -------
    positions : ndarray of int64, shape (n_sampled,)
        The sampled users' positions in ``store.users``.
    support, held_out : tuple of two ndarrays of int64
        Comparison indices into the store and the index of their user in
        ``positions``, grouped by user.
    """
    prompts = store.columns["prompt"]
    candidates = np.asarray(candidates, dtype=np.int64)
    candidates = candidates[rng.permutation(candidates.size)]
    positions, support, held_out = [], [], []
    for position in candidates:
        if len(positions) == n_users:
            break
        rows = np.arange(store.offsets[position], store.offsets[position + 1])
        user_prompts = np.unique(prompts[rows])
        if user_prompts.size < 2:
            continue
        n_support = min(
            _CALIBRATION_SUPPORT[len(positions) % len(_CALIBRATION_SUPPORT)],
            user_prompts.size - 1,
        )
        revealed = rng.choice(user_prompts, n_support, replace=False)
        in_support = np.isin(prompts[rows], revealed)
        positions.append(position)
        support.append(rows[in_support])
        held_out.append(rows[~in_support])

    def grouped(parts):
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        owner = np.repeat(np.arange(len(parts)), [part.size for part in parts])
        return np.concatenate(parts), owner

    return np.asarray(positions, dtype=np.int64), grouped(support), grouped(held_out)
