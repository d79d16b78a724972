"""The cold-start personalization benchmark: every registered method, every track.

Builds a corpus (the synthetic PersonalLLM corpus by default), samples users
(Dirichlet, alpha 0.05), simulates their feedback (historical users with 50 labeled
train prompts each; test users with a few labeled train prompts and one unlabeled
query prompt from the test split), and evaluates each method with
``cross_validate`` + ``ColdStartSplit`` + the personal scorers at several support
sizes. Prints one table per track with the settings used, writes a CSV, and saves a
plot of gap closed against the number of support prompts.

Adding a method is one entry in ``METHODS``.

    python benchmarks/run_benchmark.py              # defaults: a few minutes on 2 cores
    python benchmarks/run_benchmark.py --full       # the paper's sizes
    python benchmarks/run_benchmark.py --data personalllm --data-files train.parquet test.parquet
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import BayesRanker, OracleRanker, PerUserRanker, PopulationRanker
from pllm_sk.datasets import load_personalllm, make_personalllm
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import METRICS, ColdStartSplit, make_personal_scorer
from pllm_sk.simulation import PreferenceOracle, sample_users, simulate_feedback

# name -> (tracks the method supports, factory(context) -> unfitted estimator).
# A factory gets the corpus and the oracle; only reference methods may use the oracle.
METHODS = {
    "Population": (("rewards", "ids"), lambda ctx: PopulationRanker()),
    "PerUser": (("rewards", "ids"), lambda ctx: PerUserRanker()),
    "Bayes": (
        ("rewards",),
        lambda ctx: BayesRanker(alpha=ctx["alpha"], random_state=0),
    ),
    "Oracle": (("rewards",), lambda ctx: OracleRanker(ctx["oracle"])),
}

# Feature steps of each track, placed before the method in a Pipeline.
TRACKS = {
    "rewards": lambda ctx: [RewardFeatures(ctx["corpus"])],
    "ids": lambda ctx: [],
}

DEFAULTS = dict(n_history_users=1000, n_test_users=300, n_prompts=10_402)
FULL = dict(n_history_users=10_000, n_test_users=1000, n_prompts=10_402)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", choices=["synthetic", "personalllm"], default="synthetic"
    )
    parser.add_argument(
        "--data-files", nargs="*", help="local PersonalLLM parquet files"
    )
    parser.add_argument("--full", action="store_true", help="the paper's sizes")
    parser.add_argument("--n-history-users", type=int)
    parser.add_argument("--n-test-users", type=int)
    parser.add_argument("--n-prompts", type=int, help="synthetic corpus size")
    parser.add_argument(
        "--n-history", type=int, default=50, help="prompts per historical user"
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--feedback", default="best_worst")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--n-splits", type=int, default=3)
    parser.add_argument(
        "--tracks", nargs="+", default=list(TRACKS), choices=list(TRACKS)
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="results")
    args = parser.parse_args(argv)
    for key, value in (FULL if args.full else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def build_data(args):
    """Corpus, oracle and one (X, y) holding historical and test users."""
    if args.data == "synthetic":
        corpus = make_personalllm(args.n_prompts, random_state=args.seed)
    else:
        corpus = load_personalllm(data_files=args.data_files)
    n_users = args.n_history_users + args.n_test_users
    weights = sample_users(n_users, alpha=args.alpha, random_state=args.seed)
    history = simulate_feedback(
        corpus,
        weights[: args.n_history_users],
        n_history=args.n_history,
        n_query=0,
        feedback=args.feedback,
        random_state=args.seed,
    )
    # Test users label just enough prompts for the largest support set, and bring
    # one query prompt from the test split.
    test = simulate_feedback(
        corpus,
        weights[args.n_history_users :],
        n_history=max(args.shots),
        n_query=1,
        feedback=args.feedback,
        random_state=args.seed + 1,
    )
    test.X["user_id"] += args.n_history_users
    X = pd.concat([history.X, test.X], ignore_index=True)
    y = np.concatenate([history.y, test.y])
    return corpus, PreferenceOracle(corpus, weights), X, y


def evaluate(args, corpus, oracle, X, y):
    context = dict(corpus=corpus, oracle=oracle, alpha=args.alpha)
    scorer = make_personal_scorer(oracle, metric=METRICS)
    rows = []
    for track in args.tracks:
        for name in args.methods:
            tracks, factory = METHODS[name]
            if track not in tracks:
                continue
            estimator = make_pipeline(*TRACKS[track](context), factory(context))
            for n_support in args.shots:
                cv = ColdStartSplit(
                    args.n_splits, n_support=n_support, random_state=args.seed
                )
                start = time.perf_counter()
                result = cross_validate(estimator, X, y, cv=cv, scoring=scorer)
                row = dict(track=track, method=name, n_support=n_support)
                row.update({m: result[f"test_{m}"].mean() for m in METRICS})
                row["fit_s"] = result["fit_time"].mean()
                row["predict_s"] = result["score_time"].mean()
                rows.append(row)
                print(
                    f"  {track:8s} {name:12s} n_support={n_support:<3d} "
                    f"gap_closed={row['gap_closed']:+.3f} "
                    f"({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
    return pd.DataFrame(rows)


def report(args, corpus, results, settings):
    print("\n" + settings)
    columns = [
        "reward",
        "gap_closed",
        "top1",
        "win_rate",
        "pairwise_accuracy",
        "fit_s",
        "predict_s",
    ]
    for track, table in results.groupby("track", sort=False):
        print(f"\nTrack: {track}  (mean over {args.n_splits} folds of test users)")
        table = table.set_index(["method", "n_support"])[columns]
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))


def plot(args, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = list(dict.fromkeys(results["track"]))
    fig, axes = plt.subplots(
        1, len(tracks), figsize=(5 * len(tracks), 4), squeeze=False
    )
    for ax, track in zip(axes[0], tracks):
        for method, table in results[results["track"] == track].groupby(
            "method", sort=False
        ):
            ax.plot(table["n_support"], table["gap_closed"], marker="o", label=method)
        ax.set(
            title=f"track: {track}",
            xlabel="support prompts (n_support)",
            ylabel="gap closed (0 = zero-shot, 1 = oracle)",
            xticks=args.shots,
        )
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend()
    fig.suptitle(
        f"Cold start, {args.data} corpus, {args.feedback} feedback, alpha={args.alpha}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    corpus, oracle, X, y = build_data(args)
    settings = (
        f"Settings: corpus={corpus.name} ({corpus.n_prompts} prompts, "
        f"{corpus.n_responses} responses, {corpus.n_reward_models} reward models); "
        f"users alpha={args.alpha}: {args.n_history_users} historical x "
        f"{args.n_history} prompts, {args.n_test_users} test users x 1 query prompt; "
        f"feedback={args.feedback}; ColdStartSplit(n_splits={args.n_splits}, "
        f"support=random); n_support={args.shots}; seed={args.seed}; "
        f"{len(X):,} rows"
    )
    print(settings, flush=True)
    results = evaluate(args, corpus, oracle, X, y)
    report(args, corpus, results, settings)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results.to_csv(output / "benchmark.csv", index=False)
    plot(args, results, output / "benchmark.png")
    print(
        f"\nWrote {output / 'benchmark.csv'} and {output / 'benchmark.png'} "
        f"in {time.perf_counter() - start:.0f} s."
    )


if __name__ == "__main__":
    sys.exit(main())
