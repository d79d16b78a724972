"""Speed of the feature layer: embedding and scoring throughput, and the cache.

Prints figures (these are not timed tests):

1. ``TextEmbedder`` throughput (texts/s and tokens/s) on synthetic-corpus prompts
   and responses, model already loaded, no cache;
2. cold vs warm time of the embeddings of a small benchmark-like X (model load
   included when cold) and their ratio (goal: warm at least 100x faster), and the
   warm time of the whole ``EmbeddingFeatures`` step;
3. a warm ``FeatureCache`` lookup of 1,000,000 cached 384-d vectors, from keys and
   from texts (hashing included), first by a new cache object (which verifies the
   shards' checksums) and then again;
4. ``RewardModelScorer`` throughput with a small random-weight GPT-2 reward model;
5. the same throughputs on the GPU when there is one, with its name; otherwise it
   says the GPU was not measured;
6. with ``--backend {loky,dask,ray}`` (and ``--scheduler ADDRESS``): the time to
   embed the prompts of a ``--n-shard-texts``-prompt corpus serially and in chunks
   on the backend's workers into one cache folder, and the largest difference
   between the two.

All caches are temporary folders, removed at the end. The machine's load average
is printed beside the figures: on shared cores, compare ratios from one run.

    python benchmarks/features.py
    python benchmarks/features.py --n-lookup 200000 --n-texts 128
    python benchmarks/features.py --backend dask --n-workers 2
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from _random_models import minilm_tokenizer, random_transformer

from pllm_sk.datasets import make_personalllm
from pllm_sk.features import (
    EmbeddingFeatures,
    FeatureCache,
    RewardModelScorer,
    TextEmbedder,
)
from pllm_sk.runtime import BACKENDS, joblib_backend
from pllm_sk.simulation import sample_users, simulate_feedback


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-texts", type=int, default=256, help="texts per kind")
    parser.add_argument("--n-pairs", type=int, default=128, help="pairs scored")
    parser.add_argument("--n-lookup", type=int, default=1_000_000)
    parser.add_argument("--lookup-dim", type=int, default=384)
    parser.add_argument("--n-prompts", type=int, default=60, help="cold/warm corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, help="measure sharded embedding")
    parser.add_argument("--scheduler", help="Dask scheduler or Ray cluster address")
    parser.add_argument("--n-workers", type=int, help="local workers (default 2)")
    parser.add_argument("--n-shard-texts", type=int, default=8192)
    return parser.parse_args(argv)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def count_tokens(tokenizer, texts, max_length):
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return sum(len(ids) for ids in encoded["input_ids"])


def embedding_throughput(corpus, n_texts, device):
    embedder = TextEmbedder(device=device, cache=False, verbose=0).fit()
    embedder.transform(["load the model first"])
    tokenizer = minilm_tokenizer()
    lines = []
    for kind, texts in (
        ("prompts", list(corpus.prompts[:n_texts])),
        ("responses", list(corpus.responses[: n_texts // 8 + 1].ravel()[:n_texts])),
    ):
        _, seconds = timed(lambda texts=texts: embedder.transform(texts))
        tokens = count_tokens(tokenizer, texts, embedder.max_length_)
        lines.append(
            f"  {kind:9s}: {len(texts)} texts, {tokens / len(texts):.0f} tokens each: "
            f"{len(texts) / seconds:7.1f} texts/s, {tokens / seconds:8.0f} tokens/s"
        )
    return embedder, lines


def cold_and_warm(n_prompts, seed, cache_dir):
    corpus = make_personalllm(n_prompts, random_state=seed)
    weights = sample_users(50, alpha=0.05, random_state=seed)
    data = simulate_feedback(
        corpus, weights, n_history=10, n_query=1, random_state=seed
    )
    pairs = data.X[["prompt_id", "response_id"]].drop_duplicates().to_numpy()
    texts = list(corpus.prompts[np.unique(pairs[:, 0])])
    texts += list(corpus.responses[pairs[:, 0], pairs[:, 1]])

    def embeddings():
        # A new embedder and cache object each time, as in a new process.
        return TextEmbedder(cache=cache_dir, verbose=0).fit().transform(texts)

    def features(n_components):
        step = EmbeddingFeatures(
            corpus,
            embedder=TextEmbedder(cache=cache_dir, verbose=0),
            n_components=n_components,
        )
        return step.fit(data.X).transform(data.X).to_numpy()

    cold, cold_s = timed(embeddings)
    warm, warm_s = timed(embeddings)
    assert np.array_equal(cold, warm), "warm != cold"
    full_s = timed(lambda: features(None))[1]
    reduced_s = timed(lambda: features(32))[1]
    return (
        f"  the {len(texts)} distinct texts of a {len(data.X):,}-row X "
        f"(synthetic corpus, {n_prompts} prompts), TextEmbedder fit + transform:\n"
        f"    cold {cold_s:7.2f} s (model load included)   warm {warm_s:6.3f} s   "
        f"ratio {cold_s / warm_s:,.0f}x (goal >= 100x); warm equals cold exactly\n"
        f"    warm EmbeddingFeatures fit + transform: {full_s:.3f} s full, "
        f"{reduced_s:.3f} s with n_components=32 (two PCA fits)"
    )


def warm_lookup(n_lookup, cache_dir, seed, dim=384):
    rng = np.random.default_rng(seed)
    identity = {"model": f"benchmark/random-{dim}", "dim": dim}
    texts = [f"cached text number {i}" for i in range(n_lookup)]
    keys, hash_s = timed(lambda: FeatureCache.text_keys(texts))
    cache = FeatureCache(cache_dir)
    _, store_s = timed(
        lambda: [
            cache.store(identity, part, rng.standard_normal((len(part), dim)))
            for part in np.array_split(keys, 4)
        ]
    )
    query = keys[rng.permutation(n_lookup)]
    fresh = FeatureCache(cache_dir)
    (vectors, found), first_s = timed(lambda: fresh.lookup(identity, query))
    assert found.all()
    _, again_s = timed(lambda: fresh.lookup(identity, query))
    # The floor of any lookup that returns new memory: filling an array of that size.
    _, fill_s = timed(lambda: np.full(vectors.shape, np.nan, dtype=vectors.dtype))
    _, texts_s = timed(lambda: fresh.get_or_compute(identity, texts, None))
    gigabytes = vectors.nbytes / 1e9
    return [
        f"  {n_lookup:,} vectors x {dim} float32 ({gigabytes:.2f} GB), stored in "
        f"{store_s:.1f} s as 4 shards",
        f"    lookup by key, new cache object (verifies checksums): {first_s:6.2f} s",
        f"    lookup by key, again:                                 {again_s:6.2f} s",
        f"    (np.full of a new array of the output's size alone:     {fill_s:6.2f} s)",
        f"    get_or_compute from texts (hashing {hash_s:.2f} s included):   "
        f"{texts_s:6.2f} s",
    ]


def scorer_throughput(corpus, n_pairs, device):
    tokenizer = minilm_tokenizer()
    model = random_transformer(
        "gpt2",
        "AutoModelForSequenceClassification",
        vocab_size=tokenizer.vocab_size,
        n_embd=256,
        n_layer=4,
        n_head=4,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    n_prompts = n_pairs // corpus.n_responses + 1
    pairs = pd.DataFrame(
        {
            "prompt": np.repeat(corpus.prompts[:n_prompts], corpus.n_responses),
            "response": corpus.responses[:n_prompts].ravel(),
        }
    ).iloc[:n_pairs]
    scorer = RewardModelScorer(
        model,
        tokenizer=tokenizer,
        name="gpt2-4x256",
        batch_size=16,
        device=device,
        cache=False,
        verbose=0,
    ).fit()
    scorer.transform(pairs.iloc[:2])
    _, seconds = timed(lambda: scorer.transform(pairs))
    texts = [
        f"User: {p}\n\nAssistant: {r}" for p, r in zip(pairs.prompt, pairs.response)
    ]
    tokens = count_tokens(tokenizer, texts, scorer.max_length_)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"  random GPT-2 reward model ({parameters:.1f}M parameters), batch_size=16, "
        f"{n_pairs} pairs, {tokens / n_pairs:.0f} tokens each: {n_pairs / seconds:7.1f} "
        f"pairs/s, {tokens / seconds:8.0f} tokens/s"
    )


def sharded_embedding(args, folder):
    """Serial vs sharded embedding of the same texts into fresh caches."""
    corpus = make_personalllm(args.n_shard_texts, random_state=args.seed)
    texts = list(corpus.prompts)
    serial, serial_s = timed(
        lambda: TextEmbedder(cache=os.path.join(folder, "serial"), verbose=0)
        .fit()
        .transform(texts)
    )
    with joblib_backend(
        args.backend, address=args.scheduler, n_workers=args.n_workers
    ) as label:
        embedder = TextEmbedder(cache=os.path.join(folder, "sharded"), verbose=0)
        sharded, sharded_s = timed(lambda: embedder.fit().transform(texts))
    shards = FeatureCache(os.path.join(folder, "sharded")).info()[0]["n_shards"]
    return (
        f"  {len(set(texts))} distinct prompts, all-MiniLM-L6-v2, chunks of 4096: serial "
        f"{serial_s:.1f} s; on {label}: {sharded_s:.1f} s (worker start-up included), "
        f"{shards} shard(s) in the one cache folder; largest difference "
        f"{np.abs(sharded - serial).max():.1e}"
    )


def main(argv=None):
    import torch

    args = parse_args(argv)
    corpus = make_personalllm(max(args.n_texts, args.n_pairs // 8 + 2), random_state=0)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; load average {load}\n"
    )
    print("1. TextEmbedder throughput (all-MiniLM-L6-v2, float32, batch_size=32), CPU:")
    _, lines = embedding_throughput(corpus, args.n_texts, "cpu")
    print("\n".join(lines), flush=True)

    with tempfile.TemporaryDirectory(prefix="pllm_sk_features_") as folder:
        print("\n2. Cold vs warm cache, the benchmark's embedding features, CPU:")
        print(cold_and_warm(args.n_prompts, args.seed, os.path.join(folder, "a")))
        print(f"\n3. Warm FeatureCache lookup ({tempfile.gettempdir()}):", flush=True)
        lines = warm_lookup(
            args.n_lookup, os.path.join(folder, "b"), args.seed, args.lookup_dim
        )
        print("\n".join(lines))

    print("\n4. RewardModelScorer throughput, CPU:")
    print(scorer_throughput(corpus, args.n_pairs, "cpu"), flush=True)

    print("\n5. GPU:")
    if torch.cuda.is_available():
        print(f"  {torch.cuda.get_device_name()}")
        _, lines = embedding_throughput(corpus, args.n_texts, "cuda")
        print("\n".join(lines))
        print(scorer_throughput(corpus, args.n_pairs, "cuda"))
    else:
        print("  not measured: no CUDA device on this machine.")

    if args.backend is not None:
        print(f"\n6. Sharded embedding, {args.backend} backend:", flush=True)
        with tempfile.TemporaryDirectory(prefix="pllm_sk_shards_") as folder:
            print(sharded_embedding(args, folder))


if __name__ == "__main__":
    sys.exit(main())
