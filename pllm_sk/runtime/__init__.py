"""The runtime below every family: model loading, device, the cache home, engines.

Nothing here knows about users, comparisons or estimators; the feature steps, the
in-context ranker and the corpus's transport to workers use it. torch and
transformers are imported inside the functions.
"""

from ._cache import CACHE_DIR_ENV, SHARED_FOLDER, FeatureCache, default_cache_dir
from ._device import resolve_device, resolve_dtype
from ._models import (
    ModelSource,
    check_texts,
    declared_max_length,
    from_pretrained,
    length_batches,
    load_model,
    pad_right,
    progress,
    resolve_cache,
    sha256_file,
    tokenizer_digest,
)
from ._parallel import (
    BACKENDS,
    REFERENCE_ENV,
    claim_gpu,
    joblib_backend,
    reference_mode,
    serialized_size,
    shipping_engine,
    workers_share_disk,
)

__all__ = [
    "BACKENDS",
    "CACHE_DIR_ENV",
    "REFERENCE_ENV",
    "SHARED_FOLDER",
    "FeatureCache",
    "ModelSource",
    "check_texts",
    "claim_gpu",
    "declared_max_length",
    "default_cache_dir",
    "from_pretrained",
    "joblib_backend",
    "length_batches",
    "load_model",
    "pad_right",
    "progress",
    "reference_mode",
    "resolve_cache",
    "resolve_device",
    "resolve_dtype",
    "serialized_size",
    "sha256_file",
    "shipping_engine",
    "tokenizer_digest",
    "workers_share_disk",
]
