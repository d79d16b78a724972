"""Tests of the synthetic corpus and of the population statistics it is calibrated to."""

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from pllm_sk.datasets import Corpus, make_personalllm
from pllm_sk.datasets._constants import (
    N_PROMPTS,
    N_TEST_PROMPTS,
    RESPONSE_MODELS,
    REWARD_MODELS,
    SUBSET_COUNTS,
)
from pllm_sk.datasets._synthetic import MISREAD_PENALTY
from pllm_sk.datasets._templates import TOPICS
from pllm_sk.simulation._diversity import (
    PAPER_POPULATION_STATISTICS,
    compare_with_paper,
    population_statistics,
)
from pllm_sk.simulation._users import sample_users

LIST_MARKER = re.compile(r"^(\d+\.|-|\*) ", flags=re.MULTILINE)


@pytest.fixture(scope="module")
def full_corpus():
    return make_personalllm(random_state=0)


@pytest.fixture(scope="module")
def small():
    return make_personalllm(1500, random_state=0, return_attributes=True)


def test_schema(small):
    corpus, attributes = small
    assert isinstance(corpus, Corpus)
    assert corpus.name == "synthetic"
    assert corpus.rewards.shape == (1500, 8, 10)
    assert corpus.rewards.dtype == np.float32
    assert np.isfinite(corpus.rewards).all()
    assert corpus.reward_models == REWARD_MODELS
    assert (corpus.response_models == np.array(RESPONSE_MODELS, dtype=object)).all()
    assert corpus.responses.shape == (1500, 8)
    assert all(isinstance(text, str) and text for text in corpus.responses.ravel())
    assert set(corpus.subset) <= set(SUBSET_COUNTS)
    # round(1500 * 1000 / 10402) = 144
    assert (corpus.split == "test").sum() == 144
    assert len(attributes) == 1500 * 8
    assert (attributes["response_model"] == corpus.response_models.ravel()).all()


def test_full_size_split_and_subsets(full_corpus):
    assert full_corpus.n_prompts == N_PROMPTS
    assert (full_corpus.split == "test").sum() == N_TEST_PROMPTS
    assert (full_corpus.split == "train").sum() == N_PROMPTS - N_TEST_PROMPTS
    names, counts = np.unique(full_corpus.subset, return_counts=True)
    assert dict(zip(names.tolist(), counts.tolist())) == SUBSET_COUNTS


@pytest.mark.parametrize("n_prompts, n_test", [(2, 1), (3, 1), (50, 5), (500, 48)])
def test_smaller_corpora_keep_the_test_fraction(n_prompts, n_test):
    corpus = make_personalllm(n_prompts, random_state=0)
    assert (corpus.split == "test").sum() == n_test
    assert (corpus.split == "train").sum() == n_prompts - n_test
    assert set(corpus.subset) <= set(SUBSET_COUNTS)


def test_rewards_are_normalised_over_the_train_split(small):
    corpus, _ = small
    train = corpus.rewards[corpus.split == "train"].astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=(0, 1)), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=(0, 1)), 1.0, atol=1e-4)


def test_same_seed_same_corpus_different_seed_different_corpus():
    first = make_personalllm(100, random_state=7)
    again = make_personalllm(100, random_state=7)
    other = make_personalllm(100, random_state=8)
    assert (first.prompts == again.prompts).all()
    assert (first.responses == again.responses).all()
    np.testing.assert_array_equal(first.rewards, again.rewards)
    assert (first.split == again.split).all()
    assert not np.allclose(first.rewards, other.rewards)
    assert (first.responses != other.responses).mean() > 0.9


def test_prompts_are_readable_and_about_their_topic(small):
    corpus, attributes = small
    per_prompt = attributes.groupby("prompt_id")[["topic", "goal"]].first()
    for prompt, topic, goal in zip(
        corpus.prompts, per_prompt["topic"], per_prompt["goal"]
    ):
        assert re.fullmatch(r"[A-Z][\w\s,.'?!:;/()-]+[.?!]", prompt), prompt
        assert goal in prompt
        assert goal in TOPICS[topic]["goals"] or goal == TOPICS[topic]["edgy"]
    assert len(set(corpus.prompts)) > 0.5 * corpus.n_prompts


