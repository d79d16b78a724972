"""The cold-start personalization benchmark: every registered method, every track.

Builds a corpus (the synthetic PersonalLLM corpus by default), samples users
(Dirichlet, alpha 0.05), simulates their feedback (historical users with 50 labeled
train prompts each; test users with a few labeled train prompts and one unlabeled
query prompt from the test split), and evaluates each method with
``cross_validate`` + ``ColdStartSplit`` + the personal scorers at several support
sizes. Prints one table per track with the settings used, writes a CSV (one row per
track, method and support size: its scores, then the run's settings, the same in every
row), and saves a plot of gap closed against the number of support prompts.

UserKNN takes its neighbours, and LowRank its prior, from users with at least
``min_neighbor_prompts`` and ``min_prior_prompts`` (10) labeled prompts: a run of
either with a smaller ``--n-history`` is refused before any data is built.

Adding a method is one entry in ``METHODS`` of ``_common.py`` (with its settings
here in ``SETTINGS`` if it needs any).

The folds run on loky's workers, one per core, by default (``--backend none`` runs
them in this process): every fold of every row (track, method, support size) is one
task (``cross_validate`` on that fold) of a single joblib call, so no worker waits
for another at the end of a method. A worker computes with one thread (joblib's
limit), so torch's sums in ``MetaRewardHead`` round differently from a sequential
run's two threads, and its figures differ from that run's by up to 0.02 in gap
closed (measured); every other method's are the same.

Tracks: ``rewards`` and ``ids`` run by default. ``embeddings`` (MiniLM text
embeddings, no reward scores) and ``distilled`` (the 10 reward scores predicted from
the prompt and response embeddings by a ``RewardDistiller`` fitted on each training
fold) are opt-in with ``--tracks``, as is
``--support nearest`` (each test user's support prompts are those nearest the query
prompt by prompt embedding, the paper's setting 1). Before the folds run, the texts
the run uses (the prompts and responses of the rows of X, nothing else) are embedded
once through the on-disk feature cache (``~/.cache/pllm_sk``, or
``$PLLM_SK_CACHE_DIR``, or ``--cache-dir``); later runs read them back in seconds.
They are opt-in because a cold embedding of the default 10,402-prompt corpus (about
94k texts, 10M tokens) takes an hour or more on 2 CPU cores (minutes on a GPU): on a
CPU, give them a smaller corpus, ``--n-prompts 1000`` (10-15 minutes cold).
The embeddings track embeds the responses only by default (``--embedding-parts``):
a prompt's embedding is the same for all its candidates, so it cancels in every
within-prompt comparison that the linear methods make; each part is reduced to
``--n-components`` (32) by a PCA fitted within prompts on the training fold, which
keeps ``PerUser``'s per-user Newton solves (cubic in the features) affordable. (8
components left every method at chance on the synthetic corpus: top-1 0.10-0.15
of 8 candidates; 32 give 0.17-0.22 at n_support=3.)

Query prompts. On the feature tracks the test users' query prompts come from the
test split, which no one labeled: the paper's setting. On the ``ids`` track, by
default, they come from the train-split prompts that historical users label
(labelled "ids (train-split queries)" in the table and the plot): then other
users' labels on the very (prompt, response) ids being ranked exist, which is what
collaborative filtering on ids can use. With test-split queries the response slot
is all an ids-only method knows about a candidate, and every method ties or trails
the population by construction. ``--query-split test`` runs every track on
test-split queries (the paper's setting throughout), ``--query-split train`` every
track on train-split queries; ``auto`` (the default) is the split per track above.

    python benchmarks/run_benchmark.py              # defaults: about 3 minutes on 2 cores
    python benchmarks/run_benchmark.py --backend none       # sequentially, in this process
    python benchmarks/run_benchmark.py --query-split test   # the paper's setting
    python benchmarks/run_benchmark.py --full       # the paper's sizes
    python benchmarks/run_benchmark.py --n-prompts 1000 \
        --tracks rewards ids embeddings distilled --support nearest
    python benchmarks/run_benchmark.py --data personalllm --data-files train.parquet test.parquet
    python benchmarks/run_benchmark.py --backend dask       # a local 2-worker cluster
    python benchmarks/run_benchmark.py --backend dask --scheduler tcp://host:8786
    python benchmarks/run_benchmark.py --backend ray --scheduler auto
"""

import argparse
import functools
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import METHODS as REGISTRY
from _common import TRACKS, feature_steps, make_method, simulate_world, stack
from joblib import Parallel, delayed
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline

