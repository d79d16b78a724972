"""Docstring fragments shared by the estimators, written once.

An estimator's docstring names a fragment in braces, ``{input_attributes}``, and
the class is decorated with :func:`fill_docstring`, as imbalanced-learn's
``Substitution`` does.
"""

__all__ = ["fill_docstring"]

_FRAGMENTS = {
    "input_attributes": """n_features_in_ : int
        Number of columns of ``X`` in ``fit``, the three id columns included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.""",
    "users_attribute": """users_ : ndarray of int64
        Users with labeled rows in ``fit`` (or ``partial_fit``), sorted; the others
        get the population prediction (see ``count_fallbacks``).""",
    "n_response_slots_attribute": """n_response_slots_ : int or None
        Number of one-hot encoded response slots on the ids track (no feature
        columns in ``X``); None otherwise.""",
}


def fill_docstring(obj):
    """Put the shared fragments into ``obj.__doc__`` (a class or a function).

    Only the fragments' names in braces are replaced; other braces (a dict in an
    example) are left alone.
    """
    for name, text in _FRAGMENTS.items():
        obj.__doc__ = obj.__doc__.replace("{" + name + "}", text)
    return obj
