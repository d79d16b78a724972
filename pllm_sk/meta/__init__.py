"""Reward heads meta-learned across users: adapt to a new user from a few comparisons.

Importing this subpackage imports torch.
"""

from ._head import MetaRewardHead

__all__ = ["MetaRewardHead"]