from pllm_sk.datasets import load_personalllm, make_personalllm
from pllm_sk.features import FeatureCache, RewardDistiller, TextEmbedder
from pllm_sk.model_selection import METRICS, ColdStartSplit, make_personal_scorer
from pllm_sk.runtime import BACKENDS, joblib_backend

# Each method's settings beyond random_state=0, from the context of a run: the
# track, the corpus, and for the references the world's alpha and oracle.
SETTINGS = {
    # Free item embeddings only where the candidates ranked have other users' labels
    # (the ids track with --query-split train); elsewhere they cost fit time only.
    # There they cost about 5 s per fit (75k items) of the default run.
    "LowRank": lambda ctx: dict(item_embeddings=ctx["seen_items"]),
    # On the embeddings track the head learns its item representation: an MLP
    # tower from the PCA columns to 10 dimensions (the identity tower ranked last
    # there; this one had the best gap closed at every n_support, --n-prompts 1000).
    "MetaHead": lambda ctx: dict(hidden_layer_sizes=(64,), n_components=10)
    if ctx["track"] == "embeddings"
    else {},
    "Bayes": lambda ctx: dict(alpha=ctx["alpha"]),
    "Oracle": lambda ctx: dict(oracle=ctx["oracle"]),
    # Opt-in: SmolLM2-135M on a CPU takes seconds per query (benchmarks/icl.py).
    "InContext": lambda ctx: dict(
        corpus=ctx["corpus"], max_example_tokens=32, max_response_tokens=32, verbose=0
    ),
}


def build_method(name, context):
    """The unfitted ranker ``name`` with its :data:`SETTINGS` in this ``context``."""
    settings = SETTINGS[name](context) if name in SETTINGS else {}
    return make_method(name, **settings)


# name -> (tracks it runs on, factory(context) -> unfitted ranker): the shared
# registry of _common.py with this runner's settings.
METHODS = {
    name: (tracks, functools.partial(build_method, name))
    for name, (_, tracks) in REGISTRY.items()
}
# Methods that run without --methods: all four families but the in-context LLM
# ranker, which on a CPU takes seconds per query (its command is printed at the end).
DEFAULT_METHODS = [name for name in METHODS if name != "InContext"]
# Tracks a default method is left out of: on the ids track the meta-learned head
# stays at the population's level (gap closed -1.77 to -1.90 against -1.85, 1 to 10
# prompts, default run), at a minute of fits; --methods ... MetaHead runs it there.
DEFAULT_SKIPPED_TRACKS = {"MetaHead": ("ids",)}
# The one command that adds the in-context ranker, sized for a CPU.
IN_CONTEXT_COMMAND = (
    "python benchmarks/run_benchmark.py --tracks ids --n-test-users 60 --shots 1 3 "
    "--methods Population UserKNN InContext"
)
# Tracks that run without --tracks; the embedding tracks are opt-in (see above).
DEFAULT_TRACKS = ["rewards", "ids"]
EMBEDDING_TRACKS = ("embeddings", "distilled")

# Where --query-split auto draws each track's query prompts: train-split prompts
# (which historical users label) on the ids track, the test split elsewhere.
AUTO_QUERY_SPLIT = {"ids": "train"}

