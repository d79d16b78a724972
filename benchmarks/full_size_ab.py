"""Fit time and few-shot quality at full size, kept for a before/after comparison.

The speed goals of issue 12 ask for shorter fits "with the same results", and on a
shared 2-core machine one fit time says little on its own. This script measures both
on one setting, and saves what a paired comparison between two versions of the code
needs. Each method is fitted (``random_state`` from ``--seeds``) on ``--n-users``
historical users, alpha ``--alpha``, x 50 best/worst train prompts, on the reward
features of the 10,402-prompt synthetic corpus. Then ``--n-new-users`` new users,
with their own Dirichlet draws, reveal 1, 3, 5 or 10 train prompts through
``partial_fit`` on a copy of the fitted model. Each ranks the candidates of
``--n-query`` test-split query prompts.

Printed per method and seed:
- fit seconds, with the system seconds among them (mostly page faults of memory new
  to the process, which vary a lot on a VM);
- the optimizer steps, where the method has them;
- the gap closed at each support size (as ``make_personal_scorer``'s ``gap_closed``).

``--save`` keeps the reward of each query group's chosen candidate. ``--compare``
takes such a file from an earlier run and prints the paired difference of gap closed
(this run minus that one), with its bootstrap standard error over the query groups.
Run the old code with ``PYTHONPATH`` pointing at its checkout:

    PYTHONPATH=/path/to/old python benchmarks/full_size_ab.py --save old.npz
    python benchmarks/full_size_ab.py --compare old.npz
"""

import argparse
import copy
import os
import time

import numpy as np
from _common import gap_closed, gap_columns, make_method, synthetic_world

from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import choice_outcomes
from pllm_sk.simulation import paired_bootstrap

METHODS = ("UserKNN", "LowRank", "MetaHead")
N_BOOTSTRAP = 1000


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["LowRank", "MetaHead"],
                        choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="random_state of the methods")
    parser.add_argument("--n-users", type=int, default=10_000)
    parser.add_argument("--n-new-users", type=int, default=2_000)
    parser.add_argument("--n-query", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--n-prompts", type=int, default=10_402)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0, help="seed of the data")
    parser.add_argument("--save", help="write the chosen candidates' rewards here (.npz)")
    parser.add_argument("--compare", help="an earlier --save file to compare with")
    return parser.parse_args(argv)


def build_data(args):
    """Historical rows, the new users' support and query rows (features), the oracle."""
    corpus, oracle, history, tests = synthetic_world(
        args,
        args.n_users,
        args.n_new_users,
        args.alpha,
        n_labeled=max(args.shots),
        n_query=args.n_query,
    )
    new = tests["test"]
    features = RewardFeatures(corpus)
    X_history = features.fit_transform(history.X)
    X_new = features.transform(new.X)
    labeled = ~np.isnan(new.y)
    # Each new user's labeled prompts in the order given: the first n are its support.
    groups = new.X.loc[labeled, ["user_id", "prompt_id"]].drop_duplicates()
    groups["rank"] = groups.groupby("user_id").cumcount()
    rank = new.X[["user_id", "prompt_id"]].merge(groups, how="left")["rank"]
    return dict(
        X_history=X_history, y_history=history.y, X_new=X_new, y_new=new.y,
        support_rank=rank.fillna(-1).to_numpy(), query=~labeled, oracle=oracle,
    )


def chosen_rewards(oracle, X, utility):
    """Per query group (user, prompt), sorted: the true rewards of the chosen
    candidate, the zero-shot one and the best one, shape (3, n_groups)."""
    return gap_columns(choice_outcomes(oracle, X, utility, reference_model=None))


def paired_difference(new, old, rng):
    """Gap closed of ``new`` minus ``old`` (same groups) and its bootstrap SE."""
    gain, gap = new[0] - old[0], new[2] - new[1]
    result = paired_bootstrap(
        gain, gap, statistic=lambda gain, gap: gain.mean() / gap.mean(),
        n_resamples=N_BOOTSTRAP, random_state=rng,
    )  # fmt: skip
    return result.mean, result.std


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    data = build_data(args)
    print(
        f"{args.n_users:,} historical users x 50 best/worst train prompts, "
        f"{args.n_new_users:,} new users x {args.n_query} test-split queries, "
        f"alpha={args.alpha}, {args.n_prompts:,} prompts, data seed {args.seed}; "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}.",
        flush=True,
    )
    saved = dict(np.load(args.compare)) if args.compare else {}
    results, rng = {}, np.random.default_rng(0)
    X_query = data["X_new"][data["query"]]
    for name in args.methods:
        for seed in args.seeds:
            estimator = make_method(name, random_state=seed)
            begin, begin_sys = time.perf_counter(), os.times().system
            estimator.fit(data["X_history"], data["y_history"])
            fit_s, sys_s = time.perf_counter() - begin, os.times().system - begin_sys
            steps = getattr(estimator, "n_steps_", None)
            line = [f"{name:8s} random_state={seed}  fit {fit_s:6.1f} s "
                    f"(system {sys_s:4.1f} s)" + (f", {steps} steps" if steps else "")]
            for n in args.shots:
                adapted = copy.deepcopy(estimator)
                support = (data["support_rank"] >= 0) & (data["support_rank"] < n)
                adapted.partial_fit(data["X_new"][support], data["y_new"][support])
                key = f"{name}/{seed}/{n}"
                results[key] = chosen_rewards(
                    data["oracle"], X_query, np.asarray(adapted.predict(X_query))
                )
                text = f"n={n}: {gap_closed(*results[key]):.4f}"
                if key in saved:
                    difference, se = paired_difference(results[key], saved[key], rng)
                    text += f" ({difference:+.4f} +- {se:.4f})"
                line.append(text)
            print("  " + "  ".join(line), flush=True)
    if args.compare:
        print(f"In brackets: gap closed minus that of {args.compare} on the same query "
              "groups, +- its bootstrap standard error.")
    if args.save:
        np.savez(args.save, **results)
        print(f"Wrote {args.save}.")
    print(f"Done in {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