def test_list_structured_responses_use_list_markers(small):
    corpus, attributes = small
    assert "lorem" not in " ".join(corpus.responses.ravel()).lower()
    has_markers = np.array(
        [bool(LIST_MARKER.search(t)) for t in corpus.responses.ravel()]
    )
    np.testing.assert_array_equal(has_markers, attributes["is_list"].to_numpy())
    # GPT-4o answers with lists far more often than Claude 3 Opus, as profiled.
    by_model = attributes.groupby("response_model")["is_list"].mean()
    assert by_model["GPT-4o"] > by_model["Claude 3 Opus"] + 0.4


def test_text_carries_the_latent_attributes(small):
    corpus, attributes = small
    texts = corpus.responses.ravel()
    n_words = np.array([len(t.split()) for t in texts])
    assert np.corrcoef(attributes["length"], n_words)[0, 1] > 0.6

    topics = attributes["topic"].to_numpy()
    on_topic = ~attributes["misread"].to_numpy()
    mentions_term = np.array(
        [
            any(term in t for term in TOPICS[topic]["terms"])
            for t, topic in zip(texts, topics)
        ]
    )
    deep = attributes["depth"].to_numpy() >= 0
    assert mentions_term[on_topic & deep].all()
    assert not mentions_term[on_topic & (attributes["depth"].to_numpy() < -1)].any()

    contractions = np.array([len(re.findall(r"\w'(s|re|t|ll)\b", t)) for t in texts])
    formality = attributes["formality"].to_numpy()
    assert (
        contractions[formality > 0.5].mean()
        < 0.5 * contractions[formality < -0.5].mean()
    )

    warns = np.array(
        [
            TOPICS[topic]["risk"] in t or TOPICS[topic]["expert"] in t
            for t, topic in zip(texts, topics)
        ]
    )
    caution = attributes["caution"].to_numpy()
    assert warns[on_topic & (caution > 0.4)].all()
    assert not warns[on_topic & (caution < 0.4)].any()

    # A misread response talks about another topic: it never states the prompt's goal.
    states_goal = np.array([g in t for g, t in zip(attributes["goal"], texts)])
    misread = attributes["misread"].to_numpy()
    assert states_goal[~misread].all()
    assert not states_goal[misread].any()


def test_rewards_follow_the_attributes(small):
    corpus, attributes = small
    rewards = corpus.rewards.reshape(-1, len(REWARD_MODELS))
    by_name = dict(zip(REWARD_MODELS, rewards.T))
    # The safety model rewards caution; the length-averse deberta model does not
    # reward length the way the RM-Gemma models do.
    assert np.corrcoef(attributes["caution"], by_name["beaver_7b"])[0, 1] > 0.3
    assert np.corrcoef(attributes["length"], by_name["gemma_2b"])[0, 1] > 0.2
    assert np.corrcoef(attributes["length"], by_name["oasst_deberta_v3"])[0, 1] < -0.1
    # A misread response is penalised by every reward model.
    misread = attributes["misread"].to_numpy()
    assert (rewards[misread].mean(axis=0) < rewards[~misread].mean(axis=0) - 1).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_prompts": 1}, ValueError, "n_prompts"),
        ({"n_prompts": 0}, ValueError, "n_prompts"),
        ({"n_prompts": 2.5}, TypeError, "n_prompts"),
        ({"n_prompts": "100"}, TypeError, "n_prompts"),
        ({"n_prompts": True}, TypeError, "n_prompts"),
        ({"n_prompts": 10, "test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"n_prompts": 10, "test_fraction": 1.5}, ValueError, "test_fraction"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_personalllm(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reward_model_correlation": 1.5},
        {"reward_model_correlation": -0.1},
        {"reward_model_correlation": "high"},
        {"n_attributes": 0},
        {"n_attributes": 2.5},
        {"variance_shares": (1.0, 1.0)},
        {"variance_shares": (-1.0, 1.0, 1.0)},
        {"variance_shares": (0, 0, 0)},
        {"variance_shares": (np.nan, 1.0, 1.0)},
        {"variance_shares": ("a", "b", "c")},
        {"variance_shares": 0.5},
        {"quality_gap": -1.0},
        {"quality_gap": None},
        {"style_gap": -0.5},
        {"style_gap": "wide"},
    ],
)
def test_bad_structure_parameters_raise_errors_naming_them(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"'{name}' parameter of make_personalllm"):
        make_personalllm(20, random_state=0, **kwargs)


