"""The benchmark scripts, end to end on tiny synthetic problems, and what they share."""

import numpy as np
import pandas as pd
import pytest
from _helpers import load_script

from pllm_sk.datasets import make_personalllm
from pllm_sk.model_selection import choice_outcomes, make_personal_scorer


@pytest.mark.parametrize("query_split", ["auto", "test", "train"])
def test_run_benchmark_writes_a_table_and_a_plot(tmp_path, capsys, query_split):
    pytest.importorskip("matplotlib")
    run_benchmark = load_script("run_benchmark")
    run_benchmark.main(
        [
            "--n-prompts", "120", "--n-history-users", "60", "--n-test-users", "30",
            "--n-history", "12", "--shots", "1", "3", "--n-splits", "2",
            "--tracks", "rewards", "ids", "--query-split", query_split,
            "--methods", "Population", "UserKNN", "LowRank", "Bayes", "Oracle",
            "--backend", "none", "--output-dir", str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    # Each track's table says where its query prompts came from: by default the
    # ids track ranks train-split prompts that other users labeled.
    ids_split = "train" if query_split == "auto" else query_split
    rewards_split = "test" if query_split == "auto" else query_split
    assert f"Track: ids ({ids_split}-split queries)" in printed
    assert f"Track: rewards ({rewards_split}-split queries)" in printed
    results = pd.read_csv(tmp_path / "benchmark.csv")
    splits = results.groupby("track")["query_split"].unique()
    assert splits["ids"].tolist() == [ids_split]
    assert splits["rewards"].tolist() == [rewards_split]
    assert (tmp_path / "benchmark.png").stat().st_size > 0
    # Every method on every track it supports, at both support sizes.
    counts = results.groupby(["track", "method"]).size()
    assert counts.loc["rewards"].to_dict() == dict.fromkeys(
        ["Bayes", "LowRank", "Oracle", "Population", "UserKNN"], 2
    )
    assert counts.loc["ids"].to_dict() == dict.fromkeys(
        ["LowRank", "Population", "UserKNN"], 2
    )
    oracle = results[results.method == "Oracle"]
    np.testing.assert_allclose(oracle["gap_closed"], 1.0)
    # Measured numbers, not placeholders: finite metrics and timings for every row.
    metrics = ["reward", "gap_closed", "top1", "win_rate", "pairwise_accuracy"]
    assert np.isfinite(results[metrics].to_numpy()).all()
    assert (results[["fit_s", "predict_s"]] > 0).all().all()
    # The settings of the run, the same in every row, as the Settings line prints them.
    settings = dict(
        data="synthetic", n_prompts=120, n_history_users=60, n_test_users=30,
        n_history=12, feedback="best_worst", alpha=0.05, n_splits=2,
        support="random", shots="1 3", seed=0,
        backend="none (sequential, in this process)",
    )  # fmt: skip
    for column, value in settings.items():
        assert results[column].tolist() == [value] * len(results), column
    line = next(line for line in printed.splitlines() if line.startswith("Settings: "))
    for column in results.columns[results.columns.get_loc("predict_s") + 1 :]:
        assert f"{column}={results[column].iloc[0]}" in line, column


def test_run_benchmark_refuses_too_few_history_prompts_before_building_data(
    monkeypatch, capsys
):
    run_benchmark = load_script("run_benchmark")

    def build_data(args):
        raise AssertionError("data built before the arguments were checked")

    monkeypatch.setattr(run_benchmark, "build_data", build_data)
    with pytest.raises(SystemExit) as error:
        run_benchmark.main(["--n-history", "2", "--methods", "Population", "UserKNN"])
    assert error.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "--n-history 2 is too small for UserKNN (min_neighbor_prompts=10)" in message
    assert "Raise --n-history to at least 10, or leave out UserKNN: --methods Population." in (
        message
    )
    # The defaults run every method but InContext: LowRank's prior needs 10 too.
    with pytest.raises(SystemExit):
        run_benchmark.parse_args(["--n-history", "9"])
    message = " ".join(capsys.readouterr().err.split())
    assert "UserKNN (min_neighbor_prompts=10) and LowRank (min_prior_prompts=10)" in message
    assert "leave out UserKNN and LowRank: --methods Population PerUser MetaHead" in message
    # The minimum is the estimator's parameter as the run builds it, not a copy.
    monkeypatch.setitem(
        run_benchmark.SETTINGS, "UserKNN", lambda ctx: dict(min_neighbor_prompts=2)
    )
    args = run_benchmark.parse_args(["--n-history", "2", "--methods", "UserKNN"])
    assert args.n_history == 2
    with pytest.raises(SystemExit):
        run_benchmark.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "at least 2 for UserKNN (min_neighbor_prompts), 10 for LowRank" in help_text
    # Every registered method's minimum of prompts per user is one the check reads.
    for name, (kind, _) in run_benchmark.REGISTRY.items():
        for parameter in kind._get_param_names():
            if parameter.startswith("min_") and parameter.endswith("_prompts"):
                assert parameter in run_benchmark.HISTORY_MINIMUMS, (name, parameter)


def test_robustness_grid_prints_ratios_to_bayes_and_saves_a_heatmap(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    robustness = load_script("robustness")
    robustness.main(
        [
            "--structures", "low_rank", "--alphas", "0.05",
            "--feedback", "best_worst", "bradley_terry",
            "--n-history-users", "20", "40", "--shots", "1", "3",
            "--n-prompts", "80", "--n-history", "12", "--n-test-users", "12",
            "--n-query", "2", "--methods", "UserKNN", "Population", "MetaHead",
            "--meta-max-steps", "3", "--output-dir", str(tmp_path),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    results = pd.read_csv(tmp_path / "robustness.csv")
    assert (tmp_path / "robustness.png").stat().st_size > 0
    # Every method, Bayes included, in every cell of the grid at every support size.
    counts = results.groupby(
        ["structure", "feedback", "n_history_users", "n_support"]
    ).method.apply(sorted)
    assert len(counts) == 2 * 2 * 2
    assert all(m == ["Bayes", "MetaHead", "Population", "UserKNN"] for m in counts)
    # Ratios are to Bayes's gap closed in the same cell; Bayes's own ratio is 1.
    bayes = results[results.method == "Bayes"]
    np.testing.assert_allclose(bayes["ratio"], 1.0)
    np.testing.assert_allclose(
        results["ratio"], results["gap_closed"] / results["bayes_gap_closed"]
    )
    assert np.isfinite(results["gap_closed"]).all()
    # Settings beside the numbers, and a worst cell for each learned method.
    assert "structure=low_rank alpha=0.05 feedback=bradley_terry" in printed
    worst = printed.split("worst cell")[1]
    for method in ["UserKNN", "Population", "MetaHead"]:
        for shots in ["n_support=1 ", "n_support>=3"]:
            assert f"  {method:10s} {shots}" in worst
    assert "max_steps=3" in printed

    # A cell with fewer historical users keeps the first ones and the same test users.
    args = robustness.parse_args(
        ["--n-history-users", "20", "40", "--n-test-users", "12", "--shots", "3",
         "--n-history", "12", "--n-query", "2", "--n-prompts", "80"]
    )  # fmt: skip
    corpus = make_personalllm(80, random_state=0)
    world_oracle, history, test = robustness.world(corpus, 0.05, "best_worst", args)
    assert world_oracle.n_users == 52 and history.oracle.n_users == 40
    oracle, X, y = robustness.cell_data(corpus, world_oracle, history, test, 20)
    assert sorted(X.user_id.unique()) == list(range(32))
    assert oracle.n_users == 32
    assert (X.groupby("user_id").prompt_id.nunique() == [12] * 20 + [5] * 12).all()
    np.testing.assert_array_equal(
        oracle.candidate_rewards([20], [0]), test.oracle.candidate_rewards([0], [0])
    )
    np.testing.assert_array_equal(y[X.user_id.to_numpy() >= 20], test.y)


def test_full_size_ab_compares_two_runs_on_the_same_query_groups(tmp_path, capsys):
    full_size_ab = load_script("full_size_ab")
    small = ["--n-users", "40", "--n-new-users", "12", "--n-prompts", "80",
             "--n-query", "2", "--shots", "1", "3", "--methods", "UserKNN"]  # fmt: skip
    saved = tmp_path / "before.npz"
    full_size_ab.main(small + ["--save", str(saved)])
    before = capsys.readouterr().out
    assert "40 historical users" in before and "UserKNN  random_state=0" in before
    assert sorted(np.load(saved).files) == ["UserKNN/0/1", "UserKNN/0/3"]
    # The same code and seeds: the paired difference is exactly zero.
    full_size_ab.main(small + ["--compare", str(saved)])
    after = capsys.readouterr().out
    assert after.count("(+0.0000 +- 0.0000)") == 2

    # Its gap closed is make_personal_scorer's, on the same predictions.
    from pllm_sk.neighbors import UserKNNRanker

    data = full_size_ab.build_data(full_size_ab.parse_args(small))
    model = UserKNNRanker(random_state=0).fit(data["X_history"], data["y_history"])
    support = (data["support_rank"] >= 0) & (data["support_rank"] < 3)
    model.partial_fit(data["X_new"][support], data["y_new"][support])
    X_query = data["X_new"][data["query"]]
    rewards = full_size_ab.chosen_rewards(
        data["oracle"], X_query, model.predict(X_query)
    )
    scorer = make_personal_scorer(data["oracle"], metric="gap_closed")
    assert full_size_ab.gap_closed(*rewards) == scorer(model, X_query)
    # Each new user's support is their first labeled prompts, query rows have none.
    assert (data["support_rank"][data["query"]] == -1).all()
    assert set(data["support_rank"][~data["query"]]) == {0, 1, 2}


def test_scale_warms_the_process_up_then_times_each_method(capsys):
    scale = load_script("scale")
    scale.main(["--sizes", "1/500", "--tracks", "rewards", "--no-surprise",
                "--methods", "Population", "UserKNN"])  # fmt: skip
    out = capsys.readouterr().out
    warm_up = out.index("warm-up (untimed in the table): PopulationRanker")
    timed = [line for line in out.splitlines() if line.startswith("  rewards  ")]
    assert [line.split()[1] for line in timed] == ["Population", "UserKNN"]
    assert warm_up < out.index(timed[0])
    table = out[out.index("All runs"):out.index("partial_fit: test users")]
    assert table.count("rewards") == 1 and "UserKNN" in table


# ---------------------------------------------------------------- _common.py


def test_every_registered_method_is_built_with_the_seed_given():
    common = load_script("_common")
    corpus = make_personalllm(40, random_state=0)
    oracle, _, _ = common.simulate_world(
        corpus, n_history_users=3, n_test_users=2, alpha=0.05, seed=0, n_history=2
    )
    # What the references and the in-context ranker must be given.
    needs = {"Bayes": dict(alpha=0.05), "Oracle": dict(oracle=oracle),
             "InContext": dict(corpus=corpus)}  # fmt: skip
    for name, (kind, tracks) in common.METHODS.items():
        estimator = common.make_method(name, random_state=3, **needs.get(name, {}))
        assert type(estimator) is kind
        assert set(tracks) <= set(common.TRACKS)
        assert estimator.get_params().get("random_state", 3) == 3
    assert common.make_method("MetaHead", max_steps=7).max_steps == 7


def test_simulate_world_numbers_test_users_after_the_historical_ones():
    common = load_script("_common")
    corpus = make_personalllm(60, random_state=0)
    oracle, history, tests = common.simulate_world(
        corpus, n_history_users=6, n_test_users=4, alpha=0.05, seed=0, n_history=5,
        n_labeled=3, n_query=2, query_splits=("test", "train"),
    )  # fmt: skip
    assert oracle.n_users == 10 and sorted(tests) == ["test", "train"]
    assert sorted(history.X.user_id.unique()) == list(range(6))
    assert not np.isnan(history.y).any()
    for split, test in tests.items():
        assert sorted(test.X.user_id.unique()) == list(range(6, 10))
        np.testing.assert_array_equal(oracle.weights[6:], test.oracle.weights)
        query = test.X[np.isnan(test.y)]
        assert (corpus.split[query.prompt_id] == split).all()
        assert query.groupby("user_id").prompt_id.nunique().tolist() == [2] * 4
        labeled = test.X[~np.isnan(test.y)]
        assert (corpus.split[labeled.prompt_id] == "train").all()
        assert labeled.groupby("user_id").prompt_id.nunique().tolist() == [3] * 4
    X, y = common.stack(history, tests["test"])
    assert len(X) == len(history.X) + len(tests["test"].X) == y.size


def test_gap_closed_of_choice_outcomes_is_the_scorers():
    common = load_script("_common")
    corpus = make_personalllm(60, random_state=0)
    oracle, history, tests = common.simulate_world(
        corpus, n_history_users=2, n_test_users=20, alpha=0.05, seed=0, n_history=2,
        n_query=3,
    )  # fmt: skip
    X = tests["test"].X[np.isnan(tests["test"].y)]
    utility = np.random.RandomState(0).normal(size=len(X))

    class Fixed:
        def predict(self, X):
            return utility

    outcomes = choice_outcomes(oracle, X, utility)
    scorer = make_personal_scorer(oracle, "gap_closed")
    assert common.gap_closed(*common.gap_columns(outcomes)) == scorer(Fixed(), X)


def test_robustness_ratio_errors_resample_whole_users():
    robustness = load_script("robustness")
    # Bayes closes the whole gap in every group; the learned run closes all of
    # user 7's (2 groups) and none of user 8's. Resampled by user, a quarter of the
    # resamples hold user 8 twice (ratio 0), a quarter user 7 twice (ratio 1): the
    # 16-84% spread is [0, 1]. Resampled by group, it would be about [0.25, 0.75].
    bayes = np.array([[1.0, 1.0, 1.0, 1.0], [0.0] * 4, [1.0] * 4])
    learned = bayes.copy()
    learned[0, 2:] = 0.0
    outcomes = {(robustness.REFERENCE, 0): bayes, ("UserKNN", 0): learned}
    users = np.array([7, 7, 8, 8])
    assert robustness.ratio_errors(outcomes, users, seed=0) == {("UserKNN", 0): 0.5}
    # The learned run equal to Bayes: a ratio of 1 in every resample.
    outcomes["UserKNN", 0] = bayes
    assert robustness.ratio_errors(outcomes, users, seed=0) == {("UserKNN", 0): 0.0}


def test_icl_metrics_and_intervals_read_choice_outcomes():
    icl = load_script("icl")
    args = icl.parse_args(
        ["--n-prompts", "60", "--n-history-users", "5", "--n-test-users", "30",
         "--n-history", "4", "--shots", "1", "2"]
    )  # fmt: skip
    corpus, oracle, X, y = icl.build_data(args)
    assert X.user_id.max() == 34 and len(X) == y.size
    query = X[np.isnan(y)]
    assert query.groupby("user_id").prompt_id.nunique().tolist() == [1] * 30
    rng = np.random.RandomState(0)
    true = choice_outcomes(oracle, query, rng.normal(size=len(query)))
    control = choice_outcomes(oracle, query, rng.normal(size=len(query)))
    scores = make_personal_scorer(oracle, ["gap_closed", "top1", "win_rate"])

    class Fixed:
        def __init__(self, outcomes):
            self.chosen = dict(zip(outcomes.user_id, outcomes.response_id))

        def predict(self, X):
            return (X.response_id == X.user_id.map(self.chosen)).to_numpy(float)

    assert icl.metrics(true) == pytest.approx(scores(Fixed(true), query), rel=1e-12)
    intervals = icl.paired_intervals(true, control, 50, 0)
    for metric, (point, low, high) in intervals.items():
        assert point == pytest.approx(icl.metrics(true)[metric] - icl.metrics(control)[metric])
        assert low <= high
    assert all(
        value == 0 for values in icl.paired_intervals(true, true, 20, 0).values()
        for value in values
    )


def test_protocols_script_prints_a_table_per_protocol_with_its_source(tmp_path, capsys):
    protocols = load_script("protocols")
    protocols.main(
        ["--protocols", "lore", "copl", "--max-users", "12", "--max-test", "4",
         "--n-prompts", "1200", "--methods", "PerUser", "--output-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert "=== lore:" in out and "=== copl:" in out
    assert "facebookresearch/LoRe" in out and "ml-postech/CoPL" in out
    results = pd.read_csv(tmp_path / "protocols.csv")
    assert set(results["protocol"]) == {"lore", "copl"}
    lore = results[results["protocol"] == "lore"]
    assert set(lore["group"]) == {"seen", "unseen"}
    oracle = results[(results["method"] == "Oracle") & (results["metric"] == "pairwise_accuracy")]
    assert len(oracle) >= 3 and np.allclose(oracle["value"], 1.0)
    assert np.isfinite(results["value"]).all()
    assert (tmp_path / "protocols.png").is_file()
