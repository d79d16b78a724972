"""The meta-learned reward head: it learns across users, adapts, and behaves as an estimator."""

import functools
import io
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone

from conftest import random_corpus
from pllm_sk.core._comparisons import UserComparisons, comparisons
from pllm_sk.datasets import Corpus
from pllm_sk.meta import MetaRewardHead, _modules
from pllm_sk.meta._episodes import draw_episodes
from pllm_sk.meta._modules import (
    ParticleEncoder,
    newton_refine,
    pair_loss,
    pooled_log_likelihood,
)
from pllm_sk.meta._training import Adam, EarlyStopping, EpisodeLoss
from pllm_sk.simulation import simulate_feedback

# Small and quick: a few hundred optimiser steps on a few thousand rows.
FAST = dict(n_prototypes=32, batch_size=32, max_epochs=40, random_state=0)
# A learned (linear) item tower starts the prototypes at random, so only
# meta-training can make the head adapt: the planted test fails if it does nothing.
TOWER = dict(n_components=4)
N_HISTORY_USERS = 150


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_rewards(corpus, X):
    scores = corpus.lookup_rewards(X["prompt_id"], X["response_id"])
    X = X.copy()
    for b, name in enumerate(corpus.reward_models):
        X[f"reward_{name}"] = scores[:, b].astype(float)
    return X


@pytest.fixture(scope="module")
def planted():
    """Users drawn from 3 prototypes, each caring about one reward model only.

    150 historical users label 10 train prompts (best and worst of 8); 60 new users
    from the same prototypes give 3 support comparisons (best vs worst of 3 train
    prompts) and have 2 unlabeled query prompts from the test split.
    """
    # Independent reward models: one comparison says something about the prototype.
    shape = random_corpus(200, 40)
    corpus = Corpus(
        shape.prompts,
        shape.responses,
        np.random.RandomState(1).normal(size=shape.rewards.shape),
        reward_models=shape.reward_models,
        response_models=shape.response_models,
        split=shape.split,
    )
    rng = np.random.RandomState(0)
    n_new = 60
    prototype = rng.randint(3, size=N_HISTORY_USERS + n_new)
    weights = np.eye(corpus.n_reward_models)[prototype]
    history = simulate_feedback(
        corpus, weights[:N_HISTORY_USERS], n_history=10, n_query=0, random_state=0
    )
    new = simulate_feedback(
        corpus,
        weights[N_HISTORY_USERS:],
        n_history=3,
        n_query=2,
        feedback="best_worst_pair",
        random_state=1,
    )
    new.X["user_id"] += N_HISTORY_USERS
    oracle_weights = weights

    def true_reward(X):
        scores = corpus.lookup_rewards(X["prompt_id"], X["response_id"])
        return np.einsum("nb,nb->n", scores, oracle_weights[X["user_id"]])

    return dict(
        history=(_with_rewards(corpus, history.X), history.y),
        support=(_with_rewards(corpus, new.X[~new.is_query]), new.y[~new.is_query]),
        query=_with_rewards(corpus, new.X[new.is_query]),
        true_reward=true_reward,
    )


def top1_accuracy(X, utility, true_reward):
    """Share of (user, prompt) whose highest-utility candidate is the user's best."""
    frame = X[["user_id", "prompt_id"]].assign(utility=utility, reward=true_reward(X))
    groups = frame.groupby(["user_id", "prompt_id"])
    chosen = frame.loc[groups["utility"].idxmax(), "reward"].to_numpy()
    best = groups["reward"].max().to_numpy()
    return float(np.mean(chosen >= best - 1e-9))


@pytest.fixture(scope="module")
def small():
    """Reward-track rows: 30 users with 4 best/worst prompts and 1 query prompt."""
    corpus = random_corpus(40, 10)
    rng = np.random.RandomState(0)
    weights = rng.dirichlet(np.full(corpus.n_reward_models, 0.3), size=30)
    data = simulate_feedback(corpus, weights, n_history=4, n_query=1, random_state=0)
    return _with_rewards(corpus, data.X), data.y, data.is_query


