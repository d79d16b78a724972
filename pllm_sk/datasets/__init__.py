"""The PersonalLLM corpus, real and synthetic, as a :class:`Corpus`."""

from ._constants import RESPONSE_MODELS, REWARD_MODEL_STATS, REWARD_MODELS
from ._corpus import Corpus
from ._personalllm import load_personalllm
from ._synthetic import make_personalllm
from ._transport import DamagedCopyError

__all__ = [
    "REWARD_MODELS",
    "REWARD_MODEL_STATS",
    "RESPONSE_MODELS",
    "Corpus",
    "DamagedCopyError",
    "load_personalllm",
    "make_personalllm",
]
