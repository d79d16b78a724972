"""Personal scorers against values computed by hand on a tiny corpus.

Corpus: 2 prompts x 3 responses x 2 reward models; user 0 weighs only the first
reward model, user 1 only the second. True rewards (rows: responses 0, 1, 2):

    user 0, prompt 0: 1.0, 0.0, 0.5   best 0
    user 0, prompt 1: 2.0, 1.0, 0.0   best 0
    user 1, prompt 0: 0.0, 2.0, 0.5   best 1
    user 1, prompt 1: 1.0, 1.0, 3.0   best 2

Population weights (0.5, 0.5) give utilities (0.5, 1.0, 0.5) on prompt 0 and
(1.5, 1.0, 1.5) on prompt 1: zero-shot picks response 1 on prompt 0 and, on the
tie, response 0 on prompt 1. GPT-4o wrote response 0 of prompt 0, response 1 of
prompt 1.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import PerUserRanker
from pllm_sk.datasets import Corpus
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import (
    METRICS,
    ColdStartSplit,
    choice_outcomes,
    make_personal_scorer,
    personal_scorers,
)
from pllm_sk.simulation import PreferenceOracle

REWARDS = [
    [[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]],
    [[2.0, 1.0], [1.0, 1.0], [0.0, 3.0]],
]

# Predictions per (user, prompt), responses 0..2. Ties at the top go to the lowest
# response_id: user 0 chooses 1 then 0, user 1 chooses 2 then 1.
PREDICTIONS = {
    (0, 0): [0.1, 0.9, 0.9],
    (0, 1): [5.0, 5.0, 1.0],
    (1, 0): [0.0, 0.0, 3.0],
    (1, 1): [1.0, 2.0, 0.0],
}
# Chosen true rewards: 0.0, 2.0, 0.5, 1.0; zero-shot: 0.0, 2.0, 2.0, 1.0; best: 1, 2, 2, 3.
EXPECTED = {
    "reward": 3.5 / 4,
    "gap_closed": (3.5 / 4 - 5.0 / 4) / (8.0 / 4 - 5.0 / 4),  # -0.5
    "top1": 1 / 4,  # only (0, 1)
    # (0, 0): 0 < 1 no; (0, 1): 2 > 1 win; (1, 0): 0.5 > 0 win; (1, 1) chose the
    # GPT-4o response itself: a tie, no win.
    "win_rate": 2 / 4,
    # Per group: credits / informative pairs = 0.5/3, 2.5/3, 1.5/3, 0/2.
    "pairwise_accuracy": (0.5 / 3 + 2.5 / 3 + 1.5 / 3 + 0.0) / 4,
}


def tiny_corpus(response_models=None):
    if response_models is None:
        response_models = [["GPT-4o", "Claude", "Llama"], ["Claude", "GPT-4o", "Llama"]]
    return Corpus(
        ["p0", "p1"],
        [["a", "b", "c"], ["d", "e", "f"]],
        REWARDS,
        reward_models=["rm_a", "rm_b"],
        response_models=response_models,
    )


@pytest.fixture
def oracle():
    return PreferenceOracle(tiny_corpus(), [[1.0, 0.0], [0.0, 1.0]])


class SetPredictions:
    """An estimator whose prediction for each (user, prompt, response) is given."""

    def __init__(self, predictions):
        self.predictions = predictions
        self.n_predict_calls = 0

    def predict(self, X):
        self.n_predict_calls += 1
        if hasattr(X, "columns"):
            X = X[["user_id", "prompt_id", "response_id"]]
        ids = np.asarray(X)[:, :3]
        return np.array([self.predictions[(u, p)][r] for u, p, r in ids])


class TrueReward:
    """An estimator that predicts the oracle's reward: the best possible ranker."""

    def __init__(self, oracle):
        self.oracle = oracle

    def predict(self, X):
        return self.oracle.reward(X["user_id"], X["prompt_id"], X["response_id"])


def query_rows(pairs=PREDICTIONS, responses=(0, 1, 2), random_state=0):
    rows = [(u, p, r) for (u, p) in pairs for r in responses]
    rows = np.array(rows)[np.random.RandomState(random_state).permutation(len(rows))]
    return pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id"])


@pytest.mark.parametrize("metric", METRICS)
def test_each_metric_matches_hand_computation(oracle, metric):
    scorer = make_personal_scorer(oracle, metric)
    assert scorer(SetPredictions(PREDICTIONS), query_rows(), None) == pytest.approx(
        EXPECTED[metric]
    )


def test_several_metrics_from_one_predict_call(oracle):
    estimator = SetPredictions(PREDICTIONS)
    scores = make_personal_scorer(oracle, list(METRICS))(estimator, query_rows(), None)
    assert estimator.n_predict_calls == 1
    assert list(scores) == list(METRICS)
    assert scores == pytest.approx(EXPECTED)


