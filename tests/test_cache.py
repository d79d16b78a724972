"""FeatureCache: warm equals cold, only misses computed, corruption, concurrency."""

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from pllm_sk.features import CACHE_DIR_ENV, FeatureCache, default_cache_dir

IDENTITY = {"model": "test/hash-features", "dim": 8}
REPO = Path(__file__).resolve().parents[1]


def hash_features(texts):
    """A deterministic 8-d vector per text, from float arithmetic on its key."""
    keys = FeatureCache.text_keys(texts)
    bits = np.unpackbits(keys.view(np.uint8).reshape(len(texts), 16), axis=1)
    return (bits[:, :8] * 0.5 - bits[:, 8:16] / 3.0 + 1e-3 * np.arange(8)).astype(
        np.float32
    )


class CountingCompute:
    def __init__(self):
        self.texts = []

    def __call__(self, texts):
        self.texts.extend(texts)
        return hash_features(texts)


def shards(cache, identity=IDENTITY):
    return sorted((cache.root / cache.namespace(identity)).glob("*.shard"))


def test_warm_equals_cold_exactly_and_only_misses_are_computed(tmp_path):
    texts = [f"text {i}" for i in range(50)] + ["text 3", "text 7"]
    cache = FeatureCache(tmp_path)
    compute = CountingCompute()
    cold = cache.get_or_compute(IDENTITY, texts, compute, chunk_size=16)
    assert sorted(compute.texts) == sorted(set(texts))  # each distinct text once
    np.testing.assert_array_equal(cold, hash_features(texts))

    compute = CountingCompute()
    warm = FeatureCache(tmp_path).get_or_compute(IDENTITY, texts[::-1], compute)
    assert compute.texts == []
    assert warm.dtype == np.float32
    np.testing.assert_array_equal(warm, cold[::-1])

    compute = CountingCompute()
    cache.get_or_compute(IDENTITY, ["text 1", "new one", "new two"], compute)
    assert sorted(compute.texts) == ["new one", "new two"]


def test_identities_do_not_share_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(IDENTITY, ["a"], hash_features)
    other = dict(IDENTITY, max_length=128)
    compute = CountingCompute()
    cache.get_or_compute(other, ["a"], compute)
    assert compute.texts == ["a"]
    assert cache.namespace(other) != cache.namespace(IDENTITY)
    assert cache.namespace(IDENTITY).startswith("test_hash-features-")


def test_lookup_reports_missing_keys(tmp_path):
    cache = FeatureCache(tmp_path)
    assert cache.lookup(IDENTITY, FeatureCache.text_keys(["a"]))[0] is None
    cache.get_or_compute(IDENTITY, ["a", "b"], hash_features)
    vectors, found = cache.lookup(IDENTITY, FeatureCache.text_keys(["b", "zzz", "a"]))
    assert found.tolist() == [True, False, True]
    assert np.isnan(vectors[1]).all()
    np.testing.assert_array_equal(vectors[[0, 2]], hash_features(["b", "a"]))


def test_many_shards_are_compacted(tmp_path):
    cache = FeatureCache(tmp_path)
    for start in range(0, 120, 10):
        texts = [f"t{i}" for i in range(start, start + 10)]
        cache.get_or_compute(IDENTITY, texts, hash_features, chunk_size=1)
    assert len(shards(cache)) <= 10
    texts = [f"t{i}" for i in range(120)]
    np.testing.assert_array_equal(
        FeatureCache(tmp_path).get_or_compute(IDENTITY, texts, CountingCompute()),
        hash_features(texts),
    )
    cache.compact(IDENTITY)
    assert len(shards(cache)) == 1
    assert cache.info()[0]["n_entries"] == 120


@pytest.mark.parametrize(
    "damage", ["flip_vector_byte", "flip_key_byte", "truncate", "header"]
)
def test_corrupt_shard_is_detected_and_recomputed(tmp_path, damage):
    texts = [f"text {i}" for i in range(20)]
    FeatureCache(tmp_path).get_or_compute(IDENTITY, texts, hash_features)
    (path,) = shards(FeatureCache(tmp_path))
    data = bytearray(path.read_bytes())
    if damage == "flip_vector_byte":
        data[-5] ^= 0xFF
    elif damage == "flip_key_byte":
        data[64 + 3] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 7]
    else:
        data[:8] = b"garbage!"
    path.write_bytes(bytes(data))

    compute = CountingCompute()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        vectors = FeatureCache(tmp_path).get_or_compute(IDENTITY, texts, compute)
    assert sorted(compute.texts) == sorted(texts)  # recomputed, never returned
    np.testing.assert_array_equal(vectors, hash_features(texts))
    assert not path.exists()
    compute = CountingCompute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = FeatureCache(tmp_path).get_or_compute(IDENTITY, texts, compute)
    assert compute.texts == []  # the recomputed entries were stored again
    np.testing.assert_array_equal(again, vectors)


