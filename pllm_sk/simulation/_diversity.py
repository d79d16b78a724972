"""How much simulated users disagree: the population statistics of Figure 4."""

import numpy as np
from sklearn.utils import Bunch

from ._users import check_weights

__all__ = [
    "CALIBRATION_TOLERANCES",
    "PAPER_POPULATION_STATISTICS",
    "compare_with_paper",
    "population_statistics",
]

# Bins of the "number of distinct winning responses" histogram, as in the paper.
N_WINNERS_BINS = ("<=2", "3", "4", "5", ">=6")

# Vote-share thresholds (percent) of the "most popular response gets at most" table.
TOP_SHARE_THRESHOLDS = (50, 75, 95)

# Reference numbers from the PersonalLLM paper (Zollo et al.), Figure 4: 1,000 users
# drawn from Dirichlet(alpha * 1), test split, read off the figure (approximate).
# NOT computed by this library: printed beside our statistics for comparison.
# Keyed by alpha, then by the name of the matching `population_statistics` entry;
# all values in percent. The paper reports per-model win shares for alpha=0.05 only.
PAPER_POPULATION_STATISTICS = {
    0.01: {
        "share_top_at_most": {50: 49.0, 75: 93.0, 95: 100.0},
        "n_winners_hist": {"<=2": 6.0, "3": 18.5, "4": 28.0, "5": 29.0, ">=6": 18.0},
    },
    0.05: {
        "share_top_at_most": {50: 43.0, 75: 90.0, 95: 100.0},
        "n_winners_hist": {"<=2": 5.0, "3": 17.0, "4": 27.5, "5": 29.0, ">=6": 21.0},
        "win_share_by_model": {
            "Command-R-Plus": 11.0,
            "GPT-4-Turbo": 17.0,
            "GPT-4o": 26.0,
            "Claude 3 Opus": 10.0,
            "Claude 3 Sonnet": 10.0,
            "Llama3-70B-Instruct": 11.5,
            "Gemini-Pro-1.5": 12.0,
            "Mixtral 8x22B": 3.0,
        },
    },
    0.10: {
        "share_top_at_most": {50: 34.0, 75: 83.0, 95: 100.0},
        "n_winners_hist": {"<=2": 6.5, "3": 17.0, "4": 27.5, "5": 29.0, ">=6": 19.0},
    },
}

# How close a corpus must come to the paper to count as calibrated (the acceptance
# criteria of the synthetic corpus): the largest gap in the "<= 50/75/95 %" shares, in
# percentage points; the summed absolute gap of the distinct-winners histogram and of
# the per-model win shares, as fractions.
CALIBRATION_TOLERANCES = {
    "share_top_at_most": 7.0,
    "n_winners_hist": 0.15,
    "win_share_by_model": 0.10,
}

# Prompts scored per chunk: bounds the (chunk, K, n_users) score array in memory.
_PROMPT_CHUNK = 256


