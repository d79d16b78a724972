"""scikit-learn's estimator checks and the domain checks, for every public estimator."""

import io

import joblib
import numpy as np
import pandas as pd
import pytest
from _helpers import byte_tokenizer, tiny_lm
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_param_validation,
)

from conftest import (
    check_name,
    check_or_expected_failure,
    parametrize_checks,
    random_corpus,
)
from pllm_sk.baselines import BayesRanker, OracleRanker, PerUserRanker, PopulationRanker
from pllm_sk.collaborative import LowRankRanker
from pllm_sk.icl import InContextRanker
from pllm_sk.meta import MetaRewardHead
from pllm_sk.neighbors import UserKNNRanker
from pllm_sk.simulation import PreferenceOracle, sample_users, simulate_feedback

_ORACLE = PreferenceOracle(
    random_corpus(30, 10), sample_users(20, alpha=0.05, random_state=0)
)


def public_estimators():
    """One small instance of every public estimator.

    The in-context ranker runs a tiny random-weight causal LM built in the tests
    (``_helpers.tiny_lm``), on the oracle's corpus, and picks its examples without an
    embedder.
    """
    return [
        InContextRanker(
            _ORACLE.corpus,
            tiny_lm(),
            tokenizer=byte_tokenizer(),
            example_selection="own_recent",
            cache=False,
            verbose=0,
        ),
        PopulationRanker(),
        PerUserRanker(random_state=0),
        OracleRanker(_ORACLE),
        BayesRanker(n_draws=200, n_chains=4, n_burnin=10, random_state=0),
        MetaRewardHead(n_prototypes=16, max_epochs=3, random_state=0),
        UserKNNRanker(min_neighbor_prompts=2, random_state=0),
        LowRankRanker(n_components=4, random_state=0),
    ]


# scikit-learn's generic checks build X from random numbers. The id columns are
# declared categorical, so the checks round X to non-negative integers and most of
# them run as they would on id rows. The ones below cannot apply; each is expected
# to fail with exactly this exception and message, and fails the test otherwise
# (or when it passes: then its entry must go).
_TWO_COLUMNS = (
    ValueError,
    r"Found array with 2 feature\(s\)",
    "the check's X has 2 columns, fewer than the 3 id columns every row needs",
)
_LABELED_TWICE = (
    ValueError,
    "is labeled twice",
    "the check's random integer X repeats a (user, prompt, response) candidate with "
    "different labels, which fit refuses",
)
_NO_COMPARISON = (
    ValueError,
    "y holds no comparison",
    "the check's y equals X's first column (user_id), so each (user, prompt) has one "
    "label and there is nothing to compare",
)
_NEGATIVE_IDS = (
    AssertionError,
    "raised ValueError unexpectedly",
    "ids must be non-negative while feature columns may be negative; the "
    "positive_only tag is all-or-nothing, so it stays False",
)
_NO_REWARD_SCORES = (
    ValueError,
    "needs the reward-model scores as feature columns",
    "the check's X has only the 3 id columns, and the Bayes limit needs the reward "
    "scores",
)
_EVERY_RANKER = {
    **dict.fromkeys(
        [
            "check_estimators_fit_returns_self",
            "check_estimators_overwrite_params",
            "check_fit_check_is_fitted",
            "check_fit_idempotent",
            "check_n_features_in",
            "check_readonly_memmap_input",
        ],
        _TWO_COLUMNS,
    ),
    "check_positive_only_tag_during_fit": _NEGATIVE_IDS,
}
# Rankers that learn from the labels: the checks' repeated candidates conflict.
_LEARNER = {
    **_EVERY_RANKER,
    **dict.fromkeys(
        [
            "check_dtype_object",
            "check_estimators_dtypes",
            "check_estimators_nan_inf",
            "check_fit_score_takes_y",
        ],
        _LABELED_TWICE,
    ),
}
# Checks that fit X whose y is its user_id column.
_Y_IS_USER_ID = [
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_predict1d",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_pipeline_consistency",
]
# Rankers whose fit takes sample_weight: scikit-learn's weight checks use the same
# generic X as the checks above.
_SAMPLE_WEIGHT_CHECKS = {
    "check_sample_weights_pandas_series": (
        ValueError,
        "is of type pandas.Series",
        "the check's DataFrame X has no id columns",
    ),
    "check_sample_weights_not_an_array": _TWO_COLUMNS,
    "check_sample_weights_not_overwritten": _TWO_COLUMNS,
    "check_sample_weights_list": _LABELED_TWICE,
    "check_sample_weights_shape": _TWO_COLUMNS,
    "check_sample_weight_equivalence_on_dense_data": (
        TypeError,
        "must hold integer ids",
        "the check's X has random floats in the id columns",
    ),
}
EXPECTED_FAILED_CHECKS = {
    "PopulationRanker": {**_LEARNER, **dict.fromkeys(_Y_IS_USER_ID, _NO_COMPARISON)},
    "PerUserRanker": {**_LEARNER, **dict.fromkeys(_Y_IS_USER_ID, _NO_COMPARISON)},
    # The oracle learns nothing from y: only the generic-X failures remain.
    "OracleRanker": _EVERY_RANKER,
    # The checks whose X has only the 3 id columns stop at the missing scores first.
    "BayesRanker": {
        **_LEARNER,
        **dict.fromkeys(
            [*_Y_IS_USER_ID, "check_estimators_nan_inf", "check_fit_score_takes_y"],
            _NO_REWARD_SCORES,
        ),
    },
    "MetaRewardHead": {**_LEARNER, **dict.fromkeys(_Y_IS_USER_ID, _NO_COMPARISON)},
    "UserKNNRanker": {**_LEARNER, **dict.fromkeys(_Y_IS_USER_ID, _NO_COMPARISON)},
    # Without examples (y of one label per prompt) every user is cold, and the LM
    # still ranks: only the generic-X failures and the conflicting labels remain.
    "InContextRanker": _LEARNER,
    "LowRankRanker": {
        **_LEARNER,
        **dict.fromkeys(_Y_IS_USER_ID, _NO_COMPARISON),
        **_SAMPLE_WEIGHT_CHECKS,
    },
}


