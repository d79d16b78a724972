"""ColdStartSplit and SeenUserSplit: who is in which fold, and that they plug into scikit-learn."""

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline

from pllm_sk.base import BaseRanker
from pllm_sk.baselines import OracleRanker, PopulationRanker
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import ColdStartSplit, SeenUserSplit, make_personal_scorer

K = 4  # candidates per prompt in the hand-built rows


def make_rows(n_labeled_prompts, n_query_prompts, *, random_state=0):
    """Rows of users with the given numbers of labeled and query prompts, shuffled.

    User ``u`` gets the id ``10 * u + 3`` (ids are labels, not positions). A labeled
    prompt has K rows of which a random 2 to K are labeled (pairs and full rankings
    alike); a query prompt has K unlabeled rows.
    """
    rng = np.random.RandomState(random_state)
    users, prompts, responses, labels = [], [], [], []
    for user, (n_labeled, n_query) in enumerate(
        zip(n_labeled_prompts, n_query_prompts)
    ):
        chosen = rng.choice(500, n_labeled + n_query, replace=False)
        for i, prompt in enumerate(chosen):
            if i < n_labeled:
                kept = rng.choice(K, rng.randint(2, K + 1), replace=False)
                y = rng.randint(0, 2, size=kept.size).astype(float)
            else:
                kept, y = np.arange(K), np.full(K, np.nan)
            users += [10 * user + 3] * kept.size
            prompts += [prompt] * kept.size
            responses += list(kept)
            labels += list(y)
    order = rng.permutation(len(users))
    X = pd.DataFrame(
        {
            "user_id": np.array(users)[order],
            "prompt_id": np.array(prompts)[order],
            "response_id": np.array(responses)[order],
        }
    )
    return X, np.array(labels)[order]


@pytest.fixture
def rows():
    """30 users with 4-9 labeled prompts and 1-2 query prompts; 6 history-only users."""
    rng = np.random.RandomState(1)
    n_labeled = list(rng.randint(4, 10, size=30)) + [8] * 6
    n_query = list(rng.randint(1, 3, size=30)) + [0] * 6
    return make_rows(n_labeled, n_query)


def check_split(X, y, train, test, n_support, allow_fewer=False):
    """Assert every documented property of one split; return its test users."""
    users = X["user_id"].to_numpy()
    prompts = X["prompt_id"].to_numpy()
    labeled = ~np.isnan(y)
    assert train.size > 0 and test.size > 0
    assert np.intersect1d(train, test).size == 0
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    # The test fold is exactly the query rows of the test users.
    assert not labeled[test].any()
    test_users = np.unique(users[test])
    is_test_user = np.isin(users, test_users)
    np.testing.assert_array_equal(test, np.flatnonzero(is_test_user & ~labeled))
    # Training rows are all labeled: no query row of anyone, test users' included.
    assert labeled[train].all()
    # Every labeled row of the other users is in training.
    others_labeled = np.flatnonzero(~is_test_user & labeled)
    assert np.isin(others_labeled, train).all()
    for user in test_users:
        own_labeled = np.flatnonzero((users == user) & labeled)
        own_train = train[users[train] == user]
        support = np.unique(prompts[own_train])
        available = np.unique(prompts[own_labeled])
        expected = min(n_support, available.size) if allow_fewer else n_support
        assert support.size == expected
        assert np.isin(support, available).all()
        # All labeled rows of a support prompt are in training, none of the others.
        np.testing.assert_array_equal(
            own_train, own_labeled[np.isin(prompts[own_labeled], support)]
        )
    # No (user, prompt) is on both sides.
    pair = users * 1000 + prompts
    assert np.intersect1d(pair[train], pair[test]).size == 0
    return test_users


