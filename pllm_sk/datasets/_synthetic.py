"""A synthetic corpus with the PersonalLLM schema, for offline use and tests.

The rewards come from a small generative story, not from a fit of the paper's
histograms:

1. each prompt has a topic and a source (``subset``), and may be emotional;
2. each response has a shared quality and seven style attributes (length, list
   structure, formality, warmth, technical depth, caution, relevance), drawn around
   the profile of the model that wrote it (``RESPONSE_MODEL_PROFILES``); now and then
   a response misreads the prompt and answers a neighbouring question;
3. each reward model scores a response by its own sensitivity to quality plus its own
   taste over the attributes (``REWARD_MODEL_TASTES``), plus its own noise and a
   per-prompt offset; scores are then z-normalised over the train split.

The texts are rendered from the same attributes (longer responses have more points,
list-structured ones are numbered or bulleted, formal ones avoid contractions, warm
ones open and close with empathy, deep ones use the topic's technical terms, cautious
ones add warnings, misread ones talk about another topic), so that a text embedding
can recover what drives the rewards. The words and sentence templates are data, in
:mod:`pllm_sk.datasets._templates`; this module holds the generator. The constants
below were tuned so that simulated users reproduce the population statistics of the
paper's Figure 4 (see :func:`pllm_sk.simulation.population_statistics`).
"""

import math
import random
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from ..utils import (
    Interval,
    InvalidParameterError,
    validate_arguments,
)
from ._constants import (
    N_PROMPTS,
    N_TEST_PROMPTS,
    RESPONSE_MODELS,
    REWARD_MODELS,
    SUBSET_COUNTS,
)
from ._corpus import Corpus
from ._templates import (
    ADVICE_TEMPLATES,
    AUDIENCES,
    BULLETS,
    CAUTION_TEMPLATES,
    CLOSERS,
    DISCLAIMERS,
    EMOTIONAL_PREFIXES,
    ENCOURAGEMENTS,
    INTROS,
    MISREAD_INTROS,
    PROMPT_STYLES,
    PROMPT_SUFFIXES,
    PROMPT_TEMPLATES,
    RELATIONS,
    TANGENT_TEMPLATES,
    TECHNICAL_TEMPLATES,
    TOPICS,
    TRANSITIONS,
    VAGUE,
    WARM_CLOSERS,
    WARM_OPENERS,
)

__all__ = ["make_personalllm"]

# Style attributes of a response, in the column order of the tables below.
ATTRIBUTES = (
    "length",
    "structure",
    "formality",
    "warmth",
    "depth",
    "caution",
    "relevance",
)

# Per response model: mean quality, then the mean of each attribute (in units of the
# attribute's spread, except ``structure``, the log-odds of a list-formatted answer).
# GPT-4o is strong and structured, GPT-4-Turbo close behind; the Claude models are
# warm and careful (Opus long, Sonnet cautious); Llama3 is casual and friendly;
# Gemini structured and careful; Mixtral weaker and terse.
RESPONSE_MODEL_PROFILES = {
    # quality, length, structure, formality, warmth, depth, caution, relevance
    "Command-R-Plus": (0.22, -0.06, 0.0, 0.15, 0.00, 0.00, 0.00, 0.00),
    "GPT-4-Turbo": (0.34, 0.28, 1.5, 0.36, 0.00, 0.36, 0.06, 0.21),
    "GPT-4o": (0.52, 0.36, 2.0, 0.21, 0.06, 0.42, 0.00, 0.28),
    "Claude 3 Opus": (-0.04, 0.28, -0.5, 0.06, 0.64, 0.15, 0.21, 0.15),
    "Claude 3 Sonnet": (0.01, 0.00, -0.2, 0.15, 0.28, 0.00, 0.42, 0.06),
    "Llama3-70B-Instruct": (0.11, 0.15, 0.3, -0.42, 0.36, 0.00, 0.00, 0.00),
    "Gemini-Pro-1.5": (0.20, 0.15, 1.0, 0.28, -0.06, 0.21, 0.36, 0.06),
    "Mixtral 8x22B": (-0.32, -0.57, -0.5, 0.06, -0.21, -0.15, 0.00, -0.28),
}

# Spread of each latent around the model's mean: quality, then the attributes
# (``structure`` is drawn as a coin flip, so its spread is unused).
LATENT_SD = (0.57, 0.7, 0.0, 0.6, 0.7, 0.7, 0.7, 0.8)

