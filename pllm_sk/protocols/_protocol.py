"""A published evaluation setting as a small frozen object that simulates itself."""

import dataclasses
import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..model_selection import ColdStartSplit, SeenUserSplit
from ..simulation import sample_users, simulate_feedback
from ..utils import Interval, validate_arguments
from ._scoring import summarize, user_scores

__all__ = ["Protocol", "ProtocolData"]

# How evaluated users reveal their labeled prompts: all of them (a split over
# prompts, SeenUserSplit), or a support set chosen by ColdStartSplit.
SUPPORT_RULES = ("all", "random", "nearest")

# The integer counts of a protocol; seen_context and unseen_context (a count or a
# share of the train prompts) are checked by _prompt_count.
_COUNT_CONSTRAINTS = {
    "n_seen": [Interval(numbers.Integral, 0, None, closed="left")],
    "n_unseen": [Interval(numbers.Integral, 0, None, closed="left")],
    "n_historical": [Interval(numbers.Integral, 0, None, closed="left")],
    "unseen_pool": [Interval(numbers.Integral, 0, None, closed="left"), None],
    "historical_context": [Interval(numbers.Integral, 0, None, closed="left")],
    "n_test": [Interval(numbers.Integral, 1, None, closed="left"), None],
}

# The counts of labeled train prompts per user of each group, in group order.
_CONTEXT_COUNTS = ("seen_context", "unseen_pool", "historical_context")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A published evaluation setting on PersonalLLM, with its source.

    Users come in three groups, in this order of ``user_id``: ``n_seen`` *seen*
    users (training feedback on ``seen_context`` train prompts each, evaluated on
    test prompts), ``n_unseen`` *unseen* users (``unseen_context`` labeled train
    prompts each, evaluated on test prompts) and ``n_historical`` users who only
    give training feedback (``historical_context`` prompts each). A count given as
    a float is a share of the train prompts, rounded down, as ``int(share * n)``.

    Copy a preset and change a field with :func:`dataclasses.replace`; the
    counts a preset implies on a corpus are :meth:`counts`.

    Parameters
    ----------
    name : str
        The preset's name in :func:`list_protocols`.
    paper, repository : str
        The source: the paper, and the public code (``owner/name@commit``).
    sources : tuple of (str, str)
        ``(fact, "path:line")`` pairs: where each setting is written in the code.
    alpha : float
        Concentration of the symmetric Dirichlet prior of user weights.
    n_seen, n_unseen, n_historical : int >= 0
        Users of each group; at least one user in all.
    seen_context, unseen_context : int >= 0 or float in (0, 1)
        Labeled train prompts per seen user, and per unseen user in the training
        fold.
    unseen_pool : int >= 0 or None
        Labeled train prompts simulated per unseen user, among which the splitter
        chooses ``unseen_context`` (``support``), so at least ``unseen_context``;
        ``None``: exactly ``unseen_context``.
    historical_context : int >= 0
        Labeled train prompts per historical user.
    n_test : int >= 1 or None
        Test-split prompts per evaluated user; ``None`` for all of them.
    feedback : str
        The training feedback protocol of :func:`~pllm_sk.simulation.simulate_feedback`.
    test_comparisons : str or None
        The comparison drawn per (user, test prompt) for pairwise accuracy
        (``query_feedback`` of ``simulate_feedback``), or ``None``.
    reward_models, responses, scores, only_disagreeing :
        What the users see, as in ``simulate_feedback``.
    support : {"all", "random", "nearest"}
        ``"all"``: one split over prompts (:class:`SeenUserSplit` on the corpus's test
        split), every labeled row in training; ``"random"`` / ``"nearest"``: one
        :class:`ColdStartSplit` whose test users (the unseen) reveal
        ``unseen_context`` support prompts so chosen. ``"nearest"`` needs the
        ``prompt_embeddings`` argument of :meth:`simulate`.
    metrics : tuple of str
        The paper's metrics: ``"pairwise_accuracy"`` (on the test comparisons),
        ``"win_rate"`` (against ``reference_model``), ``"reward"``; ``"gap_closed"``
        is always reported beside them.
    reference_model : str
        The response model that ``"win_rate"`` compares against.
    published : tuple of (str, str, float, str)
        ``(method, metric, value, source)`` of figures the source reports.
    notes : str
        What is not verified in the source, and where this encoding departs from it.

    See Also
    --------
    pllm_sk.simulation.simulate_feedback : The simulator the protocol configures.
    pllm_sk.model_selection.SeenUserSplit : The split over prompts for seen users.
    pllm_sk.model_selection.ColdStartSplit : The split over users, with support sets.

    Examples
    --------
    >>> import dataclasses
    >>> from sklearn.model_selection import cross_validate
    >>> from pllm_sk.baselines import PopulationRanker
    >>> from pllm_sk.datasets import make_personalllm
    >>> from pllm_sk.protocols import get_protocol
    >>> corpus = make_personalllm(1200, random_state=0)
    >>> lore = get_protocol("lore")
    >>> counts = lore.counts(corpus)  # int(0.005 * n) and int(0.001 * n), n = 1085
    >>> counts["seen_context"], counts["unseen_context"]
    (5, 1)
    >>> small = dataclasses.replace(lore, n_seen=20, n_unseen=10, n_test=5)
    >>> data = small.simulate(corpus, random_state=0)
    >>> scores = cross_validate(PopulationRanker(), data.X, data.y, cv=data.cv,
    ...                         scoring=data.scoring)
    >>> sorted(key for key in scores if key.startswith("test_"))  # doctest: +NORMALIZE_WHITESPACE
    ['test_gap_closed_seen', 'test_gap_closed_unseen',
     'test_pairwise_accuracy_seen', 'test_pairwise_accuracy_unseen']
    """

    name: str
    paper: str
    repository: str
    sources: tuple
    alpha: float
    n_seen: int = 0
    n_unseen: int = 0
    n_historical: int = 0
    seen_context: numbers.Real = 0
    unseen_context: numbers.Real = 0
    unseen_pool: int = None
    historical_context: int = 0
    n_test: int = None
    feedback: str = "best_worst_pair"
    test_comparisons: str = None
    reward_models: tuple = None
    responses: tuple = None
    scores: str = "normalised"
    only_disagreeing: bool = False
    support: str = "all"
    metrics: tuple = ("pairwise_accuracy",)
    reference_model: str = "GPT-4o"
    published: tuple = ()
    notes: str = ""

    def counts(self, corpus):
        """The sizes this protocol implies on ``corpus``.

        Returns
        -------
        counts : dict
            ``n_seen``, ``n_unseen``, ``n_historical``, ``seen_context``,
            ``unseen_context``, ``unseen_pool``, ``historical_context``,
            ``n_test`` (test prompts per evaluated user), ``n_reward_models``,
            ``n_responses`` and ``alpha``.

        Raises
        ------
        ValueError
            A count out of its range, or an unknown ``support``.
        """
        validate_arguments(
            _COUNT_CONSTRAINTS,
            {field: getattr(self, field) for field in _COUNT_CONSTRAINTS},
            f"Protocol {self.name!r}",
        )
        if self.support not in SUPPORT_RULES:
            raise ValueError(
                f"support must be one of {SUPPORT_RULES}; got {self.support!r}."
            )
        n_train = corpus.prompt_ids("train").size
        unseen_context = _prompt_count(self.unseen_context, n_train, "unseen_context")
        return dict(
            n_seen=self.n_seen,
            n_unseen=self.n_unseen,
            n_historical=self.n_historical,
            seen_context=_prompt_count(self.seen_context, n_train, "seen_context"),
            unseen_context=unseen_context,
            unseen_pool=unseen_context
            if self.unseen_pool is None
            else self.unseen_pool,
            historical_context=self.historical_context,
            n_test=corpus.prompt_ids("test").size
            if self.n_test is None
            else self.n_test,
            n_reward_models=len(self.reward_models or corpus.reward_models),
            n_responses=len(self.responses or range(corpus.n_responses)),
            alpha=self.alpha,
        )

    def simulate(self, corpus, *, random_state=None, prompt_embeddings=None):
        """Draw the users and their feedback; return what ``cross_validate`` needs.

        The protocol's fields are checked against ``corpus`` before anything is
        drawn.

        Parameters
        ----------
        corpus : Corpus
            :func:`~pllm_sk.datasets.load_personalllm` or
            :func:`~pllm_sk.datasets.make_personalllm`.
        random_state : int, RandomState instance or None, default=None
            Seeds the user weights, the feedback and the splitter.
        prompt_embeddings : array-like of shape (corpus.n_prompts, dim), default=None
            One vector per prompt of ``corpus``, such as
            ``TextEmbedder().fit_transform(corpus.prompts)``
            (:class:`~pllm_sk.features.TextEmbedder`). Required for
            ``support="nearest"``, ignored otherwise.

        Returns
        -------
        data : ProtocolData

        Raises
        ------
        ValueError
            A count out of its range (see :meth:`counts`), no user, more prompts
            per user than the corpus's split holds, or ``support="nearest"``
            without ``prompt_embeddings`` of one row per prompt.
        """
        counts = self.counts(corpus)
        sizes = [counts["n_seen"], counts["n_unseen"], counts["n_historical"]]
        self._check_counts(counts, sizes)
        self._check_corpus_size(corpus, counts, sizes)
        self._check_prompt_embeddings(corpus, prompt_embeddings)
        rng = check_random_state(random_state)
        weights = sample_users(
            sum(sizes),
            alpha=self.alpha,
            n_reward_models=counts["n_reward_models"],
            random_state=rng,
        )
        group = np.repeat(
            np.array(["seen", "unseen", "historical"], dtype=object), sizes
        )
        feedback = self._simulate_feedback(corpus, weights, counts, sizes, rng)
        cv = self._splitter(feedback.corpus, counts, rng, prompt_embeddings)
        return ProtocolData(self, feedback, cv, group)

    def _check_counts(self, counts, sizes):
        """Raise when the counts, each in range, do not make a protocol together."""
        if sum(sizes) == 0:
            raise ValueError(
                f"Protocol {self.name!r} has no users: n_seen, n_unseen and "
                "n_historical are all 0. Set at least one of them."
            )
        if counts["unseen_pool"] < counts["unseen_context"]:
            raise ValueError(
                f"Protocol {self.name!r} draws unseen_pool={self.unseen_pool!r} "
                f"labeled prompts per unseen user, fewer than the "
                f"{counts['unseen_context']} (unseen_context={self.unseen_context!r}) "
                "they reveal. Raise unseen_pool, or set it to None."
            )
        if (
            self.support == "all"
            and counts["n_unseen"]
            and not counts["unseen_context"]
        ):
            raise ValueError(
                f"Protocol {self.name!r} gives unseen users no labeled prompt on this "
                f"corpus (unseen_context={self.unseen_context!r}); users without "
                "training rows cannot be evaluated on unseen prompts. Use a larger "
                "corpus or set unseen_context."
            )

    def _contexts(self, counts, sizes):
        """``(field, value, count)``: the train prompts of each group with users."""
        pool = "unseen_context" if self.unseen_pool is None else "unseen_pool"
        fields = ("seen_context", pool, "historical_context")
        return [
            (field, getattr(self, field), counts[key])
            for field, key, n_users in zip(fields, _CONTEXT_COUNTS, sizes)
            if n_users
        ]

    def _check_corpus_size(self, corpus, counts, sizes):
        """Raise when a user needs more distinct prompts than a split of corpus has."""
        n_train = corpus.prompt_ids("train").size
        needs = [
            (field, value, count, "train", n_train)
            for field, value, count in self._contexts(counts, sizes)
        ]
        if counts["n_seen"] + counts["n_unseen"]:
            n_test = corpus.prompt_ids("test").size
            # n_test=None takes every test prompt: none is too few.
            needed = max(counts["n_test"], 1)
            needs.append(("n_test", self.n_test, needed, "test", n_test))
        for field, value, count, split, available in needs:
            if count > available:
                raise ValueError(
                    f"Protocol {self.name!r} draws {count} distinct {split} prompts "
                    f"per user for {field}={value!r}, but the corpus's {split} split "
                    f"has {available} of its {corpus.n_prompts} prompts. Lower "
                    f"{field}, or use a corpus with more {split} prompts."
                )

    def _check_prompt_embeddings(self, corpus, prompt_embeddings):
        """Raise when ``support="nearest"`` lacks one embedding per prompt."""
        if self.support != "nearest":
            return
        if prompt_embeddings is None:
            raise ValueError(
                f"Protocol {self.name!r} (support='nearest') chooses each unseen "
                "user's support prompts by prompt embeddings, and none were given. "
                "Pass one vector per prompt: simulate(corpus, prompt_embeddings="
                "TextEmbedder().fit_transform(corpus.prompts)), with TextEmbedder "
                "from pllm_sk.features."
            )
        shape = np.shape(prompt_embeddings)
        if len(shape) != 2 or shape[0] != corpus.n_prompts:
            raise ValueError(
                f"prompt_embeddings of Protocol {self.name!r} must have one row per "
                f"prompt of the corpus, shape ({corpus.n_prompts}, dim); got shape "
                f"{shape}."
            )

    def _simulate_feedback(self, corpus, weights, counts, sizes, rng):
        """``simulate_feedback`` with the protocol's settings, errors in its terms."""
        n_history = np.repeat([counts[key] for key in _CONTEXT_COUNTS], sizes)
        n_query = np.repeat([counts["n_test"], counts["n_test"], 0], sizes)
        try:
            return simulate_feedback(
                corpus,
                weights,
                n_history=n_history,
                n_query=n_query,
                feedback=self.feedback,
                reward_models=self.reward_models,
                responses=self.responses,
                scores=self.scores,
                only_disagreeing=self.only_disagreeing,
                query_feedback=self.test_comparisons,
                random_state=rng,
            )
        except ValueError as error:
            # The split sizes were checked: a pool too small here is one that
            # only_disagreeing thinned out.
            if not (self.only_disagreeing and "n_history or n_query" in str(error)):
                raise
            fields = [
                (field, value) for field, value, _ in self._contexts(counts, sizes)
            ]
            if counts["n_seen"] + counts["n_unseen"]:
                fields.append(("n_test", self.n_test))
            named = ", ".join(f"{field}={value!r}" for field, value in fields)
            raise ValueError(
                f"Protocol {self.name!r} draws prompts with a pair of responses the "
                "reward models disagree on (only_disagreeing=True), and the corpus "
                f"has too few of them for {named}. Lower these counts, or use a "
                "larger corpus."
            ) from error

    def _splitter(self, corpus, counts, rng, prompt_embeddings):
        seed = int(rng.randint(np.iinfo(np.int32).max))
        if self.support == "all":
            return SeenUserSplit(test_prompts=corpus.prompt_ids("test"))
        return ColdStartSplit(
            n_splits=1,
            test_size=counts["n_seen"] + counts["n_unseen"],
            n_support=counts["unseen_context"],
            support=self.support,
            random_state=seed,
            prompt_embeddings=prompt_embeddings,
        )


