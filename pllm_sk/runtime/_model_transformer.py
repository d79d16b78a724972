"""The base class of the model-backed transformers: TextEmbedder, RewardModelScorer."""

import copy
import os
from numbers import Integral

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from ..utils import Interval, StrOptions, validate_params
from ._cache import FeatureCache
from ._device import resolve_device, resolve_dtype
from ._models import length_batches, progress, resolve_cache
from ._parallel import claim_gpu

__all__ = ["BaseModelTransformer"]


class BaseModelTransformer(TransformerMixin, BaseEstimator):
    """What :class:`TextEmbedder` and :class:`RewardModelScorer` share.

    The parameters common to both (``model``, ``tokenizer``, ``revision``,
    ``max_length``, ``batch_size``, ``device``, ``dtype``, ``cache``, ``n_jobs``,
    ``verbose``),
    their constraints, where the model runs and how its outputs are cached. A
    subclass's ``fit`` calls :meth:`_fit_model`, which validates the parameters and
    sets ``device_``, ``dtype_`` and ``cache_``, then sets ``identity_`` with
    :meth:`_identity`; its ``transform`` computes through :meth:`_through_cache`.
    ``_feature_names()`` gives the output column names.

    ``device="auto"`` means CUDA when available, then MPS (Apple silicon), then the
    CPU; ``device_`` is the resolved device as a string, such as ``"cuda"`` or
    ``"cpu"``.
    """

    _parameter_constraints: dict = {
        # ModelSource tells a hub name from a local folder or a loaded model, and
        # says which of them a wrong value is not.
        "model": "no_validation",
        "tokenizer": "no_validation",
        "revision": [None, str],
        "max_length": [None, Interval(Integral, 2, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "dtype": [StrOptions({"auto", "float32", "bfloat16", "float16"})],
        "cache": ["boolean", None, str, os.PathLike, FeatureCache],
        "verbose": ["verbose"],
        "n_jobs": [None, Integral],
    }

    def _fit_model(self):
        """Validate the parameters; set ``device_``, ``dtype_`` and ``cache_``."""
        validate_params(self)
        self.device_ = str(resolve_device(self.device))
        self.dtype_ = resolve_dtype(self.dtype, self.device_)
        self.cache_ = resolve_cache(self.cache)

    def _identity(self, source, task, **settings):
        """The cache identity: the model's source, ``settings``, the dtype."""
        return {
            "model": source.label,
            "task": task,
            "source": source.fingerprint(),
            **settings,
            "max_length": self.max_length_,
            "dtype": str(self.dtype_).replace("torch.", ""),
            "format": 1,
        }

    def _through_cache(self, texts, compute, min_chunk_size):
        """``compute(texts)``, through the cache when there is one.

        With more than one joblib worker (``n_jobs``, or the engine of a
        ``joblib.parallel_backend`` block), the texts missing from the cache are
        computed in chunks on the workers (see :func:`_compute_chunk`).
        """
        chunk_size = max(min_chunk_size, self.batch_size)
        if effective_n_jobs(self.n_jobs) > 1:
            return self._sharded(texts, compute.__name__, chunk_size)
        if self.cache_ is None:
            return compute(texts)
        return self.cache_.get_or_compute(
            self.identity_, texts, compute, chunk_size=chunk_size
        )

    def _sharded(self, texts, method, chunk_size):
        """Vectors of ``texts``, the missing ones computed in chunks on the workers.

        The chunks are those of a serial ``get_or_compute`` (same texts, same
        order). Each worker stores its chunk in the cache as soon as it is
        computed and also returns it: texts the workers stored in a folder this
        process does not see are stored here.
        """
        if self.cache_ is None:
            missing = list(dict.fromkeys(texts))
        else:
            missing = self.cache_.missing(self.identity_, texts)
        chunks = [
            missing[start : start + chunk_size]
            for start in range(0, len(missing), chunk_size)
        ]
        computed = Parallel(n_jobs=self.n_jobs)(
            delayed(_compute_chunk)(self, method, chunk, chunk_size)
            for chunk in chunks
        )
        by_text = {
            text: vector
            for chunk, vectors in zip(chunks, computed)
            for text, vector in zip(chunk, vectors)
        }

        def lookup(batch):
            # Texts another process removed from the cache meanwhile: computed here.
            absent = [text for text in batch if text not in by_text]
            if absent:
                by_text.update(zip(absent, getattr(self, method)(absent)))
            return np.stack([by_text[text] for text in batch])

        if self.cache_ is None:
            return lookup(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        return self.cache_.get_or_compute(
            self.identity_, texts, lookup, chunk_size=max(len(missing), 1)
        )

    def _batches(self, sequences, desc):
        """Positions of ``sequences`` in batches of similar lengths, with a progress bar."""
        batches = length_batches([len(s) for s in sequences], self.batch_size)
        return progress(batches, total=len(batches), verbose=self.verbose, desc=desc)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : None
            Ignored: the names come from the model, not from the input.

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        return np.asarray(self._feature_names(), dtype=object)

    def __getstate__(self):
        state = super().__getstate__()
        # The weights are reloaded on demand; a pickle carries names, not tensors.
        state.pop("_loaded", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


def _compute_chunk(transformer, method, texts, chunk_size):
    """On a worker: ``transformer.<method>(texts)``, stored in the cache when done.

    With ``device="auto"`` the worker picks its own device (the GPU its engine
    gave it, or one of several that it claims); the dtype, part of the cache
    identity, stays the one resolved in ``fit``.
    """
    if transformer.device == "auto":
        device = str(resolve_device("auto"))
        device = claim_gpu() if device == "cuda" else device
        if device != transformer.device_:
            # A copy: under the threading backend the tasks share the object.
            transformer = copy.copy(transformer)
            transformer.device_, transformer._loaded = device, None
    compute = getattr(transformer, method)
    if transformer.cache_ is None:
        return compute(texts)
    return transformer.cache_.get_or_compute(
        transformer.identity_, texts, compute, chunk_size=chunk_size
    )
