"""The cold-start benchmark on loky, Dask and Ray: bytes per task, wall time, projection.

One run measures, on this machine:

1. Bytes per task: what each engine's own serializer makes of one cross-validation
   task of the benchmark's rewards track (a cloned ``RewardFeatures`` + ranker
   pipeline and the personal scorer, whose oracle holds the corpus too), built on
   the corpus itself (sent as data) and on ``corpus.share()`` (sent as a
   reference to its checked saved copy); beside them, ``pickle.dumps`` of the
   pipeline on the corpus itself.
2. Wall time of ``run_benchmark.py`` (its default settings unless
   ``--benchmark-args`` says otherwise) sequentially, and under
   ``joblib.parallel_backend`` with loky, Dask (a ``LocalCluster`` of
   ``--n-workers`` single-threaded processes) and Ray (``--n-workers`` CPUs); the
   engine's start-up is timed apart. Every backend's table must equal the
   sequential one; the script says whether it does.
3. The projected time of a paper-size grid on N workers, from the costs measured
   in 2. The grid: the benchmark's rows (track x method x support size) x folds x
   ``--seeds`` seeds. Measured: ``t_row``, the compute of one row's fold (fit +
   score, sequential run), and ``s_call``, the engine's overhead for the one joblib
   call that the runner makes (every fold of every row, one task each):
   ``s_call = W - F - max(sum(t) / N_w, max(t))``, where ``t`` are the tasks'
   ``t_row``, ``W`` the engine's wall time on ``N_w`` workers and ``F`` the part
   of the sequential wall time that is not fold compute (data, report). The
   ``max(...)`` is the shortest time the tasks can take on ``N_w`` workers (they
   rarely divide evenly: it is a lower bound, so ``s_call`` holds the imbalance
   too). Projected: one run per seed, as the runner does,
   ``T(N) = seeds * (max(sum(t) / N, max(t)) + s_call)``; and all seeds in one
   call (one ``GridSearchCV``), ``T(N) = max(seeds * sum(t) / N, max(t)) + s_call``.

On 2 cores shared with other work, two workers cannot run twice as fast: what the
wall times show is the engines' overhead, not a speed-up. The load average is
printed beside them.

    python benchmarks/scale_out.py
    python benchmarks/scale_out.py --benchmark-args="--n-history-users 400 --n-test-users 120"

Measured (2 shared cores, load average 6-9, ``--benchmark-args="--shots 1 10"``: the
default benchmark with 2 of its 4 support sizes, 20 rows x 3 folds): one task is
45.2 MB with the corpus as data under every engine and 105 kB as a reference (the
rest is the oracle's user weights); the benchmark took 139 s sequentially, 161 s on
loky, 235 s on Dask and 339 s on Ray (2 workers each; plus 12 s and 6 s to start
Dask and Ray), every table equal to the sequential one. The engines pay a cost per
joblib call (``s_call``: 3 s loky, 7 s Dask, 12 s Ray here; Ray's joblib backend
starts a new pool of actor processes for every call), and the runner then made one
call per row (it now makes one call in all): a large grid is better run as one
call, as one ``GridSearchCV`` does.
The name is not ``distributed.py``: run as a script, it would hide the
``distributed`` package.
"""

import argparse
import os
import pickle
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import run_benchmark
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from pllm_sk.baselines import PopulationRanker
from pllm_sk.features import RewardFeatures
from pllm_sk.model_selection import METRICS, make_personal_scorer
from pllm_sk.runtime import BACKENDS, joblib_backend, serialized_size
from pllm_sk.simulation import PreferenceOracle


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument(
        "--benchmark-args", default="", help="arguments passed to run_benchmark.py"
    )
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the projected grid")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32, 128],
                        help="N of the projection")
    return parser.parse_args(argv)


def one_task(corpus, oracle):
    """What a worker receives for one fold: a cloned pipeline and the scorer."""
    return (
        clone(make_pipeline(RewardFeatures(corpus), PopulationRanker())),
        make_personal_scorer(PreferenceOracle(corpus, oracle.weights), metric=METRICS),
    )


def timed_benchmark(benchmark_argv, folder, backend=None, address=None, n_workers=None):
    argv = benchmark_argv + ["--output-dir", str(folder), "--backend", backend or "none"]
    if backend is not None:
        argv += ["--n-workers", str(n_workers)]
        argv += ["--scheduler", address] if address else []
    start = time.perf_counter()
    run_benchmark.main(argv)
    return time.perf_counter() - start, pd.read_csv(folder / "benchmark.csv")