@pytest.fixture(scope="module")
def fitted(small):
    X, y, _ = small
    return MetaRewardHead(**FAST).fit(X, y)


# ------------------------------------------------------------------ learning


@pytest.mark.parametrize("adaptation", ["encoder", "gradient"])
def test_adapted_head_ranks_a_new_user_far_better_after_3_comparisons(
    planted, adaptation
):
    # Both adaptation modes run and learn.
    head = MetaRewardHead(adaptation=adaptation, **TOWER, **FAST).fit(
        *planted["history"]
    )
    assert head.n_epochs_ == len(head.loss_curve_) == len(head.validation_scores_)
    assert head.best_loss_ < 0.8 * head.validation_scores_[0]
    assert min(head.loss_curve_) < 0.8 * head.loss_curve_[0]
    query, true_reward = planted["query"], planted["true_reward"]
    before = top1_accuracy(query, head.predict(query), true_reward)
    assert head.count_fallbacks(query)["users"] == 60
    head.partial_fit(*planted["support"])
    after = top1_accuracy(query, head.predict(query), true_reward)
    # The same head barely meta-trained does not adapt nearly as well.
    untrained = MetaRewardHead(
        adaptation=adaptation, **TOWER, **{**FAST, "max_steps": 1}
    ).fit(*planted["history"])
    untrained.partial_fit(*planted["support"])
    untrained_after = top1_accuracy(query, untrained.predict(query), true_reward)
    assert after >= before + 0.3, (before, after)
    assert after >= untrained_after + 0.3, (untrained_after, after)
    assert after >= 0.65


def test_cold_user_gets_the_prior(fitted, small):
    X, _, is_query = small
    query = X[is_query]
    cold = query.assign(user_id=999)
    utility = fitted.predict(cold)
    assert_allclose(utility, cold.filter(like="reward_").to_numpy() @ fitted.population_coef_)
    assert_allclose(fitted.user_preference([999, 1000]), np.stack([fitted.population_coef_] * 2))
    # The prior is what the adapter gives a user with an empty support.
    empty = torch.empty(0, fitted.population_coef_.size, dtype=torch.float64)
    with torch.no_grad():
        prior = fitted._module_for_predict().adapter(
            empty, torch.empty(0, dtype=torch.int64), 1
        )
    assert_allclose(prior[0].numpy(), fitted.population_coef_)
    assert fitted.count_fallbacks(cold)["users"] >= 1
    # A warm user moves away from the prior.
    assert not np.allclose(fitted.user_preference([0])[0], fitted.population_coef_)


def test_partial_fit_adapts_new_users_with_the_meta_parameters_frozen(small):
    X, y, is_query = small
    warm = (X["user_id"] < 20).to_numpy()
    head = MetaRewardHead(**FAST).fit(X[warm], y[warm])
    before = {k: v.clone() for k, v in head.module_.state_dict().items()}
    new = ~warm & ~is_query
    vector_cold = head.user_preference([25])
    head.partial_fit(X[new], y[new])
    for name, value in head.module_.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert 25 in head.users_
    assert not np.allclose(head.user_preference([25]), vector_cold)
    # A returning user's repeated rows replace the old ones: nothing changes here.
    vectors = head.user_preference(np.arange(30))
    head.partial_fit(X[new], y[new])
    assert_allclose(head.user_preference(np.arange(30)), vectors)
    # Adding everything at once is the same as adding it in two calls.
    at_once = (
        MetaRewardHead(**FAST).fit(X[warm], y[warm]).partial_fit(X[~warm], y[~warm])
    )
    assert_allclose(at_once.predict(X[is_query]), head.predict(X[is_query]))


def test_partial_fit_on_an_unfitted_head_is_fit(small):
    X, y, is_query = small
    first = MetaRewardHead(**FAST).partial_fit(X, y).predict(X[is_query])
    assert_array_equal(first, MetaRewardHead(**FAST).fit(X, y).predict(X[is_query]))


