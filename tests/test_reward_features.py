"""RewardFeatures: the rewards track's lookup of reward scores as feature columns."""

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.model_selection import cross_validate
from sklearn.pipeline import Pipeline

from pllm_sk.base import BaseRanker
from pllm_sk.datasets import REWARD_MODELS
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer

REWARD_COLUMNS = [f"reward_{name}" for name in REWARD_MODELS]


@pytest.fixture
def X(corpus):
    rng = np.random.RandomState(0)
    n_rows = 50
    # Ids not in first position and an existing feature column, to check both stay.
    return pd.DataFrame(
        {
            "prompt_id": rng.randint(corpus.n_prompts, size=n_rows),
            "length": rng.normal(size=n_rows),
            "user_id": rng.randint(5, size=n_rows),
            "response_id": rng.randint(corpus.n_responses, size=n_rows),
        },
        index=np.arange(100, 100 + n_rows),
    )


def test_dataframe_gets_reward_columns_appended(corpus, X):
    out = RewardFeatures(corpus).fit_transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(X.columns) + REWARD_COLUMNS
    pd.testing.assert_frame_equal(out[X.columns], X)
    expected = corpus.rewards[X["prompt_id"], X["response_id"]]
    np.testing.assert_array_equal(out[REWARD_COLUMNS].to_numpy(), expected)
    assert (out[REWARD_COLUMNS].dtypes == np.float32).all()
    assert X.shape[1] == 4  # the input is left alone


def test_chosen_reward_models_in_the_given_order(corpus, X):
    chosen = ["oasst_pythia_7b", "beaver_7b"]
    transformer = RewardFeatures(corpus, reward_models=chosen).fit(X)
    out = transformer.transform(X)
    assert transformer.reward_models_ == tuple(chosen)
    assert list(out.columns[-2:]) == ["reward_oasst_pythia_7b", "reward_beaver_7b"]
    columns = [corpus.reward_models.index(name) for name in chosen]
    np.testing.assert_array_equal(
        out.iloc[:, -2:].to_numpy(),
        corpus.rewards[X["prompt_id"], X["response_id"]][:, columns],
    )


def test_array_input(corpus, X):
    array = X[["user_id", "prompt_id", "response_id", "length"]].to_numpy()
    out = RewardFeatures(corpus).fit_transform(array)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.shape == (len(X), 4 + len(REWARD_MODELS))
    np.testing.assert_array_equal(out[:, :4], array)
    np.testing.assert_allclose(
        out[:, 4:], corpus.rewards[array[:, 1].astype(int), array[:, 2].astype(int)]
    )


def test_feature_names_out_and_pandas_output(corpus, X):
    array = X[["user_id", "prompt_id", "response_id", "length"]].to_numpy()
    transformer = RewardFeatures(corpus, reward_models=["gemma_2b"]).fit(array)
    names = ["user_id", "prompt_id", "response_id", "x3", "reward_gemma_2b"]
    assert list(transformer.get_feature_names_out()) == names
    out = transformer.set_output(transform="pandas").transform(array)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == names

    framed = RewardFeatures(corpus).set_output(transform="pandas").fit_transform(X)
    assert list(framed.columns) == list(X.columns) + REWARD_COLUMNS
    fitted = RewardFeatures(corpus).fit(X)
    assert list(fitted.get_feature_names_out()) == list(X.columns) + REWARD_COLUMNS
    assert list(fitted.feature_names_in_) == list(X.columns)
    assert fitted.n_features_in_ == 4
    with pytest.raises(ValueError, match="input_features"):
        fitted.get_feature_names_out(["a", "b", "c", "d"])


def test_ids_outside_the_corpus(corpus, X):
    transformer = RewardFeatures(corpus).fit(X)
    with pytest.raises(ValueError, match=f"prompt_id={corpus.n_prompts} is outside"):
        transformer.transform(X.assign(prompt_id=corpus.n_prompts))
    with pytest.raises(ValueError, match="response_id=8 is outside"):
        transformer.transform(X.assign(response_id=8))
    with pytest.raises(ValueError, match="response_id"):
        transformer.transform(X.assign(response_id=-1))
    with pytest.raises(TypeError, match="prompt_id"):
        transformer.transform(X.assign(prompt_id=0.5))


def test_bad_arguments_and_columns(corpus, X):
    with pytest.raises(ValueError, match=r"Unknown reward model\(s\) \['gpt_judge'\]"):
        RewardFeatures(corpus, reward_models=["gemma_2b", "gpt_judge"]).fit(X)
    with pytest.raises(
        TypeError,
        match="The 'reward_models' parameter of RewardFeatures must be None or an "
        "array-like. Got 'gemma_2b' instead.",
    ):
        RewardFeatures(corpus, reward_models="gemma_2b").fit(X)
    with pytest.raises(ValueError, match="duplicates"):
        RewardFeatures(corpus, reward_models=["gemma_2b", "gemma_2b"]).fit(X)
    with pytest.raises(ValueError, match="at least one reward model"):
        RewardFeatures(corpus, reward_models=[]).fit(X)
    with pytest.raises(TypeError, match="'corpus' parameter of RewardFeatures"):
        RewardFeatures(corpus.rewards).fit(X)
    with pytest.raises(TypeError, match="positional argument"):
        RewardFeatures(corpus, ["gemma_2b"])
    with pytest.raises(ValueError, match="missing the id column"):
        RewardFeatures(corpus).fit(X.drop(columns="user_id"))
    transformer = RewardFeatures(corpus).fit(X)
    with pytest.raises(ValueError, match="appended twice"):
        RewardFeatures(corpus).fit(transformer.transform(X))
    # Columns must match fit, as for any scikit-learn transformer.
    with pytest.raises(ValueError, match="length"):
        transformer.transform(X.drop(columns="length"))