# The texts (sha256 of prompts and responses) of make_personalllm(50, random_state=0)
# and its first prompt's rewards under the first 3 reward models, recorded before the
# reward-structure parameters existed: their defaults must give the calibrated corpus.
CALIBRATED_TEXT_SHA256 = (
    "9699e4add5cdaaa63abf14c47743dc724a8046da05dba1f254577a81b7a2e7f9"
)
CALIBRATED_REWARDS_0 = np.array(
    [
        [-1.226622, 0.291359, 0.500642],
        [-0.812590, 1.475552, 1.847008],
        [0.308197, 0.530917, 1.182505],
        [-1.032215, -0.478822, 0.435166],
        [1.183631, -0.796630, -0.104302],
        [-0.581665, -0.373261, 0.201413],
        [-0.732928, -0.182806, 0.804714],
        [0.129877, -1.225908, -0.149650],
    ]
)


def _text_digest(corpus):
    texts = "\x00".join([*corpus.prompts, *corpus.responses.ravel()])
    return hashlib.sha256(texts.encode()).hexdigest()


def test_structure_defaults_give_the_calibrated_corpus():
    implicit, implicit_attributes = make_personalllm(
        300, random_state=3, return_attributes=True
    )
    explicit, explicit_attributes = make_personalllm(
        300,
        reward_model_correlation=None,
        n_attributes=None,
        variance_shares=None,
        quality_gap=1.0,
        style_gap=1.0,
        random_state=3,
        return_attributes=True,
    )
    assert implicit.rewards.tobytes() == explicit.rewards.tobytes()
    assert _text_digest(implicit) == _text_digest(explicit)
    pd.testing.assert_frame_equal(implicit_attributes, explicit_attributes)

    pinned = make_personalllm(50, random_state=0)
    assert _text_digest(pinned) == CALIBRATED_TEXT_SHA256
    np.testing.assert_allclose(
        pinned.rewards[0, :, :3], CALIBRATED_REWARDS_0, atol=2e-6
    )


def _within_prompt(corpus):
    """Rewards centred on each prompt's mean, shape (n_prompts * 8, 10)."""
    rewards = corpus.rewards.astype(np.float64)
    rewards -= rewards.mean(axis=1, keepdims=True)
    return rewards.reshape(-1, corpus.n_reward_models)


def _mean_correlation(corpus):
    """Mean within-prompt correlation over the pairs of reward models."""
    correlation = np.corrcoef(_within_prompt(corpus).T)
    return correlation[np.triu_indices_from(correlation, k=1)].mean()


def test_reward_model_correlation_sets_how_alike_the_reward_models_are():
    # Taste alone, over many attributes: the measured correlation is about rho.
    measured = [
        _mean_correlation(
            make_personalllm(
                1000,
                reward_model_correlation=rho,
                n_attributes=30,
                variance_shares=(0, 1, 0),
                random_state=0,
            )
        )
        for rho in (0.0, 0.5, 0.9)
    ]
    np.testing.assert_allclose(measured, [0.0, 0.5, 0.9], atol=0.15)
    # With the calibrated shares, the shared quality adds to it, in the same order.
    with_quality = [
        _mean_correlation(
            make_personalllm(1000, reward_model_correlation=rho, random_state=0)
        )
        for rho in (0.0, 0.9)
    ]
    assert with_quality[0] + 0.1 < with_quality[1]
    assert with_quality[0] > measured[0] + 0.3


