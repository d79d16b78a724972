"""Builders shared by several test modules: synthetic rows, tiny models, scripts.

Test modules import these (``from _helpers import ...``), never each other.
torch, transformers and tokenizers are imported inside the functions.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# The scripts import their shared modules (_common, _random_models) by name, as
# they do when run from the command line.
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))

from _random_models import minilm_tokenizer, random_transformer  # noqa: E402

__all__ = [
    "BENCHMARKS",
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "best_worst_rows",
    "bradley_terry_rows",
    "byte_tokenizer",
    "load_script",
    "minilm_tokenizer",
    "one_shot_regret",
    "random_transformer",
    "shuffled_within_prompts",
    "tiny_lm",
]


def load_script(name):
    """The benchmark script ``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------ synthetic rows


def best_worst_rows(weights, n_prompts, *, n_responses=4, n_features=3, seed=0, first_user=0):
    """Each user labels ``n_prompts`` prompts of their own: best 1, worst 0, others 0.5.

    Items have Gaussian features; a user's utility is ``weights[u] . x``.
    Returns (X, y) with feature columns ``x0, x1, ...``.
    """
    rng = np.random.RandomState(seed)
    weights = np.asarray(weights, dtype=float)
    rows, labels = [], []
    for u, w in enumerate(weights):
        for q in range(n_prompts):
            prompt = (first_user + u) * n_prompts + q
            x = rng.normal(size=(n_responses, n_features))
            utility = x @ w
            y = np.full(n_responses, 0.5)
            y[np.argmin(utility)], y[np.argmax(utility)] = 0.0, 1.0
            for r in range(n_responses):
                rows.append((first_user + u, prompt, r, *x[r]))
            labels.extend(y)
    columns = ["user_id", "prompt_id", "response_id"] + [f"x{f}" for f in range(n_features)]
    return pd.DataFrame(rows, columns=columns), np.array(labels)


def shuffled_within_prompts(X, y, seed=0):
    """The same rows with each prompt's labels permuted: choices the features do
    not explain."""
    rng = np.random.RandomState(seed)
    noise = y.copy()
    for prompt in np.unique(X["prompt_id"]):
        rows = (X["prompt_id"] == prompt).to_numpy()
        noise[rows] = rng.permutation(noise[rows])
    return noise


def bradley_terry_rows(weights, n_prompts, temperature, *, n_responses=4, seed=0):
    """Each user compares one random pair per prompt of their own.

    The first row is chosen with probability ``sigmoid((u_a - u_b) / temperature)``
    (deterministically when ``temperature`` is None); a user's utility is
    ``weights[u] . x`` with Gaussian features ``x0, x1, ...``.
    """
    rng = np.random.RandomState(seed)
    n_features = weights.shape[1]
    rows, labels = [], []
    for u, w in enumerate(weights):
        for q in range(n_prompts):
            x = rng.normal(size=(n_responses, n_features))
            a, b = rng.choice(n_responses, 2, replace=False)
            margin = (x[a] - x[b]) @ w
            if temperature is None:
                first = float(margin > 0)
            else:
                first = float(rng.random_sample() < 1 / (1 + np.exp(-margin / temperature)))
            for r, label in ((a, first), (b, 1.0 - first)):
                rows.append((u, u * n_prompts + q, r, *x[r]))
                labels.append(label)
    columns = ["user_id", "prompt_id", "response_id"] + [f"x{f}" for f in range(n_features)]
    return pd.DataFrame(rows, columns=columns), np.array(labels)


def one_shot_regret(estimator, n_features=6, seed=0):
    """Mean regret of ``estimator`` on new users who reveal one best/worst prompt.

    200 historical users with sparse Dirichlet(0.2) weights label 15 prompts each;
    100 new users reveal one prompt, and the regret (best true utility minus the
    chosen row's) is averaged over 6 query prompts each.
    """
    rng = np.random.RandomState(seed)
    weights = rng.dirichlet(np.full(n_features, 0.2), 300)
    history = best_worst_rows(weights[:200], 15, n_responses=6, n_features=n_features, seed=seed)
    new_X, new_y = best_worst_rows(
        weights[200:], 7, n_responses=6, n_features=n_features, seed=seed + 1, first_user=200
    )
    query = (new_X["prompt_id"] % 7 > 0).to_numpy()
    X = pd.concat([history[0], new_X[~query]], ignore_index=True)
    y = np.concatenate([history[1], new_y[~query]])
    utility = clone(estimator).fit(X, y).predict(new_X[query])
    features = new_X[query].filter(like="x").to_numpy()
    true = np.einsum("nf,nf->n", features, weights[new_X[query]["user_id"].to_numpy()])
    table = pd.DataFrame({"group": new_X[query]["prompt_id"].to_numpy(), "u": utility, "t": true})
    chosen = table.loc[table.groupby("group")["u"].idxmax(), "t"].to_numpy()
    return float(np.mean(table.groupby("group")["t"].max().to_numpy() - chosen))


# ------------------------------------------------------------ tiny language models

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer(chat=True):
    """A byte-level BPE tokenizer with no merges: 256 byte tokens, 3 special ones."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(alphabet + SPECIAL_TOKENS)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE if chat else None
    return tokenizer


def tiny_lm(architecture="llama", vocab_size=259, seed=0):
    """A random 2-layer causal LM for :func:`byte_tokenizer` (token 256 ends a
    text); large initial weights make the scores differ."""
    position = "n_positions" if architecture == "gpt2" else "max_position_embeddings"
    special = dict(bos_token_id=256, eos_token_id=256)
    if architecture != "gpt2":
        special["pad_token_id"] = 256
    return random_transformer(
        architecture,
        "AutoModelForCausalLM",
        seed=seed,
        vocab_size=vocab_size,
        initializer_range=0.3,
        **{position: 4096},
        **special,
    )
