"""The published protocols: every method in each paper's own setting, by name.

For each protocol of ``pllm_sk.protocols`` (PersonalLLM's settings 1 and 2, LoRe,
CoPL), simulates the protocol's users and feedback on the corpus, fits each method
once on the protocol's training rows (the ``rewards`` track: the reward columns the
protocol's users see, raw or normalised as the protocol says) and scores it on the
protocol's test rows, per group of users (seen / unseen), with the paper's metric
beside gap closed, each with its standard error over users. Above each table: the
protocol's settings, the sizes used (smaller than the source's by default, and
said so), the source files, and the notes on what is unverified; below it, the
figures the source publishes, if any (measured on the real corpus, with other
methods). Writes ``protocols.csv`` and ``protocols.png``.

Methods: Oracle (the true rewards: 1.0 pairwise accuracy, labels are noiseless),
the reference reward model (LoRe's K = 0; here the uniform mix of the reward
columns), Bradley-Terry (``PopulationRanker``, one pooled Bradley-Terry model:
LoRe's K = 1), PerUser, UserKNN, LowRank (``LowRankRanker(rank=K)``, K = 1..5 on
LoRe, LoRe's ranks) and MetaHead.

    python benchmarks/protocols.py                         # synthetic, reduced sizes
    python benchmarks/protocols.py --protocols lore copl
    python benchmarks/protocols.py --max-users 30 --max-test 10 --n-prompts 1500
    python benchmarks/protocols.py --data personalllm --data-files train.parquet test.parquet
    python benchmarks/protocols.py --full                  # the sources' sizes
"""

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import feature_steps, make_method
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import OracleRanker
from pllm_sk.datasets import load_personalllm, make_personalllm
from pllm_sk.features import TextEmbedder
from pllm_sk.protocols import get_protocol, list_protocols
from pllm_sk.simulation import PreferenceOracle

