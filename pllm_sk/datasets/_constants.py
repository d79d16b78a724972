"""Names and normalisation statistics of the PersonalLLM benchmark (REFERENCE.md)."""

# short name -> (hub model, train-set mean, train-set sd) of the raw score.
# User weight vectors index reward models in alphabetical order of the short name,
# which is the order of this mapping and of ``REWARD_MODELS``.
REWARD_MODEL_STATS = {
    "beaver_7b": (
        "PKU-Alignment/beaver-7b-v1.0-cost",
        6.233516894340515,
        3.012641148973965,
    ),
    "gemma_2b": ("weqweasdas/RM-Gemma-2B", 4.3304170169830325, 2.038611338958803),
    "gemma_7b": ("weqweasdas/RM-Gemma-7B", 1.6259730467796325, 2.6096741570264976),
    "llama3_sfairx": (
        "sfairXC/FsfairX-LLaMA3-RM-v0.1",
        1.0637639780044557,
        2.953017385451928,
    ),
    "mistral_raft": (
        "hendrydong/Mistral-RM-for-RAFT-GSHF-v0",
        8.309211883544922,
        3.0728436748484533,
    ),
    "mistral_ray": (
        "Ray2333/reward-model-Mistral-7B-instruct-Unified-Feedback",
        3.0136284782886507,
        1.6902981149232585,
    ),
    "mistral_weqweasdas": (
        "weqweasdas/RM-Mistral-7B",
        7.071075622558594,
        2.578636650248985,
    ),
    "oasst_deberta_v3": (
        "OpenAssistant/reward-model-deberta-v3-large-v2",
        2.8976835689097644,
        1.7207868789061331,
    ),
    "oasst_pythia_1b": (
        "OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5",
        4.293944010734558,
        2.3018268820938133,
    ),
    "oasst_pythia_7b": (
        "OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1",
        4.706351243972779,
        1.3659142113789966,
    ),
}

REWARD_MODELS = tuple(sorted(REWARD_MODEL_STATS))

# Response slots in the hub data follow the generation order of the models.
RESPONSE_MODELS = (
    "Command-R-Plus",
    "GPT-4-Turbo",
    "GPT-4o",
    "Claude 3 Opus",
    "Claude 3 Sonnet",
    "Llama3-70B-Instruct",
    "Gemini-Pro-1.5",
    "Mixtral 8x22B",
)

# Prompt sources of the 10,402 prompts and their counts.
SUBSET_COUNTS = {
    "hh-rlhf-helpful-base": 4797,
    "hh-rlhf-helpful-online": 3320,
    "HelpSteer": 1290,
    "alpacaeval-hard": 285,
    "alpacaeval-easy": 259,
    "alpacaeval-length": 219,
    "xstest-should-respond": 65,
    "llmbar-adver-neighbor": 43,
    "llmbar-adver-GPTInst": 34,
    "llmbar-natural": 27,
    "llmbar-adver-manual": 19,
    "llmbar-adver-GPTOut": 15,
    "mt-bench-med": 14,
    "mt-bench-hard": 10,
    "mt-bench-easy": 5,
}

N_PROMPTS = 10_402
N_TEST_PROMPTS = 1_000