def main(argv=None):
    args = parse_args(argv)
    benchmark_argv = shlex.split(args.benchmark_args)
    # The corpus as data (build_data shares it when a backend is named).
    bench = run_benchmark.parse_args(benchmark_argv + ["--backend", "none"])
    corpus, oracle, data = run_benchmark.build_data(bench)
    n_rows = sum(len(X) for X, _ in data.values())
    task, shared_task = one_task(corpus, oracle), one_task(corpus.share(), oracle)
    print(
        f"Machine: {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f}. Benchmark: run_benchmark.py {args.benchmark_args} "
        f"(corpus {corpus.n_prompts} prompts, {bench.n_history_users} historical + "
        f"{bench.n_test_users} test users, {n_rows:,} rows; tracks {bench.tracks}, "
        f"methods {bench.methods}, n_support {bench.shots}, {bench.n_splits} folds).",
        flush=True,
    )
    bytes_rows, wall_rows = [], []
    with tempfile.TemporaryDirectory(prefix="pllm_sk_distributed_") as folder:
        folder = Path(folder)
        seq_s, expected = timed_benchmark(benchmark_argv, folder / "sequential")
        wall_rows.append(dict(backend="none (sequential)", startup_s=0.0, wall_s=seq_s,
                              load=os.getloadavg()[0], same_table=True))
        for engine in args.backends:
            start = time.perf_counter()
            with joblib_backend(engine, n_workers=args.n_workers) as label:
                startup_s = time.perf_counter() - start
                as_data = serialized_size(engine, task)
                as_reference = serialized_size(engine, shared_task)
                bytes_rows.append(dict(engine=engine, data=as_data, reference=as_reference))
                address = None
                if engine == "dask":
                    from distributed import default_client

                    address = default_client().scheduler.address
                wall_s, table = timed_benchmark(
                    benchmark_argv, folder / engine, engine, address, args.n_workers
                )
            same = np.array_equal(table[list(METRICS)].to_numpy(),
                                  expected[list(METRICS)].to_numpy(), equal_nan=True)
            wall_rows.append(dict(backend=label, startup_s=startup_s, wall_s=wall_s,
                                  load=os.getloadavg()[0], same_table=same))
    report(args, bench, corpus, task, bytes_rows, wall_rows, expected, seq_s)


def report(args, bench, corpus, task, bytes_rows, wall_rows, expected, seq_s):
    print(f"\n1. Bytes per task (one fold of the rewards track: cloned RewardFeatures + "
          f"ranker pipeline and the scorer; corpus of {corpus.n_prompts} prompts)")
    print(f"  pickle.dumps of the cloned pipeline (a user pickle, data included): "
          f"{len(pickle.dumps(task[0])):,} bytes")
    for row in bytes_rows:
        print(f"  {row['engine']:5s} serializer: {row['data']:>12,} bytes with the corpus "
              f"as data, {row['reference']:>8,} shared (a reference): "
              f"{row['data'] / row['reference']:,.0f}x fewer")
    print(f"\n2. Wall time of the benchmark ({args.n_workers} workers; {os.cpu_count()} "
          "cores shared with other work: overhead, not speed-up)")
    for row in wall_rows:
        print(f"  {row['backend']:45s} start-up {row['startup_s']:5.1f} s, benchmark "
              f"{row['wall_s']:6.1f} s ({row['wall_s'] / seq_s:.2f}x sequential), load "
              f"{row['load']:.1f}, table equal to sequential: {row['same_table']}")
    folds = bench.n_splits
    t_row = (expected["fit_s"] + expected["predict_s"]).to_numpy()
    fixed_s = seq_s - folds * t_row.sum()
    n_tasks = len(t_row) * folds * args.seeds
    print(f"\n3. Projection: {len(t_row)} rows (track x method x support) x {folds} folds "
          f"x {args.seeds} seeds = {n_tasks} tasks; measured mean t_row = "
          f"{t_row.mean():.2f} s per fold, F = {fixed_s:.1f} s outside the folds")
    tasks = np.repeat(t_row, folds)
    print("  one run per seed (as run_benchmark.py: one call over every fold of every "
          "row): T(N) = seeds * (max(sum(t) / N, max(t)) + s_call)")
    print("  all seeds in one call (a GridSearchCV): T(N) = max(seeds * sum(t) / N, "
          "max(t)) + s_call")
    for row in wall_rows[1:]:
        fastest = max(tasks.sum() / args.n_workers, tasks.max())
        s_call = max(row["wall_s"] - fixed_s - fastest, 0.0)
        per_seed = ", ".join(
            f"N={n}: {args.seeds * (max(tasks.sum() / n, tasks.max()) + s_call) / 60:.1f}"
            for n in args.workers
        )
        one_call = ", ".join(
            f"N={n}: {(max(args.seeds * tasks.sum() / n, tasks.max()) + s_call) / 60:.1f}"
            for n in args.workers
        )
        print(f"  {row['backend'].split(' ')[0]:5s} s_call = {s_call:5.2f} s; minutes, one "
              f"run per seed {per_seed}; in one call {one_call}")

if __name__ == "__main__":
    sys.exit(main())