def test_row_order_and_array_input_do_not_matter(oracle):
    scorer = make_personal_scorer(oracle, list(METRICS))
    estimator = SetPredictions(PREDICTIONS)
    for random_state in (1, 2):
        X = query_rows(random_state=random_state)
        assert scorer(estimator, X, None) == pytest.approx(EXPECTED)
        assert scorer(estimator, X.to_numpy(), None) == pytest.approx(EXPECTED)


def test_perfect_ranker_closes_the_gap(oracle):
    scores = make_personal_scorer(oracle, list(METRICS))(
        TrueReward(oracle), query_rows(), None
    )
    assert scores["reward"] == pytest.approx(2.0)
    assert scores["gap_closed"] == pytest.approx(1.0)
    assert scores["top1"] == 1.0
    assert scores["pairwise_accuracy"] == 1.0
    # Best beats GPT-4o except on (0, 0), where GPT-4o's response is the best.
    assert scores["win_rate"] == pytest.approx(3 / 4)


def test_zero_shot_ranker_scores_zero_gap(oracle):
    class ZeroShot:
        def predict(self, X):
            z = oracle.corpus.rewards[X["prompt_id"], X["response_id"]]
            return z @ oracle.population_weights

    assert make_personal_scorer(oracle, "gap_closed")(
        ZeroShot(), query_rows(), None
    ) == pytest.approx(0.0)


def test_gap_closed_is_nan_when_zero_shot_is_already_best(oracle):
    # On (user 0, prompt 1) zero-shot picks response 0, the user's best.
    X = query_rows(pairs={(0, 1): None})
    assert np.isnan(
        make_personal_scorer(oracle, "gap_closed")(TrueReward(oracle), X, None)
    )


def test_incomplete_candidate_sets_are_refused(oracle):
    """A choice among some of a prompt's candidates is refused, naming what is missing."""
    X = query_rows()
    scorer = make_personal_scorer(oracle, list(METRICS))
    without = X[~((X.user_id == 1) & (X.prompt_id == 0) & X.response_id.isin([0, 2]))]
    with pytest.raises(
        ValueError,
        match=r"The candidates of \(user_id=1, prompt_id=0\) are incomplete: X lacks "
        r"its response_id\(s\) \[0, 2\] \(1 of the prompt's 3 candidates are present; "
        r"1 of 4 \(user, prompt\) groups are incomplete\)",
    ):
        scorer(SetPredictions(PREDICTIONS), without, None)
    # The first incomplete group in (user, prompt) order is named, with the count.
    two_short = X.drop(index=X.index[X.response_id == 2][[0, 1]])
    with pytest.raises(ValueError, match=r"2 of 4 \(user, prompt\) groups"):
        scorer(SetPredictions(PREDICTIONS), two_short, None)
    # The message says how to run successive halving without subsampling rows.
    with pytest.raises(ValueError, match="resource='<step>__<param>'"):
        scorer(SetPredictions(PREDICTIONS), X.iloc[:-1], None)


def test_choice_outcomes_per_user_and_prompt(oracle):
    X = query_rows()
    utility = SetPredictions(PREDICTIONS).predict(X)
    outcomes = choice_outcomes(oracle, X, utility)
    expected = pd.DataFrame(
        {
            "user_id": [0, 0, 1, 1],
            "prompt_id": [0, 1, 0, 1],
            "response_id": [1, 0, 2, 1],
            "reward": [0.0, 2.0, 0.5, 1.0],
            "zero_shot_reward": [0.0, 2.0, 2.0, 1.0],
            "best_reward": [1.0, 2.0, 2.0, 3.0],
            "top1": [False, True, False, False],
            # GPT-4o wrote response 0 of prompt 0 and response 1 of prompt 1.
            "reference_reward": [1.0, 1.0, 0.0, 1.0],
            "win": [False, True, True, False],
            "pairwise_accuracy": [0.5 / 3, 2.5 / 3, 1.5 / 3, 0.0],
        }
    )
    pd.testing.assert_frame_equal(outcomes, expected, check_dtype=False)
    # The scorers are means of these columns.
    scores = make_personal_scorer(oracle, list(METRICS))(
        SetPredictions(PREDICTIONS), X, None
    )
    assert scores["reward"] == outcomes["reward"].mean()
    assert scores["top1"] == outcomes["top1"].mean()
    assert scores["win_rate"] == outcomes["win"].mean()
    assert scores["pairwise_accuracy"] == outcomes["pairwise_accuracy"].mean()
    without = choice_outcomes(oracle, X, utility, reference_model=None)
    assert "win" not in without and "reference_reward" not in without
    with pytest.raises(ValueError, match="utility holds 3 values for 12 rows"):
        choice_outcomes(oracle, X, utility[:3])
    with pytest.raises(ValueError, match="reference_model='Gemini'"):
        choice_outcomes(oracle, X, utility, reference_model="Gemini")


def test_personal_scorers_dict(oracle):
    scorers = personal_scorers(oracle)
    assert list(scorers) == list(METRICS)
    for name, scorer in scorers.items():
        assert scorer(SetPredictions(PREDICTIONS), query_rows(), None) == pytest.approx(
            EXPECTED[name]
        )
    assert list(personal_scorers(oracle, ["top1"])) == ["top1"]


