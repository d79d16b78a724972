"""Shared fixtures (small corpora, users and feedback) and the estimator checks'
plumbing; plain builders shared by several modules live in ``_helpers.py``."""

import functools
import re

import numpy as np
import pytest
from _helpers import minilm_tokenizer, random_transformer
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import estimator_checks_generator

from pllm_sk.datasets import RESPONSE_MODELS, REWARD_MODELS, Corpus
from pllm_sk.simulation import sample_users, simulate_feedback


@pytest.fixture(params=[0])
def global_random_seed(request):
    """The seed of a test; one place to widen when hunting seed-dependent failures."""
    return request.param


def random_corpus(n_prompts=60, n_test=20, *, random_state=0):
    """A corpus with the PersonalLLM names and Gaussian rewards with a shared quality."""
    rng = np.random.RandomState(random_state)
    n_responses, n_reward_models = len(RESPONSE_MODELS), len(REWARD_MODELS)
    quality = rng.normal(size=(n_prompts, n_responses, 1))
    rewards = quality + rng.normal(size=(n_prompts, n_responses, n_reward_models))
    return Corpus(
        [f"Prompt number {p}?" for p in range(n_prompts)],
        [
            [f"Response {k} to prompt {p}." for k in range(n_responses)]
            for p in range(n_prompts)
        ],
        rewards,
        reward_models=REWARD_MODELS,
        response_models=np.tile(
            np.array(RESPONSE_MODELS, dtype=object), (n_prompts, 1)
        ),
        split=["train"] * (n_prompts - n_test) + ["test"] * n_test,
        name="random",
    )


@pytest.fixture
def corpus():
    return random_corpus()


@pytest.fixture
def feedback_data(corpus):
    """40 users with 10 best/worst-labeled train prompts and 1 unlabeled test prompt."""
    weights = sample_users(40, alpha=0.05, random_state=0)
    return simulate_feedback(corpus, weights, n_history=10, n_query=1, random_state=0)


def check_name(check):
    """The name of a scikit-learn estimator check, through its partials."""
    while isinstance(check, functools.partial):
        check = check.func
    return check.__name__


def _check_id(value):
    # The class name, not the repr: some reprs hold a whole model.
    if isinstance(value, BaseEstimator):
        return type(value).__name__
    name = check_name(value)
    if isinstance(value, functools.partial) and value.keywords.get("readonly_memmap"):
        name += "(readonly_memmap=True)"
    return name


def parametrize_checks(estimators):
    """``parametrize_with_checks`` with short ids: ``Class-check_name``."""
    return pytest.mark.parametrize(
        "estimator, check",
        [
            pair
            for estimator in estimators
            for pair in estimator_checks_generator(estimator, legacy=True)
        ],
        ids=_check_id,
    )


def check_or_expected_failure(estimator, check, expected):
    """Run a scikit-learn estimator check, or see it fail as expected and xfail.

    ``expected`` is None (the check must pass) or ``(error, pattern, reason)``: the
    check must raise exactly ``error`` (not a subclass) with a message that
    ``pattern`` matches, and the test then xfails with ``reason``. Another
    failure of the check is a failure of the test.
    """
    if expected is None:
        check(estimator)
        return
    error, pattern, reason = expected
    with pytest.raises(Exception) as raised:
        check(estimator)
    assert type(raised.value) is error, repr(raised.value)
    assert re.search(pattern, str(raised.value)), str(raised.value)
    pytest.xfail(reason)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module of tiny models or small batches, which run
    faster on one thread, and far faster on busy shared cores. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_bert(auto_class="AutoModel", **config):
    """A random one-layer BERT (seed 0) with the MiniLM tokenizer: (model, tokenizer).

    ``auto_class`` names the transformers class that builds it from the config;
    ``config`` adds to the BertConfig (``num_labels=1`` for a reward model).
    """
    tokenizer = minilm_tokenizer()
    model = random_transformer(
        "bert",
        auto_class,
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        **config,
    )
    return model, tokenizer