@pytest.mark.parametrize("n_support", [0, 1, 4])
def test_kfold_split_properties(rows, n_support):
    X, y = rows
    cv = ColdStartSplit(n_splits=4, n_support=n_support, random_state=0)
    splits = list(cv.split(X, y))
    assert len(splits) == cv.get_n_splits() == 4
    users = X["user_id"].to_numpy()
    folds = [check_split(X, y, train, test, n_support) for train, test in splits]
    # Test users: disjoint across folds, covering exactly the users with query rows.
    all_test = np.concatenate(folds)
    assert all_test.size == np.unique(all_test).size
    np.testing.assert_array_equal(np.sort(all_test), np.unique(users[np.isnan(y)]))
    if n_support == 0:
        for (train, _), test_users in zip(splits, folds):
            assert not np.isin(users[train], test_users).any()


def test_other_users_query_rows_in_neither_fold(rows):
    X, y = rows
    users = X["user_id"].to_numpy()
    for train, test in ColdStartSplit(3, n_support=2, random_state=0).split(X, y):
        assert train.size > 0 and test.size > 0
        outside = ~np.isin(users, users[test]) & np.isnan(y)
        assert outside.any()
        assert not np.isin(np.flatnonzero(outside), np.r_[train, test]).any()


def test_too_few_labeled_prompts_names_the_user():
    X, y = make_rows([6, 2, 6], [1, 1, 1])
    cv = ColdStartSplit(n_splits=3, n_support=3, random_state=0)
    with pytest.raises(ValueError, match=r"Test user 13 has 2 labeled prompt"):
        list(cv.split(X, y))


def test_allow_fewer_uses_every_labeled_prompt():
    X, y = make_rows([6, 2, 6], [1, 1, 1])
    cv = ColdStartSplit(n_splits=3, n_support=3, allow_fewer=True, random_state=0)
    users = X["user_id"].to_numpy()
    for train, test in cv.split(X, y):
        check_split(X, y, train, test, n_support=3, allow_fewer=True)
        if 13 in users[test]:
            assert (
                np.unique(X["prompt_id"].to_numpy()[train][users[train] == 13]).size
                == 2
            )


def test_test_size_mode(rows):
    X, y = rows
    users = X["user_id"].to_numpy()
    n_candidates = np.unique(users[np.isnan(y)]).size  # 30
    for test_size, n_test in ((0.25, int(np.ceil(0.25 * n_candidates))), (7, 7)):
        cv = ColdStartSplit(
            n_splits=6, test_size=test_size, n_support=2, random_state=0
        )
        folds = [check_split(X, y, tr, te, 2) for tr, te in cv.split(X, y)]
        assert len(folds) == 6
        assert all(fold.size == n_test for fold in folds)
        # Drawn independently: the splits are not all the same users.
        assert len({tuple(fold) for fold in folds}) > 1
    with pytest.raises(ValueError, match="only 30 users have query rows"):
        list(ColdStartSplit(test_size=31).split(X, y))
    for bad in (0.0, 1.5, 0, "half"):
        with pytest.raises(ValueError, match="test_size"):
            list(ColdStartSplit(test_size=bad).split(X, y))


def test_deterministic_for_fixed_random_state(rows):
    X, y = rows

    def splits(**params):
        return list(ColdStartSplit(n_splits=3, n_support=2, **params).split(X, y))

    first, again = splits(random_state=4), splits(random_state=4)
    assert all(train.size > 0 and test.size > 0 for train, test in first)
    for (train_a, test_a), (train_b, test_b) in zip(first, again):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)
    other = splits(random_state=5)
    assert any(
        not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1])
        for a, b in zip(first, other)
    )


def test_groups_fallback_and_array_input(rows):
    X, y = rows
    cv = ColdStartSplit(n_splits=3, n_support=2, random_state=0)
    reference = list(cv.split(X, y))
    from_groups = list(cv.split(X, y, groups=X["user_id"].to_numpy()))
    from_array = list(cv.split(X.to_numpy(), y))
    assert all(train.size > 0 and test.size > 0 for train, test in reference)
    for (train, test), (train_g, test_g), (train_a, test_a) in zip(
        reference, from_groups, from_array
    ):
        np.testing.assert_array_equal(train, train_g)
        np.testing.assert_array_equal(test, test_g)
        np.testing.assert_array_equal(train, train_a)
        np.testing.assert_array_equal(test, test_a)
    # groups, when given, are the users: string labels work and name the user.
    X_short, y_short = make_rows([6, 2], [1, 1])
    labels = np.where(X_short["user_id"] == 13, "bob", "alice")
    with pytest.raises(ValueError, match="Test user 'bob'"):
        list(ColdStartSplit(2, n_support=3).split(X_short, y_short, groups=labels))