@parametrize_checks(public_estimators())
def test_sklearn_estimator_checks(estimator, check):
    expected = EXPECTED_FAILED_CHECKS[type(estimator).__name__].get(check_name(check))
    check_or_expected_failure(estimator, check, expected)


# ---------------------------------------------------------------- domain checks


@pytest.fixture(scope="module")
def reward_track():
    """Reward-track rows of the oracle's 20 users: 4 best/worst prompts, 2 queries."""
    corpus = _ORACLE.corpus
    data = simulate_feedback(
        corpus, _ORACLE.weights, n_history=4, n_query=2, random_state=0
    )
    scores = corpus.lookup_rewards(data.X["prompt_id"], data.X["response_id"])
    X = data.X.copy()
    for b, name in enumerate(corpus.reward_models):
        X[f"reward_{name}"] = scores[:, b].astype(float)
    return X, data.y, data.is_query


def _ids(estimator):
    return type(estimator).__name__


ESTIMATORS = pytest.mark.parametrize("estimator", public_estimators(), ids=_ids)


@ESTIMATORS
def test_clone_gives_an_unfitted_copy_with_the_same_parameters(estimator, reward_track):
    X, y, _ = reward_track
    fitted = clone(estimator).fit(X, y)
    copy = clone(fitted)
    assert_same_parameters(copy.get_params(), fitted.get_params())
    assert not hasattr(copy, "n_features_in_")


def assert_same_parameters(first, second):
    """Equal parameters; a model or tokenizer (deep-copied by clone) by content."""
    assert first.keys() == second.keys()
    for name, value in first.items():
        if hasattr(value, "state_dict"):
            ours, theirs = value.state_dict(), second[name].state_dict()
            assert ours.keys() == theirs.keys()
            assert all((ours[k] == theirs[k]).all() for k in ours), name
        elif hasattr(value, "get_vocab"):
            assert value.get_vocab() == second[name].get_vocab(), name
        else:
            assert value == second[name], name


@ESTIMATORS
def test_fit_returns_self_and_keeps_parameters(estimator, reward_track):
    X, y, _ = reward_track
    before = estimator.get_params()
    assert estimator.fit(X, y) is estimator
    assert_same_parameters(estimator.get_params(), before)
    assert estimator.n_features_in_ == X.shape[1]
    assert_array_equal(estimator.feature_names_in_, X.columns)


@ESTIMATORS
def test_pickle_round_trip_gives_identical_predictions(estimator, reward_track):
    X, y, is_query = reward_track
    estimator = clone(estimator).fit(X, y)
    expected = estimator.predict(X[is_query])
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    assert_array_equal(joblib.load(buffer).predict(X[is_query]), expected)


@ESTIMATORS
def test_refit_is_deterministic(estimator, reward_track):
    X, y, is_query = reward_track
    first = clone(estimator).fit(X, y).predict(X[is_query])
    second = clone(estimator).fit(X, y).predict(X[is_query])
    assert_array_equal(first, second)


@ESTIMATORS
def test_fit_ignores_unlabeled_rows(estimator, reward_track):
    X, y, is_query = reward_track
    with_nan = clone(estimator).fit(X, y).predict(X[is_query])
    labeled_only = clone(estimator).fit(X[~is_query], y[~is_query])
    assert_array_equal(labeled_only.predict(X[is_query]), with_nan)


