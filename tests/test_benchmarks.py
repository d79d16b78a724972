"""The benchmark runner, end to end on a tiny synthetic problem."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            "--output-dir", str(tmp_path),
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
    corpus = robustness.make_personalllm(80, random_state=0)
    weights, history, test = robustness.simulate_world(corpus, 0.05, "best_worst", args)
    oracle, X, y = robustness.cell_data(corpus, weights, history, test, 20)
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
    from pllm_sk.model_selection import make_personal_scorer
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
    assert full_size_ab.gap_closed(rewards) == pytest.approx(scorer(model, X_query))
    # Each new user's support is their first labeled prompts, query rows have none.
    assert (data["support_rank"][data["query"]] == -1).all()
    assert set(data["support_rank"][~data["query"]]) == {0, 1, 2}
