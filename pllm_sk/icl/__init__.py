"""In-context LLM rankers: a causal LM personalizes from the user's examples in its prompt.

The fourth family of personalization methods, the one the PersonalLLM paper itself
evaluated. torch and transformers are imported on first use.
"""

from ._ranker import EXAMPLE_SELECTIONS, UTILITIES, InContextRanker

__all__ = ["EXAMPLE_SELECTIONS", "UTILITIES", "InContextRanker"]