def test_invalid_arguments(rows):
    X, y = rows
    with pytest.raises(ValueError, match="needs y"):
        list(ColdStartSplit().split(X))
    with pytest.raises(ValueError, match="'support' parameter of ColdStartSplit"):
        list(ColdStartSplit(support="farthest").split(X, y))
    with pytest.raises(ValueError, match="n_support"):
        list(ColdStartSplit(n_support=-1).split(X, y))
    with pytest.raises(ValueError, match="n_splits"):
        list(ColdStartSplit(n_splits=1).split(X, y))
    with pytest.raises(ValueError, match="n_splits=31 greater"):
        list(ColdStartSplit(n_splits=31).split(X, y))
    with pytest.raises(ValueError, match="no unlabeled"):
        list(ColdStartSplit().split(X, np.zeros(len(X))))
    with pytest.raises(ValueError, match="prompt_id"):
        list(ColdStartSplit().split(X.drop(columns="prompt_id"), y))
    with pytest.raises(ValueError, match="groups"):
        list(ColdStartSplit().split(X, y, groups=[0, 1]))


def test_parameter_validation_follows_the_scikit_learn_setting(rows):
    X, y = rows
    cv = ColdStartSplit(3, n_support=2, allow_fewer="yes", random_state=0)
    with pytest.raises(ValueError, match="'allow_fewer' parameter of ColdStartSplit"):
        list(cv.split(X, y))
    with sklearn.config_context(skip_parameter_validation=True):
        splits = list(cv.split(X, y))
    assert len(splits) == 3 and all(test.size > 0 for _, test in splits)


def test_support_is_the_extension_point(rows):
    """A subclass changing _support_priority changes which prompts are support."""

    class LowestPromptSplit(ColdStartSplit):
        def _support_priority(self, candidate_pairs, query_pairs, rng):
            return candidate_pairs[1].astype(float)

    X, y = rows
    users, prompts = X["user_id"].to_numpy(), X["prompt_id"].to_numpy()
    cv = LowestPromptSplit(n_splits=3, n_support=2, random_state=0)
    for train, test in cv.split(X, y):
        assert train.size > 0 and test.size > 0
        for user in np.unique(users[test]):
            own = (users == user) & ~np.isnan(y)
            expected = np.unique(prompts[own])[:2]
            np.testing.assert_array_equal(
                np.unique(prompts[train][users[train] == user]), expected
            )


def angle_embeddings(n_prompts=500, random_state=0):
    """2-d unit vectors at random angles: cosine distance orders prompts by angle."""
    angles = np.random.RandomState(random_state).uniform(0, np.pi, size=n_prompts)
    return angles, np.column_stack([np.cos(angles), np.sin(angles)])


@pytest.mark.parametrize("n_support", [1, 3])
def test_nearest_support_is_the_prompts_nearest_the_query(rows, n_support):
    X, y = rows
    angles, embeddings = angle_embeddings()
    users, prompts = X["user_id"].to_numpy(), X["prompt_id"].to_numpy()
    cv = ColdStartSplit(
        3, n_support=n_support, support="nearest", prompt_embeddings=embeddings
    )
    for train, test in cv.split(X, y):
        check_split(X, y, train, test, n_support)
        for user in np.unique(users[test]):
            own = users == user
            labeled = np.unique(prompts[own & ~np.isnan(y)])
            queries = np.unique(prompts[own & np.isnan(y)])
            # Angular distance to the nearest query prompt, on [0, pi).
            gap = np.abs(angles[labeled][:, None] - angles[queries][None, :])
            expected = labeled[np.argsort(gap.min(axis=1), kind="stable")[:n_support]]
            np.testing.assert_array_equal(
                np.unique(prompts[train][users[train] == user]), np.sort(expected)
            )


