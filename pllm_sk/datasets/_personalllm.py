"""Loader of the real PersonalLLM corpus: from the Hugging Face hub or local parquet."""

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from ._constants import RESPONSE_MODELS, REWARD_MODEL_STATS, REWARD_MODELS
from ._corpus import Corpus

__all__ = ["load_personalllm"]

HUB_DATASET = "namkoong-lab/PersonalLLM"
N_RESPONSES = len(RESPONSE_MODELS)

_LOCAL_COPY = (
    "load_personalllm(data_files={'train': ..., 'test': ...}) or "
    "load_personalllm(path='/folder/with/parquet')"
)
_SYNTHETIC = (
    "use the synthetic corpus with the same schema, "
    "pllm_sk.datasets.make_personalllm()"
)
_WAYS_OUT = (
    f"Ways out: download the parquet files elsewhere and pass them with {_LOCAL_COPY}; "
    "set HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache; or "
    f"{_SYNTHETIC}."
)
# Values that turn an offline variable on, as huggingface_hub and datasets read them.
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def load_personalllm(
    data_files=None,
    *,
    path=None,
    hub_name=HUB_DATASET,
    cache_dir=None,
    connect_timeout=3.0,
):
    """Load the PersonalLLM corpus (10,402 prompts, 8 responses, 10 reward models).

    Three sources, tried in this order:

    1. ``data_files``: local parquet files in the hub schema. A dict maps a split
       name (``"train"`` / ``"test"``) to a file or list of files; a single path or a
       list puts every prompt in ``"train"``, except files whose name starts with
       ``"test"`` (the hub's file naming), which go to ``"test"``.
    2. ``path``: a local folder holding such parquet files (searched recursively and
       split by file name as above).
    3. otherwise the hub dataset ``hub_name`` through the ``datasets`` library. When
       the hub cannot be reached within ``connect_timeout`` seconds (and
       ``HF_HUB_OFFLINE`` is not set), a ``ConnectionError`` says how to load local
       files or use the synthetic corpus instead of retrying for minutes. In
       offline mode (``HF_HUB_OFFLINE=1`` or ``HF_DATASETS_OFFLINE=1``) the copy in
       the Hugging Face cache is used; without one, a ``ConnectionError`` says to
       pass ``path`` or ``data_files``.

    Raw scores in the ``response_{k}_{reward model}`` columns are z-normalised with
    the published train-set means and sds (:data:`REWARD_MODEL_STATS`); reward models
    are ordered alphabetically by short name, the order user weights use. The model
    of each response slot is read from the ``response_{k}_model`` columns when
    present, otherwise from the hub's generation order (:data:`RESPONSE_MODELS`).

    Parameters
    ----------
    data_files : str, path, list or dict, default=None
        Local parquet files, see above.
    path : str or path, default=None
        A local folder of parquet files.
    hub_name : str, default="namkoong-lab/PersonalLLM"
        Hub dataset to load when no local source is given.
    cache_dir : str, default=None
        Passed to ``datasets.load_dataset``.
    connect_timeout : float, default=3.0
        Seconds to wait for the hub before failing.

    Returns
    -------
    corpus : Corpus
        ``name="personalllm"``; train prompts first, then test prompts.
    """
    if data_files is not None:
        frames = _read_parquet_files(_files_by_split(data_files))
    elif path is not None:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"path={str(path)!r} is not a folder.")
        files = sorted(folder.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"No parquet files under {str(folder)!r}.")
        frames = _read_parquet_files(_files_by_split(files))
    else:
        frames = _load_from_hub(hub_name, cache_dir, connect_timeout)
    return corpus_from_frames(frames)


def _files_by_split(data_files):
    if isinstance(data_files, dict):
        unknown = set(data_files) - {"train", "test"}
        if unknown:
            raise ValueError(
                f"data_files keys must be 'train' and/or 'test'; got {sorted(unknown)}."
            )
        return {
            split: [files] if isinstance(files, (str, os.PathLike)) else list(files)
            for split, files in data_files.items()
        }
    if isinstance(data_files, (str, os.PathLike)):
        data_files = [data_files]
    by_split = {}
    for file in data_files:
        split = "test" if Path(file).name.startswith("test") else "train"
        by_split.setdefault(split, []).append(file)
    return by_split