def test_empty_sparse_and_malformed_input_is_refused(corpus, X):
    """Every input that once passed silently or failed obscurely gets a clear error."""
    ids = X[["user_id", "prompt_id", "response_id"]]
    empty = "Found array with 0 sample\\(s\\) .* minimum of 1 is required"
    with pytest.raises(ValueError, match=empty):
        RewardFeatures(corpus).fit(ids.iloc[:0])
    with pytest.raises(ValueError, match=empty):
        RewardFeatures(corpus).fit(np.empty((0, 3), dtype=np.int64))
    fitted = RewardFeatures(corpus).fit(ids)
    with pytest.raises(ValueError, match=empty):
        fitted.transform(ids.iloc[:0])
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        RewardFeatures(corpus).fit(sparse.csr_matrix(ids.to_numpy()))
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        RewardFeatures(corpus).fit(ids.to_numpy()).transform(
            sparse.csr_matrix(ids.to_numpy())
        )
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        RewardFeatures(corpus).fit(ids.to_numpy()[0])
    with pytest.raises(ValueError, match="Found array with 2 feature"):
        RewardFeatures(corpus).fit(ids.to_numpy()[:, :2])
    with pytest.raises(ValueError, match="Complex data not supported"):
        RewardFeatures(corpus).fit(ids.to_numpy() + 0j)
    # The user id is checked though no feature depends on it.
    with pytest.raises(ValueError, match="'user_id' must hold non-negative ids"):
        fitted.transform(ids.assign(user_id=-1))
    with pytest.raises(ValueError, match="'user_id' must hold integer ids; got NaN"):
        fitted.transform(ids.assign(user_id=np.nan))
    # Ids outside the corpus are refused in fit, not only in transform.
    with pytest.raises(ValueError, match=f"prompt_id={corpus.n_prompts} is outside"):
        RewardFeatures(corpus).fit(ids.assign(prompt_id=corpus.n_prompts))


def test_refit_on_other_columns_forgets_the_first_fit(corpus, X):
    """Refitting one instance on other input replaces what the first fit recorded."""
    transformer = RewardFeatures(corpus, reward_models=["gemma_2b"]).fit(X)
    array = X[["user_id", "prompt_id", "response_id"]].to_numpy()
    transformer.fit(array)
    assert transformer.n_features_in_ == 3
    assert not hasattr(transformer, "feature_names_in_")
    out = transformer.transform(array)
    np.testing.assert_array_equal(
        out[:, 3],
        corpus.rewards[array[:, 1], array[:, 2], REWARD_MODELS.index("gemma_2b")],
    )


class ColumnRecorder(BaseRanker):
    """Records the feature columns it was fitted on; ranks by the first reward."""

    def _fit(self, feedback):
        self.n_fit_features_ = feedback.features.shape[1]

    def _predict(self, ids, features):
        return features[:, 0]


def test_first_step_of_a_pipeline_in_cross_validate(corpus, feedback_data):
    pipeline = Pipeline(
        [("rewards", RewardFeatures(corpus)), ("ranker", ColumnRecorder())]
    )
    result = cross_validate(
        pipeline,
        feedback_data.X,
        feedback_data.y,
        cv=ColdStartSplit(n_splits=3, n_support=2, random_state=0),
        scoring=make_personal_scorer(feedback_data.oracle, ["reward", "top1"]),
        return_estimator=True,
        error_score="raise",
    )
    assert np.isfinite(result["test_reward"]).all()
    ranker = result["estimator"][0][-1]
    assert ranker.n_fit_features_ == len(REWARD_MODELS)
    assert list(ranker.feature_names_in_) == ["user_id", "prompt_id", "response_id"] + (
        REWARD_COLUMNS
    )
    # A ranker that follows the first reward model picks exactly what it prefers.
    X_query = feedback_data.X[feedback_data.is_query]
    chosen = pipeline.fit(feedback_data.X, feedback_data.y).predict(X_query)
    np.testing.assert_array_equal(
        chosen, corpus.rewards[X_query["prompt_id"], X_query["response_id"], 0]
    )


def test_clone_and_pickle(corpus, X):
    transformer = RewardFeatures(corpus, reward_models=["gemma_7b"])
    assert clone(transformer).get_params()["reward_models"] == ["gemma_7b"]
    fitted = pickle.loads(pickle.dumps(transformer.fit(X)))
    pd.testing.assert_frame_equal(fitted.transform(X), transformer.transform(X))
