"""The Corpus type and the PersonalLLM loader."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pllm_sk.datasets import (
    RESPONSE_MODELS,
    REWARD_MODEL_STATS,
    REWARD_MODELS,
    Corpus,
    DamagedCopyError,
    load_personalllm,
)


def test_corpus_shapes_and_lookup(corpus):
    assert corpus.rewards.dtype == np.float32
    assert corpus.rewards.shape == (60, 8, 10)
    assert corpus.prompt_ids("test").tolist() == list(range(40, 60))
    looked_up = corpus.lookup_rewards([3, 59], [7, 0])
    np.testing.assert_array_equal(looked_up[0], corpus.rewards[3, 7])
    np.testing.assert_array_equal(looked_up[1], corpus.rewards[59, 0])


def test_select_split_renumbers_prompts(corpus):
    test = corpus.select_split("test")
    assert test.n_prompts == 20 and set(test.split) == {"test"}
    np.testing.assert_array_equal(test.rewards[0], corpus.rewards[40])
    assert test.prompts[0] == corpus.prompts[40]


def _arrays(n_prompts=3, n_responses=2, n_reward_models=2):
    return dict(
        prompts=[f"p{i}" for i in range(n_prompts)],
        responses=[[f"r{i}{k}" for k in range(n_responses)] for i in range(n_prompts)],
        rewards=np.zeros((n_prompts, n_responses, n_reward_models)),
        reward_models=[f"rm{b}" for b in range(n_reward_models)],
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rewards=np.zeros((3, 2, 3))), "rewards must have shape"),
        (dict(responses=[["a", "b"]] * 2), "responses must have shape"),
        (dict(reward_models=["rm0", "rm0"]), "duplicated: \\['rm0'\\]"),
        (dict(split=["train", "dev", "test"]), "'dev'"),
        (dict(response_models=[["m"]] * 3), "response_models must have shape"),
    ],
)
def test_corpus_rejects_bad_arrays(change, message):
    with pytest.raises(ValueError, match=message):
        Corpus(**{**_arrays(), **change})


def test_corpus_rejects_nan_rewards_naming_the_place():
    arrays = _arrays()
    arrays["rewards"][2, 1, 0] = np.nan
    with pytest.raises(
        ValueError, match="prompt_id=2, response_id=1, reward model 'rm0'"
    ):
        Corpus(**arrays)


def test_lookup_rejects_ids_outside_corpus(corpus):
    with pytest.raises(ValueError, match="prompt_id=60 is outside the corpus"):
        corpus.lookup_rewards([60], [0])
    with pytest.raises(ValueError, match="response_id=-1"):
        corpus.lookup_rewards([0], [-1])
    with pytest.raises(TypeError, match="prompt_id must hold integers"):
        corpus.lookup_rewards([0.5], [0])


def test_save_and_load_give_back_the_same_corpus(corpus, tmp_path):
    folder = corpus.save(tmp_path / "saved")
    for mmap_mode in (None, "r"):
        loaded = Corpus.load(folder, mmap_mode=mmap_mode)
        assert loaded.fingerprint == corpus.fingerprint
        for name in ("prompts", "responses", "response_models", "split", "subset"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(corpus, name))
        np.testing.assert_array_equal(loaded.rewards, corpus.rewards)
    assert not Corpus.load(folder, mmap_mode="r").rewards.flags.writeable  # mapped


def test_load_checks_the_copy_against_its_fingerprint(corpus, tmp_path):
    folder = corpus.save(tmp_path / "saved")
    texts = dict(np.load(folder / "texts.npz"))
    texts["prompts_utf8"] = texts["prompts_utf8"][::-1].copy()  # same size, other text
    np.savez(folder / "texts.npz", **texts)
    with pytest.raises(DamagedCopyError, match=f"saved corpus in {folder} does not match"):
        Corpus.load(folder)
    with pytest.raises(FileNotFoundError, match="No saved corpus"):
        Corpus.load(tmp_path / "nothing")


def test_share_rewrites_a_damaged_copy_and_keeps_the_data_of_the_original(
    corpus, tmp_path
):
    import pickle

    shared = corpus.share(tmp_path / "shared")
    assert pickle.loads(pickle.dumps(shared)) is shared
    assert len(pickle.dumps(shared)) < 500 < len(pickle.dumps(corpus))
    rewards = np.load(shared.shared_folder / "rewards.npy")
    np.save(shared.shared_folder / "rewards.npy", rewards + 1)
    with pytest.warns(RuntimeWarning, match="Rewritten"):
        pickle.dumps(shared)
    np.testing.assert_array_equal(
        Corpus.load(shared.shared_folder).rewards, corpus.rewards
    )
    assert shared.select([0, 1]).shared_folder is None
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Pass share\\(\\) a writable folder"):
        corpus.share(blocker / "copy")


@pytest.mark.parametrize("mmap_mode", ["w+", "w", "write", "R", 1])
def test_load_rejects_an_mmap_mode_that_creates_the_file_before_touching_it(
    corpus, tmp_path, mmap_mode
):
    folder = corpus.save(tmp_path / "saved")
    before = (folder / "rewards.npy").read_bytes()
    with pytest.raises(ValueError, match="'mmap_mode' parameter of Corpus.load must be"):
        Corpus.load(folder, mmap_mode=mmap_mode)
    assert (folder / "rewards.npy").read_bytes() == before
    assert Corpus.load(folder).fingerprint == corpus.fingerprint


def test_load_with_mmap_mode_c_keeps_changes_in_memory(corpus, tmp_path):
    folder = corpus.save(tmp_path / "saved")
    loaded = Corpus.load(folder, mmap_mode="c")
    loaded.rewards[0, 0, 0] += 1
    np.testing.assert_array_equal(Corpus.load(folder).rewards, corpus.rewards)


# Every file of a copy, and ways of damaging one that leave it unreadable.
COPY_FILES = ["corpus.json", "rewards.npy", "texts.npz"]


def _truncate_to_half(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _empty(path):
    path.write_bytes(b"")


def _garble(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - 8 : middle + 8] = b"\xff" * 16
    path.write_bytes(bytes(data))


def test_a_copy_is_the_three_files_that_the_damage_tests_cover(corpus, tmp_path):
    assert sorted(p.name for p in corpus.save(tmp_path / "saved").iterdir()) == COPY_FILES


@pytest.mark.parametrize("damage", [_truncate_to_half, _empty, _garble, Path.unlink])
@pytest.mark.parametrize("file", COPY_FILES)
def test_an_unreadable_file_of_a_copy_raises_damaged_copy_error_naming_it(
    corpus, tmp_path, file, damage
):
    folder = corpus.save(tmp_path / "saved")
    damage(folder / file)
    if file == "corpus.json" and damage is Path.unlink:
        with pytest.raises(FileNotFoundError, match="No saved corpus"):
            Corpus.load(folder)
        return
    for mmap_mode in (None, "r"):
        with pytest.raises(DamagedCopyError, match=f"saved corpus in {folder}") as raised:
            Corpus.load(folder, mmap_mode=mmap_mode)
        # Named by the file that cannot be read, or found by the fingerprint.
        assert f"its file {file} is unreadable" in str(raised.value) or (
            "does not match its fingerprint" in str(raised.value)
        )


@pytest.mark.parametrize("damage", [_truncate_to_half, _empty])
@pytest.mark.parametrize("file", COPY_FILES)
def test_a_truncated_file_is_named_and_a_shared_copy_is_rewritten(
    corpus, tmp_path, file, damage
):
    import pickle

    shared = corpus.share(tmp_path / "shared")
    damage(shared.shared_folder / file)
    with pytest.raises(DamagedCopyError, match=f"its file {file} is unreadable") as raised:
        Corpus.load(shared.shared_folder)
    assert raised.value.__cause__ is not None
    with pytest.warns(RuntimeWarning, match=f"its file {file} is unreadable.*Rewritten"):
        assert pickle.loads(pickle.dumps(shared)) is shared
    reloaded = Corpus.load(shared.shared_folder)
    assert reloaded.fingerprint == corpus.fingerprint
    np.testing.assert_array_equal(reloaded.rewards, corpus.rewards)
    np.testing.assert_array_equal(reloaded.responses, corpus.responses)
    # Sharing again into the damaged folder rewrites it too.
    damage(shared.shared_folder / file)
    with pytest.warns(RuntimeWarning, match="Rewritten from the corpus in memory"):
        again = corpus.share(shared.shared_folder)
    loaded = Corpus.load(again.shared_folder)
    for name in ("prompts", "responses", "response_models", "split", "subset"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(corpus, name))
    np.testing.assert_array_equal(loaded.rewards, corpus.rewards)


@pytest.mark.parametrize(
    "meta",
    ["[]", '{"name": "x"}', None],
    ids=["not-a-dict", "missing-keys", "wrong-shapes"],
)
def test_a_corpus_json_that_does_not_describe_the_copy_is_damage(
    corpus, tmp_path, meta
):
    import json

    folder = corpus.save(tmp_path / "saved")
    if meta is None:
        described = json.loads((folder / "corpus.json").read_text())
        described["shapes"]["responses"] = described["shapes"]["responses"][::-1]
        meta = json.dumps(described)
    (folder / "corpus.json").write_text(meta)
    with pytest.raises(DamagedCopyError, match="its file corpus.json is unreadable"):
        Corpus.load(folder)


def _write_hub_parquet(tmp_path, z, splits, *, with_model_columns=True):
    """Parquet files in the hub schema, with raw (un-normalised) scores.

    Reward columns are written in a non-alphabetical order and the response slots
    are given models in a shuffled order, so the loader must align by name.
    """
    rng = np.random.RandomState(1)
    slot_models = list(RESPONSE_MODELS)[::-1]
    paths = {}
    for split in ("train", "test"):
        rows = np.flatnonzero(np.asarray(splits) == split)
        table = {
            "prompt": [f"{split} prompt {p}" for p in rows],
            "subset": ["HelpSteer"] * rows.size,
        }
        for k in range(1, 9):
            table[f"response_{k}"] = [f"answer {k} to {p}" for p in rows]
            if with_model_columns:
                table[f"response_{k}_model"] = [slot_models[k - 1]] * rows.size
        for rm in rng.permutation(REWARD_MODELS):
            _, mean, sd = REWARD_MODEL_STATS[rm]
            b = REWARD_MODELS.index(rm)
            for k in range(1, 9):
                table[f"response_{k}_{rm}"] = z[rows, k - 1, b] * sd + mean
        paths[split] = tmp_path / f"{split}-00000-of-00001.parquet"
        pd.DataFrame(table).to_parquet(paths[split])
    return paths


@pytest.fixture
def hub_files(tmp_path):
    z = np.random.RandomState(0).normal(size=(6, 8, 10))
    splits = ["train"] * 4 + ["test"] * 2
    return z, _write_hub_parquet(tmp_path, z, splits)


def test_loader_normalises_and_orders_reward_models(hub_files):
    z, paths = hub_files
    corpus = load_personalllm(
        data_files={"train": paths["train"], "test": paths["test"]}
    )
    assert corpus.reward_models == REWARD_MODELS
    assert list(corpus.reward_models) == sorted(corpus.reward_models)
    np.testing.assert_allclose(corpus.rewards, z, atol=1e-5)
    assert corpus.split.tolist() == ["train"] * 4 + ["test"] * 2
    # All 8 slots are read, each with the model named by its response_k_model column.
    assert corpus.response_models[0].tolist() == list(RESPONSE_MODELS)[::-1]
    assert corpus.responses[5, 7] == "answer 8 to 5"


def test_loader_reads_a_folder_and_splits_by_file_name(hub_files, tmp_path):
    z, _ = hub_files
    corpus = load_personalllm(path=tmp_path)
    assert (corpus.split == "test").sum() == 2
    np.testing.assert_allclose(corpus.rewards, z, atol=1e-5)


def test_loader_without_model_columns_uses_generation_order(tmp_path):
    z = np.zeros((2, 8, 10))
    paths = _write_hub_parquet(tmp_path, z, ["train", "test"], with_model_columns=False)
    corpus = load_personalllm(data_files=[paths["train"], paths["test"]])
    assert corpus.response_models[1].tolist() == list(RESPONSE_MODELS)
    assert corpus.split.tolist() == ["train", "test"]


def test_loader_names_missing_columns(tmp_path):
    pd.DataFrame({"prompt": ["x"], "response_1": ["y"]}).to_parquet(
        tmp_path / "t.parquet"
    )
    with pytest.raises(ValueError, match="lacks .* column"):
        load_personalllm(data_files=str(tmp_path / "t.parquet"))


def _offline_environment(monkeypatch, **variables):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_loader_offline_fails_before_trying_the_hub(monkeypatch):
    # Unreachable hub: the probe must answer without handing over to `datasets`,
    # whose retries take tens of seconds.
    import datasets

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("load_dataset was called although the hub is unreachable")

    _offline_environment(monkeypatch, HF_HUB_OFFLINE="0")
    monkeypatch.setattr(datasets, "load_dataset", must_not_be_called)
    with pytest.raises(ConnectionError) as error:
        load_personalllm(connect_timeout=2.0)
    message = str(error.value)
    assert "Cannot reach the Hugging Face hub" in message
    assert "data_files" in message and "make_personalllm" in message
    assert "set HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache" in message


def _no_copy_in_the_cache(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'namkoong-lab/PersonalLLM' on the Hub")


@pytest.mark.parametrize(
    "variable", ["HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1", "TRANSFORMERS_OFFLINE=yes"]
)
def test_loader_in_offline_mode_says_to_pass_a_local_copy(monkeypatch, variable):
    import datasets

    name, value = variable.split("=")
    _offline_environment(monkeypatch, **{name: value})
    monkeypatch.setattr(datasets, "load_dataset", _no_copy_in_the_cache)
    with pytest.raises(ConnectionError) as error:
        load_personalllm()
    message = str(error.value)
    assert f"offline ({variable} is set)" in message
    assert "load_personalllm(path=" in message and "data_files=" in message
    assert "make_personalllm" in message
    assert "set HF_HUB_OFFLINE=1" not in message


def test_loader_online_failure_suggests_the_offline_cache(monkeypatch):
    import datasets

    from pllm_sk.datasets import _personalllm

    _offline_environment(monkeypatch, HF_DATASETS_OFFLINE="0", HF_HUB_OFFLINE="1")
    monkeypatch.setattr(_personalllm, "_hub_reachable", lambda timeout: True)
    monkeypatch.setattr(datasets, "load_dataset", _no_copy_in_the_cache)
    # HF_DATASETS_OFFLINE decides for `datasets` when set, as datasets reads it.
    with pytest.raises(ConnectionError, match="set HF_HUB_OFFLINE=1 to use a copy"):
        load_personalllm()


def test_loader_in_hub_offline_mode_says_how_to_load_locally(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="make_personalllm"):
        load_personalllm()