def test_nearest_support_is_deterministic_and_differs_from_random(rows):
    X, y = rows
    _, embeddings = angle_embeddings()
    nearest = ColdStartSplit(
        3, n_support=2, support="nearest", prompt_embeddings=embeddings, random_state=0
    )
    random = ColdStartSplit(3, n_support=2, random_state=0)
    first = [train for train, _ in nearest.split(X, y)]
    again = [train for train, _ in nearest.split(X, y)]
    assert all(train.size > 0 for train in first)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # The same test users (same random_state), other support prompts.
    assert any(not np.array_equal(a, b) for a, (b, _) in zip(first, random.split(X, y)))


def test_nearest_support_errors(rows):
    X, y = rows
    with pytest.raises(ValueError, match="needs prompt_embeddings"):
        list(ColdStartSplit(support="nearest").split(X, y))
    with pytest.raises(ValueError, match="prompt_id=4.. has no row"):
        list(
            ColdStartSplit(support="nearest", prompt_embeddings=np.eye(10)).split(X, y)
        )
    with pytest.raises(ValueError, match="shape \\(n_prompts, dim\\)"):
        list(
            ColdStartSplit(support="nearest", prompt_embeddings=np.ones(500)).split(
                X, y
            )
        )
    bad = np.ones((500, 2))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        list(ColdStartSplit(support="nearest", prompt_embeddings=bad).split(X, y))


def test_large_split_runs(global_random_seed):
    """About 1M rows: 2,500 users x 50 labeled prompts x 8 rows, plus queries."""
    rng = np.random.RandomState(global_random_seed)
    n_users, n_history, n_rows = 2500, 50, 8
    per_user = (n_history + 1) * n_rows
    X = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users), per_user),
            "prompt_id": np.repeat(
                rng.randint(5000, size=n_users * (n_history + 1)), 8
            ),
            "response_id": np.tile(np.arange(n_rows), n_users * (n_history + 1)),
        }
    )
    labels = np.r_[np.tile([1.0, 0.0] + [0.5] * 6, n_history), [np.nan] * n_rows]
    y = np.tile(labels, n_users)
    train, test = next(ColdStartSplit(n_splits=5, random_state=0).split(X, y))
    users, labeled = X["user_id"].to_numpy(), ~np.isnan(y)
    test_users = np.unique(users[test])
    assert test_users.size == n_users // 5
    is_test_user = np.isin(users, test_users)
    # The test fold is every query row of the test users; training holds no query
    # row, every labeled row of the others, and 5 support prompts per test user.
    np.testing.assert_array_equal(test, np.flatnonzero(is_test_user & ~labeled))
    assert labeled[train].all()
    own = is_test_user[train]
    np.testing.assert_array_equal(train[~own], np.flatnonzero(~is_test_user & labeled))
    support = X.iloc[train[own]].groupby("user_id")["prompt_id"].nunique()
    assert support.index.size == test_users.size and (support == 5).all()


class SignedRewardRanker(BaseRanker):
    """A population ranker: features weighted by their covariance with the labels.

    ``sign=-1`` ranks backwards, so a grid search has a clear right answer.
    """

    def __init__(self, sign=1):
        self.sign = sign

    def _fit(self, feedback):
        ids, features, y = feedback.ids, feedback.features, feedback.y
        self.fit_user_prompts_ = set(map(tuple, ids[:, :2].tolist()))
        self.coef_ = ((y - y.mean())[:, None] * features).mean(axis=0)

    def _predict(self, ids, features):
        return self.sign * features @ self.coef_


@pytest.fixture
def pipeline(corpus):
    return Pipeline(
        [("rewards", RewardFeatures(corpus)), ("ranker", SignedRewardRanker())]
    )


