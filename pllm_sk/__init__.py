"""pllm_sk: scikit-learn-compatible LLM personalization on the PersonalLLM benchmark.

Subpackages
-----------
datasets
    The PersonalLLM corpus (real and synthetic) as a :class:`~pllm_sk.datasets.Corpus`.
simulation
    Simulated users, their feedback and the oracle that knows their true rewards.
model_selection
    Cold-start splitters over users and personal scorers.
features
    Feature steps that append reward or embedding columns to id rows.
baselines
    Reference rankers: population, per-user, oracle and the Bayes limit.
neighbors
    Nearest-user rankers: predict from the most similar historical users.
collaborative
    Low-rank models of utility learned from every user's comparisons.
meta
    A torch reward head meta-learned across users to adapt from few comparisons.
icl
    In-context LLM rankers: a causal LM shown the user's liked examples.

Subpackages are imported on first use, so ``import pllm_sk`` stays fast and does
not import torch or transformers.
"""

import importlib

__version__ = "0.1.0.dev0"

_SUBMODULES = [
    "baselines",
    "collaborative",
    "datasets",
    "features",
    "icl",
    "meta",
    "model_selection",
    "neighbors",
    "simulation",
]

__all__ = _SUBMODULES + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"pllm_sk.{name}")
    raise AttributeError(f"module 'pllm_sk' has no attribute {name!r}")


def __dir__():
    return __all__
