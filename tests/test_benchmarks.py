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


@pytest.mark.parametrize("query_split", ["test", "train"])
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
    assert f"({query_split} split)" in printed
    results = pd.read_csv(tmp_path / "benchmark.csv")
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
