"""Shared fixtures: small corpora, users and feedback built in the tests."""

import numpy as np
import pytest

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