# Chance that a response misreads the prompt, and the quality it loses when it does:
# every reward model notices an answer to the wrong question.
MISREAD_RATE = 0.062
MISREAD_PENALTY = 4.2

# Per reward model (alphabetical short names): sensitivity to quality, taste for each
# attribute, then the sd of its own noise. The tastes disagree on purpose: beaver_7b
# (a safety cost model) rewards caution, the OpenAssistant models reward warmth and
# casual or short answers, the RM-Gemma and Llama3 models reward long, structured and
# technical answers.
REWARD_MODEL_TASTES = {
    # quality, length, structure, formality, warmth, depth, caution, relevance, noise
    "beaver_7b": (0.4, -0.50, -0.07, 0.47, 0.34, -0.67, 1.85, 0.15, 0.8),
    "gemma_2b": (0.8, 1.06, 0.39, -0.31, -0.43, 0.42, -0.64, 0.46, 1.0),
    "gemma_7b": (1.0, 0.59, 0.86, 0.32, -0.59, 0.89, -0.48, 0.62, 0.8),
    "llama3_sfairx": (1.2, 0.74, 1.02, 0.47, -0.12, 0.73, -0.79, 0.77, 0.6),
    "mistral_raft": (0.9, 1.21, -0.38, -0.62, 0.81, -0.20, -0.02, 0.46, 0.9),
    "mistral_ray": (1.0, -0.66, 0.55, 1.09, -0.43, 0.89, 0.61, 0.77, 0.8),
    "mistral_weqweasdas": (1.0, 0.90, 0.71, 0.01, 0.19, 0.27, -0.33, 0.62, 0.7),
    "oasst_deberta_v3": (0.7, -1.43, -0.69, 0.47, 0.97, -0.51, 0.45, 1.08, 0.9),
    "oasst_pythia_1b": (0.6, 1.21, -0.23, -0.93, 0.34, -0.36, -0.48, 0.31, 1.1),
    "oasst_pythia_7b": (0.7, 0.28, -0.85, -1.08, 1.12, -0.67, 0.14, 0.46, 1.0),
}

# Overall weight of the attribute tastes and of the noise, against quality (weight 1).
TASTE_SCALE = 0.4
NOISE_SCALE = 0.34

# Latent attributes beyond the seven above (``n_attributes > 7``) are drawn like
# them: per-response spread, and spread of the response models' means around zero.
EXTRA_LATENT_SD = 0.7
EXTRA_PROFILE_SD = 0.25

# Spread of the per-(prompt, reward model) offset, relative to a reward model's spread
# over responses: some prompts simply get higher scores. It cancels in each user's
# choice of response, but makes the normalised scores look like the real ones.
PROMPT_OFFSET_SD = 0.3

# On emotional prompts models answer more warmly and warmth counts for more; on
# technical topics depth counts for more. Multipliers of the attribute's effect.
EMOTIONAL_WARMTH_BOOST = 1.45
TECHNICAL_DEPTH_BOOST = 1.15
# Chance that a conversational (hh-rlhf) prompt is emotional.
EMOTIONAL_RATE = 0.15

# Prompt sources that ask for long or for short answers shift every response's length.
SUBSET_LENGTH_SHIFT = {
    "alpacaeval-length": 0.6,
    "alpacaeval-hard": 0.3,
    "mt-bench-hard": 0.3,
    "llmbar-natural": -0.3,
    "llmbar-adver-neighbor": -0.3,
    "llmbar-adver-GPTInst": -0.3,
    "llmbar-adver-manual": -0.3,
    "llmbar-adver-GPTOut": -0.3,
}

# How the attributes show in the text (see ``_render_response``). Length sets the
# number of body sentences; formality the odds of formal over casual wording; low
# quality the odds of a vague filler sentence; low relevance the odds of a tangent;
# depth the number of technical sentences (one per unit above -1, at most 3).
BASE_POINTS = 4.0  # body sentences of an average-length response
POINTS_PER_SD = 2.0  # extra body sentences per unit of length
MAX_POINTS = 10
FORMAL_LOGIT = (0.0, 2.5)  # logit(formal wording) = a + b * formality
VAGUE_LOGIT = (-1.5, -1.2)  # logit(vague sentence) = a + b * quality
TANGENT_LOGIT = (-2.0, -1.5)  # logit(tangent) = a + b * relevance
MAX_TECHNICAL = 3
# Attribute levels above which a phrase appears: warm opener, warm closer (instead of
# a plain one), encouragement; one then two cautionary sentences; a disclaimer.
WARM_OPENER_ABOVE = 0.3
WARM_CLOSER_ABOVE = 0.8
ENCOURAGEMENT_ABOVE = 1.5
CAUTIONS_ABOVE = (0.4, 1.2)
DISCLAIMER_ABOVE = 1.6


