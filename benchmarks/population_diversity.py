"""How diverse are simulated users? Reproduce Figure 4 of the PersonalLLM paper.

For each Dirichlet concentration alpha in {0.01, 0.05, 0.10}, draw users, find every
user's favourite response to each test prompt, and compare the population statistics
with the paper's (printed beside ours, with the gap and whether it is within the
calibration tolerance). Saves a three-row figure like the paper's.

Usage::

    python benchmarks/population_diversity.py                       # synthetic corpus
    python benchmarks/population_diversity.py --data personalllm    # the hub dataset
"""

import argparse
import time

import matplotlib.pyplot as plt
import numpy as np

from pllm_sk.datasets import load_personalllm, make_personalllm
from pllm_sk.simulation import (
    PAPER_POPULATION_STATISTICS,
    compare_with_paper,
    population_statistics,
    sample_users,
)

ALPHAS = (0.01, 0.05, 0.10)
SPLIT = "test"


def load_corpus(data, seed):
    if data == "synthetic":
        start = time.perf_counter()
        corpus = make_personalllm(random_state=seed)
        print(f"generated the synthetic corpus in {time.perf_counter() - start:.1f} s")
        return corpus
    try:
        return load_personalllm()
    except Exception as error:  # any failure: report it and skip the real corpus
        print(f"could not load the PersonalLLM corpus, skipping it: {error}")
        return None


def print_comparison(statistics, alpha):
    paper = PAPER_POPULATION_STATISTICS[alpha]
    checks = compare_with_paper(statistics, alpha)
    print(f"\nalpha = {alpha}")
    print("  most popular response gets <= x% of votes (% of prompts)")
    print(f"    {'x':>6} {'ours':>7} {'paper':>7} {'diff':>7}")
    for threshold, ours in statistics.share_top_at_most.items():
        theirs = paper["share_top_at_most"][threshold]
        print(f"    {threshold:>5}% {ours:7.1f} {theirs:7.1f} {ours - theirs:+7.1f}")
    print("  number of distinct winning responses (% of prompts)")
    print(f"    {'n':>6} {'ours':>7} {'paper':>7} {'diff':>7}")
    for key, ours in statistics.n_winners_hist.items():
        theirs = paper["n_winners_hist"][key]
        print(f"    {key:>6} {ours:7.1f} {theirs:7.1f} {ours - theirs:+7.1f}")
    if "win_share_by_model" in paper:
        print("  share of all (user, prompt) wins by response model (%)")
        print(f"    {'model':>20} {'ours':>7} {'paper':>7} {'diff':>7}")
        for model, theirs in paper["win_share_by_model"].items():
            ours = statistics.win_share_by_model.get(model, 0.0)
            print(f"    {model:>20} {ours:7.1f} {theirs:7.1f} {ours - theirs:+7.1f}")
    for key, check in checks.items():
        unit = (
            "points (max)" if key == "share_top_at_most" else "(sum |diff|, fraction)"
        )
        verdict = "OK" if check["ok"] else "FAIL"
        print(
            f"  {key:<19} gap {check['gap']:.3f} {unit}, "
            f"tolerance {check['tolerance']}: {verdict}"
        )
    return all(check["ok"] for check in checks.values())


def plot(results, corpus_name, output):
    plt.switch_backend("Agg")  # files only, no display needed
    figure = plt.figure(figsize=(4 * len(ALPHAS), 11))
    grid = figure.add_gridspec(3, len(ALPHAS))
    bins = list(PAPER_POPULATION_STATISTICS[ALPHAS[0]]["n_winners_hist"])
    positions = np.arange(len(bins))
    for column, (alpha, statistics) in enumerate(results.items()):
        paper = PAPER_POPULATION_STATISTICS[alpha]
        top = figure.add_subplot(grid[0, column])
        shares = np.sort(100 * statistics.top_share)
        top.plot(
            shares, 100 * np.arange(1, shares.size + 1) / shares.size, label="ours"
        )
        top.scatter(
            list(paper["share_top_at_most"]),
            list(paper["share_top_at_most"].values()),
            color="black",
            marker="x",
            label="paper",
            zorder=3,
        )
        top.set(
            title=f"alpha = {alpha}",
            xlabel="votes for the most popular response (%)",
            ylabel="prompts with at most x (%)",
            xlim=(0, 100),
        )
        top.legend()
        middle = figure.add_subplot(grid[1, column])
        middle.bar(
            positions - 0.2, list(statistics.n_winners_hist.values()), 0.4, label="ours"
        )
        middle.bar(
            positions + 0.2, list(paper["n_winners_hist"].values()), 0.4, label="paper"
        )
        middle.set(
            xticks=positions,
            xticklabels=bins,
            xlabel="distinct winning responses",
            ylabel="prompts (%)",
        )
        middle.legend()
    bottom = figure.add_subplot(grid[2, :])
    paper_shares = PAPER_POPULATION_STATISTICS[0.05]["win_share_by_model"]
    models = list(paper_shares)
    ours = [results[0.05].win_share_by_model.get(m, 0.0) for m in models]
    positions = np.arange(len(models))
    bottom.bar(positions - 0.2, ours, 0.4, label="ours")
    bottom.bar(positions + 0.2, list(paper_shares.values()), 0.4, label="paper")
    bottom.set(
        xticks=positions,
        title="win share by response model, alpha = 0.05",
        ylabel="(user, prompt) wins (%)",
    )
    bottom.set_xticklabels(models, rotation=20)
    bottom.legend()
    figure.suptitle(f"Population diversity of simulated users, corpus {corpus_name!r}")
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    print(f"\nsaved the figure to {output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", choices=["synthetic", "personalllm"], default="synthetic"
    )
    parser.add_argument("--n-users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="population_diversity.png")
    args = parser.parse_args()

    corpus = load_corpus(args.data, args.seed)
    if corpus is None:
        return
    n_prompts = corpus.prompt_ids(SPLIT).size
    print(
        f"corpus={corpus.name!r} ({corpus.n_prompts} prompts, corpus seed {args.seed}); "
        f"split={SPLIT!r} ({n_prompts} prompts); n_users={args.n_users}; "
        f"alphas={list(ALPHAS)}; user seed {args.seed}; "
        "paper numbers: PersonalLLM Figure 4, read off the figure"
    )
    results = {}
    all_ok = True
    for alpha in ALPHAS:
        weights = sample_users(args.n_users, alpha=alpha, random_state=args.seed)
        results[alpha] = population_statistics(corpus, weights, split=SPLIT)
        all_ok &= print_comparison(results[alpha], alpha)
    print(f"\nall tolerances hold: {all_ok}")
    plot(results, corpus.name, args.output)


if __name__ == "__main__":
    main()