def population_statistics(corpus, weights, *, split="test"):
    """Summarise how the users' favourite responses spread over each prompt.

    Each user's winning response to a prompt is the one with the largest reward
    ``weights[u] @ corpus.rewards[p, k]`` (ties go to the lowest ``response_id``).
    From the winners of all users the function computes the statistics of the
    PersonalLLM paper's Figure 4.

    Parameters
    ----------
    corpus : Corpus
        Prompts, responses and normalised rewards.
    weights : array-like of shape (n_users, n_reward_models)
        User weight vectors on the simplex, in ``corpus.reward_models`` order.
    split : {"test", "train"} or None, default="test"
        Prompts to use; ``None`` uses every prompt.

    Returns
    -------
    statistics : :class:`~sklearn.utils.Bunch`
        With keys:

        - ``top_share`` : ndarray of shape (n_prompts,), share of users (in [0, 1])
          whose winner is the prompt's most popular response;
        - ``share_top_at_most`` : dict ``{50: %, 75: %, 95: %}``, percent of prompts
          whose most popular response gets at most that percent of the votes;
        - ``n_winners`` : ndarray of shape (n_prompts,), number of distinct responses
          that win for at least one user;
        - ``n_winners_hist`` : dict with keys ``"<=2", "3", "4", "5", ">=6"``, percent
          of prompts by ``n_winners``;
        - ``win_share_by_model`` : dict, response-model name -> percent of all
          (user, prompt) wins, following ``corpus.response_models`` (not slots), in
          order of first appearance;
        - ``vote_counts`` : ndarray of shape (n_prompts, n_responses), users won by
          each response;
        - ``prompt_ids``, ``split``, ``n_users`` : what was used.

    See Also
    --------
    sample_users : Draw the user weight vectors.
    compare_with_paper : Gaps between these statistics and the paper's.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.datasets import Corpus
    >>> from pllm_sk.simulation import population_statistics
    >>> rewards = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # 1 prompt, 2 responses, 2 RMs
    >>> corpus = Corpus(["Hi?"], [["Hello.", "Hey!"]], rewards, reward_models=["a", "b"])
    >>> stats = population_statistics(corpus, np.eye(2), split=None)
    >>> stats.top_share.tolist(), stats.n_winners.tolist()
    ([0.5], [2])
    """
    weights = check_weights(weights, corpus.n_reward_models)
    prompt_ids = corpus.prompt_ids(split)
    if prompt_ids.size == 0:
        raise ValueError(f"The corpus has no prompts in split={split!r}.")
    n_users = weights.shape[0]
    n_responses = corpus.n_responses

    vote_counts = np.empty((prompt_ids.size, n_responses), dtype=np.int64)
    weights_t = weights.T.astype(np.float32)
    for start in range(0, prompt_ids.size, _PROMPT_CHUNK):
        chunk = prompt_ids[start : start + _PROMPT_CHUNK]
        # (chunk, K, B) @ (B, n_users) -> (chunk, K, n_users); winners (chunk, n_users)
        winners = np.argmax(corpus.rewards[chunk] @ weights_t, axis=1)
        offsets = np.arange(chunk.size)[:, np.newaxis] * n_responses
        vote_counts[start : start + chunk.size] = np.bincount(
            (winners + offsets).ravel(), minlength=chunk.size * n_responses
        ).reshape(chunk.size, n_responses)

    top_votes = vote_counts.max(axis=1)
    n_winners = (vote_counts > 0).sum(axis=1)
    # Integer comparison, so that exactly 500 of 1,000 votes counts as "<= 50 %".
    share_top_at_most = {
        threshold: 100.0 * float(np.mean(100 * top_votes <= threshold * n_users))
        for threshold in TOP_SHARE_THRESHOLDS
    }
    n_winners_hist = {
        "<=2": n_winners <= 2,
        "3": n_winners == 3,
        "4": n_winners == 4,
        "5": n_winners == 5,
        ">=6": n_winners >= 6,
    }
    n_winners_hist = {
        key: 100.0 * float(np.mean(hit)) for key, hit in n_winners_hist.items()
    }

    models = corpus.response_models[prompt_ids]
    names, first_seen = np.unique(models.ravel(), return_index=True)
    total_votes = n_users * prompt_ids.size
    win_share_by_model = {
        str(name): 100.0 * float(vote_counts[models == name].sum()) / total_votes
        for name in names[np.argsort(first_seen)]
    }
    return Bunch(
        top_share=top_votes / n_users,
        share_top_at_most=share_top_at_most,
        n_winners=n_winners,
        n_winners_hist=n_winners_hist,
        win_share_by_model=win_share_by_model,
        vote_counts=vote_counts,
        prompt_ids=prompt_ids,
        split=split,
        n_users=n_users,
    )


def compare_with_paper(statistics, alpha):
    """Gaps between :func:`population_statistics` output and the paper's Figure 4.

    Parameters
    ----------
    statistics : Bunch
        Output of :func:`population_statistics` for 1,000 users (as in the paper).
    alpha : {0.01, 0.05, 0.10}
        The Dirichlet concentration the users were drawn with.

    Returns
    -------
    comparison : dict
        Keyed like :data:`CALIBRATION_TOLERANCES`; each value is a dict with ``gap``
        (the largest gap in percentage points for ``share_top_at_most``; the summed
        absolute gap as a fraction for the two distributions), ``tolerance`` and
        ``ok``. ``win_share_by_model`` is present only where the paper reports it
        (alpha=0.05); a model of the paper missing from the corpus counts as 0 %.

    Examples
    --------
    >>> from sklearn.utils import Bunch
    >>> from pllm_sk.simulation._diversity import compare_with_paper
    >>> stats = Bunch(
    ...     share_top_at_most={50: 45.0, 75: 90.0, 95: 99.0},
    ...     n_winners_hist={"<=2": 5.0, "3": 17.0, "4": 27.5, "5": 29.0, ">=6": 21.5},
    ... )
    >>> compare_with_paper(stats, 0.01)["share_top_at_most"]
    {'gap': 4.0, 'tolerance': 7.0, 'ok': True}
    """
    if alpha not in PAPER_POPULATION_STATISTICS:
        raise ValueError(
            f"The paper reports alpha in {sorted(PAPER_POPULATION_STATISTICS)}; "
            f"got alpha={alpha!r}."
        )
    paper = PAPER_POPULATION_STATISTICS[alpha]
    gaps = {
        "share_top_at_most": max(
            abs(statistics.share_top_at_most[t] - paper["share_top_at_most"][t])
            for t in TOP_SHARE_THRESHOLDS
        ),
        "n_winners_hist": _total_gap(
            statistics.n_winners_hist, paper["n_winners_hist"]
        ),
    }
    if "win_share_by_model" in paper:
        gaps["win_share_by_model"] = _total_gap(
            statistics.win_share_by_model, paper["win_share_by_model"]
        )
    return {
        key: {
            "gap": round(gap, 4),
            "tolerance": CALIBRATION_TOLERANCES[key],
            "ok": bool(gap <= CALIBRATION_TOLERANCES[key]),
        }
        for key, gap in gaps.items()
    }


def _total_gap(ours, paper):
    """Summed absolute difference of two percent distributions, as a fraction."""
    keys = set(ours) | set(paper)
    return sum(abs(ours.get(k, 0.0) - paper.get(k, 0.0)) for k in keys) / 100.0