@ESTIMATORS
def test_predict_is_row_wise(estimator, reward_track):
    # Subset and order invariance: a row's prediction depends on that row only.
    X, y, is_query = reward_track
    estimator = clone(estimator).fit(X, y)
    query = X[is_query].reset_index(drop=True)
    full = estimator.predict(query)
    order = np.random.RandomState(0).permutation(len(query))
    # An LM scores candidates in float32 batches, whose make-up moves the last bits.
    rtol = 1e-4 if isinstance(estimator, InContextRanker) else 1e-7
    assert_allclose(estimator.predict(query.iloc[order]), full[order], rtol=rtol)
    assert_allclose(estimator.predict(query.iloc[:5]), full[:5], rtol=rtol)


@pytest.mark.parametrize(
    "estimator",
    [e for e in public_estimators() if not isinstance(e, OracleRanker)],
    ids=_ids,
)
def test_cold_user_gets_the_population_prediction(estimator, reward_track):
    X, y, is_query = reward_track
    warm = X["user_id"] != 3
    estimator = clone(estimator).fit(X[warm], y[warm.to_numpy()])
    cold_rows = X[is_query & ~warm.to_numpy()]
    if isinstance(estimator, InContextRanker):
        # The LM's own taste: the score of a ranker that shows no examples.
        expected = clone(estimator).set_params(n_examples=0).fit(X, y).predict(cold_rows)
    else:
        # Every other ranker calls the cold-user weights population_coef_ (on the
        # reward track they weigh the reward columns).
        features = cold_rows.filter(like="reward_").to_numpy()
        expected = features @ estimator.population_coef_
    assert_allclose(estimator.predict(cold_rows), expected, rtol=1e-6)
    assert estimator.count_fallbacks(cold_rows) == {"rows": len(cold_rows), "users": 1}
    # The same candidates for a brand-new user id are predicted the same way.
    new_user = cold_rows.assign(user_id=999)
    assert_allclose(estimator.predict(new_user), estimator.predict(cold_rows))


def test_oracle_never_falls_back(reward_track):
    X, y, is_query = reward_track
    warm = (X["user_id"] != 3).to_numpy()
    oracle = OracleRanker(_ORACLE).fit(X[warm], y[warm])
    assert oracle.count_fallbacks(X[is_query]) == {"rows": 0, "users": 0}


@ESTIMATORS
def test_ids_track_works_or_says_why_not(estimator, reward_track):
    X, y, is_query = reward_track
    ids_only = X[["user_id", "prompt_id", "response_id"]]
    if isinstance(estimator, BayesRanker):
        with pytest.raises(ValueError, match="reward-model scores"):
            clone(estimator).fit(ids_only, y)
        return
    utility = clone(estimator).fit(ids_only, y).predict(ids_only[is_query])
    assert utility.shape == (int(is_query.sum()),) and np.isfinite(utility).all()


@ESTIMATORS
def test_numpy_input_matches_dataframe_input(estimator, reward_track):
    X, y, is_query = reward_track
    from_frame = clone(estimator).fit(X, y).predict(X[is_query])
    from_array = clone(estimator).fit(X.to_numpy(), y).predict(X[is_query].to_numpy())
    assert_allclose(from_array, from_frame)


def _as_array(X, *, id_dtype, order="C"):
    """X as one array: ids of ``id_dtype`` (cast back by the estimator), features float."""
    array = np.asarray(X.to_numpy(dtype=np.float64), order=order)
    return array.astype(id_dtype, copy=False) if id_dtype != np.float64 else array


@ESTIMATORS
@pytest.mark.parametrize(
    "layout",
    ["int32 ids", "float32", "Fortran order", "read-only memmap"],
)
def test_input_layouts_give_the_same_predictions(estimator, reward_track, layout, tmp_path):
    X, y, is_query = reward_track
    expected = clone(estimator).fit(X.to_numpy(), y).predict(X[is_query].to_numpy())
    if layout == "int32 ids":
        # A DataFrame whose id columns are int32.
        ids = ["user_id", "prompt_id", "response_id"]
        converted = X.astype(dict.fromkeys(ids, np.int32))
        got = clone(estimator).fit(converted, y).predict(converted[is_query])
        assert_allclose(got, expected, rtol=1e-6)
        return
    if layout == "float32":
        # Ids are small integers, exact in float32; the features lose precision.
        array = X.to_numpy(dtype=np.float32)
        got = clone(estimator).fit(array, y).predict(array[is_query])
        assert got.dtype == np.float64
        assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
        return
    if layout == "Fortran order":
        array = np.asfortranarray(X.to_numpy())
    else:
        path = tmp_path / "X.npy"
        np.save(path, X.to_numpy())
        array = np.load(path, mmap_mode="r")
    got = clone(estimator).fit(array, y).predict(array[is_query])
    assert_allclose(got, expected)


