"""Published protocols: counts against their sources, splits, end-to-end scoring."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import OracleRanker, PopulationRanker
from pllm_sk.datasets import make_personalllm
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import make_personal_scorer
from pllm_sk.protocols import (
    Protocol,
    comparison_accuracy,
    get_protocol,
    list_protocols,
)

# The numbers each source's code sets (see the preset's ``sources``), on the real
# corpus's 9,402 train and 1,000 test prompts.
SOURCE_COUNTS = {
    "lore": dict(
        n_seen=1000,
        n_unseen=500,
        n_historical=0,
        seen_context=47,
        unseen_context=9,
        n_test=1000,
        n_reward_models=10,
        n_responses=8,
        alpha=0.1,
    ),
    "copl": dict(
        n_seen=10_000,
        n_unseen=0,
        seen_context=15,
        n_test=100,
        n_reward_models=4,
        n_responses=3,
        alpha=0.1,
    ),
    "personalllm_setting1": dict(
        n_seen=0,
        n_unseen=1000,
        n_historical=10_000,
        unseen_context=5,
        historical_context=50,
        n_test=1,
        n_reward_models=10,
        n_responses=8,
        alpha=0.05,
    ),
}
SOURCE_COUNTS["personalllm_setting2"] = SOURCE_COUNTS["personalllm_setting1"]

# Few users of each group, on the real-size corpus.
FEW_USERS = {
    "lore": dict(n_seen=3, n_unseen=2),
    "copl": dict(n_seen=4),
    "personalllm_setting1": dict(n_unseen=3, n_historical=5),
    "personalllm_setting2": dict(n_unseen=3, n_historical=5),
}


@pytest.fixture(scope="module")
def real_size_corpus():
    """The synthetic corpus with the real split sizes: 9,402 train, 1,000 test."""
    corpus = make_personalllm(random_state=0)
    assert corpus.prompt_ids("train").size == 9402
    assert corpus.prompt_ids("test").size == 1000
    return corpus


@pytest.fixture(scope="module")
def small_corpus():
    return make_personalllm(1500, random_state=0)


def few_users(name, **changes):
    return dataclasses.replace(get_protocol(name), **{**FEW_USERS[name], **changes})


def test_list_and_get():
    assert list_protocols() == sorted(SOURCE_COUNTS)
    for name in list_protocols():
        preset = get_protocol(name)
        assert isinstance(preset, Protocol) and preset.name == name
        assert preset.sources and preset.repository and preset.paper
    with pytest.raises(ValueError, match="Unknown protocol 'nope'"):
        get_protocol("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_protocol("lore").alpha = 1.0


@pytest.mark.parametrize("name", sorted(SOURCE_COUNTS))
def test_counts_match_the_source(name, real_size_corpus):
    counts = get_protocol(name).counts(real_size_corpus)
    expected = SOURCE_COUNTS[name]
    assert {key: counts[key] for key in expected} == expected


@pytest.mark.parametrize("name", sorted(SOURCE_COUNTS))
def test_simulated_counts_per_user(name, real_size_corpus):
    preset = few_users(name)
    counts = preset.counts(real_size_corpus)
    embeddings = np.ones((real_size_corpus.n_prompts, 1))
    data = preset.simulate(
        real_size_corpus, random_state=0, prompt_embeddings=embeddings
    )
    assert data.corpus.n_reward_models == counts["n_reward_models"]
    assert data.corpus.n_responses == counts["n_responses"]
    labeled = ~np.isnan(data.y)
    per_user = data.X[labeled].groupby("user_id").prompt_id.nunique()
    query = data.X[~labeled].groupby("user_id").prompt_id.nunique()
    context = {
        "seen": counts["seen_context"],
        "unseen": counts["unseen_pool"],
        "historical": counts["historical_context"],
    }
    for user, group in enumerate(data.user_group):
        assert per_user.get(user, 0) == context[group]
        assert query.get(user, 0) == (0 if group == "historical" else counts["n_test"])
    assert set(data.X.prompt_id[~labeled]) <= set(data.corpus.prompt_ids("test"))
    assert set(data.X.prompt_id[labeled]) <= set(data.corpus.prompt_ids("train"))
    if preset.test_comparisons is not None:
        assert data.comparisons.groupby("user_id").size().eq(counts["n_test"]).all()


def test_lore_split_holds_test_prompts_out_and_unseen_users_reveal_nine(
    real_size_corpus,
):
    data = few_users("lore", n_test=20).simulate(real_size_corpus, random_state=0)
    ((train, test),) = list(data.cv.split(data.X, data.y))
    assert not set(data.X.prompt_id.iloc[train]) & set(data.X.prompt_id.iloc[test])
    assert np.isnan(data.y[test]).all() and not np.isnan(data.y[train]).any()
    revealed = data.X.iloc[train].groupby("user_id").prompt_id.nunique()
    for user, group in enumerate(data.user_group):
        assert revealed[user] == {"seen": 47, "unseen": 9}[group]
    assert set(data.X.user_id.iloc[test]) == set(range(len(data.user_group)))


@pytest.mark.parametrize("support", ["random", "nearest"])
def test_personalllm_unseen_users_reveal_exactly_the_context(small_corpus, support):
    name = "personalllm_setting1" if support == "nearest" else "personalllm_setting2"
    preset = few_users(name, n_unseen=6)
    embeddings = np.random.RandomState(0).normal(size=(small_corpus.n_prompts, 4))
    data = preset.simulate(small_corpus, random_state=0, prompt_embeddings=embeddings)
    ((train, test),) = list(data.cv.split(data.X, data.y))
    train_rows, test_rows = data.X.iloc[train], data.X.iloc[test]
    unseen = np.flatnonzero(data.user_group == "unseen")
    assert set(test_rows.user_id) == set(unseen)
    revealed = train_rows.groupby("user_id").prompt_id.nunique()
    assert (revealed[unseen] == preset.unseen_context).all()
    historical = np.flatnonzero(data.user_group == "historical")
    assert (revealed[historical] == preset.historical_context).all()
    if support == "nearest":
        # Each unseen user's support is their labeled prompts nearest the query.
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        labeled = data.X[~np.isnan(data.y)]
        for user in unseen:
            query = test_rows.prompt_id[test_rows.user_id == user].iloc[0]
            own = np.unique(labeled.prompt_id[labeled.user_id == user])
            nearest = own[np.argsort(-(unit[own] @ unit[query]), kind="stable")[:5]]
            support_prompts = train_rows.prompt_id[train_rows.user_id == user]
            assert set(support_prompts) == set(nearest)


@pytest.mark.parametrize("name", sorted(SOURCE_COUNTS))
def test_simulate_runs_with_cross_validate(name, small_corpus):
    preset = few_users(name, n_test=10) if name in ("lore", "copl") else few_users(name)
    embeddings = np.random.RandomState(0).normal(size=(small_corpus.n_prompts, 4))
    data = preset.simulate(small_corpus, random_state=0, prompt_embeddings=embeddings)
    groups = ["seen", "unseen"] if preset.n_seen and preset.n_unseen else None
    groups = groups or (["seen"] if preset.n_seen else ["unseen"])
    expected = {f"test_{m}_{g}" for m in data.metrics for g in groups}
    oracle = cross_validate(
        OracleRanker(data.oracle), data.X, data.y, cv=data.cv, scoring=data.scoring
    )
    assert expected <= set(oracle)
    for group in groups:
        assert oracle[f"test_gap_closed_{group}"][0] == pytest.approx(1.0)
        if "pairwise_accuracy" in data.metrics:
            # Noiseless labels: the oracle orders every test comparison.
            assert oracle[f"test_pairwise_accuracy_{group}"][0] == 1.0
    population = make_pipeline(RewardFeatures(data.corpus), PopulationRanker())
    result = cross_validate(
        population, data.X, data.y, cv=data.cv, scoring=data.scoring
    )
    assert all(np.isfinite(result[key][0]) for key in expected)


def test_scores_agree_with_the_library_scorers(small_corpus):
    data = few_users("personalllm_setting2", n_unseen=20).simulate(
        small_corpus, random_state=0
    )
    ((train, test),) = list(data.cv.split(data.X, data.y))
    model = make_pipeline(RewardFeatures(data.corpus), PopulationRanker())
    model.fit(data.X.iloc[train], data.y[train])
    X_test = data.X.iloc[test]
    ours = data.scoring(model, X_test)
    library = make_personal_scorer(data.oracle, ["gap_closed", "win_rate", "reward"])
    for metric, value in library(model, X_test).items():
        assert ours[f"{metric}_unseen"] == pytest.approx(value)
    summary = data.summary(X_test, model.predict(X_test))
    value, standard_error = summary[("unseen", "win_rate")]
    assert value == pytest.approx(ours["win_rate_unseen"]) and standard_error > 0


def test_comparison_accuracy_by_hand():
    from pllm_sk.datasets import Corpus
    from pllm_sk.simulation import PreferenceOracle

    corpus = Corpus(
        ["a", "b"],
        [["x", "y", "z"], ["x", "y", "z"]],
        rewards=[[[0.0], [1.0], [2.0]], [[1.0], [1.0], [3.0]]],
        reward_models=["rm"],
    )
    oracle = PreferenceOracle(corpus, [[1.0], [1.0]])
    comparisons = pd.DataFrame(
        {
            "user_id": [0, 0, 1, 1],
            "prompt_id": [0, 1, 0, 1],
            "chosen_id": [2, 0, 1, 2],
            "rejected_id": [0, 1, 0, 0],
        }
    )
    X = pd.DataFrame(
        {
            "user_id": [0] * 6 + [1] * 6,
            "prompt_id": [0, 0, 0, 1, 1, 1] * 2,
            "response_id": [0, 1, 2] * 4,
        }
    )
    utility = np.array([3.0, 0, 1, 0, 0, 0, 0, 1, 1, 5, 5, 9])
    accuracy = comparison_accuracy(oracle, comparisons, X, utility)
    # User 0: prompt 0 wrong (1 < 3); prompt 1's pair ties in truth, left out.
    # User 1: prompt 0 right (1 > 0); prompt 1 right (9 > 5).
    assert accuracy.to_dict() == {0: 0.0, 1: 1.0}


def test_bad_protocol_fields(small_corpus):
    with pytest.raises(ValueError, match="seen_context must be a count or a share"):
        dataclasses.replace(get_protocol("lore"), seen_context=1.5).counts(small_corpus)
    with pytest.raises(ValueError, match="support must be one of"):
        dataclasses.replace(get_protocol("lore"), support="some").counts(small_corpus)
    no_context = few_users("lore", unseen_context=0, n_test=2)
    with pytest.raises(ValueError, match="gives unseen users no labeled prompt"):
        no_context.simulate(small_corpus, random_state=0)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("n_seen", -3, r"\[0, inf\)"),
        ("n_unseen", -1, r"\[0, inf\)"),
        ("n_historical", -1, r"\[0, inf\)"),
        ("unseen_pool", -1, r"\[0, inf\) or None"),
        ("historical_context", -2, r"\[0, inf\)"),
        ("n_test", 0, r"\[1, inf\) or None"),
        ("n_test", 2.5, r"\[1, inf\) or None"),
    ],
)
def test_counts_out_of_range_name_the_field(small_corpus, field, value, allowed):
    preset = few_users("lore", **{"n_test": 2, field: value})
    match = rf"'{field}' parameter of Protocol 'lore' .*{allowed}. Got {value}"
    with pytest.raises(ValueError, match=match):
        preset.simulate(small_corpus, random_state=0)


def test_unseen_pool_smaller_than_unseen_context(small_corpus):
    preset = few_users("personalllm_setting2", unseen_pool=3)
    with pytest.raises(ValueError, match=r"unseen_pool=3 .*\(unseen_context=5\)"):
        preset.simulate(small_corpus, random_state=0)


@pytest.mark.parametrize(
    "name, changes, match",
    [
        ("lore", dict(n_test=500), r"n_test=500, but the corpus's test split has 144"),
        ("lore", dict(n_test=2, seen_context=2000), r"seen_context=2000, .* has 1356"),
        (
            "personalllm_setting2",
            dict(historical_context=1400),
            r"historical_context=1400, .* train split has 1356",
        ),
        (
            "personalllm_setting2",
            dict(unseen_pool=1357),
            r"unseen_pool=1357, .* train split has 1356",
        ),
    ],
)
def test_corpus_too_small_names_the_protocol_field(
    small_corpus, monkeypatch, name, changes, match
):
    monkeypatch.setattr("pllm_sk.protocols._protocol.sample_users", _must_not_be_called)
    with pytest.raises(ValueError, match=match):
        few_users(name, **changes).simulate(small_corpus, random_state=0)


def test_too_few_disagreeing_prompts_names_the_protocol_fields(small_corpus):
    # 118 of the 144 test prompts have a pair the 4 reward models disagree on.
    preset = few_users("copl", n_test=130)
    with pytest.raises(ValueError, match=r"only_disagreeing=True.*n_test=130") as info:
        preset.simulate(small_corpus, random_state=0)
    assert "lower n_history or n_query" not in str(info.value)
    assert "has only 118" in str(info.value.__cause__)


def test_nearest_support_needs_one_embedding_per_prompt(small_corpus, monkeypatch):
    monkeypatch.setattr("pllm_sk.protocols._protocol.sample_users", _must_not_be_called)
    preset = few_users("personalllm_setting1")
    with pytest.raises(ValueError, match=r"prompt_embeddings=TextEmbedder\(\)"):
        preset.simulate(small_corpus, random_state=0)
    with pytest.raises(
        ValueError,
        match=r"prompt_embeddings .* shape \(1500, dim\); got shape \(10, 4\)",
    ):
        preset.simulate(
            small_corpus, random_state=0, prompt_embeddings=np.ones((10, 4))
        )
    # Other supports do not use them.
    monkeypatch.undo()
    few_users("personalllm_setting2").simulate(
        small_corpus, random_state=0, prompt_embeddings=np.ones((10, 4))
    )


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("simulated although the protocol was invalid")
