"""LowRank's ids-track fit against scikit-surprise ``SVD``, at the main benchmark's size.

The data of ``run_benchmark.py``'s ids track with its defaults: the synthetic
10,402-prompt corpus, 1,000 historical users x 50 best/worst train prompts, 300 test
users with 10 labeled train prompts and one train-split query prompt, alpha 0.05,
seed 0, ``ColdStartSplit(3, n_support=...)`` folds. On every fold, one
``LowRankRanker(item_embeddings=True, random_state=0)`` fit (the benchmark's ids-track
setting) and two scikit-surprise ``SVD(random_state=0)`` fits on the same training
rows (``scale.py``'s ``SurpriseRanker``): items = response slots (a user's mean label
per slot) and items = (prompt, response) ids (every labeled row a rating, the peer
that, like ours, learns a factor per item). Printed per n_support, means over the
folds: fit seconds (wall / this process's CPU), the ratio of ours to each peer's CPU
seconds in the same run, and gap closed (the benchmark's scorer).

    python benchmarks/lowrank_ids.py                       # 12 fits of each, minutes
    python benchmarks/lowrank_ids.py --shots 5 --n-splits 1 --profile
    PYTHONPATH=/path/to/other/checkout python benchmarks/lowrank_ids.py  # its pllm_sk
"""

import argparse
import cProfile
import pstats
import sys
import time

import numpy as np
from _common import make_method, simulate_world, stack
from scale import SurpriseRanker

from pllm_sk.datasets import make_personalllm
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--n-splits", type=int, default=3, help="folds run (of 3)")
    parser.add_argument("--n-history-users", type=int, default=1000)
    parser.add_argument("--n-test-users", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, help="LowRank's max_iter (default: its own)")
    parser.add_argument("--profile", action="store_true", help="cProfile LowRank's fits")
    return parser.parse_args(argv)


def timed_fit(estimator, X, y, profile=None):
    """Fit; the wall and CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    if profile is None:
        estimator.fit(X, y)
    else:
        profile.runcall(estimator.fit, X, y)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    args = parse_args(argv)
    from surprise import SVD

    corpus = make_personalllm(10_402, random_state=args.seed)
    oracle, history, tests = simulate_world(
        corpus, n_history_users=args.n_history_users, n_test_users=args.n_test_users,
        alpha=0.05, seed=args.seed, n_history=50, n_labeled=10, query_splits=["train"],
        feedback="best_worst",
    )
    X, y = stack(history, tests["train"])
    scorer = make_personal_scorer(oracle, "gap_closed")
    profile = cProfile.Profile() if args.profile else None
    print(
        f"ids track, train-split queries: {args.n_history_users} historical x 50 + "
        f"{args.n_test_users} test users, {len(X):,} rows; seed {args.seed}; "
        f"{args.n_splits} of 3 folds per n_support; LowRank max_iter "
        f"{args.max_iter or 'default'}"
    )
    print(
        "n_support  LowRank wall/CPU s  SVD-slot wall/CPU s  SVD-id wall/CPU s  "
        "CPU ratio to slot, id  gap LowRank  SVD-slot  SVD-id"
    )
    for n_support in args.shots:
        cv = ColdStartSplit(3, n_support=n_support, random_state=args.seed)
        rows = []
        for train, test in list(cv.split(X, y))[: args.n_splits]:
            ours = make_method("LowRank", item_embeddings=True)
            if args.max_iter:
                ours.set_params(max_iter=args.max_iter)
            peers = [SurpriseRanker(SVD(random_state=0), items) for items in ("slot", "id")]
            X_train, y_train, X_test = X.iloc[train], y[train], X.iloc[test]
            row = timed_fit(ours, X_train, y_train, profile)
            for peer in peers:
                row += timed_fit(peer, X_train, y_train)
            rows.append(row + tuple(scorer(model, X_test) for model in [ours] + peers))
        wall, cpu, slot_wall, slot_cpu, id_wall, id_cpu, gap, slot_gap, id_gap = np.mean(
            rows, axis=0
        )
        print(
            f"{n_support:9d}  {wall:8.2f} / {cpu:6.2f}  {slot_wall:8.2f} / {slot_cpu:6.2f}"
            f"  {id_wall:7.2f} / {id_cpu:6.2f}  {cpu / slot_cpu:10.1f}, "
            f"{cpu / id_cpu:4.1f}  {gap:+11.3f}  {slot_gap:+8.3f}  {id_gap:+6.3f}  "
            f"(n_iter {ours.n_iter_})",
            flush=True,
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    sys.exit(main())