def test_ids_track_uses_the_response_slot(small):
    X, y, is_query = small
    ids_only = X[["user_id", "prompt_id", "response_id"]]
    head = MetaRewardHead(**FAST).fit(ids_only, y)
    assert head.n_response_slots_ == 8
    utility = head.predict(ids_only[is_query])
    assert utility.shape == (int(is_query.sum()),) and np.isfinite(utility).all()


def test_episodes_split_each_user_into_support_and_query():
    # 2 users: user 0 with 5 prompts of 3 rows, user 1 with 1 prompt.
    rows = [(0, p, r) for p in range(5) for r in range(3)] + [(1, 9, 0), (1, 9, 1)]
    ids = np.array(rows)
    y = np.array([2.0, 1.0, 0.0] * 5 + [1.0, 0.0])
    store = UserComparisons.from_comparisons(ids, comparisons(ids, y), rows=True)
    groups = store.prompt_groups()
    assert_array_equal(np.diff(groups[1]), [5, 1])
    (support, support_owner), (query, query_owner) = draw_episodes(
        groups,
        np.array([0, 1]),
        np.random.default_rng(0),
        max_support=10,
        max_query=2,
    )
    winners = store.columns["winner"]
    support_prompts = set(ids[winners[support], 1])
    query_prompts = set(ids[winners[query], 1])
    # At most all but one prompt in the support; the user with 1 prompt has none.
    assert 1 <= len(support_prompts) <= 4 and not support_prompts & query_prompts
    assert len(query_prompts - {9}) <= 2 and 9 in query_prompts
    assert set(support_owner) == {0}
    assert_array_equal(query_owner, np.where(ids[winners[query], 0], 1, 0))


@pytest.mark.parametrize("tower", [{}, TOWER])
def test_episode_loss_is_the_query_loss_of_the_adapted_users(small, tower):
    # With the identity tower the loss gathers precomputed differences; it must
    # give what the model computes from the item features, gradients included.
    X, y, _ = small
    head = MetaRewardHead(**tower, **FAST, max_steps=5).fit(X, y)
    store, items, module = head._store, head._items, head.module_
    users = np.arange(10)
    episodes = draw_episodes(
        store.prompt_groups(), users, np.random.default_rng(0), max_support=3,
        max_query=None,
    )
    loss = EpisodeLoss(module, store, items, "cpu")(users.size, episodes)
    gradients = torch.autograd.grad(loss, list(module.parameters()))

    def rows(pairs):
        return tuple(
            torch.from_numpy(items[store.columns[side][pairs]]) for side in ("winner", "loser")
        )

    (support, support_owner), (query, query_owner) = (
        (pairs, torch.from_numpy(owner)) for pairs, owner in episodes
    )
    vectors = module.user_vectors(*rows(support), support_owner, users.size)
    margins = module.margins(vectors, *rows(query), query_owner)
    expected = pair_loss(margins, query_owner, users.size)
    assert torch.equal(loss, expected)
    for got, want in zip(
        gradients, torch.autograd.grad(expected, list(module.parameters()))
    ):
        assert torch.equal(got, want)


# ------------------------------------------------------------- as an estimator