def _read_parquet_files(files_by_split):
    frames = {}
    for split, files in files_by_split.items():
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"data_files not found: {missing}.")
        frames[split] = pd.concat(
            [pd.read_parquet(f) for f in files], ignore_index=True
        )
    return frames


def _hub_reachable(timeout):
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_setting():
    """The setting that keeps ``datasets`` off the network, e.g. ``"HF_HUB_OFFLINE=1"``.

    The environment is read as huggingface_hub and datasets read it at import
    (``HF_DATASETS_OFFLINE`` when set, else ``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE``), but now, so that a variable set after their import
    counts; with none set, ``huggingface_hub.constants.HF_HUB_OFFLINE`` decides.
    ``None``: online.
    """
    if "HF_DATASETS_OFFLINE" in os.environ:
        name = "HF_DATASETS_OFFLINE"
    elif os.environ.get("HF_HUB_OFFLINE"):
        name = "HF_HUB_OFFLINE"
    else:
        name = "TRANSFORMERS_OFFLINE"
    value = os.environ.get(name)
    if value is not None:
        return f"{name}={value}" if value.upper() in _TRUE_VALUES else None
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    return "huggingface_hub.constants.HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def _load_from_hub(hub_name, cache_dir, connect_timeout):
    offline = _offline_setting()
    if offline is None and not _hub_reachable(connect_timeout):
        raise ConnectionError(
            f"Cannot reach the Hugging Face hub to download {hub_name!r}. {_WAYS_OUT}"
        )
    import datasets

    try:
        loaded = datasets.load_dataset(hub_name, cache_dir=cache_dir)
    except Exception as exc:
        if offline is None:
            raise ConnectionError(
                f"Could not load {hub_name!r}: {exc}. {_WAYS_OUT}"
            ) from exc
        cache = "the Hugging Face cache" if cache_dir is None else f"{cache_dir!r}"
        raise ConnectionError(
            f"Could not load {hub_name!r} offline ({offline} is set) from {cache}: "
            f"{exc}. Ways out: pass a local copy of its parquet files with "
            f"{_LOCAL_COPY}; download it into the cache once, without {offline}, on "
            f"a machine that reaches the hub; or {_SYNTHETIC}."
        ) from exc
    return {split: loaded[split].to_pandas() for split in loaded}


def corpus_from_frames(frames):
    """Build a :class:`Corpus` from per-split DataFrames in the hub schema."""
    order = [s for s in ("train", "test") if s in frames]
    if not order:
        raise ValueError("No 'train' or 'test' data to build the corpus from.")
    table = pd.concat([frames[s] for s in order], ignore_index=True)
    split = np.concatenate([[s] * len(frames[s]) for s in order])
    required = ["prompt"] + [f"response_{k}" for k in range(1, N_RESPONSES + 1)]
    required += [
        f"response_{k}_{rm}" for k in range(1, N_RESPONSES + 1) for rm in REWARD_MODELS
    ]
    missing = [c for c in required if c not in table.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"The data lacks {len(missing)} column(s) of the PersonalLLM schema: {shown}."
        )
    responses = table[[f"response_{k}" for k in range(1, N_RESPONSES + 1)]]
    raw = np.stack(
        [
            table[[f"response_{k}_{rm}" for rm in REWARD_MODELS]].to_numpy(np.float64)
            for k in range(1, N_RESPONSES + 1)
        ],
        axis=1,
    )
    mean = np.array([REWARD_MODEL_STATS[rm][1] for rm in REWARD_MODELS])
    sd = np.array([REWARD_MODEL_STATS[rm][2] for rm in REWARD_MODELS])
    model_columns = [f"response_{k}_model" for k in range(1, N_RESPONSES + 1)]
    if all(c in table.columns for c in model_columns):
        response_models = table[model_columns].astype(str).to_numpy(dtype=object)
    else:
        response_models = np.tile(
            np.array(RESPONSE_MODELS, dtype=object), (len(table), 1)
        )
    subset = table["subset"].astype(str) if "subset" in table.columns else None
    return Corpus(
        table["prompt"].astype(str).to_numpy(dtype=object),
        responses.astype(str).to_numpy(dtype=object),
        (raw - mean) / sd,
        reward_models=REWARD_MODELS,
        response_models=response_models,
        split=split,
        subset=None if subset is None else subset.to_numpy(dtype=object),
        name="personalllm",
    )
