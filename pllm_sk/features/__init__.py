"""Feature steps: transformers that append columns looked up by (prompt, response)."""

from ._rewards import RewardFeatures

__all__ = ["RewardFeatures"]