LORE_RANKS = (1, 2, 3, 4, 5)
FAMILIES = ("PerUser", "UserKNN", "LowRank", "MetaHead")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", choices=["synthetic", "personalllm"], default="synthetic"
    )
    parser.add_argument(
        "--data-files", nargs="*", help="local PersonalLLM parquet files"
    )
    parser.add_argument(
        "--n-prompts", type=int, default=10402, help="synthetic corpus size"
    )
    parser.add_argument(
        "--protocols", nargs="+", default=list_protocols(), choices=list_protocols()
    )
    parser.add_argument(
        "--max-users", type=int, default=300, help="users per group, at most"
    )
    parser.add_argument(
        "--max-test", type=int, default=100, help="test prompts per user, at most"
    )
    parser.add_argument(
        "--full", action="store_true", help="the sources' sizes (no caps)"
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(FAMILIES), choices=FAMILIES
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    return parser.parse_args(argv)


def reduced(protocol, args):
    """The protocol at the run's sizes, and a note of what was reduced."""
    if args.full:
        return protocol, "the source's sizes"
    caps = {}
    for field in ("n_seen", "n_unseen", "n_historical"):
        if getattr(protocol, field) > args.max_users:
            caps[field] = args.max_users
    if protocol.n_test is None or protocol.n_test > args.max_test:
        caps["n_test"] = args.max_test
    if not caps:
        return protocol, "the source's sizes"
    note = ", ".join(
        f"{k} {getattr(protocol, k) or 'all'} -> {v}" for k, v in caps.items()
    )
    return dataclasses.replace(protocol, **caps), f"reduced from the source: {note}"


def methods(data, names, seed):
    """(label, unfitted estimator) of every row of the protocol's table."""
    uniform = np.full(
        (data.oracle.n_users, data.corpus.n_reward_models),
        1 / data.corpus.n_reward_models,
    )
    rows = [
        ("Oracle", OracleRanker(data.oracle)),
        (
            "Reference RM (uniform mix, K=0)",
            OracleRanker(PreferenceOracle(data.corpus, uniform)),
        ),
        (
            "Bradley-Terry (Population, K=1)",
            with_features(data, make_method("Population")),
        ),
    ]
    for name in names:
        if name == "LowRank" and data.protocol.name == "lore":
            rows += [
                (
                    f"LowRank (rank={k})",
                    with_features(data, make_method(name, seed, rank=k)),
                )
                for k in LORE_RANKS
            ]
        else:
            rows.append((name, with_features(data, make_method(name, seed))))
    return rows


def with_features(data, estimator):
    return make_pipeline(*feature_steps("rewards", data.corpus), estimator)


def prompt_embeddings(corpus, X):
    """MiniLM prompt embeddings of the prompts in X (zeros elsewhere), cached."""
    embedder = TextEmbedder(verbose=0).fit()
    prompt_ids = np.unique(X.prompt_id)
    vectors = np.zeros((corpus.n_prompts, embedder.embedding_dim_), dtype=np.float32)
    vectors[prompt_ids] = embedder.transform(list(corpus.prompts[prompt_ids]))
    return vectors


def simulate(protocol, corpus, seed):
    if protocol.support != "nearest":
        return protocol.simulate(corpus, random_state=seed)
    # The users do not depend on the embeddings: simulate once to know the prompts.
    data = protocol.simulate(
        corpus, random_state=seed, prompt_embeddings=np.ones((corpus.n_prompts, 1))
    )
    embeddings = prompt_embeddings(corpus, data.X)
    return protocol.simulate(corpus, random_state=seed, prompt_embeddings=embeddings)


def run_protocol(protocol, corpus, args):
    """The table rows of one protocol: one per (method, group, metric)."""
    data = simulate(protocol, corpus, args.seed)
    ((train, test),) = list(data.cv.split(data.X, data.y))
    X_test = data.X.iloc[test]
    rows = []
    for label, estimator in methods(data, args.methods, args.seed):
        start = time.perf_counter()
        try:
            estimator.fit(data.X.iloc[train], data.y[train])
        except ValueError as error:
            # A method whose requirements the protocol's sizes do not meet.
            print(f"{protocol.name}: {label} not run: {error}")
            continue
        summary = data.summary(X_test, estimator.predict(X_test))
        seconds = time.perf_counter() - start
        for (group, metric), (value, se) in summary.items():
            rows.append(
                dict(
                    protocol=protocol.name,
                    method=label,
                    group=group,
                    metric=metric,
                    value=value,
                    se=se,
                    seconds=seconds,
                )
            )
    return data, pd.DataFrame(rows)


def print_header(protocol, data, size_note, corpus_note):
    counts = protocol.counts(data.corpus)
    print(f"\n=== {protocol.name}: {protocol.paper}")
    print(f"source: {protocol.repository}")
    for fact, where in protocol.sources:
        print(f"  - {fact}  [{where}]")
    shown = {k: v for k, v in counts.items() if v not in (0, None)}
    print(f"settings ({corpus_note}; {size_note}): {shown}")
    print(
        f"feedback {protocol.feedback}, test comparisons {protocol.test_comparisons}, "
        f"scores {protocol.scores}, reward models {data.corpus.reward_models}, "
        f"responses {protocol.responses or 'all'}, disagreeing pairs only "
        f"{protocol.only_disagreeing}, split {type(data.cv).__name__}"
    )
    print(f"notes: {protocol.notes}")


def print_table(protocol, table, synthetic):
    wide = table.assign(
        cell=[f"{v:.3f} ± {s:.3f}" for v, s in zip(table.value, table.se)],
        column=table.group + " " + table.metric,
    ).pivot(index="method", columns="column", values="cell")
    wide = wide.loc[table.method.unique()]
    print(wide.to_string())
    print("(± standard error over users; rewards track; one fit per method)")
    if protocol.published:
        where = "real corpus, LLM generation methods" + (
            "; ours is synthetic" if synthetic else ""
        )
        print(f"published ({where}):")
        for method, metric, value, source in protocol.published:
            print(f"  {method}: {metric} {value}  [{source}]")
    else:
        print("published: none recorded in the source repository")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = results.protocol.unique()
    fig, axes = plt.subplots(
        1, len(names), figsize=(6 * len(names), 4.5), squeeze=False
    )
    for ax, name in zip(axes[0], names):
        table = results[results.protocol == name]
        metric = table.metric.iloc[0]
        table = table[table.metric == metric]
        methods_order = table.method.unique()
        groups = table.group.unique()
        width = 0.8 / len(groups)
        for i, group in enumerate(groups):
            part = table[table.group == group].set_index("method").loc[methods_order]
            ax.bar(
                np.arange(len(methods_order)) + i * width,
                part.value,
                width,
                yerr=part.se,
                label=group,
            )
        ax.set_xticks(np.arange(len(methods_order)) + 0.4 - width / 2)
        ax.set_xticklabels(methods_order, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{name}: {metric}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    if args.data == "personalllm":
        corpus, corpus_note = (
            load_personalllm(data_files=args.data_files),
            "real corpus",
        )
    else:
        corpus = make_personalllm(args.n_prompts, random_state=args.seed)
        corpus_note = f"synthetic corpus, {args.n_prompts} prompts"
    tables = []
    for name in args.protocols:
        protocol, size_note = reduced(get_protocol(name), args)
        data, table = run_protocol(protocol, corpus, args)
        print_header(protocol, data, size_note, corpus_note)
        print_table(protocol, table, args.data == "synthetic")
        tables.append(table)
    results = pd.concat(tables, ignore_index=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.output_dir / "protocols.csv", index=False)
    plot(results, args.output_dir / "protocols.png")
    print(
        f"\nwrote {args.output_dir / 'protocols.csv'} and protocols.png; "
        f"{time.perf_counter() - start:.0f} s in all"
    )


if __name__ == "__main__":
    main()