def test_clone_pickle_and_determinism(fitted, small):
    X, y, is_query = small
    expected = fitted.predict(X[is_query])
    assert fitted.device_ == "cpu"
    buffer = io.BytesIO()
    joblib.dump(fitted, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    assert next(loaded.module_.parameters()).device.type == "cpu"
    assert_array_equal(loaded.set_params(device="cpu").predict(X[is_query]), expected)
    refit = clone(fitted).fit(X, y)
    assert_array_equal(refit.predict(X[is_query]), expected)
    assert isinstance(expected, np.ndarray) and expected.dtype == np.float64


def test_verbose_shows_a_progress_bar_and_zero_is_silent(small, capsys):
    X, y, _ = small
    MetaRewardHead(**{**FAST, "max_epochs": 2}).fit(X, y)
    assert capsys.readouterr().err == ""
    MetaRewardHead(**{**FAST, "max_epochs": 2}, verbose=1).fit(X, y)
    assert "meta-training" in capsys.readouterr().err


def test_max_steps_and_early_stopping(small):
    X, y, _ = small
    head = MetaRewardHead(**{**FAST, "max_steps": 3}).fit(X, y)
    assert head.n_steps_ == 3
    head = MetaRewardHead(**{**FAST, "max_epochs": 500, "n_iter_no_change": 2}).fit(
        X, y
    )
    assert head.n_epochs_ < 500
    no_validation = MetaRewardHead(**{**FAST, "validation_fraction": 0.0}).fit(X, y)
    assert no_validation.validation_scores_ == []


def test_plateaus_halve_the_step_then_stop(small):
    """A plateau is 30 steps and at least one epoch without an improvement."""
    X, y, _ = small
    # No epoch improves by tol=1: every epoch is stale, and the best parameters
    # are the calibrated starting point. 27 training users, 3 held out.
    params = {**FAST, "max_epochs": 100, "tol": 1.0}
    one_step_epochs = MetaRewardHead(**params).fit(X, y)
    assert one_step_epochs.n_steps_ == one_step_epochs.n_epochs_ == 10  # n_iter_no_change
    long_epochs = MetaRewardHead(**{**params, "batch_size": 1}).fit(X, y)
    # 27 steps an epoch: plateaus end at epoch 2 (the step halves) and 4 (the end).
    assert long_epochs.n_epochs_ == 4
    assert long_epochs.n_steps_ == 4 * 27
    start = MetaRewardHead(**{**params, "max_steps": 1}).fit(X, y)
    for name, value in start.module_.state_dict().items():
        torch.testing.assert_close(long_epochs.module_.state_dict()[name], value)


def test_adam_updates_the_parameters_as_torch_adam_bit_for_bit():
    # Same steps, a halved step size and a parameter without a gradient (skipped).
    def run(make_optimizer):
        generator = torch.Generator().manual_seed(0)
        weights = torch.nn.Parameter(torch.randn(7, 3, generator=generator))
        unused = torch.nn.Parameter(torch.randn(2, generator=generator))
        optimizer = make_optimizer([weights, unused], lr=0.01)
        for step in range(30):
            if step == 20:
                optimizer.param_groups[0]["lr"] /= 2.0
            optimizer.zero_grad()
            loss = (torch.randn(7, 3, generator=generator) * weights).pow(2).sum()
            loss.backward()
            optimizer.step()
        return weights.detach(), unused.detach()

    ours, torchs = run(Adam), run(torch.optim.Adam)
    assert torch.equal(ours[0], torchs[0]) and torch.equal(ours[1], torchs[1])
    assert not torch.equal(ours[0], run(lambda params, lr: Adam(params, lr=lr, eps=1e-3))[0])


def test_early_stopping_keeps_the_best_and_halves_the_step_on_a_plateau():
    module = torch.nn.Linear(1, 1, bias=False)
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    stopping = EarlyStopping(0.0, 10, plateau_steps=5, max_halvings=1)
    stopping.on_train_begin(module, None)  # no held-out loss: the first epoch is best

    def epoch(weight, loss, n_steps=3):
        with torch.no_grad():
            module.weight.fill_(weight)
        return stopping.on_epoch_end(module, optimizer, loss, n_steps)

    assert not epoch(1.0, 2.0)
    assert not epoch(5.0, 2.5)  # stale: 3 steps
    assert optimizer.param_groups[0]["lr"] == 1.0
    # 6 stale steps: a plateau, back to the best parameters with half the step.
    assert not epoch(5.0, 2.5)
    assert optimizer.param_groups[0]["lr"] == 0.5 and module.weight.item() == 1.0
    assert not epoch(5.0, 2.5)
    assert epoch(5.0, 2.5)  # the second plateau since the last improvement ends it
    stopping.on_train_end(module)
    assert stopping.best_loss == 2.0 and module.weight.item() == 1.0
    # n_iter_no_change stale epochs end it too; a held-out start competes.
    stopping = EarlyStopping(0.0, 2, plateau_steps=100, max_halvings=1)
    stopping.on_train_begin(module, 1.0)
    assert not epoch(3.0, 1.0) and epoch(3.0, 1.0)
    stopping.on_train_end(module)
    assert module.weight.item() == 1.0


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(adaptation="maml"), "adaptation"),
        (dict(n_prototypes=0), "n_prototypes"),
        (dict(n_newton_steps=-1), "n_newton_steps"),
        (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(device="tpu:banana"), "device"),
    ],
)
def test_bad_parameters_are_named(small, params, match):
    X, y, _ = small
    with pytest.raises(ValueError, match=match):
        MetaRewardHead(**params).fit(X, y)