@pytest.mark.parametrize(
    "kwargs, rank",
    [
        ({"n_attributes": 1}, 2),
        ({"n_attributes": 3}, 4),
        ({}, 8),  # the seven calibrated attributes, plus quality
        ({"n_attributes": 12}, 10),
        ({"n_attributes": 2, "reward_model_correlation": 0.5}, 3),
    ],
)
def test_n_attributes_sets_the_rank_of_the_noiseless_rewards(kwargs, rank):
    corpus = make_personalllm(400, variance_shares=(1, 1, 0), random_state=0, **kwargs)
    singular = np.linalg.svd(_within_prompt(corpus), compute_uv=False)
    # float32 rewards: anything below 1e-4 of the largest value is round-off.
    assert (singular > 1e-4 * singular[0]).sum() == rank
    assert singular[rank - 1] > 0.02 * singular[0]


def test_variance_shares_set_the_share_of_quality():
    for shares in [(0.5, 0.3, 0.2), (0.2, 0.2, 0.6)]:
        corpus, attributes = make_personalllm(
            2000, variance_shares=shares, random_state=0, return_attributes=True
        )
        quality = attributes["quality"] - MISREAD_PENALTY * attributes["misread"]
        quality = quality.to_numpy().reshape(-1, 8)
        quality = (quality - quality.mean(axis=1, keepdims=True)).ravel()
        rewards = _within_prompt(corpus)
        explained = [np.corrcoef(quality, column)[0, 1] ** 2 for column in rewards.T]
        np.testing.assert_allclose(explained, shares[0], atol=0.06)
    # Quality alone: every reward model agrees; noise alone: none do.
    agree = make_personalllm(300, variance_shares=(1, 0, 0), random_state=0)
    assert _mean_correlation(agree) > 0.999
    noise = make_personalllm(2000, variance_shares=(0, 0, 1), random_state=0)
    assert abs(_mean_correlation(noise)) < 0.03


def _response_model_means(corpus):
    """Each response model's mean within-prompt reward, its z-score, per reward model."""
    rewards = _within_prompt(corpus).reshape(corpus.n_prompts, 8, -1)
    means = rewards.mean(axis=0)
    return means, means / (rewards.std(axis=0) / np.sqrt(corpus.n_prompts))


def test_quality_and_style_gaps_separate_the_response_models():
    same, z_same = _response_model_means(
        make_personalllm(3000, quality_gap=0.0, style_gap=0.0, random_state=0)
    )
    assert np.abs(z_same).max() < 4.0  # 80 means, all equal up to sampling noise
    calibrated, z_calibrated = _response_model_means(
        make_personalllm(3000, random_state=0)
    )
    assert np.abs(z_calibrated).max() > 20
    wider, _ = _response_model_means(
        make_personalllm(3000, quality_gap=2.0, random_state=0)
    )
    # Averaged over reward models, GPT-4o leads Mixtral more with a wider quality gap.
    gpt4o, mixtral = (
        RESPONSE_MODELS.index("GPT-4o"),
        RESPONSE_MODELS.index("Mixtral 8x22B"),
    )
    lead = [
        m.mean(axis=1)[gpt4o] - m.mean(axis=1)[mixtral]
        for m in (same, calibrated, wider)
    ]
    assert abs(lead[0]) < 0.05
    assert lead[0] + 0.2 < lead[1] < lead[2] - 0.2


def test_extra_attributes_leave_the_named_ones_unchanged():
    _, calibrated = make_personalllm(100, random_state=0, return_attributes=True)
    _, extended = make_personalllm(
        100, n_attributes=9, random_state=0, return_attributes=True
    )
    assert list(extended.columns) == [*calibrated.columns, "extra_1", "extra_2"]
    pd.testing.assert_frame_equal(extended[calibrated.columns], calibrated)
    assert extended[["extra_1", "extra_2"]].std().between(0.5, 1.0).all()


