"""Continual personalization: new users in an interaction loop, round after round.

Historical users (Dirichlet alpha 0.05, 50 best/worst-labeled train prompts each)
fit every method once; then new users arrive with nothing, and each round each
gets a new test prompt, is served a response chosen by a policy from the method's
beliefs, and says which of the two shown responses they prefer (noiseless pair
feedback). Only that feedback goes back to the method (``partial_fit``; the Bayes
limit, which has none, is refitted on the loop's feedback every round).

Reported (all on the ``rewards`` track, the synthetic PersonalLLM corpus):

1. cumulative regret after 5, 10, 20 and 50 rounds for Bayes (the reference:
   posterior under the true prior), LowRank, MetaHead and UserKNN under greedy,
   Thompson and information-seeking policies, with and without drift, beside
   uniform random; the wall time of one round (200 users, the update included);
2. paired bootstrap intervals (over users) of "Thompson minus greedy" and
   "information-seeking minus greedy" cumulative regret;
3. each learned method's cumulative regret at 20 rounds over Bayes-Thompson's;
4. a jump of every user's weights at round 25: rounds until regret is back to its
   pre-jump level, with and without forgetting (``decay`` through
   ``sample_weight`` where the method accepts it, else a ``window``);
5. users arriving over time: refitting the population every k arrivals or never;
6. active cold start: the information-seeking rule choosing which prompts to ask
   a new user about, against random prompts (gap closed after n answers);
7. a PNG of cumulative regret against rounds.

    python benchmarks/continual.py                  # about 20 min on 2 idle cores
    python benchmarks/continual.py --n-users 50 --n-rounds 12 --quick   # a smoke test
"""

import argparse
import inspect
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import make_method, synthetic_world
from sklearn.pipeline import make_pipeline

from pllm_sk.features import RewardFeatures
from pllm_sk.simulation import (
    GreedyPolicy,
    InformationSeekingPolicy,
    InteractionEnvironment,
    RandomPolicy,
    ThompsonPolicy,
    active_cold_start,
    cumulative_regret,
    paired_bootstrap,
    plot_regret,
    progressive_scores,
)

