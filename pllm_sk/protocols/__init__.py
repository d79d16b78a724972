"""Published evaluation settings on PersonalLLM, by name, each with its source.

>>> from pllm_sk.protocols import get_protocol, list_protocols
>>> list_protocols()
['copl', 'lore', 'personalllm_setting1', 'personalllm_setting2']
>>> get_protocol("lore").alpha
0.1
"""

from ._presets import PRESETS
from ._protocol import Protocol, ProtocolData
from ._scoring import comparison_accuracy, summarize, user_scores

__all__ = [
    "Protocol",
    "ProtocolData",
    "comparison_accuracy",
    "get_protocol",
    "list_protocols",
    "summarize",
    "user_scores",
]


def list_protocols():
    """The names of the presets, sorted."""
    return sorted(PRESETS)


def get_protocol(name):
    """The preset called ``name`` (a frozen :class:`Protocol`).

    Change a field with :func:`dataclasses.replace`, for example fewer users::

        dataclasses.replace(get_protocol("lore"), n_seen=100, n_unseen=50)
    """
    if name not in PRESETS:
        raise ValueError(
            f"Unknown protocol {name!r}; choose one of {list_protocols()}."
        )
    return PRESETS[name]