def _hand_made_corpus():
    # Prompt 0: reward model "a" prefers response 0, "b" prefers response 2.
    # Prompt 1: both prefer response 1. Slots hold different models in each prompt.
    rewards = np.array(
        [
            [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
            [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]],
        ]
    )
    return Corpus(
        ["p0", "p1"],
        [["r", "r", "r"], ["r", "r", "r"]],
        rewards,
        reward_models=["a", "b"],
        response_models=[["A", "B", "C"], ["B", "A", "C"]],
        split=["test", "test"],
    )


def test_population_statistics_by_hand():
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    stats = population_statistics(_hand_made_corpus(), weights)
    # Prompt 0 votes (2, 0, 1); prompt 1 votes (0, 3, 0).
    np.testing.assert_array_equal(stats.vote_counts, [[2, 0, 1], [0, 3, 0]])
    np.testing.assert_allclose(stats.top_share, [2 / 3, 1.0])
    np.testing.assert_array_equal(stats.n_winners, [2, 1])
    assert stats.share_top_at_most == {50: 0.0, 75: 50.0, 95: 50.0}
    assert stats.n_winners_hist == {
        "<=2": 100.0,
        "3": 0.0,
        "4": 0.0,
        "5": 0.0,
        ">=6": 0.0,
    }
    # Model A wins 2 users on prompt 0 (slot 0) and 3 on prompt 1 (slot 1): 5 of 6.
    assert list(stats.win_share_by_model) == ["A", "B", "C"]
    np.testing.assert_allclose(
        list(stats.win_share_by_model.values()), [500 / 6, 0.0, 100 / 6]
    )
    assert stats.n_users == 3


def test_population_statistics_exact_half_counts_as_at_most_50():
    weights = np.array([[1.0, 0.0], [0.0, 1.0]])
    stats = population_statistics(_hand_made_corpus(), weights)
    assert stats.share_top_at_most[50] == 50.0  # prompt 0 splits 1 vs 1


def test_population_statistics_matches_a_plain_loop(small, global_random_seed):
    corpus, _ = small
    weights = sample_users(37, alpha=0.1, random_state=global_random_seed)
    stats = population_statistics(corpus, weights, split="train")
    prompt_ids = corpus.prompt_ids("train")
    winners = np.array(
        [[np.argmax(corpus.rewards[p] @ w) for w in weights] for p in prompt_ids[:300]]
    )
    expected = np.array([np.bincount(row, minlength=8) for row in winners])
    np.testing.assert_array_equal(stats.vote_counts[:300], expected)
    assert sum(stats.win_share_by_model.values()) == pytest.approx(100.0)
    assert sum(stats.n_winners_hist.values()) == pytest.approx(100.0)


def test_population_statistics_validates_its_input():
    corpus = _hand_made_corpus()
    with pytest.raises(ValueError, match="2 reward models"):
        population_statistics(corpus, np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="no prompts"):
        population_statistics(corpus, np.eye(2), split="train")
    with pytest.raises(ValueError, match="split"):
        population_statistics(corpus, np.eye(2), split="validation")


def test_compare_with_paper_is_zero_on_the_paper_numbers():
    for alpha, paper in PAPER_POPULATION_STATISTICS.items():
        fake = type("Stats", (), {})()
        fake.share_top_at_most = paper["share_top_at_most"]
        fake.n_winners_hist = paper["n_winners_hist"]
        fake.win_share_by_model = paper.get("win_share_by_model", {})
        comparison = compare_with_paper(fake, alpha)
        assert all(c["gap"] == 0 and c["ok"] for c in comparison.values())
        assert ("win_share_by_model" in comparison) == (alpha == 0.05)
    with pytest.raises(ValueError, match="alpha"):
        compare_with_paper(fake, 0.2)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.10])
def test_full_size_corpus_reproduces_the_paper_statistics(
    full_corpus, alpha, global_random_seed
):
    weights = sample_users(1000, alpha=alpha, random_state=global_random_seed)
    stats = population_statistics(full_corpus, weights, split="test")
    comparison = compare_with_paper(stats, alpha)
    assert all(check["ok"] for check in comparison.values()), comparison