# The rankers compared (placed after RewardFeatures), see continual_method.
METHODS = ("Bayes", "LowRank", "MetaHead", "UserKNN")
POLICIES = {
    "greedy": lambda args: GreedyPolicy(),
    "thompson": lambda args: ThompsonPolicy(),
    "info": lambda args: InformationSeekingPolicy(args.info_rounds, n_draws=32),
}
# Forgetting in the jump experiment: sample_weight decay where fit/partial_fit take
# it, else a window of recent rounds.
DECAY, WINDOW = 0.8, 10
CHECKPOINTS = (5, 10, 20, 50)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-prompts", type=int, default=10_402)
    parser.add_argument("--n-history-users", type=int, default=1000)
    parser.add_argument("--n-history", type=int, default=50)
    parser.add_argument("--n-users", type=int, default=200, help="new users")
    parser.add_argument("--n-rounds", type=int, default=50)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--drifts", nargs="+", default=["none", "mix"], choices=["none", "mix"])
    parser.add_argument("--drift-rate", type=float, default=0.05)
    parser.add_argument("--info-rounds", type=int, default=10)
    parser.add_argument("--bayes-draws", type=int, default=64)
    parser.add_argument("--jump-round", type=int, default=25)
    parser.add_argument("--n-resamples", type=int, default=10_000)
    parser.add_argument(
        "--quick", action="store_true", help="a short MetaHead meta-training (smoke tests)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="results")
    return parser.parse_args(argv)


def build(args):
    corpus, oracle, history, _ = synthetic_world(
        args,
        args.n_history_users,
        args.n_users,
        args.alpha,
        n_history=args.n_history,
        query_splits=(),
    )
    return corpus, oracle, history


def continual_method(name, args):
    """An unfitted ranker of :data:`METHODS`, random_state=0."""
    if name == "Bayes":
        # The Bayes limit needs no historical users (its prior is the truth); its
        # cost is the sampler, budgeted by n_draws (predict) and the policies' draws.
        return make_method(
            name, alpha=args.alpha, n_draws=args.bayes_draws, n_chains=8, n_burnin=20
        )
    if name == "MetaHead" and args.quick:
        return make_method(name, max_epochs=3)
    return make_method(name)


def fit_methods(args, corpus, history):
    """Each method fitted once on the historical users, with its fit time."""
    fitted, seconds = {}, {}
    for name in args.methods:
        ranker = continual_method(name, args)
        start = time.perf_counter()
        if name == "Bayes":
            # Nothing to learn from historical users: fit on one prompt's rows so
            # that the estimator is fitted; the loop refits it on its feedback.
            rows = history.X.index[history.X["user_id"] == 0][: corpus.n_responses]
            model = make_pipeline(RewardFeatures(corpus), ranker).fit(
                history.X.loc[rows], history.y[rows]
            )
        else:
            model = make_pipeline(RewardFeatures(corpus), ranker).fit(history.X, history.y)
        fitted[name], seconds[name] = model, time.perf_counter() - start
        print(f"  fitted {name} in {seconds[name]:.1f} s", flush=True)
    return fitted, seconds


def run(environment, model, policy, n_rounds, **kwargs):
    """One run of the loop; the Bayes limit's infeasibility warnings are counted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        log = environment.run(model, policy, n_rounds, **kwargs)
    log.attrs["n_warnings"] = sum(issubclass(w.category, UserWarning) for w in caught)
    return log


def main_grid(args, oracle, fitted, users):
    logs, costs = [], []
    for drift in args.drifts:
        environment = InteractionEnvironment(
            oracle,
            users=users,
            drift=None if drift == "none" else drift,
            drift_rate=args.drift_rate,
            random_state=args.seed,
        )
        runs = [("random", "random", next(iter(fitted.values())), RandomPolicy())]
        runs += [
            (name, policy, fitted[name], POLICIES[policy](args))
            for name in args.methods
            for policy in args.policies
        ]
        for name, policy_name, model, policy in runs:
            start = time.perf_counter()
            log = run(environment, model, policy, args.n_rounds)
            seconds = np.asarray(log.attrs["round_seconds"])
            costs.append(
                dict(drift=drift, method=name, policy=policy_name,
                     round_s=seconds.mean(), round_s_max=seconds.max())
            )
            logs.append(log.assign(drift=drift, method=name, policy=policy_name))
            note = f" ({log.attrs['n_warnings']} warnings)" if log.attrs["n_warnings"] else ""
            print(
                f"  drift={drift:4s} {name:8s} {policy_name:8s} "
                f"cumulative regret at {args.n_rounds}: "
                f"{cumulative_regret(log, args.n_rounds).mean():.3f} "
                f"({time.perf_counter() - start:.0f} s){note}",
                flush=True,
            )
    return pd.concat(logs, ignore_index=True), pd.DataFrame(costs)


def regret_table(args, logs, costs):
    keys = ["drift", "method", "policy"]
    checkpoints = [n for n in CHECKPOINTS if n <= args.n_rounds]
    columns = {}
    for n in checkpoints:
        per_user = cumulative_regret(logs, n, by=keys)
        grouped = per_user.groupby(level=keys, sort=False)
        columns[f"R@{n}"] = grouped.mean()
        columns[f"se@{n}"] = grouped.std() / np.sqrt(grouped.count())
    table = pd.DataFrame(columns)
    table = table.join(costs.set_index(keys)["round_s"])
    return table, checkpoints


def bootstrap_table(args, logs):
    rows = []
    for (drift, method), table in logs.groupby(["drift", "method"], sort=False):
        if method == "random":
            continue
        for n in (10, 20):
            if n > args.n_rounds:
                continue
            per_user = {
                policy: cumulative_regret(part, n)
                for policy, part in table.groupby("policy")
            }
            for policy in ("thompson", "info"):
                if policy not in per_user or "greedy" not in per_user:
                    continue
                result = paired_bootstrap(
                    per_user[policy], per_user["greedy"],
                    n_resamples=args.n_resamples, random_state=args.seed,
                )
                rows.append(
                    dict(drift=drift, method=method, rounds=n,
                         difference=f"{policy} - greedy", mean=result.mean,
                         low=result.low, high=result.high,
                         excludes_zero=bool(result.low > 0 or result.high < 0))
                )
    columns = ["drift", "method", "rounds", "difference", "mean", "low", "high",
               "excludes_zero"]
    return pd.DataFrame(rows, columns=columns)


def recovery(scores, jump_round, level, tolerance=1.25, span=3):
    """Rounds after the jump until the mean regret of ``span`` rounds is back
    within ``tolerance`` times ``level``; None if never in the run."""
    regret = scores.set_index("round")["regret"]
    after = regret[regret.index >= jump_round]
    smoothed = after.rolling(span).mean().shift(-(span - 1)).dropna()
    back = smoothed[smoothed <= tolerance * level]
    return None if back.empty else int(back.index[0] - jump_round)


def jump_experiment(args, oracle, fitted, users):
    environment = InteractionEnvironment(
        oracle, users=users, drift="jump", jump_round=args.jump_round,
        random_state=args.seed,
    )
    rows, logs = [], []
    for name, model in fitted.items():
        update = getattr(model[-1], "partial_fit", model[-1].fit)
        accepts_weight = "sample_weight" in inspect.signature(update).parameters
        forgetting = dict(decay=DECAY) if accepts_weight else dict(window=WINDOW)
        label = f"decay={DECAY}" if accepts_weight else f"window={WINDOW}"
        per_run = {}
        for setting, kwargs in (("none", {}), (label, forgetting)):
            start = time.perf_counter()
            log = run(environment, model, GreedyPolicy(), args.n_rounds, **kwargs)
            scores = progressive_scores(log, time="round")
            pre = scores.set_index("round")["regret"].loc[
                args.jump_round - 5 : args.jump_round - 1
            ].mean()
            per_run[setting] = (scores, pre)
            logs.append(log.assign(method=name, forgetting=setting))
            print(
                f"  jump {name:8s} forgetting={setting:10s} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        common = per_run["none"][1]
        for setting, (scores, pre) in per_run.items():
            after = scores.set_index("round")["regret"].loc[args.jump_round :]
            rows.append(
                dict(method=name, forgetting=setting, pre_jump_regret=pre,
                     regret_after_jump=after.iloc[:3].mean(),
                     last_5_rounds=after.iloc[-5:].mean(),
                     rounds_to_own_level=recovery(scores, args.jump_round, pre),
                     rounds_to_no_forgetting_level=recovery(scores, args.jump_round, common))
            )
    return pd.DataFrame(rows), pd.concat(logs, ignore_index=True)


def arrivals_experiment(args, corpus, oracle, history, users):
    """LowRank fitted on a small population; new users arrive 10 per round."""
    n_small = max(2, args.n_history_users // 10)
    small = history.X["user_id"] < n_small
    X_small, y_small = history.X[small].reset_index(drop=True), history.y[small.to_numpy()]
    model = make_pipeline(RewardFeatures(corpus), make_method("LowRank"))
    model.fit(X_small, y_small)
    per_round = 10
    arrivals = np.arange(users.size) // per_round
    n_rounds = min(args.n_rounds, 20) + int(arrivals.max())
    environment = InteractionEnvironment(
        oracle, users=users, arrivals=arrivals, random_state=args.seed
    )
    rows = []
    for refit in (None, 50):
        start = time.perf_counter()
        log = run(
            environment, model, GreedyPolicy(), n_rounds,
            history=(X_small, y_small), population_refit_every=refit,
        )
        late = log[log["user_id"].isin(users[arrivals >= users.size // (2 * per_round)])]
        # Every user has at least min(n_rounds, 20) steps: longer sums would be empty.
        for n in [n for n in (5, 10, 20) if n <= min(args.n_rounds, 20)]:
            rows.append(dict(population_refit_every=refit or "never", rounds=n,
                             all_users=cumulative_regret(log, n).mean(),
                             late_half=cumulative_regret(late, n).mean()))
        print(f"  arrivals refit={refit} ({time.perf_counter() - start:.0f} s)", flush=True)
    return pd.DataFrame(rows), n_small, n_rounds


def active_experiment(args, oracle, fitted, users):
    # 50 offered prompts per answer, fewer on a corpus too small for 10 x 50.
    n_candidates = min(50, oracle.corpus.prompt_ids("train").size // 10)
    rows = []
    for name in [m for m in ("Bayes", "LowRank") if m in fitted]:
        for strategy in ("information", "random"):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                result = active_cold_start(
                    fitted[name], oracle, users, strategy=strategy,
                    n_answers=(1, 3, 5, 10), n_candidates=n_candidates,
                    random_state=args.seed,
                )
            rows.append(result.assign(method=name))
            print(f"  active {name} {strategy} ({time.perf_counter() - start:.0f} s)", flush=True)
    return pd.concat(rows, ignore_index=True) if rows else None


def plot(args, logs, jump_logs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(logs["drift"])) + (["jump"] if jump_logs is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "jump":
            scores = progressive_scores(jump_logs, by=["method", "forgetting"], time="round")
            # A 3-round moving mean: regret per round is noisy over 200 users.
            scores["regret"] = scores.groupby(["method", "forgetting"])["regret"].transform(
                lambda values: values.rolling(3, min_periods=1).mean()
            )
            plot_regret(scores, hue="method", style="forgetting", metric="regret",
                        time="round", ax=ax)
            ax.axvline(args.jump_round, color="grey", lw=0.5)
            ax.set_title(f"jump at round {args.jump_round}, greedy: regret per round "
                         "(3-round mean)")
            continue
        scores = progressive_scores(logs[logs["drift"] == panel], by=["method", "policy"])
        learned = scores[scores["method"] != "random"]
        plot_regret(learned, hue="method", style="policy", ax=ax)
        final = scores.loc[scores["method"] == "random", "cumulative_regret"].iloc[-1]
        ax.set_title(f"drift={panel}: cumulative regret (random: {final:.1f} at the end)")
    fig.suptitle(
        f"{args.n_users} new users, pair feedback, alpha={args.alpha}, seed={args.seed}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def goals(args, table, boot, jump):
    lines = []
    at10 = boot[(boot["rounds"] == 10) & (boot["method"] != "Bayes")]
    wins = at10[at10["excludes_zero"] & (at10["mean"] < 0)]
    verdict = "MET" if len(wins) else "NOT MET" if len(at10) else "NOT MEASURED"
    lines.append(
        "uncertainty-aware policy beats greedy at 10 rounds, interval excluding 0, for a "
        f"learned method: {verdict}"
        + "".join(
            f"\n    {r.method} (drift={r.drift}) {r.difference}: {r.mean:+.3f} "
            f"[{r.low:+.3f}, {r.high:+.3f}]"
            for r in wins.itertuples()
        )
    )
    if 20 <= args.n_rounds and ("none", "Bayes", "thompson") in table.index:
        reference = table.loc[("none", "Bayes", "thompson"), "R@20"]
        ratios = table.loc["none"]["R@20"] / reference
        learned = [m for m in args.methods if m != "Bayes"]
        best = {m: ratios.loc[m].min() for m in learned}
        thompson = {m: ratios.loc[(m, "thompson")] for m in learned if (m, "thompson") in ratios}
        lines.append(
            "each learned method within 1.25x of Bayes-Thompson at 20 rounds (no drift): "
            f"{'MET' if all(v <= 1.25 for v in thompson.values()) else 'NOT MET'} under "
            "Thompson; ratios " + ", ".join(f"{m} {v:.2f}" for m, v in thompson.items())
            + "; best policy " + ", ".join(f"{m} {v:.2f}" for m, v in best.items())
        )
    if jump is not None:
        # A run that never recovers counts one round more than the run had left.
        never = args.n_rounds - args.jump_round + 1
        faster = []
        for method, table_ in jump.groupby("method", sort=False):
            none, forget = (
                never if value is None or pd.isna(value) else value
                for value in table_["rounds_to_own_level"].iloc[:2]
            )
            faster.append((method, forget < none))
        lines.append(
            "forgetting returns regret to its pre-jump level in fewer rounds: "
            + ", ".join(f"{m} {'MET' if ok else 'NOT MET'}" for m, ok in faster)
        )
    return "\n".join(lines)


def print_adaptation_tables(args, oracle, jump, arrival_results, active):
    """Sections 4-6 of the report: the jump, the arrivals, active cold start."""
    arrivals, n_small, arrival_rounds = arrival_results
    if jump is not None:
        print(f"\n4. Jump of every user's weights at round {args.jump_round} (greedy). "
              "Recovery: rounds after the jump until the 3-round mean regret is within "
              "1.25x the pre-jump level (mean of the 5 rounds before); empty = not within "
              f"the {args.n_rounds - args.jump_round} rounds after the jump")
        print(jump.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if arrivals is not None:
        print(f"\n5. Arrivals: LowRank fitted on {n_small} historical users; the "
              f"{args.n_users} new users arrive 10 per round ({arrival_rounds} rounds), greedy; "
              "population refitted on history + all feedback every 50 arrivals, or never. "
              "Cumulative regret over each user's first n steps (late_half: users arriving "
              "after half of them)")
        print(arrivals.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if active is None:
        print("\n6. Active cold start: not run (it takes Bayes or LowRank; see --methods)")
        return
    n_offered = min(50, oracle.corpus.prompt_ids("train").size // 10)
    print("\n6. Active cold start: gap closed / top-1 on 3 test query prompts per new user "
          f"after n best/worst answers, the prompt chosen among {n_offered} random train "
          "prompts by the information rule (32 draws) or at random")
    print(active.pivot_table(index=["method", "n_answers"], columns="strategy",
                             values=["gap_closed", "top1"]).to_string(
        float_format=lambda v: f"{v:.3f}"))


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    corpus, oracle, history = build(args)
    users = np.arange(args.n_history_users, args.n_history_users + args.n_users)
    settings = (
        f"Settings: corpus={corpus.name} ({corpus.n_prompts} prompts, {corpus.n_responses} "
        f"responses); track=rewards; users alpha={args.alpha}: {args.n_history_users} "
        f"historical x {args.n_history} best/worst train prompts; {args.n_users} new users "
        f"x {args.n_rounds} rounds, one new test prompt each per round, pair feedback "
        f"(noiseless), 2 shown; drift mix rate={args.drift_rate}/round toward a fresh "
        f"Dirichlet draw; info-seeking for {args.info_rounds} rounds (32 draws, pair "
        f"anchored at the top); Bayes n_draws={args.bayes_draws}, 8 chains, 20 burn-in, "
        f"refitted on the loop's feedback each round; seed={args.seed}"
    )
    print(settings, flush=True)
    fitted, fit_seconds = fit_methods(args, corpus, history)
    logs, costs = main_grid(args, oracle, fitted, users)
    table, checkpoints = regret_table(args, logs, costs)
    boot = bootstrap_table(args, logs)
    jump = jump_logs = None
    if args.jump_round < args.n_rounds:
        jump, jump_logs = jump_experiment(args, oracle, fitted, users)
    arrivals, n_small, arrival_rounds = (
        arrivals_experiment(args, corpus, oracle, history, users)
        if "LowRank" in args.methods else (None, 0, 0)
    )
    active = active_experiment(args, oracle, fitted, users)

    pd.set_option("display.width", 200)
    print("\n" + settings)
    print("Fit on the historical users (s): " + ", ".join(
        f"{name} {seconds:.1f}" for name, seconds in fit_seconds.items()))
    print(f"\n1. Cumulative regret (mean over {args.n_users} users, se = standard error) "
          "and wall time of one round (round_s: predict, draws, policy, update, all users)")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print("\n2. Paired bootstrap over users (10,000 resamples, 95% percentile interval) "
          "of the difference in cumulative regret (negative: better than greedy)")
    print(boot.to_string(index=False, float_format=lambda v: f"{v:+.3f}") if len(boot) else
          "(none: it takes greedy and thompson or info in --policies, and --n-rounds >= 10)")
    if 20 in checkpoints and ("none", "Bayes", "thompson") in table.index:
        reference = table.loc[("none", "Bayes", "thompson"), "R@20"]
        print(f"\n3. Cumulative regret at 20 rounds over Bayes-Thompson's ({reference:.3f}), "
              "no drift")
        print((table.loc["none"]["R@20"] / reference).unstack().to_string(
            float_format=lambda v: f"{v:.2f}"))
    print_adaptation_tables(args, oracle, jump, (arrivals, n_small, arrival_rounds), active)
    print("\nGoals\n" + goals(args, table, boot, jump))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    logs.to_csv(output / "continual_log.csv", index=False)
    plot(args, logs, jump_logs, output / "continual.png")
    print(f"\nWrote {output / 'continual_log.csv'} and {output / 'continual.png'} in "
          f"{time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    sys.exit(main())