def test_interrupted_write_leaves_no_visible_shard(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def failing(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return hash_features(texts)

    texts = [f"x{i}" for i in range(30)]
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(IDENTITY, texts, failing, chunk_size=10)
    # The first chunk was kept; nothing half-written is visible.
    compute = CountingCompute()
    FeatureCache(tmp_path).get_or_compute(IDENTITY, texts, compute)
    assert len(compute.texts) == 20
    folder = tmp_path / cache.namespace(IDENTITY)
    assert not list(folder.glob("*.part"))


WRITER = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("error")
    sys.path.insert(0, {tests!r})
    from test_cache import IDENTITY, hash_features
    from pllm_sk.features import FeatureCache

    def slow(texts):
        time.sleep(0.002)
        return hash_features(texts)

    worker = int(sys.argv[1])
    cache = FeatureCache({root!r})
    for round_ in range(12):
        # Half of each round's texts are shared with the other writer.
        texts = [f"shared {{round_}} {{i}}" for i in range(40)]
        texts += [f"own {{worker}} {{round_}} {{i}}" for i in range(40)]
        got = cache.get_or_compute(IDENTITY, texts, slow, chunk_size=7)
        assert (got == hash_features(texts)).all()
    """
)


def test_two_processes_filling_the_same_cache_leave_it_valid(tmp_path):
    script = WRITER.format(tests=str(REPO / "tests"), root=str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(worker)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in (0, 1)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err

    texts = [f"shared {r} {i}" for r in range(12) for i in range(40)]
    texts += [f"own {w} {r} {i}" for w in (0, 1) for r in range(12) for i in range(40)]
    compute = CountingCompute()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shard may be corrupt
        vectors = FeatureCache(tmp_path).get_or_compute(IDENTITY, texts, compute)
    assert compute.texts == []
    np.testing.assert_array_equal(vectors, hash_features(texts))


def test_default_location_follows_platform_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert FeatureCache().root == tmp_path / "mine"
    assert FeatureCache(tmp_path / "given").root == tmp_path / "given"
    monkeypatch.delenv(CACHE_DIR_ENV)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "pllm_sk"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert default_cache_dir() == Path.home() / ".cache" / "pllm_sk"
    assert REPO not in default_cache_dir().parents


def test_info_size_and_clear(tmp_path):
    cache = FeatureCache(tmp_path)
    assert cache.info() == [] and cache.nbytes() == 0
    cache.get_or_compute(IDENTITY, ["a", "b", "c"], hash_features)
    cache.get_or_compute({"model": "other"}, ["a"], hash_features)
    info = {row["model"]: row for row in cache.info()}
    assert info["test/hash-features"]["n_entries"] == 3
    assert info["other"]["n_entries"] == 1
    assert cache.nbytes() > 3 * 8 * 4
    cache.clear({"model": "other"})
    assert [row["model"] for row in cache.info()] == ["test/hash-features"]
    cache.clear()
    assert cache.info() == []
    compute = CountingCompute()
    cache.get_or_compute(IDENTITY, ["a"], compute)
    assert compute.texts == ["a"]


def test_pickle_and_repr(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(IDENTITY, ["a"], hash_features)
    restored = pickle.loads(pickle.dumps(cache))
    assert restored.root == cache.root
    assert str(tmp_path) in repr(cache)
    compute = CountingCompute()
    np.testing.assert_array_equal(
        restored.get_or_compute(IDENTITY, ["a"], compute), hash_features(["a"])
    )
    assert compute.texts == []  # the restored cache reads the same entries


def test_errors_name_the_problem(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(TypeError, match="identity must be a non-empty dict"):
        cache.get_or_compute({}, ["a"], hash_features)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.get_or_compute({"model": object()}, ["a"], hash_features)
    with pytest.raises(ValueError, match="keys must be a uint64 array"):
        cache.lookup(IDENTITY, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="compute returned shape"):
        cache.get_or_compute(IDENTITY, ["a", "b"], lambda texts: np.zeros((1, 8)))
    with pytest.raises(ValueError, match="finite"):
        cache.store(IDENTITY, FeatureCache.text_keys(["a"]), [[np.nan] * 8])
    cache.get_or_compute(IDENTITY, ["a"], hash_features)
    with pytest.raises(ValueError, match="dimension 3"):
        cache.get_or_compute(IDENTITY, ["b"], lambda texts: np.zeros((1, 3)))


def read_only(folder, monkeypatch):
    """Make ``folder`` unwritable: by permissions, or, where they are not enforced
    (root), by failing every write into it as a read-only file system would."""
    import errno

    from pllm_sk.runtime import _cache

    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    if os.access(folder, os.W_OK):

        def refuse(path, chunks):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

        monkeypatch.setattr(_cache, "_atomic_write", refuse)


def test_a_read_only_folder_computes_misses_and_warns_once(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    FeatureCache(folder).get_or_compute(IDENTITY, ["a", "b"], hash_features)
    read_only(folder, monkeypatch)
    try:
        cache, compute = FeatureCache(folder), CountingCompute()
        texts = ["a", "new 1", "b", "new 2", "new 3"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vectors = cache.get_or_compute(IDENTITY, texts, compute, chunk_size=1)
            again = cache.get_or_compute(IDENTITY, ["new 4"], compute)
        np.testing.assert_array_equal(vectors, hash_features(texts))
        np.testing.assert_array_equal(again, hash_features(["new 4"]))
        assert sorted(compute.texts) == ["new 1", "new 2", "new 3", "new 4"]
        assert len(caught) == 1 and caught[0].category is RuntimeWarning
        message = str(caught[0].message)
        for part in (str(folder), "cache=", CACHE_DIR_ENV, "not cached"):
            assert part in message
        with pytest.raises(OSError, match=f"Cannot write to the feature cache {folder}"):
            cache.store(IDENTITY, FeatureCache.text_keys(["c"]), hash_features(["c"]))
        assert FeatureCache(folder).info()[0]["n_entries"] == 2
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