class ProtocolData:
    """A simulated protocol: what ``cross_validate`` needs, and per-user scores.

    Attributes
    ----------
    X : DataFrame
        ``user_id``, ``prompt_id``, ``response_id`` rows.
    y : ndarray
        Feedback labels, NaN on the test candidates.
    cv : cross-validation splitter
        One split, as the protocol evaluates.
    scoring : callable
        ``scoring(estimator, X, y)`` returning ``{"<metric>_<group>": value}`` for the
        protocol's metrics and ``gap_closed``, per group of evaluated users.
    oracle : PreferenceOracle
        The users' true rewards (on :attr:`corpus`).
    corpus : Corpus
        The corpus the users see (reward models, responses and scale of the protocol);
        feature steps take it, since response ids refer to it.
    user_group : ndarray of str, shape (n_users,)
        ``"seen"``, ``"unseen"`` or ``"historical"`` per ``user_id``.
    comparisons : DataFrame or None
        The test comparisons (``user_id``, ``prompt_id``, ``chosen_id``,
        ``rejected_id``).
    protocol : Protocol
    settings : dict
        The arguments of the simulation.
    """

    def __init__(self, protocol, feedback, cv, user_group):
        self.protocol = protocol
        self.X = feedback.X
        self.y = feedback.y
        self.cv = cv
        self.oracle = feedback.oracle
        self.corpus = feedback.corpus
        self.comparisons = feedback.query_comparisons
        self.user_group = user_group
        self.settings = feedback.settings
        self.scoring = _ProtocolScorer(self)

    @property
    def metrics(self):
        """The reported metrics: the paper's, then ``gap_closed``."""
        return tuple(self.protocol.metrics) + ("gap_closed",)

    def user_scores(self, X, utility):
        """Per-user outcomes of ``utility`` on the test rows ``X`` (see :func:`user_scores`)."""
        reference = (
            self.protocol.reference_model if "win_rate" in self.metrics else None
        )
        table = user_scores(
            self.oracle,
            X,
            utility,
            comparisons=self.comparisons,
            reference_model=reference,
        )
        table["group"] = self.user_group[table.index.to_numpy()]
        return table

    def summary(self, X, utility):
        """``{(group, metric): (value, standard error over users)}`` on test rows ``X``."""
        table = self.user_scores(X, utility)
        return {
            (group, metric): value
            for group, rows in table.groupby("group", sort=False)
            for metric, value in summarize(rows, self.metrics).items()
        }


class _ProtocolScorer:
    """Predict once on the test fold; the protocol's metrics per group of users."""

    def __init__(self, data):
        self.data = data

    def __call__(self, estimator, X, y=None):
        summary = self.data.summary(X, estimator.predict(X))
        return {
            f"{metric}_{group}": value
            for (group, metric), (value, _) in summary.items()
        }


def _prompt_count(value, n_train, name):
    """A count of prompts: an int as is, a float share of the train prompts floored."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        count = int(value)
    elif isinstance(value, numbers.Real) and 0 < value < 1:
        count = int(value * n_train)
    else:
        raise ValueError(
            f"{name} must be a count or a share of the train prompts in (0, 1); "
            f"got {value!r}."
        )
    if count < 0:
        raise ValueError(f"{name} must be non-negative; got {value!r}.")
    return count