_PARAMETER_CONSTRAINTS = {
    "n_prompts": [Interval(Integral, 2, None, closed="left")],
    "test_fraction": [Interval(Real, 0, 1, closed="neither")],
    "reward_model_correlation": [Interval(Real, 0, 1, closed="both"), None],
    "n_attributes": [Interval(Integral, 1, None, closed="left"), None],
    "variance_shares": ["array-like", None],
    "quality_gap": [Interval(Real, 0, None, closed="left")],
    "style_gap": [Interval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
    "return_attributes": ["boolean"],
}


def make_personalllm(
    n_prompts=N_PROMPTS,
    *,
    test_fraction=N_TEST_PROMPTS / N_PROMPTS,
    reward_model_correlation=None,
    n_attributes=None,
    variance_shares=None,
    quality_gap=1.0,
    style_gap=1.0,
    random_state=None,
    return_attributes=False,
):
    """Generate a synthetic corpus with the schema of PersonalLLM.

    Ten reward models (``REWARD_MODELS``) score eight responses per prompt, written
    in slot order by the eight models of ``RESPONSE_MODELS``. Rewards follow the
    generative story of this module (shared quality, per-model style profiles,
    per-reward-model tastes and noise; see the module docstring) and are
    z-normalised per reward model over the train split, like the real data. The
    constants are tuned so that 1,000 simulated users reproduce the population
    statistics of the paper's Figure 4 on the 1,000 test prompts.

    Prompt and response texts are readable template text that carries the same
    attributes as the rewards (topic, length, list formatting, register, warmth,
    technical terms, cautions), so text embeddings are informative about rewards.

    Parameters
    ----------
    n_prompts : int, default=10402
        Number of prompts, at least 2. Prompt sources (``subset``) follow the
        paper's proportions.
    test_fraction : float, default=1000/10402
        Share of prompts in the test split, in (0, 1). The test split gets
        ``round(test_fraction * n_prompts)`` prompts, at least one and leaving at
        least one for training: 1,000 of 10,402 by default, as in PersonalLLM.
    reward_model_correlation : float in [0, 1] or None, default=None
        How alike the reward models' tastes are. ``None`` keeps the calibrated
        tastes (``REWARD_MODEL_TASTES``), which disagree on purpose. A number
        ``rho`` draws every reward model's taste vector anew as
        ``sqrt(rho) * c + sqrt(1 - rho) * u_b``, with ``c`` shared and ``u_b`` the
        model's own (independent standard normal vectors over the attributes),
        each rescaled to the length of the model's calibrated taste: the taste parts
        of two models' scores then correlate by about ``rho`` (in expectation over
        the draw; closer with more attributes). Shared quality adds to it: two
        models' scores correlate by about ``q + t * rho`` for quality and taste
        shares ``q`` and ``t`` (see ``variance_shares``). The calibrated corpus's
        within-prompt score correlation, averaged over the 45 pairs of models, is
        0.67.
    n_attributes : int >= 1 or None, default=None
        How many latent response attributes drive the rewards. ``None`` means the
        seven style attributes of ``ATTRIBUTES``. Fewer keeps the first
        ``n_attributes`` of them; more adds latent attributes drawn like them (a
        mean per response model, scaled by ``style_gap``, and a spread per
        response) with random tastes. The tastes are rescaled to their calibrated
        lengths, so this changes the rank of the reward structure, not the weight
        of taste: without noise, the reward vectors of a prompt's responses,
        centred on the prompt, span ``min(n_attributes + 1, 10)`` dimensions
        (quality and the attributes). The texts always render the seven named
        attributes: an attribute beyond them shows in the rewards only, and one
        left out shows in the texts only.
    variance_shares : tuple of 3 floats or None, default=None
        Shares of each reward model's within-prompt variance (variance over a
        prompt's responses around their mean, pooled over prompts) that come from
        the shared quality, from the model's own taste over the attributes, and
        from its own noise, normalised to sum to 1. ``None`` keeps the calibrated
        mix, on average (0.66, 0.27, 0.07) over the ten models (from 0.32 to 0.85
        quality). A tuple rescales the three parts of every model to those shares
        exactly: ``(1, 0, 0)`` makes all models agree up to scale, ``(0, 1, 0)``
        leaves taste alone, a large third share makes the scores noisy.
    quality_gap : float >= 0, default=1.0
        Multiplier of the response models' mean quality (the first column of
        ``RESPONSE_MODEL_PROFILES``): 0 makes them equally good on average, 2
        doubles the gaps (GPT-4o ahead, Mixtral behind). Responses still vary in
        quality around the mean, and still misread prompts.
    style_gap : float >= 0, default=1.0
        Multiplier of the response models' mean attributes (the other columns of
        ``RESPONSE_MODEL_PROFILES``, ``structure`` as the log-odds of a list):
        0 makes the models alike in style on average. With ``quality_gap=0``
        too, the eight response slots are exchangeable, and every reward model's
        mean score is the same for all of them up to sampling noise.
    random_state : int, RandomState instance or None, default=None
        Seed of every random draw: the same seed gives the same corpus. Tastes
        drawn for ``reward_model_correlation`` or extra attributes are drawn from
        it too, so each seed is its own world of the same family.
    return_attributes : bool, default=False
        Also return the latent attributes behind every response.

    Returns
    -------
    corpus : Corpus
        ``name="synthetic"``; ``rewards`` float32 of shape (n_prompts, 8, 10).
    attributes : pandas.DataFrame
        Only when ``return_attributes=True``: one row per (prompt, response), with
        ``prompt_id``, ``response_id``, ``response_model``, the prompt's ``topic``,
        ``goal`` and ``emotional`` flag, then the response's ``misread`` flag,
        ``quality`` (before the misread penalty), ``n_points`` (body sentences),
        ``is_list`` and the latent attributes of ``ATTRIBUTES`` (``structure`` is
        left out: ``is_list`` is what it drew), then ``extra_1``, ... for the
        attributes beyond them when ``n_attributes > 7``.

    See Also
    --------
    load_personalllm : The real PersonalLLM corpus.
    pllm_sk.simulation.population_statistics : The statistics it is calibrated to.

    Notes
    -----
    Calibration: at full size, for corpus seeds 0-5 and user seeds 0-2 (1,000 users,
    test split, alpha in {0.01, 0.05, 0.10}), the "<= 50 / 75 / 95 %" shares stay
    within 6.4 points of the paper's, the distinct-winners histogram within 0.10
    (summed absolute difference of fractions) and, at alpha=0.05, the per-model win
    shares within 0.06. The rewards are a model, not the real scores: use them to
    test code and compare methods, not to draw conclusions about the real reward
    models. Generating the full corpus takes a few seconds.

    The reward-structure parameters (``reward_model_correlation``,
    ``n_attributes``, ``variance_shares``, ``quality_gap``, ``style_gap``) make a
    family of worlds for testing methods beyond the calibrated one; their defaults
    give exactly the calibrated corpus, and the calibration above holds only for
    them. The reward of a response ``k`` of prompt ``p`` under reward model ``b``,
    before the per-prompt offset and the normalisation, is
    ``s_b * quality_pk + taste_b . attributes_pk + noise_pkb``, three parts that
    ``variance_shares`` weighs, ``reward_model_correlation`` and ``n_attributes``
    shape, and ``quality_gap`` and ``style_gap`` shift per response model.

    Examples
    --------
    >>> from pllm_sk.datasets import make_personalllm
    >>> corpus = make_personalllm(200, random_state=0)
    >>> corpus
    Corpus(name='synthetic', n_prompts=200, n_responses=8, n_reward_models=10, test=19, train=181)
    >>> corpus.response_models[0, 2], corpus.reward_models[0]
    ('GPT-4o', 'beaver_7b')

    A world whose reward models mostly share two tastes and barely care about
    quality, with no difference between the response models:

    >>> world = make_personalllm(
    ...     200, reward_model_correlation=0.8, n_attributes=2,
    ...     variance_shares=(0.1, 0.8, 0.1), quality_gap=0.0, style_gap=0.0,
    ...     random_state=0)
    >>> world.rewards.shape
    (200, 8, 10)
    """  # noqa: E501
    params = dict(locals())
    validate_arguments(_PARAMETER_CONSTRAINTS, params, "make_personalllm")
    variance_shares = _check_variance_shares(variance_shares)
    n_attributes = len(ATTRIBUTES) if n_attributes is None else int(n_attributes)
    rng = check_random_state(random_state)

    prompts = _draw_prompts(int(n_prompts), test_fraction, rng)
    latents = _draw_latents(
        prompts, rng, n_attributes=n_attributes, gaps=(quality_gap, style_gap)
    )
    structure = _reward_structure(n_attributes, reward_model_correlation, rng)
    rewards = _score(prompts, latents, structure, variance_shares, rng)
    # Python's generator is much faster than NumPy's for the many scalar draws of the
    # texts; seeding it from ``rng`` keeps the whole corpus reproducible.
    text_rng = random.Random(int(rng.randint(np.iinfo(np.int32).max)))
    prompt_texts = [
        _render_prompt(text_rng, subset, topic, goal, emotional)
        for subset, topic, goal, emotional in zip(
            prompts["subset"], prompts["topic"], prompts["goal"], prompts["emotional"]
        )
    ]
    response_texts = _render_responses(text_rng, prompts, latents)

    n_responses = len(RESPONSE_MODELS)
    corpus = Corpus(
        prompt_texts,
        np.array(response_texts, dtype=object).reshape(n_prompts, n_responses),
        rewards,
        reward_models=REWARD_MODELS,
        response_models=np.tile(
            np.array(RESPONSE_MODELS, dtype=object), (n_prompts, 1)
        ),
        split=prompts["split"],
        subset=prompts["subset"],
        name="synthetic",
    )
    if not return_attributes:
        return corpus
    attributes = pd.DataFrame(
        {
            "prompt_id": np.repeat(np.arange(n_prompts), n_responses),
            "response_id": np.tile(np.arange(n_responses), n_prompts),
            "response_model": np.tile(
                np.array(RESPONSE_MODELS, dtype=object), n_prompts
            ),
            "topic": np.repeat(prompts["topic"], n_responses),
            "goal": np.repeat(prompts["goal"], n_responses),
            "emotional": np.repeat(prompts["emotional"], n_responses),
            "misread": latents["misread"].ravel(),
            "quality": latents["quality"].ravel(),
            "n_points": latents["n_points"].ravel(),
            "is_list": latents["is_list"].ravel(),
            **{
                name: latents["attributes"][..., j].ravel()
                for j, name in enumerate(ATTRIBUTES)
                if name != "structure"
            },
            **{
                f"extra_{j + 1}": latents["extra"][..., j].ravel()
                for j in range(latents["extra"].shape[-1])
            },
        }
    )
    return corpus, attributes


def _check_variance_shares(variance_shares):
    """``None``, or the (quality, taste, noise) shares as floats summing to 1."""
    if variance_shares is None:
        return None
    try:
        shares = np.asarray(variance_shares, dtype=float)
    except (TypeError, ValueError):
        shares = None
    if (
        shares is None
        or shares.shape != (3,)
        or not np.isfinite(shares).all()
        or (shares < 0).any()
        or shares.sum() == 0
    ):
        raise InvalidParameterError(
            "The 'variance_shares' parameter of make_personalllm must be None or "
            "three non-negative numbers (quality, taste, noise), not all zero. "
            f"Got {variance_shares!r} instead."
        )
    return shares / shares.sum()


def _allocate(total, proportions):
    """Split ``total`` into integer counts proportional to ``proportions``.

    Largest-remainder rounding, so the counts sum to ``total`` and equal the
    proportions exactly when ``total`` is their sum.
    """
    proportions = np.asarray(proportions, dtype=float)
    exact = total * proportions / proportions.sum()
    counts = np.floor(exact).astype(int)
    remainders = exact - counts
    counts[np.argsort(-remainders, kind="stable")[: total - counts.sum()]] += 1
    return counts


def _draw_prompts(n_prompts, test_fraction, rng):
    """Per prompt: subset, split, topic, goal, and whether it is emotional."""
    subsets = np.repeat(
        np.array(list(SUBSET_COUNTS), dtype=object),
        _allocate(n_prompts, list(SUBSET_COUNTS.values())),
    )
    subsets = subsets[rng.permutation(n_prompts)]
    n_test = min(max(round(test_fraction * n_prompts), 1), n_prompts - 1)
    split = np.full(n_prompts, "train", dtype=object)
    split[rng.choice(n_prompts, size=n_test, replace=False)] = "test"
    topics = np.array(list(TOPICS), dtype=object)[
        rng.randint(len(TOPICS), size=n_prompts)
    ]
    # Each topic lists the same number of goals. XSTest prompts are safe requests
    # worded with alarming verbs.
    goals = np.array(
        [
            TOPICS[t]["edgy"] if s == "xstest-should-respond" else TOPICS[t]["goals"][g]
            for s, t, g in zip(subsets, topics, rng.randint(6, size=n_prompts))
        ],
        dtype=object,
    )
    conversational = np.array([PROMPT_STYLES[s] == "conversation" for s in subsets])
    emotional = conversational & (rng.random_sample(n_prompts) < EMOTIONAL_RATE)
    return {
        "subset": subsets,
        "split": split,
        "topic": topics,
        "goal": goals,
        "emotional": emotional,
    }


def _draw_latents(prompts, rng, *, n_attributes, gaps):
    """Quality and attributes of every response, shape (n_prompts, 8[, 7]).

    ``gaps`` = (quality_gap, style_gap) multiply the response models' profiles.
    Attributes beyond the seven named ones (``extra``, shape (n_prompts, 8,
    n_attributes - 7), possibly empty) are drawn last, so the named ones are the
    same for every ``n_attributes``.
    """
    n_prompts = prompts["subset"].shape[0]
    n_responses = len(RESPONSE_MODELS)
    profiles = np.array([RESPONSE_MODEL_PROFILES[m] for m in RESPONSE_MODELS])
    # Multiplying by 1.0 is exact: the calibrated corpus is unchanged.
    profiles[:, 0] *= gaps[0]
    profiles[:, 1:] *= gaps[1]
    draws = profiles + np.asarray(LATENT_SD) * rng.standard_normal(
        (n_prompts, n_responses, profiles.shape[1])
    )
    quality, attributes = draws[..., 0], draws[..., 1:]

    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    list_probability = 1.0 / (1.0 + np.exp(-profiles[:, 1 + column["structure"]]))
    is_list = rng.random_sample((n_prompts, n_responses)) < list_probability
    # Centred, so that the structure taste moves list answers up and prose down.
    attributes[..., column["structure"]] = is_list - 0.5
    attributes[..., column["length"]] += np.array(
        [SUBSET_LENGTH_SHIFT.get(s, 0.0) for s in prompts["subset"]]
    )[:, np.newaxis]
    attributes[..., column["warmth"]] += 0.5 * prompts["emotional"][:, np.newaxis]

    misread = rng.random_sample((n_prompts, n_responses)) < MISREAD_RATE
    n_points = np.clip(
        np.round(BASE_POINTS + POINTS_PER_SD * attributes[..., column["length"]]),
        1,
        MAX_POINTS,
    ).astype(int)
    extra = np.zeros((n_prompts, n_responses, max(n_attributes - len(ATTRIBUTES), 0)))
    if extra.size:
        means = gaps[1] * EXTRA_PROFILE_SD * rng.standard_normal(extra.shape[1:])
        extra = means + EXTRA_LATENT_SD * rng.standard_normal(extra.shape)
    return {
        "quality": quality,
        "attributes": attributes,
        "extra": extra,
        "is_list": is_list,
        "misread": misread,
        "n_points": n_points,
    }


def _reward_structure(n_attributes, reward_model_correlation, rng):
    """Each reward model's sensitivity to quality, tastes and noise sd.

    Returns arrays of shape (10,), (10, n_attributes) and (10,). With the defaults
    (seven attributes, no correlation asked) these are ``REWARD_MODEL_TASTES`` as
    they are. Otherwise the tastes are cut to the first ``n_attributes`` columns
    and extended with random ones, or, when ``reward_model_correlation`` is given,
    drawn anew as ``sqrt(rho) * common + sqrt(1 - rho) * own`` (standard normal
    vectors); either way each row is rescaled to the length of its calibrated taste,
    so that the number of attributes and the correlation leave the weight of taste
    against quality and noise unchanged.
    """
    table = np.array([REWARD_MODEL_TASTES[m] for m in REWARD_MODELS])
    sensitivity, taste, noise_sd = table[:, 0], table[:, 1:-1], table[:, -1]
    if n_attributes == len(ATTRIBUTES) and reward_model_correlation is None:
        return sensitivity, taste, noise_sd
    n_reward_models = len(REWARD_MODELS)
    if reward_model_correlation is None:
        n_extra = max(n_attributes - taste.shape[1], 0)
        extra = rng.standard_normal((n_reward_models, n_extra))
        new_taste = np.hstack([taste[:, :n_attributes], taste.std() * extra])
    else:
        rho = reward_model_correlation
        common = rng.standard_normal(n_attributes)
        own = rng.standard_normal((n_reward_models, n_attributes))
        new_taste = np.sqrt(rho) * common + np.sqrt(1.0 - rho) * own
    lengths = np.linalg.norm(taste, axis=1) / np.linalg.norm(new_taste, axis=1)
    return sensitivity, new_taste * lengths[:, np.newaxis], noise_sd


def _score(prompts, latents, structure, variance_shares, rng):
    """Normalised reward-model scores, float32 of shape (n_prompts, 8, 10).

    ``structure`` comes from :func:`_reward_structure`. With ``variance_shares``
    (quality, taste, noise), each reward model's three parts are rescaled so that
    they make up these shares of its within-prompt variance.
    """
    sensitivity, taste, noise_sd = structure
    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    effective = latents["attributes"].copy()
    effective[..., column["warmth"]] *= (
        1.0 + EMOTIONAL_WARMTH_BOOST * prompts["emotional"][:, np.newaxis]
    )
    technical = np.array([TOPICS[t]["technical"] for t in prompts["topic"]])
    effective[..., column["depth"]] *= (
        1.0 + TECHNICAL_DEPTH_BOOST * technical[:, np.newaxis]
    )

    effective = np.concatenate([effective, latents["extra"]], axis=-1)[
        ..., : taste.shape[1]
    ]

    n_prompts, n_responses = latents["quality"].shape
    quality = latents["quality"] - MISREAD_PENALTY * latents["misread"]
    parts = [
        quality[..., np.newaxis] * sensitivity,
        TASTE_SCALE * effective @ taste.T,
        NOISE_SCALE
        * noise_sd
        * rng.standard_normal((n_prompts, n_responses, len(REWARD_MODELS))),
    ]
    if variance_shares is not None:
        parts = [
            part * np.sqrt(share / _within_prompt_variance(part))
            for part, share in zip(parts, variance_shares)
        ]
    raw = parts[0] + parts[1] + parts[2]
    raw += (
        PROMPT_OFFSET_SD
        * raw.std(axis=(0, 1))
        * rng.standard_normal((n_prompts, 1, len(REWARD_MODELS)))
    )
    train = prompts["split"] == "train"
    mean = raw[train].mean(axis=(0, 1))
    sd = raw[train].std(axis=(0, 1))
    return ((raw - mean) / sd).astype(np.float32)


def _within_prompt_variance(values):
    """Variance over responses around each prompt's mean, per reward model."""
    return (values - values.mean(axis=1, keepdims=True)).var(axis=(0, 1))


def _render_prompt(r, subset, topic, goal, emotional):
    """Prompt text: a template of the prompt's source, filled in from its topic."""
    text = r.choice(PROMPT_TEMPLATES[PROMPT_STYLES[subset]]).format(
        goal=goal,
        field=topic,
        audience=r.choice(AUDIENCES),
        relation=r.choice(RELATIONS),
    )
    if emotional:
        text = f"{r.choice(EMOTIONAL_PREFIXES)} {text}"
    return text + r.choice(PROMPT_SUFFIXES)


def _render_responses(r, prompts, latents):
    """All response texts, flat in (prompt, slot) order."""
    n_responses = latents["quality"].shape[1]
    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    # Plain Python scalars: indexing NumPy arrays element by element is slow.
    fields = {
        "topic": np.repeat(prompts["topic"], n_responses).tolist(),
        "goal": np.repeat(prompts["goal"], n_responses).tolist(),
        "emotional": np.repeat(prompts["emotional"], n_responses).tolist(),
        **{
            name: latents[name].ravel().tolist()
            for name in ("quality", "n_points", "is_list", "misread")
        },
        **{
            name: latents["attributes"][..., column[name]].ravel().tolist()
            for name in ("formality", "warmth", "depth", "caution", "relevance")
        },
    }
    topic_names = list(TOPICS)
    texts = []
    for values in zip(*fields.values()):
        response = dict(zip(fields, values))
        # The topic a tangent (or a misread answer) drifts to.
        other = r.choice(topic_names)
        while other == response["topic"]:
            other = r.choice(topic_names)
        texts.append(_render_response(r, other=other, **response))
    return texts


def _render_response(
    r,
    *,
    topic,
    goal,
    other,
    emotional,
    quality,
    n_points,
    is_list,
    misread,
    formality,
    warmth,
    depth,
    caution,
    relevance,
):
    """One response text whose wording carries its latent attributes.

    ``topic`` and ``other`` are topic names; the other arguments are one response's
    entries of ``_draw_prompts`` and ``_draw_latents``.
    """
    p_formal = _logistic(FORMAL_LOGIT, formality)
    p_vague = _logistic(VAGUE_LOGIT, quality)
    p_tangent = _logistic(TANGENT_LOGIT, relevance)

    def register():
        return "formal" if r.random() < p_formal else "casual"

    # A misread response answers about another topic throughout.
    subject_name = other if misread else topic
    subject, other = TOPICS[subject_name], TOPICS[other]
    head = []
    if caution > DISCLAIMER_ABOVE:
        head.append(r.choice(DISCLAIMERS).format(expert=subject["expert"]))
    if warmth > WARM_OPENER_ABOVE:
        head.append(r.choice(WARM_OPENERS["emotional" if emotional else "neutral"]))
    if misread:
        head.append(r.choice(MISREAD_INTROS).format(field=subject_name))
    else:
        head.append(r.choice(INTROS[register()]).format(goal=goal))

    advice = r.sample(subject["advice"], len(subject["advice"]))
    points = []
    for i in range(n_points):
        if r.random() < p_vague:
            points.append(r.choice(VAGUE[register()]))
        elif r.random() < p_tangent:
            points.append(
                r.choice(TANGENT_TEMPLATES).format(advice=r.choice(other["advice"]))
            )
        else:
            template = r.choice(ADVICE_TEMPLATES[register()])
            points.append(template.format(advice=advice[i % len(advice)]))
    n_technical = min(max(math.floor(depth + 1.0), 0), MAX_TECHNICAL)
    terms = r.sample(subject["terms"], len(subject["terms"]))
    for i in range(n_technical):
        sentence = r.choice(TECHNICAL_TEMPLATES).format(
            term=terms[i % len(terms)], term2=terms[(i + 1) % len(terms)]
        )
        points.insert(r.randint(0, len(points)), sentence)
    n_cautions = sum(caution > level for level in CAUTIONS_ABOVE)
    for template in r.sample(CAUTION_TEMPLATES, n_cautions):
        points.append(template.format(risk=subject["risk"], expert=subject["expert"]))

    body = _layout(r, points, is_list)
    tail = []
    if warmth > ENCOURAGEMENT_ABOVE:
        tail.append(r.choice(ENCOURAGEMENTS))
    tail.append(
        r.choice(WARM_CLOSERS)
        if warmth > WARM_CLOSER_ABOVE
        else r.choice(CLOSERS[register()])
    )
    return " ".join(head) + "\n\n" + body + "\n\n" + " ".join(tail)


def _layout(r, points, is_list):
    """The points of a response as a bulleted list or as paragraphs of prose."""
    if is_list:
        bullet = r.choice(BULLETS)
        return "\n".join(
            f"{i + 1}. {s}" if bullet == "numbered" else f"{bullet} {s}"
            for i, s in enumerate(points)
        )
    sentences = [points[0]] + [
        _join_transition(r.choice(TRANSITIONS), s) for s in points[1:-1]
    ]
    if len(points) > 1:
        sentences.append(_join_transition("Finally, ", points[-1]))
    return "\n\n".join(
        " ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)
    )


def _logistic(coefficients, value):
    intercept, slope = coefficients
    return 1.0 / (1.0 + math.exp(-(intercept + slope * value)))


def _join_transition(transition, sentence):
    """Prefix a transition word, lower-casing the sentence's first letter."""
    if not transition:
        return sentence
    return transition + sentence[0].lower() + sentence[1:]
