"""The runtime below every family: model loading, device, the cache, the text embedder.

Nothing here knows about users, comparisons or corpora; the feature steps, the
in-context ranker and the corpus's saved copies use it. torch and
transformers are imported inside the functions.
"""

from ._cache import CACHE_DIR_ENV, SHARED_FOLDER, FeatureCache, default_cache_dir
from ._device import resolve_device, resolve_dtype
from ._embedding import (
    DEFAULT_EMBEDDING_MODEL,
    TextEmbedder,
    default_embedding_model,
    pool_token_states,
)
from ._model_transformer import BaseModelTransformer
from ._models import (
    ModelSource,
    check_texts,
    dataframe_columns,
    declared_max_length,
    file_digest,
    from_pretrained,
    length_batches,
    load_model,
    loading_bars,
    pad_right,
    progress,
    resolve_cache,
    sha256_file,
    tokenizer_digest,
)
from ._parallel import BACKENDS, claim_gpu, claim_slot, joblib_backend, serialized_size

__all__ = [
    "BACKENDS",
    "BaseModelTransformer",
    "DEFAULT_EMBEDDING_MODEL",
    "TextEmbedder",
    "default_embedding_model",
    "CACHE_DIR_ENV",
    "SHARED_FOLDER",
    "FeatureCache",
    "ModelSource",
    "check_texts",
    "claim_gpu",
    "claim_slot",
    "dataframe_columns",
    "declared_max_length",
    "default_cache_dir",
    "file_digest",
    "from_pretrained",
    "joblib_backend",
    "length_batches",
    "load_model",
    "loading_bars",
    "pad_right",
    "pool_token_states",
    "progress",
    "resolve_cache",
    "resolve_device",
    "resolve_dtype",
    "serialized_size",
    "sha256_file",
    "tokenizer_digest",
]