def test_bad_input_gets_clear_errors(fitted, small):
    X, y, is_query = small
    with pytest.raises(ValueError, match="no comparison"):
        MetaRewardHead().fit(X, np.where(np.isnan(y), np.nan, 1.0))
    with pytest.raises(ValueError, match="user_id"):
        MetaRewardHead().fit(X.drop(columns="user_id"), y)
    with pytest.raises(ValueError, match="reward_"):
        bad = X.copy()
        bad.iloc[0, 3] = np.nan
        MetaRewardHead().fit(bad, y)
    with pytest.raises(ValueError, match="feature"):
        fitted.predict(X[is_query].iloc[:, :-1])
    with pytest.raises(ValueError, match="feature"):
        fitted.partial_fit(X.iloc[:, :-1], y)


def test_import_pllm_sk_does_not_import_torch():
    code = "import sys, pllm_sk; pllm_sk.baselines; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numpy_input_matches_dataframe_input(fitted, small):
    X, y, is_query = small
    from_array = clone(fitted).fit(X.to_numpy(), y).predict(X[is_query].to_numpy())
    assert_allclose(from_array, fitted.predict(X[is_query]))


def test_partial_fit_keeps_the_comparisons_built_from_all_rows(small):
    X, y, is_query = small
    labeled, labels = X[~is_query], y[~is_query]
    first = (labeled["user_id"] < 12).to_numpy()
    # Users 10 and 11 come back with all their rows; users 12-29 are new.
    again = (labeled["user_id"] >= 10).to_numpy()
    head = MetaRewardHead(**{**FAST, "max_epochs": 1}).fit(labeled[first], labels[first])
    head.partial_fit(labeled[again], labels[again])
    ids = head._ids
    full = UserComparisons.from_comparisons(ids, comparisons(ids, head._y), rows=True)
    store = head._store
    assert_array_equal(store.users, np.arange(30))
    for got, expected in zip(store.prompt_groups(), full.prompt_groups()):
        assert_array_equal(got, expected)
    for side in ("winner", "loser"):
        assert_array_equal(ids[store.columns[side]], ids[full.columns[side]])


def test_pooled_log_likelihood_matches_autograd_and_its_gradient_checks(monkeypatch):
    # Blocks of 2 pairs (8 margins of 4 prototypes), so that several blocks run.
    monkeypatch.setattr(
        _modules, "_blocks", functools.partial(_modules._blocks, entries=8)
    )
    generator = torch.Generator().manual_seed(0)
    differences = torch.randn(7, 3, dtype=torch.float64, generator=generator)
    positions = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    owner = torch.tensor([0, 0, 2, 2, 2, 1, 0])
    differences.requires_grad_(True)
    positions.requires_grad_(True)
    pooled = pooled_log_likelihood(differences, positions, owner, 3)
    direct = torch.zeros(3, 4, dtype=torch.float64).index_add(
        0, owner, torch.nn.functional.logsigmoid(differences @ positions.T)
    )
    assert_allclose(pooled.detach().numpy(), direct.detach().numpy())
    assert torch.autograd.gradcheck(
        lambda d, p: pooled_log_likelihood(d, p, owner, 3), (differences, positions)
    )
    # A scale per pair multiplies its margins: the same as scaling its difference.
    scale = torch.rand(7, dtype=torch.float64, generator=generator) + 0.5
    scaled = pooled_log_likelihood(differences, positions, owner, 3, scale=scale)
    assert_allclose(
        scaled.detach().numpy(),
        pooled_log_likelihood(scale[:, None] * differences, positions, owner, 3)
        .detach()
        .numpy(),
    )
    scale.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda d, p, s: pooled_log_likelihood(d, p, owner, 3, scale=s),
        (differences, positions, scale),
    )
    # Without a gradient for the differences (an identity tower), the others hold.
    assert torch.autograd.gradcheck(
        lambda p, s: pooled_log_likelihood(differences.detach(), p, owner, 3, scale=s),
        (positions, scale),
    )