# Parameters of a method that set how many labeled prompts a user needs to take part
# in what the method learns from historical users: UserKNN's neighbours, LowRank's
# prior. --n-history must reach each one's value (read from the estimator built).
HISTORY_MINIMUMS = ("min_neighbor_prompts", "min_prior_prompts")

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
    parser.add_argument("--n-history", type=int, default=50, help=n_history_help())
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--feedback", default="best_worst")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--n-splits", type=int, default=3)
    parser.add_argument(
        "--tracks", nargs="+", default=DEFAULT_TRACKS, choices=TRACKS
    )
    parser.add_argument(
        "--support",
        choices=["random", "nearest"],
        default="random",
        help="support prompts: random (setting 2) or nearest the query (setting 1)",
    )
    add_embedding_arguments(parser)
    parser.add_argument(
        "--query-split",
        choices=["auto", "test", "train"],
        default="auto",
        help="where test users' query prompts come from: test (no one labeled them, "
        "the paper's setting), train (historical users may have labeled them), or "
        "auto: train on the ids track (where collaborative filtering needs other "
        "users' labels on the ranked ids), test on the others",
    )
    parser.add_argument("--cache-dir", help="feature cache folder")
    parser.add_argument(
        "--methods", nargs="+", default=None, choices=list(METHODS),
        help="default: all but InContext (MetaHead on the rewards track only)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="results")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.backend == "none":
        args.backend = None
    for key, value in (FULL if args.full else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    check_n_history(parser, args)
    return args


def n_history_help():
    """The help of ``--n-history``, with each method's minimum (:data:`HISTORY_MINIMUMS`)."""
    minimums = ", ".join(
        f"{value} for {name} ({parameter})"
        for name, parameter, value in history_minimums(list(METHODS))
    )
    return (
        "labeled prompts per historical user (default 50); at least "
        f"{minimums} when those methods run"
    )


def history_minimums(names, track=None, args=None):
    """``(method, parameter, value)`` of each :data:`HISTORY_MINIMUMS` parameter.

    The values are ``get_params()`` of the ranker that :data:`METHODS` builds for
    each of ``names`` on ``track`` with the settings of ``args`` (the corpus and the
    oracle, not built yet, are None); with ``args=None``, of its default ranker.
    """
    context = dict(
        corpus=None, oracle=None, alpha=getattr(args, "alpha", None),
        **track_context(track, args),
    )  # fmt: skip
    minimums = []
    for name in names:
        params = METHODS[name][1](dict(context, method=name)).get_params()
        minimums += [(name, p, params[p]) for p in HISTORY_MINIMUMS if p in params]
    return minimums


def track_context(track, args):
    """The entries of a :data:`METHODS` factory's context that depend on the track."""
    return dict(
        track=track, seen_items=track == "ids" and query_split_of(track, args) == "train"
    )


def check_n_history(parser, args):
    """Refuse an ``--n-history`` below a minimum of a method the run uses."""
    short = {}  # (method, parameter) -> value, for each minimum above --n-history
    for track in args.tracks:
        for name, parameter, value in history_minimums(
            methods_on(track, args), track, args
        ):
            if args.n_history < value:
                short[name, parameter] = max(value, short.get((name, parameter), 0))
    if not short:
        return
    needs = " and ".join(f"{name} ({p}={v})" for (name, p), v in short.items())
    dropped = list(dict.fromkeys(name for name, _ in short))
    others = [name for name in args.methods or DEFAULT_METHODS if name not in dropped]
    keep = f": --methods {' '.join(others)}" if others else " (choose others with --methods)"
    parser.error(
        f"--n-history {args.n_history} is too small for {needs}: each learns from "
        "historical users with at least that many labeled prompts, and every "
        "historical user labels --n-history prompts. Raise --n-history to at least "
        f"{max(short.values())}, or leave out {' and '.join(dropped)}{keep}."
    )


def methods_on(track, args):
    """The methods of the run on ``track``, in order."""
    return [
        name
        for name in args.methods or DEFAULT_METHODS
        if track in METHODS[name][0]
        and not (
            args.methods is None and track in DEFAULT_SKIPPED_TRACKS.get(name, ())
        )
    ]


def add_embedding_arguments(parser):
    parser.add_argument(
        "--embedder", help="embedding model (hub name or folder); default MiniLM"
    )
    parser.add_argument(
        "--n-components", type=int, default=32, help="PCA components per text part"
    )
    parser.add_argument(
        "--embedding-parts",
        nargs="+",
        default=["response"],
        choices=["prompt", "response"],
        help="texts embedded on the embeddings track",
    )


def add_backend_arguments(parser):
    parser.add_argument(
        "--backend",
        choices=["none", *BACKENDS],
        default="loky",
        help="run the folds on this joblib backend's workers (default: loky, every "
        "core of this machine; none: sequentially, in this process)",
    )
    parser.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler or Ray cluster (default: start a "
        "local one)",
    )
    parser.add_argument(
        "--n-workers", type=int, help="local workers of --backend (default: 2; loky: all cores)"
    )


def query_split_of(track, args):
    """The split that ``track``'s query prompts come from."""
    if args.query_split != "auto":
        return args.query_split
    return AUTO_QUERY_SPLIT.get(track, "test")


def track_label(track, args):
    return f"{track} ({query_split_of(track, args)}-split queries)"


def build_data(args):
    """Corpus, oracle and, per query split the tracks use, one (X, y).

    Each (X, y) holds the same historical users and the same test users (weights,
    labeled prompts drawn with the same seed); only the query prompts differ.
    """
    if args.data == "synthetic":
        corpus = make_personalllm(args.n_prompts, random_state=args.seed)
    else:
        corpus = load_personalllm(data_files=args.data_files)
    if getattr(args, "backend", None) is not None:
        # Tasks then carry a reference to one checked copy, not the corpus's data.
        corpus = corpus.share()
    # Test users label just enough prompts for the largest support set, and bring
    # one query prompt from the test split (or, with train, from the prompts
    # historical users label, so that labels on the same ids exist).
    oracle, history, tests = simulate_world(
        corpus,
        n_history_users=args.n_history_users,
        n_test_users=args.n_test_users,
        alpha=args.alpha,
        seed=args.seed,
        n_history=args.n_history,
        n_labeled=max(args.shots),
        query_splits=sorted({query_split_of(track, args) for track in args.tracks}),
        feedback=args.feedback,
    )
    data = {split: stack(history, test) for split, test in tests.items()}
    return corpus, oracle, data


def prepare_embeddings(args, corpus, X, y):
    """Embed the texts the run uses, once, through the cache; say what was done.

    Returns the context entries of the embedding tracks and a note of what was
    measured (texts embedded and their time; the distiller's held-out R^2).
    """
    context = {}
    if not (set(args.tracks) & set(EMBEDDING_TRACKS) or args.support == "nearest"):
        return context, ""
    cache = FeatureCache(args.cache_dir)
    embedder = TextEmbedder(args.embedder, cache=cache).fit()
    pairs = X[["prompt_id", "response_id"]].drop_duplicates().to_numpy()
    prompt_ids = np.unique(pairs[:, 0])
    start = time.perf_counter()
    prompt_vectors = embedder.transform(list(corpus.prompts[prompt_ids]))
    embedder.transform(list(corpus.responses[pairs[:, 0], pairs[:, 1]]))
    note = (
        f"; {prompt_ids.size + len(pairs):,} texts of the run embedded or read from "
        f"{cache.root} in {time.perf_counter() - start:.0f} s"
    )
    context["embedder"] = embedder
    if args.support == "nearest":
        context["prompt_embeddings"] = np.zeros(
            (corpus.n_prompts, embedder.embedding_dim_), dtype=np.float32
        )
        context["prompt_embeddings"][prompt_ids] = prompt_vectors
    if "distilled" in args.tracks:
        labeled = ~np.isnan(y)
        distiller = RewardDistiller(corpus, embedder=embedder, random_state=args.seed)
        distiller.fit(X[labeled])
        scores = ", ".join(
            f"{name} {r2:.2f}"
            for name, r2 in zip(distiller.reward_models_, distiller.held_out_r2_)
        )
        note += (
            f"; distiller held-out R^2 (20% of the {np.unique(X.prompt_id[labeled]).size}"
            f" labeled prompts held out): {scores}"
        )
    return context, note


def evaluate(args, corpus, oracle, data, features=None):
    """One row per track, method and support size: the mean of its folds' scores.

    Every fold of every row is one task of a single joblib call (``cross_validate``
    on that fold), so that a ``--backend`` keeps all its workers busy until the
    last fold, instead of waiting at the end of each method; rows are printed as
    their folds come back, in order.
    """
    scorer = make_personal_scorer(oracle, metric=METRICS)
    rows, tasks = [], []
    for row, estimator, X, y, folds in plan(args, corpus, oracle, data, features):
        rows.append((row, len(folds)))
        tasks += [
            delayed(cross_validate)(estimator, X, y, cv=[fold], scoring=scorer)
            for fold in folds
        ]
    results = iter(in_order(tasks))
    for row, n_folds in rows:
        scores = [next(results) for _ in range(n_folds)]
        row.update(
            {m: np.mean([s[f"test_{m}"][0] for s in scores]) for m in METRICS}
        )
        row["fit_s"] = np.mean([s["fit_time"][0] for s in scores])
        row["predict_s"] = np.mean([s["score_time"][0] for s in scores])
        print(
            f"  {row['track']:8s} {row['method']:12s} n_support={row['n_support']:<3d} "
            f"gap_closed={row['gap_closed']:+.3f} (fit {row['fit_s']:.1f} s per fold)",
            flush=True,
        )
    return pd.DataFrame([row for row, _ in rows])


def in_order(tasks):
    """The results of ``tasks``, in order: as they come back where the backend can."""
    try:
        return Parallel(return_as="generator")(tasks)
    except ValueError:  # a backend that returns lists only: Ray's
        return Parallel()(tasks)


def plan(args, corpus, oracle, data, features=None):
    """Yield ``(row, estimator, X, y, folds)`` for every track, method and support size.

    ``row`` holds the labels of the table's row; ``folds`` the ``ColdStartSplit``
    folds of ``(X, y)`` at that support size.
    """
    context = dict(corpus=corpus, oracle=oracle, alpha=args.alpha, **(features or {}))
    for track in args.tracks:
        query_split = query_split_of(track, args)
        X, y = data[query_split]
        context.update(track_context(track, args))
        for name in methods_on(track, args):
            factory = METHODS[name][1]
            steps = feature_steps(
                track,
                corpus,
                embedder=context.get("embedder"),
                parts=args.embedding_parts,
                n_components=args.n_components,
            )
            context["method"] = name
            estimator = make_pipeline(*steps, factory(context))
            for n_support in args.shots:
                cv = ColdStartSplit(
                    args.n_splits,
                    n_support=n_support,
                    support=args.support,
                    prompt_embeddings=context.get("prompt_embeddings"),
                    random_state=args.seed,
                )
                row = dict(
                    track=track, query_split=query_split, method=name, n_support=n_support
                )
                yield row, estimator, X, y, list(cv.split(X, y))


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
        print(
            f"\nTrack: {track_label(track, args)}  (mean over {args.n_splits} folds of "
            "test users)"
        )
        table = table.set_index(["method", "n_support"])[columns]
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))


