"""The published settings, each fact with the file and line of the code that sets it.

Facts were read in the authors' public repositories at the commits named in
``repository``; ``notes`` say what could not be verified there and where the
encoding departs from the source.
"""

from ._protocol import Protocol

__all__ = ["PRESETS"]

_PERSONALLLM = (
    "namkoong-lab/Private_PersonalLLM@0fd9a3cad5eb1f0a731ea399d4dcc77a817f5d49"
)
_PERSONALLLM_PAPER = "Zollo, Siah et al., PersonalLLM (ICLR 2025)"
_SCORES_CSV = "PersonalLLM/paper/all_scores.csv"

_PERSONALLLM_SOURCES = (
    (
        "alpha=0.05, 1,000 test users",
        "PersonalLLM/paper/arxiv-submission/03_experiments.tex:11",
    ),
    (
        "one test prompt per user, test split",
        "PersonalLLM/paper/arxiv-submission/03_experiments.tex:11",
    ),
    (
        "10,000 historical users x 50 prompts, best vs worst of 8, alpha=0.05",
        "PersonalLLM/paper/arxiv-submission/03_experiments.tex:73",
    ),
    (
        "rewards z-normalised with the published means and sds",
        "PersonalLLM/eval/eval.py:43-50",
    ),
    (
        "win rate: user reward strictly greater than gpt4o_reward",
        "PersonalLLM/eval/eval.py:63",
    ),
    ("mean reward over the test users (total_score)", "PersonalLLM/eval/eval.py:61"),
)

_PERSONALLLM_NOTES = (
    "The published figures are LLM generation methods (Llama-3-8B-Instruct, in-context "
    "learning), on the real corpus; this library's methods rank the 8 given responses "
    "instead, so the figures are context, not the same experiment. The 10,000 "
    "historical users of setting 2 are the training users of both presets here (this "
    "library's methods learn from other users); the published figure of setting 2 used "
    "a 1,000-user database (PersonalLLM/paper/visualize.ipynb cell 3). The scale of "
    "gpt4o_reward is UNVERIFIED (no public script writes it); here the GPT-4o response's "
    "reward under the same normalised scores. The code picks the history's win/lose "
    "responses with the first eval user's weights for everyone on raw scores "
    "(eval/algorithms/KShotICLAlgorithm.py:81,98-103); here each user's own weights, "
    "as the paper's text says."
)

# What the two settings share: the users, their histories and the metrics.
_PERSONALLLM_SETTINGS = dict(
    repository=_PERSONALLLM,
    alpha=0.05,
    n_unseen=1000,
    unseen_context=5,
    unseen_pool=50,
    n_historical=10_000,
    historical_context=50,
    n_test=1,
    feedback="best_worst_pair",
    metrics=("win_rate", "reward"),
)

_ZERO_SHOT_WIN_RATE = ("ZeroShot (Llama-3-8B)", "win_rate", 0.080, _SCORES_CSV + ":2")

PERSONALLLM_SETTING1 = Protocol(
    name="personalllm_setting1",
    paper=_PERSONALLLM_PAPER + ", setting 1 (personalized in-context learning)",
    sources=_PERSONALLLM_SOURCES
    + (
        (
            "history: 5 prompts most similar to the test prompt",
            "PersonalLLM/paper/arxiv-submission/03_experiments.tex:27",
        ),
        (
            "retrieval by cosine similarity of prompt embeddings",
            "PersonalLLM/eval/algorithms/KShotICLAlgorithm.py:69-71,123",
        ),
    ),
    support="nearest",
    published=(
        _ZERO_SHOT_WIN_RATE,
        ("ZeroShot (Llama-3-8B)", "reward", -1.0508, _SCORES_CSV + ":2"),
        ("KShotICL, 1 shot, winning only", "win_rate", 0.177, _SCORES_CSV + ":8"),
        ("KShotICL, 3 shots, winning only", "win_rate", 0.245, _SCORES_CSV + ":16"),
        ("KShotICL, 5 shots, winning only", "win_rate", 0.244, _SCORES_CSV + ":20"),
        ("KShotICL, 5 shots, winning only", "reward", -0.1729, _SCORES_CSV + ":20"),
    ),
    notes=(
        "The paper retrieves the nearest prompts among all 9,402 train prompts; here "
        "among the 50 train prompts each test user has labeled (unseen_pool), by the "
        "prompt embeddings passed to simulate(). " + _PERSONALLLM_NOTES
    ),
    **_PERSONALLLM_SETTINGS,
)

PERSONALLLM_SETTING2 = Protocol(
    name="personalllm_setting2",
    paper=_PERSONALLLM_PAPER + ", setting 2 (learning across users)",
    sources=_PERSONALLLM_SOURCES
    + (
        (
            "own history: 5 random prompts, win/lose as before",
            "PersonalLLM/paper/arxiv-submission/03_experiments.tex:73",
        ),
    ),
    support="random",
    published=(
        _ZERO_SHOT_WIN_RATE,
        ("SelfKShotICL, 3 shots", "win_rate", 0.204, _SCORES_CSV + ":9"),
        (
            "MetaLearnKShotICL, win-minus-lose embedding",
            "win_rate",
            0.219,
            _SCORES_CSV + ":55",
        ),
        (
            "MetaLearnKShotICL, win-minus-lose embedding",
            "reward",
            -0.3186,
            _SCORES_CSV + ":55",
        ),
    ),
    notes=(
        "Whether the users' own histories are best/worst pairs (the paper's text) or "
        "random pairs (data/gen_pref_interaction_database.py:118-128) is UNVERIFIED; "
        "here best/worst pairs. " + _PERSONALLLM_NOTES
    ),
    **_PERSONALLLM_SETTINGS,
)