def test_newton_step_is_the_laplace_update_and_differentiable():
    # u = mu + (Sigma^-1 + H)^-1 g, with g and H of sum log sigmoid(t u . d) at mu.
    generator = torch.Generator().manual_seed(0)
    prior_mean = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    root = torch.randn(3, 4, 4, dtype=torch.float64, generator=generator)
    covariance = root @ root.transpose(1, 2) + 0.1 * torch.eye(4, dtype=torch.float64)
    differences = torch.randn(9, 4, dtype=torch.float64, generator=generator)
    owner = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2, 2])  # user 1 has no pairs
    temperature = 0.7
    refined = newton_refine(
        prior_mean, covariance, differences, owner, temperature, n_steps=1
    )
    for user in (0, 2):
        d = differences[owner == user]
        margins = temperature * d @ prior_mean[user]
        gradient = temperature * torch.sigmoid(-margins) @ d
        weights = temperature**2 * torch.sigmoid(margins) * torch.sigmoid(-margins)
        hessian = d.T @ (weights[:, None] * d)
        expected = (
            prior_mean[user]
            + torch.linalg.inv(torch.linalg.inv(covariance[user]) + hessian) @ gradient
        )
        assert_allclose(refined[user].numpy(), expected.numpy())
    # A user without comparisons keeps the prior mean, exactly.
    assert_array_equal(refined[1].numpy(), prior_mean[1].numpy())
    prior_mean.requires_grad_(True)
    differences.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda m, d: newton_refine(m, covariance, d, owner, temperature, n_steps=2),
        (prior_mean, differences),
    )


def test_newton_refinement_moves_a_coarse_posterior_toward_the_truth():
    # 4 prototypes, none near the planted user: with 400 comparisons the posterior
    # sits on the nearest prototype, and only the refinement gets closer.
    generator = torch.Generator().manual_seed(0)
    positions = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]
    )
    truth = torch.tensor([1.8, 2.4, 0.6])
    differences = torch.randn(400, 3, generator=generator)
    # Bradley-Terry choices: the pair is flipped when the user prefers the other.
    flip = torch.rand(400, generator=generator) > torch.sigmoid(differences @ truth)
    differences = torch.where(flip[:, None], -differences, differences)
    owner = torch.zeros(400, dtype=torch.int64)

    def user_vector(n_newton_steps):
        encoder = ParticleEncoder(positions.clone(), n_newton_steps)
        with torch.no_grad():
            return encoder(differences, owner, 1)[0]

    def cosine(u):
        return float(u @ truth / (u.norm() * truth.norm()))

    plain, refined = user_vector(0), user_vector(1)
    assert cosine(plain) < 0.8
    assert cosine(refined) > 0.95, (cosine(plain), cosine(refined))
    # More steps go further toward the MAP.
    assert cosine(user_vector(3)) >= cosine(refined)


@pytest.mark.parametrize("seed", [0, 1])
def test_encoder_starts_sharper_when_features_explain_choices_exactly(seed):
    from _helpers import bradley_terry_rows

    # The same comparisons, chosen without noise and with Bradley-Terry noise: the
    # calibrated start of the encoder reads a comparison more sharply in the first.
    weights = np.repeat(3 * np.eye(3), 30, axis=0)
    sharpness = []
    for temperature in (None, 2.0):
        X, y = bradley_terry_rows(weights, 20, temperature, seed=seed)
        head = MetaRewardHead(n_prototypes=32, max_steps=1, random_state=seed).fit(X, y)
        sharpness.append(head.initial_sharpness_)
    assert sharpness[0] > 2 * sharpness[1]