def run_settings(args, corpus, backend, embedder=None):
    """The settings of the run, by name: the Settings line and the CSV's columns.

    ``embedder`` (the fitted ``TextEmbedder``, where the run embeds texts) adds the
    embedding settings.
    """
    settings = dict(
        data=args.data,
        corpus=corpus.name,
        n_prompts=corpus.n_prompts,
        n_responses=corpus.n_responses,
        n_reward_models=corpus.n_reward_models,
        alpha=args.alpha,
        n_history_users=args.n_history_users,
        n_history=args.n_history,
        n_test_users=args.n_test_users,
        n_query=1,
        feedback=args.feedback,
        n_splits=args.n_splits,
        support=args.support,
        shots=" ".join(map(str, args.shots)),
        seed=args.seed,
        backend=backend,
    )
    if embedder is not None:
        settings.update(
            embedder=embedder.identity_["model"],
            embedding_dim=embedder.embedding_dim_,
            embedding_parts="+".join(args.embedding_parts),
            n_components=args.n_components,
        )
    return settings


def plot(args, results, path, settings):
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
            title=f"track: {track_label(track, args)}",
            xlabel="support prompts (n_support)",
            ylabel="gap closed (0 = zero-shot, 1 = oracle)",
            xticks=args.shots,
        )
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend()
    s = settings
    title = (
        f"Cold start, {s['corpus']} corpus ({s['n_prompts']:,} prompts): "
        f"{s['n_history_users']:,} historical users x {s['n_history']} prompts, "
        f"{s['n_test_users']:,} test users; {s['feedback']} feedback, "
        f"alpha={s['alpha']}, {s['n_splits']} folds, seed={s['seed']}"
    )
    # About 11 characters of 10-point text fill an inch of the figure's width.
    fig.suptitle(textwrap.fill(title, int(11 * fig.get_figwidth())), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    args = parse_args(argv)
    # --backend: the folds (and embeddings missing from the cache) run on the
    # engine's workers, through joblib; the code inside is unchanged.
    with joblib_backend(
        args.backend, address=args.scheduler, n_workers=args.n_workers
    ) as backend:
        run(args, backend)


def run(args, backend):
    start = time.perf_counter()
    corpus, oracle, data = build_data(args)
    # The rows of every query split, once: the texts to embed and the labels.
    X = pd.concat([X for X, _ in data.values()], ignore_index=True)
    once = ~X.duplicated(["user_id", "prompt_id", "response_id"]).to_numpy()
    y = np.concatenate([y for _, y in data.values()])[once]
    features, embedding_note = prepare_embeddings(args, corpus, X[once], y)
    settings = run_settings(args, corpus, backend, features.get("embedder"))
    queries = ", ".join(f"{track}: {query_split_of(track, args)}" for track in args.tracks)
    sizes = ", ".join(
        f"{len(rows):,} rows with {split}-split queries" for split, (rows, _) in data.items()
    )
    line = (
        "Settings: "
        + "; ".join(f"{key}={value}" for key, value in settings.items())
        + f"; query split per track: {queries}; {sizes}{embedding_note}"
    )
    print(line, flush=True)
    results = evaluate(args, corpus, oracle, data, features)
    report(args, corpus, results, line)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    # The settings as columns after the scores, the same in every row.
    results.assign(**settings).to_csv(output / "benchmark.csv", index=False)
    plot(args, results, output / "benchmark.png", settings)
    print(
        f"\nWrote {output / 'benchmark.csv'} and {output / 'benchmark.png'} "
        f"in {time.perf_counter() - start:.0f} s."
    )
    if "InContext" not in (args.methods or DEFAULT_METHODS):
        print("The in-context LLM ranker (SmolLM2-135M) is opt-in on a CPU:")
        print(f"  {IN_CONTEXT_COMMAND}")


if __name__ == "__main__":
    sys.exit(main())