@pytest.mark.parametrize("routing", [False, True])
def test_cross_validate_pipeline(feedback_data, pipeline, routing):
    X, y, oracle = feedback_data.X, feedback_data.y, feedback_data.oracle
    cv = ColdStartSplit(n_splits=4, n_support=3, random_state=0)
    scorer = make_personal_scorer(oracle, ["reward", "gap_closed", "top1"])
    with sklearn.config_context(enable_metadata_routing=routing):
        result = cross_validate(
            pipeline,
            X,
            y,
            cv=cv,
            scoring=scorer,
            return_estimator=True,
            return_indices=True,
            error_score="raise",
        )
        groups = X["user_id"].to_numpy() + 100  # other labels, same users
        if routing:
            with_groups = cross_validate(
                pipeline, X, y, cv=cv, scoring=scorer, params={"groups": groups}
            )
        else:
            with_groups = cross_validate(
                pipeline, X, y, cv=cv, scoring=scorer, groups=groups
            )
    assert set(result) >= {"test_reward", "test_gap_closed", "test_top1"}
    assert np.isfinite(result["test_reward"]).all()
    # The fitted estimators saw no (user, prompt) of their test fold.
    for estimator, test in zip(result["estimator"], result["indices"]["test"]):
        tested = set(
            map(tuple, X.iloc[test][["user_id", "prompt_id"]].to_numpy().tolist())
        )
        assert not tested & estimator[-1].fit_user_prompts_
    # groups given or not, routing on or off: the same users are the test users
    # in each fold, so the scores agree.
    np.testing.assert_allclose(with_groups["test_top1"], result["test_top1"])


@pytest.mark.parametrize("routing", [False, True])
def test_grid_search_picks_the_right_sign(feedback_data, pipeline, routing):
    X, y, oracle = feedback_data.X, feedback_data.y, feedback_data.oracle
    with sklearn.config_context(enable_metadata_routing=routing):
        search = GridSearchCV(
            pipeline,
            {"ranker__sign": [-1, 1]},
            cv=ColdStartSplit(n_splits=3, n_support=2, random_state=0),
            scoring=make_personal_scorer(oracle, ["reward", "win_rate"]),
            refit="reward",
            error_score="raise",
        ).fit(X, y)
    assert search.best_params_ == {"ranker__sign": 1}
    scores = search.cv_results_["mean_test_reward"]
    assert scores[1] > scores[0]
    assert np.all(np.isfinite(search.cv_results_["mean_test_win_rate"]))


def test_metadata_request_declares_groups():
    request = ColdStartSplit().get_metadata_routing()
    assert request.split.requests == {"groups": True}


class ZeroShotRanker(BaseRanker):
    """Ranks by the oracle's population weights: the scorer's zero-shot choice."""

    def __init__(self, population_weights=None):
        self.population_weights = population_weights

    def _fit(self, feedback):
        self.users_ = np.unique(feedback.ids[:, 0])

    def _predict(self, ids, features):
        return features @ self.population_weights


def test_reference_rankers_through_the_split_and_the_scorers(feedback_data, corpus):
    """The oracle closes the whole gap and the zero-shot choice none of it, in every
    fold; a population method stays near zero-shot."""
    X, y, oracle = feedback_data.X, feedback_data.y, feedback_data.oracle
    cv = ColdStartSplit(n_splits=3, n_support=2, random_state=0)
    scoring = make_personal_scorer(oracle, ["gap_closed", "top1"])

    def cv_scores(ranker):
        pipeline = Pipeline([("rewards", RewardFeatures(corpus)), ("ranker", ranker)])
        with sklearn.config_context(enable_metadata_routing=True):
            return cross_validate(
                pipeline, X, y, cv=cv, scoring=scoring, error_score="raise"
            )

    best = cv_scores(OracleRanker(oracle))
    np.testing.assert_allclose(best["test_gap_closed"], 1.0)
    np.testing.assert_allclose(best["test_top1"], 1.0)
    zero_shot = cv_scores(ZeroShotRanker(oracle.population_weights))
    np.testing.assert_allclose(zero_shot["test_gap_closed"], 0.0, atol=1e-12)
    assert (zero_shot["test_top1"] < 1.0).all()
    # Its weights estimate the population's from all users' pairs (measured: -0.16
    # to 0.0 on these folds); a reversed or leaking ranker would be far off.
    population = cv_scores(PopulationRanker())
    assert np.abs(population["test_gap_closed"]).max() < 0.25


