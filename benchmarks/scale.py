"""Fit and predict time and peak memory of the learning-across-users methods at scale.

At the paper's full size (10,000 historical users x 50 train prompts x all 8 candidate
rows, best/worst feedback, and 1,000 test users with ``--n-support`` labeled train
prompts and one query prompt from the test split) and at 1/4 and 1/16 of it (users
scaled, the 10,402-prompt corpus kept), every method is fitted on the training fold of
one ``ColdStartSplit`` (all test users in the fold) and predicts the test users'
query rows. Before each method the process's peak resident memory is reset (Linux
``/proc/self/clear_refs``), so the peak reported (the process's, data included, and
the part the method added) is that method's own. System seconds are mostly page
faults of memory new to the process. On the 2-core VM these were measured on, NumPy's
large arrays ask for transparent huge pages, and a process's first huge-page faults
stall in compaction: at full size the first fit in a process takes about 1 s more,
nearly all of it system time, whichever method it is (with
``NUMPY_MADVISE_HUGEPAGE=0`` the first fit stalls less and every later one is
slower). So before the timed fits of each size, one untimed PopulationRanker fit
warms the process up, and every timed fit finds it in the same state; the warm-up's
own time (a cold first fit) is printed.

Printed per size, track and method: fit seconds (the feature step included; the
training fold is taken from ``X`` before the clock starts, as the query fold is
before predict's), the fit's CPU seconds (every thread; on a machine shared with
other jobs, steadier than the wall time) and the system CPU seconds among them
(page faults), predict seconds, peak
memory, gap closed, and for our methods the gap closed when the test users are
added by ``partial_fit`` to a model fitted on the historical users only.
Side by side on the ids track: scikit-surprise ``SVD`` and ``KNNBasic`` (labels as
ratings), both with items = (prompt, response) ids (the classic mapping: a query
prompt's candidates are items no one rated, so surprise falls back to a constant)
and with items = response slots (each user's mean label per slot, so every candidate
is a known item), and the ratio of ours to the best of them.

    python benchmarks/scale.py                      # all three sizes, 20-30 min on 2 cores
    python benchmarks/scale.py --sizes 0.0625       # the smallest size only
"""

import argparse
import copy
import gc
import os
import sys
import time
from fractions import Fraction

import numpy as np
import pandas as pd
from _common import feature_steps, make_method, simulate_world, stack
from sklearn.base import BaseEstimator
from sklearn.pipeline import make_pipeline

from pllm_sk.datasets import make_personalllm
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer

FULL = dict(n_history_users=10_000, n_test_users=1_000)
OURS = ("UserKNN", "LowRank", "MetaHead")
# References in the same run: the zero-shot floor and each user on their own.
REFERENCES = ("Population", "PerUser")
TRACKS = ("rewards", "ids")


class SurpriseRanker(BaseEstimator):
    """A scikit-surprise algorithm behind ``fit(X, y)`` / ``predict(X)``: labels as ratings.

    ``items="id"``: an item is a (prompt_id, response_id), rated by its label.
    ``items="slot"``: an item is a response slot, rated by the user's mean label for
    it (one rating per user and slot).
    """

    def __init__(self, algorithm, items):
        self.algorithm = algorithm
        self.items = items

    def _item(self, X):
        if self.items == "slot":
            return X["response_id"].to_numpy()
        return X["prompt_id"].to_numpy() * 100 + X["response_id"].to_numpy()

    def fit(self, X, y):
        from surprise import Dataset, Reader

        labeled = ~np.isnan(y)
        ratings = pd.DataFrame(
            {"user": X["user_id"].to_numpy()[labeled], "item": self._item(X)[labeled],
             "rating": y[labeled]}
        )
        if self.items == "slot":
            ratings = ratings.groupby(["user", "item"], as_index=False)["rating"].mean()
        reader = Reader(rating_scale=(float(y[labeled].min()), float(y[labeled].max())))
        trainset = Dataset.load_from_df(ratings, reader).build_full_trainset()
        self.algorithm_ = copy.deepcopy(self.algorithm).fit(trainset)
        return self

    def predict(self, X):
        users, items = X["user_id"].to_numpy(), self._item(X)
        return np.array(
            [self.algorithm_.predict(u, i).est for u, i in zip(users.tolist(), items.tolist())]
        )


