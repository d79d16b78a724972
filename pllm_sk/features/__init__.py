"""Feature steps: transformers that append columns looked up by (prompt, response).

Also the model-backed features behind them: the on-disk :class:`FeatureCache`, the
:class:`TextEmbedder`, the :class:`RewardModelScorer` and the
:class:`RewardDistiller`. torch and transformers are imported on first use.
"""

from ..runtime import CACHE_DIR_ENV, FeatureCache, default_cache_dir
from ._distill import RewardDistiller
from ._embedding import EmbeddingFeatures, TextEmbedder
from ._hidden_states import LORE_REWARD_MODEL, HiddenStateFeatures, RewardModelEmbedder
from ._reward_model import RewardModelScorer
from ._rewards import RewardFeatures

__all__ = [
    "CACHE_DIR_ENV",
    "EmbeddingFeatures",
    "FeatureCache",
    "HiddenStateFeatures",
    "LORE_REWARD_MODEL",
    "RewardDistiller",
    "RewardFeatures",
    "RewardModelEmbedder",
    "RewardModelScorer",
    "TextEmbedder",
    "default_cache_dir",
]