LORE = Protocol(
    name="lore",
    paper="Bose et al., LoRe: low-rank reward modeling (COLM 2025)",
    repository="facebookresearch/LoRe@6f93990486a234a13e7e18788bc2a6f661958edb",
    sources=(
        (
            "the dataset's train (9,402) and test (1,000) splits",
            "PersonalLLM/train_basis.py:46-48",
        ),
        (
            "raw reward columns, not normalised",
            "PersonalLLM/train_basis.py:78-89,105-109",
        ),
        ("alpha=0.1, symmetric", "PersonalLLM/train_basis.py:146-148"),
        ("1,000 seen users", "PersonalLLM/train_basis.py:145"),
        ("500 unseen users, a fresh draw", "PersonalLLM/train_basis.py:156-157"),
        ("one comparison per prompt: best vs worst of 8", "utils.py:19-24"),
        (
            "seen: int(0.005 x 9,402) = 47 train prompts per user",
            "PersonalLLM/train_basis.py:151; utils.py:58,64",
        ),
        (
            "unseen: int(0.001 x 9,402) = 9 train prompts per user",
            "PersonalLLM/train_basis.py:160",
        ),
        (
            "evaluation: all 1,000 test prompts, best vs worst, every user",
            "PersonalLLM/train_basis.py:153-154,162-163",
        ),
        ("pairwise accuracy averaged over users", "utils.py:28-37,137-145"),
        (
            "ranks K = 0..5; 0 the reference model, 1 Bradley-Terry",
            "PersonalLLM/train_basis.py:166; README.md:61",
        ),
    ),
    alpha=0.1,
    n_seen=1000,
    n_unseen=500,
    seen_context=0.005,
    unseen_context=0.001,
    n_test=None,
    feedback="best_worst_pair",
    test_comparisons="best_worst_pair",
    scores="raw",
    support="all",
    metrics=("pairwise_accuracy",),
    notes=(
        "LoRe learns the basis from the seen users, then fits each unseen user's "
        "weights with the basis frozen (utils.py:503); here every estimator fits once "
        "on all training rows, the unseen users' 9 comparisons included. LoRe's "
        "features are Skywork-Reward-Llama-3.1-8B-v0.2 last-token hidden states "
        "(PersonalLLM/prepare.py:27-65), and its K=0 reference is a vector of that "
        "model (train_basis.py:37-43; which layer is UNVERIFIED): neither is available "
        "offline, so the reference row here is the uniform mix of the reward columns. "
        "LoRe reports 0.25 x the standard deviation over users (utils.py:515-523); "
        "here the standard error over users. Its draws are unseeded (utils.py:43-44). "
        "The repository holds no PersonalLLM results, so no published figure is "
        "recorded."
    ),
)

COPL = Protocol(
    name="copl",
    paper="Choi et al., CoPL: collaborative preference learning (EMNLP 2025)",
    repository="ml-postech/CoPL@1e5b4b18f91c091e0556528f198ec9057833333d",
    sources=(
        (
            "4 reward models: gemma_7b, mistral_weqweasdas, llama3_sfairx, oasst_deberta_v3",
            "data/datagen_plm.py:21-25",
        ),
        ("raw scores", "data/datagen_plm.py:48-50"),
        ("responses 5, 6 and 7 only", "data/datagen_plm.py:44-46,83-85"),
        (
            "pairs unless all 4 reward models strictly agree",
            "data/datagen_plm.py:56-61",
        ),
        (
            "train pairs from the train split, test pairs from the test split",
            "data/datagen_plm.py:32-33,41,80",
        ),
        ("alpha=0.1 over the 4 reward models", "data/datagen_plm.py:152"),
        ("10,000 users", "data/datagen_plm.py:212; README.md:38"),
        ("15 context pairs (+1 held out) per user", "data/datagen_plm.py:146-150"),
        ("100 test pairs per user", "data/datagen_plm.py:185"),
        ("metric: chosen reward > rejected reward, mean", "models/CoPL_rm.py:102,107"),
    ),
    alpha=0.1,
    n_seen=10_000,
    seen_context=15,
    n_test=100,
    feedback="random_pair",
    test_comparisons="random_pair",
    reward_models=(
        "gemma_7b",
        "mistral_weqweasdas",
        "llama3_sfairx",
        "oasst_deberta_v3",
    ),
    responses=(4, 5, 6),
    scores="raw",
    only_disagreeing=True,
    support="all",
    metrics=("pairwise_accuracy",),
    notes=(
        "The sizes of CoPL's unseen users are UNVERIFIED (no script writes the "
        "unseen-user file that unseen_user_adaptation.py:24 reads), so this preset has "
        "seen users only. Not applied: the length filter (a prompt is dropped when a "
        "response exceeds 1,024 gemma-2b-it tokens, datagen_plm.py:52-54) and the 16th, "
        "held-out context pair (a validation pair). CoPL draws pairs uniformly from "
        "the pool of all disagreeing pairs; here distinct prompts, then one "
        "disagreeing pair of each uniformly. The reward-model script scores 11 of the "
        "100 test pairs per user (train_CoPL_rm.py:247-257); here all 100. The script "
        "does not run as published (argparse action='bool', datagen_plm.py:210) and its "
        "draws are unseeded. The repository holds no PersonalLLM results."
    ),
)

PRESETS = {
    preset.name: preset
    for preset in (PERSONALLLM_SETTING1, PERSONALLLM_SETTING2, LORE, COPL)
}