def surprise_methods():
    from surprise import SVD, KNNBasic

    return {
        f"surprise {name} ({items})": (
            lambda make=make, items=items: SurpriseRanker(make(), items)
        )
        for name, make in [
            ("SVD", lambda: SVD(random_state=0)),
            ("KNNBasic", lambda: KNNBasic(verbose=False)),
        ]
        for items in ("id", "slot")
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1/16", "1/4", "1"])
    parser.add_argument("--n-support", type=int, default=5)
    parser.add_argument("--feedback", default="best_worst")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--tracks", nargs="+", default=list(TRACKS), choices=TRACKS)
    parser.add_argument("--no-surprise", action="store_true")
    parser.add_argument(
        "--methods", nargs="+", help="run only these (default: every method)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_data(corpus, size, args):
    n_history = round(FULL["n_history_users"] * size)
    n_test = round(FULL["n_test_users"] * size)
    oracle, history, tests = simulate_world(
        corpus, n_history_users=n_history, n_test_users=n_test, alpha=args.alpha,
        seed=args.seed, n_labeled=args.n_support, feedback=args.feedback,
    )
    X, y = stack(history, tests["test"])
    cv = ColdStartSplit(n_splits=1, test_size=n_test, n_support=args.n_support,
                        random_state=args.seed)
    train, query = next(cv.split(X, y))
    is_test_user = (X["user_id"].to_numpy() >= n_history)[train]
    return dict(
        X=X, y=y, train=train, query=query,
        history=train[~is_test_user], support=train[is_test_user],
        oracle=oracle, n_history=n_history, n_test=n_test,
    )


def memory_gb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak_memory():
    """Start a new peak of resident memory (Linux); returns the resident memory now."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass  # the peak then counts from the start of the process
    return memory_gb("VmRSS")


def warm_up(corpus, data):
    """An untimed PopulationRanker fit (rewards track); its wall and system seconds.

    A process's first large allocations stall in the kernel, whichever fit makes
    them: after this one, each timed fit finds the process in the same state.
    """
    estimator = make_pipeline(*feature_steps("rewards", corpus), make_method("Population"))
    start, start_sys = time.perf_counter(), os.times().system
    estimator.fit(data["X"].iloc[data["train"]], data["y"][data["train"]])
    return time.perf_counter() - start, os.times().system - start_sys


def run_method(corpus, data, track, make, partial):
    """Fit, predict, score; optionally the partial_fit variant."""
    X, y = data["X"], data["y"]
    scorer = make_personal_scorer(data["oracle"], metric="gap_closed")
    estimator = make_pipeline(*feature_steps(track, corpus), make())
    # The folds are taken before the clocks start: the fit time is the pipeline's.
    X_train, y_train = X.iloc[data["train"]], y[data["train"]]
    X_query = X.iloc[data["query"]]
    start_gb = reset_peak_memory()
    start, start_cpu, start_sys = time.perf_counter(), time.process_time(), os.times().system
    estimator.fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    fit_cpu_s = time.process_time() - start_cpu
    fit_sys_s = os.times().system - start_sys
    del X_train, y_train
    start = time.perf_counter()
    estimator.predict(X_query)
    predict_s = time.perf_counter() - start
    row = dict(
        fit_s=fit_s, fit_cpu_s=fit_cpu_s, fit_sys_s=fit_sys_s, predict_s=predict_s,
        peak_gb=memory_gb("VmHWM"), added_gb=memory_gb("VmHWM") - start_gb,
        gap=scorer(estimator, X_query),
    )
    if partial:
        estimator = make_pipeline(*feature_steps(track, corpus), make())
        estimator.fit(X.iloc[data["history"]], y[data["history"]])
        support = X.iloc[data["support"]]
        for step in estimator[:-1]:
            support = step.transform(support)
        start = time.perf_counter()
        estimator[-1].partial_fit(support, y[data["support"]])
        row["partial_fit_s"] = time.perf_counter() - start
        row["gap_partial_fit"] = scorer(estimator, X_query)
    return row


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    corpus = make_personalllm(random_state=args.seed)
    methods = {
        name: (lambda name=name: make_method(name), name in OURS)
        for name in REFERENCES + OURS
    }
    if not args.no_surprise:
        methods.update({name: (make, False) for name, make in surprise_methods().items()})
    if args.methods:
        methods = {name: methods[name] for name in args.methods}
    print(
        f"Corpus: {corpus.name} ({corpus.n_prompts} prompts x {corpus.n_responses} "
        f"responses); users alpha={args.alpha}; feedback={args.feedback}; historical "
        f"users x 50 train prompts, test users x {args.n_support} support prompts + 1 "
        f"test-split query prompt; one ColdStartSplit fold; seed={args.seed}; "
        f"{os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at the start.",
        flush=True,
    )
    rows = []
    for size_text in args.sizes:
        size = float(Fraction(size_text))
        data = build_data(corpus, size, args)
        print(
            f"\nSize {size_text}: {data['n_history']:,} historical + {data['n_test']:,} "
            f"test users; {len(data['train']):,} training rows, {len(data['query']):,} "
            "query rows.",
            flush=True,
        )
        wall_s, sys_s = warm_up(corpus, data)
        print(
            f"  warm-up (untimed in the table): PopulationRanker, the first fit in "
            f"this process at this size, {wall_s:.1f} s (system {sys_s:.1f} s)",
            flush=True,
        )
        for track in args.tracks:
            for name, (make, partial) in methods.items():
                if name.startswith("surprise") and track != "ids":
                    continue
                row = dict(size=size_text, track=track, method=name)
                row.update(run_method(corpus, data, track, make, partial))
                rows.append(row)
                row["load"] = os.getloadavg()[0]
                print(
                    f"  {track:8s} {name:28s} fit {row['fit_s']:6.1f} s (CPU "
                    f"{row['fit_cpu_s']:4.1f} s, system {row['fit_sys_s']:4.1f} s)  predict "
                    f"{row['predict_s']:5.2f} s  peak {row['peak_gb']:.2f} GB "
                    f"(+{row['added_gb']:.2f})  gap_closed {row['gap']:+.3f}  "
                    f"load {row['load']:.1f}"
                    + (
                        f"  partial_fit gap {row['gap_partial_fit']:+.3f}"
                        if "gap_partial_fit" in row else ""
                    ),
                    flush=True,
                )
    report(pd.DataFrame(rows))
    print(f"\nDone in {time.perf_counter() - start:.0f} s.")


def report(results):
    columns = ["fit_s", "fit_cpu_s", "fit_sys_s", "predict_s", "peak_gb", "added_gb", "gap", "load"]
    if "gap_partial_fit" in results:
        columns += ["gap_partial_fit"]
    print(
        "\nAll runs (fit_cpu_s: CPU seconds of the fit, every thread, user and system; "
        "fit_sys_s: the system CPU seconds among them, mostly page faults of "
        "memory new to the process; peak_gb: the process, data included; added_gb: by "
        "the method; load: the machine's 1-minute load average after the run)"
    )
    print(
        results.set_index(["size", "track", "method"])[columns].to_string(
            float_format=lambda v: f"{v:.3f}"
        )
    )
    if "gap_partial_fit" in results:
        print("\npartial_fit: test users added to a model fitted on the historical users")
        for _, row in results.dropna(subset=["gap_partial_fit"]).iterrows():
            print(
                f"  size {row['size']:5s} {row['track']:8s} {row['method']:8s} gap "
                f"{row['gap_partial_fit']:+.3f} vs {row['gap']:+.3f} for the full fit: "
                f"difference {row['gap_partial_fit'] - row['gap']:+.3f}"
            )
    ids = results[results["track"] == "ids"]
    peers = ids[ids["method"].str.startswith("surprise")]
    if peers.empty:
        return
    print("\nIds track, ours against the best scikit-surprise peer of each size")
    for size, table in ids.groupby("size", sort=False):
        peer = table[table["method"].str.startswith("surprise")]
        best = peer.loc[peer["gap"].idxmax()]
        fastest = peer["fit_s"].min()
        ours_rows = table[table["method"].isin(OURS)]
        for _, ours in ours_rows.iterrows():
            print(
                f"  size {size:5s} {ours['method']:8s} gap {ours['gap']:+.3f} vs "
                f"{best['gap']:+.3f} ({best['method']}): difference "
                f"{ours['gap'] - best['gap']:+.3f}; fit {ours['fit_s']:.1f} s vs the "
                f"fastest peer's {fastest:.1f} s (ratio {ours['fit_s'] / fastest:.2f})"
            )


if __name__ == "__main__":
    sys.exit(main())
