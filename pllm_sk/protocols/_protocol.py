"""A published evaluation setting as a small frozen object that simulates itself."""

import dataclasses
import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..model_selection import ColdStartSplit, SeenUserSplit
from ..simulation import sample_users, simulate_feedback
from ._scoring import summarize, user_scores

__all__ = ["Protocol", "ProtocolData"]

# How evaluated users reveal their labeled prompts: all of them (a split over
# prompts, SeenUserSplit), or a support set chosen by ColdStartSplit.
SUPPORT_RULES = ("all", "random", "nearest")


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
    n_seen, n_unseen, n_historical : int
        Users of each group.
    seen_context, unseen_context : int or float
        Labeled train prompts per seen user, and per unseen user in the training
        fold.
    unseen_pool : int or None
        Labeled train prompts simulated per unseen user, among which the splitter
        chooses ``unseen_context`` (``support``); ``None``: exactly
        ``unseen_context``.
    historical_context : int
        Labeled train prompts per historical user.
    n_test : int or None
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
        ``unseen_context`` support prompts so chosen.
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
        """
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

        Parameters
        ----------
        corpus : Corpus
            :func:`~pllm_sk.datasets.load_personalllm` or
            :func:`~pllm_sk.datasets.make_personalllm`.
        random_state : int, RandomState instance or None, default=None
            Seeds the user weights, the feedback and the splitter.
        prompt_embeddings : array-like of shape (n_prompts, dim), default=None
            For ``support="nearest"``, which requires it.

        Returns
        -------
        data : ProtocolData
        """
        counts = self.counts(corpus)
        rng = check_random_state(random_state)
        sizes = [counts["n_seen"], counts["n_unseen"], counts["n_historical"]]
        if sum(sizes) == 0:
            raise ValueError(f"Protocol {self.name!r} has no users.")
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
        weights = sample_users(
            sum(sizes),
            alpha=self.alpha,
            n_reward_models=counts["n_reward_models"],
            random_state=rng,
        )
        group = np.repeat(
            np.array(["seen", "unseen", "historical"], dtype=object), sizes
        )
        n_history = np.repeat(
            [
                counts["seen_context"],
                counts["unseen_pool"],
                counts["historical_context"],
            ],
            sizes,
        )
        n_query = np.repeat([counts["n_test"], counts["n_test"], 0], sizes)
        feedback = simulate_feedback(
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
        cv = self._splitter(feedback.corpus, counts, rng, prompt_embeddings)
        return ProtocolData(self, feedback, cv, group)

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
