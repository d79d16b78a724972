"""Distilled rewards: the B reward-model scores predicted from text embeddings."""

from numbers import Real

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..runtime import check_texts
from ..utils import HasMethods, Interval, fill_docstring
from ._base import BaseCorpusFeatures
from ._embedding import (
    EMBEDDING_CONSTRAINTS,
    check_parts,
    fitted_embedder,
    row_embeddings,
)

__all__ = ["RewardDistiller"]

# Ridge penalties tried by the default regressor (efficient leave-one-out).
DEFAULT_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@fill_docstring
class RewardDistiller(BaseCorpusFeatures):
    """Predict the reward-model scores of (prompt, response) pairs from their embeddings.

    Multi-reward-model distillation: one multi-output regressor learns the B
    normalised reward scores of a pair from the text embeddings of its prompt and
    response, on the corpus, where the scores are known. Any new text then gets
    approximate reward features (:meth:`predict_rewards`) without running the B
    reward models.

    As a Pipeline step, ``fit`` learns from the distinct (prompt, response) pairs
    that the rows of ``X`` refer to (in cross-validation, the training fold's), and
    ``transform`` appends the *predicted* scores of each row's pair as columns
    ``distilled_<reward model>``, in the corpus order of the reward models: the
    distilled-rewards track, whose test candidates' scores come from their text only.

    ``fit`` first holds out ``validation_fraction`` of the prompts (all their pairs),
    fits on the rest and reports the held-out R^2 of each reward model in
    ``held_out_r2_``; then it refits on every pair.

    Parameters
    ----------
    corpus : Corpus
        Texts and reward scores, looked up by ``prompt_id`` and ``response_id``.
    embedder : TextEmbedder, default=None
        Cloned and fitted in ``fit``; ``None`` uses ``TextEmbedder()``.
    parts : sequence of {"prompt", "response"}, default=("prompt", "response")
        Which embeddings are the regressor's input, concatenated in this order.
    regressor : regressor, default=None
        Any multi-output scikit-learn regressor, cloned. ``None``:
        :class:`~sklearn.linear_model.RidgeCV` over ``alphas=(0.01, 0.1, 1, 10,
        100, 1000)`` (efficient leave-one-out) on the raw unit-norm embeddings.
    validation_fraction : float or None, default=0.2
        Share of the prompts held out to measure ``held_out_r2_``; ``None`` skips
        the measurement (one fit instead of two).
    random_state : int, RandomState instance or None, default=None
        Draws the held-out prompts.

    Attributes
    ----------
    regressor_ : regressor
        Fitted on every pair.
    reward_models_ : tuple of str
        The reward models predicted, in column order.
    held_out_r2_ : ndarray of shape (n_reward_models,) or None
        R^2 of each reward model on the held-out prompts' pairs.
    n_pairs_ : int
        Distinct (prompt, response) pairs learned from.
    embedder_ : TextEmbedder
        The fitted embedder.
    parts_ : tuple of str
    {input_attributes}

    See Also
    --------
    EmbeddingFeatures : The embeddings themselves as features.
    RewardModelScorer : The reward models themselves.
    RewardFeatures : The corpus's scores as features.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.datasets import make_personalllm
    >>> from pllm_sk.features import RewardDistiller, TextEmbedder
    >>> corpus = make_personalllm(40, random_state=0)
    >>> X = pd.DataFrame({"user_id": 0, "prompt_id": np.repeat(np.arange(40), 8),
    ...                   "response_id": np.tile(np.arange(8), 40)})
    >>> distiller = RewardDistiller(
    ...     corpus, embedder=TextEmbedder(cache=False, verbose=0), random_state=0
    ... ).fit(X)
    >>> distiller.held_out_r2_.shape
    (10,)
    >>> distiller.transform(X).columns[3]
    'distilled_beaver_7b'
    """

    _parameter_constraints: dict = {
        **BaseCorpusFeatures._parameter_constraints,
        **EMBEDDING_CONSTRAINTS,
        "regressor": [None, HasMethods(["fit", "predict"])],
        "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        corpus,
        *,
        embedder=None,
        parts=("prompt", "response"),
        regressor=None,
        validation_fraction=0.2,
        random_state=None,
    ):
        self.corpus = corpus
        self.embedder = embedder
        self.parts = parts
        self.regressor = regressor
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _fit(self, prompt_ids, response_ids):
        self.parts_ = check_parts(self.parts)
        self.reward_models_ = tuple(self.corpus.reward_models)
        self.embedder_ = fitted_embedder(self.embedder)
        n_rows = prompt_ids.size
        prompt_ids, response_ids, _ = self._distinct_pairs(prompt_ids, response_ids)
        features = self._pair_features(prompt_ids, response_ids)
        targets = self.corpus.rewards[prompt_ids, response_ids].astype(np.float64)
        # Unit-norm embeddings need no scaling; standardising them amplifies the
        # many near-constant directions and overfits.
        regressor = (
            RidgeCV(alphas=DEFAULT_ALPHAS) if self.regressor is None else self.regressor
        )
        self.held_out_r2_ = None
        if self.validation_fraction is not None:
            held_out = self._held_out(prompt_ids, n_rows)
            model = clone(regressor).fit(features[~held_out], targets[~held_out])
            self.held_out_r2_ = r2_score(
                targets[held_out],
                model.predict(features[held_out]),
                multioutput="raw_values",
            )
        self.regressor_ = clone(regressor).fit(features, targets)
        self.n_pairs_ = int(prompt_ids.size)

    def _transform(self, prompt_ids, response_ids):
        prompts, responses, inverse = self._distinct_pairs(prompt_ids, response_ids)
        predicted = self.regressor_.predict(self._pair_features(prompts, responses))
        return np.asarray(predicted)[inverse]

    def predict_rewards(self, prompts, responses):
        """Distilled reward scores of new (prompt, response) texts.

        Parameters
        ----------
        prompts, responses : sequence of str, shape (n_pairs,)

        Returns
        -------
        rewards : ndarray of shape (n_pairs, n_reward_models)
        """
        check_is_fitted(self)
        texts = {
            "prompt": check_texts(prompts, "prompts"),
            "response": check_texts(responses, "responses"),
        }
        if len(texts["prompt"]) != len(texts["response"]):
            raise ValueError(
                f"prompts and responses differ in length: {len(texts['prompt'])} and "
                f"{len(texts['response'])}."
            )
        features = np.hstack([self.embedder_.transform(texts[p]) for p in self.parts_])
        return np.asarray(self.regressor_.predict(features.astype(np.float64)))

    def _new_names(self):
        return [f"distilled_{name}" for name in self.reward_models_]

    def _distinct_pairs(self, prompt_ids, response_ids):
        """The distinct (prompt, response) pairs, sorted, and the pair of each row."""
        n_responses = self.corpus.responses.shape[1]
        pairs, inverse = np.unique(
            prompt_ids * n_responses + response_ids, return_inverse=True
        )
        return pairs // n_responses, pairs % n_responses, inverse.reshape(-1)

    def _pair_features(self, prompt_ids, response_ids):
        # float64, as the targets: a float32 regression rounds a pair's prediction
        # differently with the number of pairs predicted at once.
        return row_embeddings(
            self.embedder_, self.corpus, self.parts_, prompt_ids, response_ids
        ).astype(np.float64)

    def _held_out(self, prompt_ids, n_rows):
        """Whether each pair's prompt is held out to measure ``held_out_r2_``."""
        fraction = self.validation_fraction
        prompts = np.unique(prompt_ids)
        n_held_out = int(np.ceil(fraction * prompts.size))
        if prompts.size < 2 or n_held_out >= prompts.size:
            raise ValueError(
                f"validation_fraction={fraction} leaves no training prompts: X has "
                f"{n_rows} sample(s) over {prompts.size} prompt(s); lower it or pass "
                "None."
            )
        rng = check_random_state(self.random_state)
        held_out = rng.choice(prompts, n_held_out, replace=False)
        return np.isin(prompt_ids, held_out)