# ------------------------------------------------------------ seen users


def check_seen_split(X, y, train, test, test_users=None):
    """Assert every documented property of one SeenUserSplit split; return its test prompts."""
    users, prompts = X["user_id"].to_numpy(), X["prompt_id"].to_numpy()
    responses = X["response_id"].to_numpy()
    assert train.size > 0 and test.size > 0
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    # Training rows are labeled, and no test prompt is in any of them.
    assert not np.isnan(y[train]).any()
    test_prompts = np.unique(prompts[test])
    assert not np.isin(prompts[train], test_prompts).any()
    # The test users are seen: each has training rows.
    assert np.isin(users[test], users[train]).all()
    if test_users is not None:
        assert np.isin(users[test], test_users).all()
    # Each test (user, prompt) comes with every candidate, and all its rows.
    n_candidates = np.unique(responses).size
    pair = users * 1000 + prompts
    for key in np.unique(pair[test]):
        assert np.unique(responses[pair == key]).size == n_candidates
        assert np.isin(np.flatnonzero(pair == key), test).all()
    return test_prompts


def test_seen_user_kfold_over_prompts(feedback_data):
    X, y = feedback_data.X, feedback_data.y
    cv = SeenUserSplit(n_splits=4, random_state=0)
    splits = list(cv.split(X, y))
    assert len(splits) == cv.get_n_splits() == 4
    folds = [check_seen_split(X, y, train, test) for train, test in splits]
    # Test prompts: disjoint across folds, covering every prompt of X (all complete).
    all_test = np.concatenate(folds)
    assert all_test.size == np.unique(all_test).size
    np.testing.assert_array_equal(np.sort(all_test), np.unique(X["prompt_id"]))
    # Users are shared: most users are in both folds of a split.
    for train, test in splits:
        users = X["user_id"].to_numpy()
        assert np.intersect1d(users[train], users[test]).size > 10


def test_seen_user_test_size_mode_and_random_state(feedback_data):
    X, y = feedback_data.X, feedback_data.y
    n_prompts = np.unique(X["prompt_id"]).size
    for test_size, n_test in ((0.2, int(np.ceil(0.2 * n_prompts))), (5, 5)):
        cv = SeenUserSplit(3, test_size=test_size, random_state=0)
        folds = [check_seen_split(X, y, tr, te) for tr, te in cv.split(X, y)]
        assert [fold.size for fold in folds] == [n_test] * 3
        assert len({tuple(fold) for fold in folds}) > 1
    first = list(SeenUserSplit(3, random_state=4).split(X, y))
    again = list(SeenUserSplit(3, random_state=4).split(X, y))
    other = list(SeenUserSplit(3, random_state=5).split(X, y))
    for (train_a, test_a), (train_b, test_b) in zip(first, again):
        assert test_a.size > 0
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))


def test_seen_user_fixed_test_prompts_and_users(feedback_data, corpus):
    X, y = feedback_data.X, feedback_data.y
    users, prompts = X["user_id"].to_numpy(), X["prompt_id"].to_numpy()
    test_split = corpus.prompt_ids("test")
    cv = SeenUserSplit(test_prompts=test_split)
    splits = list(cv.split(X, y))
    assert len(splits) == cv.get_n_splits() == 1
    train, test = splits[0]
    test_prompts = check_seen_split(X, y, train, test)
    assert np.isin(test_prompts, test_split).all()
    # Every query row (on the test split here) is in the test fold.
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(y)), test)
    # Restricted to some users: their rows only; training keeps every user.
    chosen = np.unique(users)[:7]
    train, test = next(SeenUserSplit(test_prompts=test_split, test_users=chosen).split(X, y))
    check_seen_split(X, y, train, test, test_users=chosen)
    np.testing.assert_array_equal(
        test, np.flatnonzero(np.isin(prompts, test_split) & np.isin(users, chosen))
    )
    assert np.unique(users[train]).size == np.unique(users).size