@ESTIMATORS
def test_predict_leaves_the_estimator_unchanged(estimator, reward_track):
    X, y, is_query = reward_track
    estimator = clone(estimator).fit(X, y)
    before = joblib.hash(estimator.__dict__)
    estimator.predict(X[is_query])
    estimator.count_fallbacks(X[is_query])
    assert joblib.hash(estimator.__dict__) == before


@ESTIMATORS
def test_refitting_the_same_instance_forgets_the_first_fit(estimator, reward_track):
    X, y, is_query = reward_track
    fresh = clone(estimator).fit(X, y).predict(X[is_query])
    reused = clone(estimator)
    # First fit on the ids of half the users, then on everything.
    half = (X["user_id"] < 10).to_numpy()
    ids_only = X[["user_id", "prompt_id", "response_id"]]
    if not isinstance(estimator, BayesRanker):
        reused.fit(ids_only[half], y[half])
    else:
        reused.fit(X[half], y[half])
    assert_allclose(reused.fit(X, y).predict(X[is_query]), fresh)
    assert reused.n_features_in_ == X.shape[1]


@ESTIMATORS
@pytest.mark.parametrize(
    "bad_X, error, message",
    [
        (lambda X: X.iloc[:0], ValueError, r"Found array with 0 sample\(s\)"),
        (
            lambda X: sparse.csr_matrix(X.to_numpy()),
            TypeError,
            "Sparse input is not supported",
        ),
        (lambda X: X.to_numpy()[:, :2], ValueError, r"Found array with 2 feature\(s\)"),
        (
            lambda X: X.drop(columns="prompt_id"),
            ValueError,
            r"missing the id column\(s\) \['prompt_id'\]",
        ),
        (
            lambda X: X.assign(user_id=X["user_id"] - 5),
            ValueError,
            "Column 'user_id' must hold non-negative ids",
        ),
        (
            lambda X: X.assign(prompt_id=X["prompt_id"] + 0.5),
            TypeError,
            "Column 'prompt_id' must hold integer ids",
        ),
        (lambda X: X.to_numpy() + 0j, ValueError, "Complex data not supported"),
    ],
    ids=["empty", "sparse", "two columns", "missing id", "negative id", "fractional id",
         "complex"],
)
def test_bad_X_in_fit_is_named(estimator, reward_track, bad_X, error, message):
    X, y, _ = reward_track
    bad = bad_X(X)
    with pytest.raises(error, match=message):
        clone(estimator).fit(bad, y[: bad.shape[0]])


@ESTIMATORS
def test_bad_y_and_predict_input_are_named(estimator, reward_track):
    X, y, is_query = reward_track
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        clone(estimator).fit(X, None)
    with pytest.raises(ValueError, match="X has 30 rows, y has 29"):
        clone(estimator).fit(X.iloc[:30], y[:29])
    if not isinstance(estimator, OracleRanker):  # the oracle ignores the labels
        twice = pd.concat([X.iloc[:1], X.iloc[:1]])
        labels = np.concatenate([[1.0, 0.0], y[1:]])
        with pytest.raises(ValueError, match=r"is labeled twice, 1 and 0"):
            clone(estimator).fit(pd.concat([twice, X.iloc[1:]]), labels)
    fitted = clone(estimator).fit(X.to_numpy(), y)
    with pytest.raises(ValueError, match="X has 12 features, but .* is expecting 13"):
        fitted.predict(X[is_query].to_numpy()[:, :12])
    fitted = clone(estimator).fit(X, y)
    with pytest.raises(ValueError, match="Feature column 'reward_gemma_2b' contains NaN"):
        fitted.predict(X[is_query].assign(reward_gemma_2b=np.nan))


@ESTIMATORS
def test_parameters_are_validated_declaratively(estimator):
    # scikit-learn's own check: a constraint for every parameter, and a bad type or
    # value of each raises its InvalidParameterError in fit.
    check_param_validation(type(estimator).__name__, estimator)


def test_a_ranker_that_sets_no_users_is_told_what_to_set(reward_track):
    from pllm_sk.base import BaseRanker

    class FirstColumn(BaseRanker):
        def _fit(self, feedback):
            pass  # forgets users_

        def _predict(self, ids, features):
            return features[:, 0]

    X, y, _ = reward_track
    ranker = FirstColumn().fit(X, y)
    assert ranker.predict(X).shape == (len(X),)
    with pytest.raises(AttributeError, match="FirstColumn sets no users_ in _fit"):
        ranker.count_fallbacks(X)
