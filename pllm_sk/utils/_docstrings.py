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
    # The population preference of the families that fit one beside their users'.
    "population_alpha_parameter": """alpha : float, default=1.0
        L2 penalty of the population fit, > 0, as in
        :class:`~pllm_sk.baselines.PopulationRanker`.""",
    "population_coef_attribute": """population_coef_ : ndarray of shape (n_item_features,)
        The population's Bradley-Terry weights
        (:class:`~pllm_sk.baselines.PopulationRanker`'s model): the prediction
        for users without feedback.""",
    # Parameters and attributes of the model-backed transformers.
    "runtime_parameters": """device : str, default="auto"
        ``"auto"`` (CUDA when available, then MPS, then the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Compute dtype; ``"auto"`` is float32 on CPU and bfloat16 (or float16) on a
        GPU. Outputs are float32.
    cache : bool, path-like or FeatureCache, default=True
        ``True`` uses the default cache folder (see :func:`default_cache_dir`);
        ``False`` computes every time.
    n_jobs : int, default=None
        Workers that compute the texts missing from the cache, through joblib, in
        chunks of ``batch_size`` or more texts (4096 embedded, 1024 scored).
        ``None`` means 1 unless in a :func:`joblib.parallel_backend` block, where
        it means all of the engine's workers (loky's, Dask's or Ray's); -1 means
        all. Each worker writes its chunks into the cache folder as soon as they
        are computed (and returns them): a worker that dies loses only the chunk
        it was computing, and a rerun computes what is still missing. A worker
        runs on the GPU it has with ``device="auto"``.
    verbose : int, default=1
        ``0`` silences the progress bar shown while the model computes.""",
    "runtime_attributes": """device_ : str
        Where the model runs, such as ``"cuda"`` or ``"cpu"``.
    dtype_ : torch.dtype
        The compute dtype.
    cache_ : FeatureCache or None
        The cache used.
    identity_ : dict
        The cache identity of this model and these settings.""",
}


def fill_docstring(obj):
    """Put the shared fragments into ``obj.__doc__`` (a class or a function).

    Only the fragments' names in braces are replaced; other braces (a dict in an
    example) are left alone.
    """
    if obj.__doc__:  # None under python -OO
        for name, text in _FRAGMENTS.items():
            obj.__doc__ = obj.__doc__.replace("{" + name + "}", text)
    return obj