def test_seen_user_split_leaves_out_incomplete_pairs_and_unseen_users():
    # Users 3 and 13 label pairs (2 of K=4 rows) of prompts; query prompts have all K.
    X, y = make_rows([5, 5, 0], [2, 2, 0])
    X_new, y_new = make_rows([0], [1], random_state=9)  # a user with no labeled row
    X_new["user_id"] = 99
    X, y = pd.concat([X, X_new], ignore_index=True), np.r_[y, y_new]
    users, prompts = X["user_id"].to_numpy(), X["prompt_id"].to_numpy()
    pair = users * 1000 + prompts
    for train, test in SeenUserSplit(2, random_state=0).split(X, y):
        check_seen_split(X, y, train, test)
        assert 99 not in users[test]
        # A test prompt's rows outside the test fold are in neither fold.
        other = np.isin(prompts, prompts[test]) & ~np.isin(pair, pair[test])
        assert not np.isin(np.flatnonzero(other), np.r_[train, test]).any()


def test_seen_user_split_errors(feedback_data):
    X, y = feedback_data.X, feedback_data.y
    with pytest.raises(ValueError, match="SeenUserSplit.split needs y"):
        list(SeenUserSplit().split(X))
    with pytest.raises(ValueError, match="n_splits must be at least 2"):
        list(SeenUserSplit(1).split(X, y))
    with pytest.raises(ValueError, match="'test_size' parameter of SeenUserSplit"):
        list(SeenUserSplit(test_size=1.5).split(X, y))
    with pytest.raises(ValueError, match="does not combine with test_size"):
        list(SeenUserSplit(test_prompts=[0], test_size=0.5).split(X, y))
    with pytest.raises(ValueError, match="n_splits=61 greater than the number of prompts"):
        list(SeenUserSplit(61).split(X, y))
    with pytest.raises(ValueError, match="asks for 99 test prompts"):
        list(SeenUserSplit(test_size=99).split(X, y))
    with pytest.raises(ValueError, match="empty test fold"):
        list(SeenUserSplit(test_prompts=[1000]).split(X, y))
    with pytest.raises(ValueError, match="among test_users"):
        list(SeenUserSplit(test_users=[-5]).split(X, y))
    with pytest.raises(ValueError, match="empty training fold"):
        list(SeenUserSplit(test_prompts=np.unique(X["prompt_id"])).split(X, y))
    half = ((X["prompt_id"] + X["response_id"]) % 2 == 0).to_numpy()  # 4 of K=8 rows
    with pytest.raises(ValueError, match="every candidate response"):
        list(SeenUserSplit().split(X[half], y[half]))


@pytest.mark.parametrize("routing", [False, True])
def test_seen_user_split_in_cross_validate(feedback_data, corpus, routing):
    """The oracle closes the whole gap on seen users' held-out prompts; the fitted
    estimators saw none of their test prompts."""
    X, y, oracle = feedback_data.X, feedback_data.y, feedback_data.oracle
    cv = SeenUserSplit(3, random_state=0)
    scoring = make_personal_scorer(oracle, ["gap_closed", "top1", "reward"])
    with sklearn.config_context(enable_metadata_routing=routing):
        result = cross_validate(
            Pipeline([("rewards", RewardFeatures(corpus)), ("ranker", SignedRewardRanker())]),
            X, y, cv=cv, scoring=scoring, return_estimator=True, return_indices=True,
            error_score="raise",
        )
        best = cross_validate(
            Pipeline([("rewards", RewardFeatures(corpus)), ("ranker", OracleRanker(oracle))]),
            X, y, cv=cv, scoring=scoring, error_score="raise",
        )
    assert np.isfinite(result["test_reward"]).all()
    for estimator, test in zip(result["estimator"], result["indices"]["test"]):
        assert test.size > 0
        tested = set(X.iloc[test]["prompt_id"].tolist())
        assert not tested & {prompt for _, prompt in estimator[-1].fit_user_prompts_}
    np.testing.assert_allclose(best["test_gap_closed"], 1.0)
    np.testing.assert_allclose(best["test_top1"], 1.0)
    assert SeenUserSplit().get_metadata_routing().split.requests == {"groups": True}
