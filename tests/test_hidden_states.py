"""Reward-model embeddings: last-token hidden states, batched, cached, as features."""

import numpy as np
import pandas as pd
import pytest
from _helpers import random_transformer

from conftest import random_corpus, tiny_bert
from pllm_sk.features import (
    LORE_REWARD_MODEL,
    FeatureCache,
    HiddenStateFeatures,
    RewardModelEmbedder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = pd.DataFrame(
    {
        "prompt": ["Hi?", "How do I bake bread?", "Hi?", "Name a colour."] * 2,
        "response": [
            "Hello.",
            "Mix flour, water, yeast and salt; knead; let it rise; bake.",
            "Go away.",
            "Blue.",
            "Hey there, nice to meet you!",
            "Buy it.",
            "Hi.",
            "A colour: a very long answer about green and its many shades.",
        ],
    }
)


def tiny_causal_lm():
    """A random small Llama (seed 0) with the MiniLM tokenizer."""
    _, tokenizer = tiny_bert()
    model = random_transformer(
        "llama", "AutoModelForCausalLM", vocab_size=tokenizer.vocab_size
    )
    return model, tokenizer


@pytest.mark.parametrize("build", [tiny_bert, tiny_causal_lm])
def test_last_token_state_does_not_depend_on_the_batch_size(build):
    model, tokenizer = build()
    vectors = [
        RewardModelEmbedder(
            model, tokenizer=tokenizer, batch_size=size, cache=False, verbose=0
        ).fit_transform(PAIRS)
        for size in (1, 3, 8)
    ]
    width = model.config.hidden_size
    assert vectors[0].shape == (len(PAIRS), width) and vectors[0].dtype == np.float32
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-5)
    np.testing.assert_allclose(vectors[2], vectors[0], atol=1e-5)


def test_the_vector_is_the_last_real_tokens_hidden_state():
    import torch

    model, tokenizer = tiny_causal_lm()
    embedder = RewardModelEmbedder(model, tokenizer=tokenizer, cache=False, verbose=0)
    vectors = embedder.fit_transform(PAIRS)
    text = embedder._format(PAIRS.prompt[1], PAIRS.response[1])
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids).last_hidden_state[0, -1]
    np.testing.assert_allclose(vectors[1], hidden.numpy(), atol=1e-5)
    # Different texts, different vectors.
    assert not np.allclose(vectors[0], vectors[2])


def test_cached_vectors_come_back_without_the_model(tmp_path):
    model, tokenizer = tiny_bert()
    cache = FeatureCache(tmp_path)
    first = RewardModelEmbedder(model, tokenizer=tokenizer, cache=cache, verbose=0)
    vectors = first.fit_transform(PAIRS)
    again = RewardModelEmbedder(model, tokenizer=tokenizer, cache=cache, verbose=0)
    again.fit()
    again._embed = None  # a warm cache never calls the model
    np.testing.assert_array_equal(again.transform(PAIRS), vectors)
    assert first.device_ == "cpu"
    assert list(first.get_feature_names_out())[:2] == [
        "loaded-model_0",
        "loaded-model_1",
    ]


def test_feature_step_appends_each_pairs_vector():
    model, tokenizer = tiny_bert()
    corpus = random_corpus(n_prompts=6, n_test=2)
    embedder = RewardModelEmbedder(
        model, tokenizer=tokenizer, name="rm", cache=False, verbose=0
    )
    X = pd.DataFrame(
        {
            "user_id": [0, 1, 1, 2],
            "prompt_id": [3, 3, 0, 3],
            "response_id": [2, 2, 5, 1],
        }
    )
    out = HiddenStateFeatures(corpus, embedder=embedder).fit_transform(X)
    assert list(out.columns[:3]) == ["user_id", "prompt_id", "response_id"]
    assert out.shape == (4, 3 + 16) and out.columns[3] == "rm_0"
    pairs = np.column_stack(
        [corpus.prompts[X.prompt_id], corpus.responses[X.prompt_id, X.response_id]]
    )
    expected = embedder.fit().transform(pairs)
    np.testing.assert_allclose(out.iloc[:, 3:].to_numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(out.iloc[0, 3:], out.iloc[1, 3:])


def test_lore_model_is_the_default():
    assert RewardModelEmbedder().model == LORE_REWARD_MODEL
    assert LORE_REWARD_MODEL == "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"