def test_reference_model_is_checked(oracle):
    with pytest.raises(ValueError, match="reference_model='Gemini'"):
        make_personal_scorer(oracle, "win_rate", reference_model="Gemini")
    # Other metrics do not need a reference model.
    make_personal_scorer(oracle, "reward", reference_model="Gemini")
    partial = tiny_corpus(
        [["GPT-4o", "Claude", "Llama"], ["Claude", "Mistral", "Llama"]]
    )
    scorer = make_personal_scorer(
        PreferenceOracle(partial, [[1.0, 0.0], [0.0, 1.0]]), "win_rate"
    )
    with pytest.raises(ValueError, match="prompt_id=1 has no response by"):
        scorer(SetPredictions(PREDICTIONS), query_rows(), None)


def test_bad_inputs_raise_clear_errors(oracle):
    with pytest.raises(ValueError, match="Unknown metric"):
        make_personal_scorer(oracle, "ndcg")
    with pytest.raises(ValueError, match="at least one"):
        make_personal_scorer(oracle, [])
    scorer = make_personal_scorer(oracle)
    X = query_rows()
    with pytest.raises(ValueError, match="response_id"):
        scorer(SetPredictions(PREDICTIONS), X.drop(columns="response_id"), None)
    with pytest.raises(ValueError, match="more than once"):
        scorer(SetPredictions(PREDICTIONS), pd.concat([X, X.iloc[:1]]), None)

    class Broken:
        def __init__(self, values):
            self.values = values

        def predict(self, X):
            return self.values

    with pytest.raises(ValueError, match="NaN"):
        scorer(Broken(np.full(len(X), np.nan)), X, None)
    with pytest.raises(ValueError, match="returned 3 values for 12 rows"):
        scorer(Broken(np.zeros(3)), X, None)
    with pytest.raises(ValueError, match="user_id=5 is unknown"):
        scorer(Broken(np.zeros(1)), X.iloc[:1].assign(user_id=5), None)


def test_scorer_pickles(oracle):
    import pickle

    scorer = pickle.loads(
        pickle.dumps(make_personal_scorer(oracle, ["reward", "top1"]))
    )
    assert scorer(SetPredictions(PREDICTIONS), query_rows(), None) == pytest.approx(
        {"reward": EXPECTED["reward"], "top1": EXPECTED["top1"]}
    )


def test_successive_halving_on_an_estimator_parameter(corpus, feedback_data):
    """HalvingGridSearchCV spends its budget on max_iter, never on rows."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV, cross_val_score

    X, y = feedback_data.X, feedback_data.y
    pipe = make_pipeline(RewardFeatures(corpus), PerUserRanker())
    cv = ColdStartSplit(3, n_support=3, random_state=0)
    scorer = make_personal_scorer(feedback_data.oracle, "gap_closed")
    grid = {"peruserranker__shrinkage": [0.1, 1.0, 10.0]}
    search = HalvingGridSearchCV(
        pipe,
        grid,
        resource="peruserranker__max_iter",
        min_resources=2,
        max_resources=30,
        factor=3,
        cv=cv,
        scoring=scorer,
        error_score="raise",
    ).fit(X, y)
    # Three candidates at max_iter=2, then the best one at max_iter=6.
    assert search.n_resources_ == [2, 6]
    assert search.best_estimator_[-1].max_iter == 6
    assert search.best_params_["peruserranker__max_iter"] == 6
    # Each score is that of the full folds with the resource set as a parameter:
    # no row was subsampled.
    for params, score in zip(
        search.cv_results_["params"], search.cv_results_["mean_test_score"]
    ):
        expected = cross_val_score(
            clone(pipe).set_params(**params), X, y, cv=cv, scoring=scorer
        ).mean()
        assert score == pytest.approx(expected, rel=1e-12)
    # Halving on rows (the default resource) splits the candidates of a (user,
    # prompt) apart, and the scorer says so instead of ranking what is left.
    with pytest.raises(ValueError, match=r"are incomplete: X lacks its response_id"):
        HalvingGridSearchCV(
            pipe, grid, cv=cv, scoring=scorer, error_score="raise", random_state=0
        ).fit(X, y)


def test_something_else_than_an_oracle_is_refused_when_the_scorer_is_made(oracle):
    # The bunch that simulate_feedback returns holds the oracle; passing the bunch
    # itself used to give NaN scores and a warning per fit.
    class Bunch:
        def __init__(self, oracle):
            self.oracle = oracle

    with pytest.raises(TypeError, match=r"PreferenceOracle.*got Bunch.*`\.oracle`"):
        personal_scorers(Bunch(oracle))
    with pytest.raises(TypeError, match="got Corpus"):
        make_personal_scorer(oracle.corpus, "reward")
    with pytest.raises(TypeError, match="got NoneType"):
        choice_outcomes(None, query_rows(), np.zeros(len(query_rows())))
