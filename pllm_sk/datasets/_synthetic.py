"""A synthetic corpus with the PersonalLLM schema, for offline use and tests.

The rewards come from a small generative story, not from a fit of the paper's
histograms:

1. each prompt has a topic and a source (``subset``), and may be emotional;
2. each response has a shared quality and seven style attributes (length, list
   structure, formality, warmth, technical depth, caution, relevance), drawn around
   the profile of the model that wrote it (``RESPONSE_MODEL_PROFILES``); now and then
   a response misreads the prompt and answers a neighbouring question;
3. each reward model scores a response by its own sensitivity to quality plus its own
   taste over the attributes (``REWARD_MODEL_TASTES``), plus its own noise and a
   per-prompt offset; scores are then z-normalised over the train split.

The texts are rendered from the same attributes (longer responses have more points,
list-structured ones are numbered or bulleted, formal ones avoid contractions, warm
ones open and close with empathy, deep ones use the topic's technical terms, cautious
ones add warnings, misread ones talk about another topic), so that a text embedding
can recover what drives the rewards. The constants below were tuned so that simulated
users reproduce the population statistics of the paper's Figure 4 (see
:func:`pllm_sk.simulation.population_statistics`).
"""

import math
import numbers
import random

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from ._constants import (
    N_PROMPTS,
    N_TEST_PROMPTS,
    RESPONSE_MODELS,
    REWARD_MODELS,
    SUBSET_COUNTS,
)
from ._corpus import Corpus

__all__ = ["make_personalllm"]

# Style attributes of a response, in the column order of the tables below.
ATTRIBUTES = (
    "length",
    "structure",
    "formality",
    "warmth",
    "depth",
    "caution",
    "relevance",
)

# Per response model: mean quality, then the mean of each attribute (in units of the
# attribute's spread, except ``structure``, the log-odds of a list-formatted answer).
# GPT-4o is strong and structured, GPT-4-Turbo close behind; the Claude models are
# warm and careful (Opus long, Sonnet cautious); Llama3 is casual and friendly;
# Gemini structured and careful; Mixtral weaker and terse.
RESPONSE_MODEL_PROFILES = {
    # quality, length, structure, formality, warmth, depth, caution, relevance
    "Command-R-Plus": (0.22, -0.06, 0.0, 0.15, 0.00, 0.00, 0.00, 0.00),
    "GPT-4-Turbo": (0.34, 0.28, 1.5, 0.36, 0.00, 0.36, 0.06, 0.21),
    "GPT-4o": (0.52, 0.36, 2.0, 0.21, 0.06, 0.42, 0.00, 0.28),
    "Claude 3 Opus": (-0.04, 0.28, -0.5, 0.06, 0.64, 0.15, 0.21, 0.15),
    "Claude 3 Sonnet": (0.01, 0.00, -0.2, 0.15, 0.28, 0.00, 0.42, 0.06),
    "Llama3-70B-Instruct": (0.11, 0.15, 0.3, -0.42, 0.36, 0.00, 0.00, 0.00),
    "Gemini-Pro-1.5": (0.20, 0.15, 1.0, 0.28, -0.06, 0.21, 0.36, 0.06),
    "Mixtral 8x22B": (-0.32, -0.57, -0.5, 0.06, -0.21, -0.15, 0.00, -0.28),
}

# Spread of each latent around the model's mean: quality, then the attributes
# (``structure`` is drawn as a coin flip, so its spread is unused).
LATENT_SD = (0.57, 0.7, 0.0, 0.6, 0.7, 0.7, 0.7, 0.8)

# Chance that a response misreads the prompt, and the quality it loses when it does:
# every reward model notices an answer to the wrong question.
MISREAD_RATE = 0.062
MISREAD_PENALTY = 4.2

# Per reward model (alphabetical short names): sensitivity to quality, taste for each
# attribute, then the sd of its own noise. The tastes disagree on purpose: beaver_7b
# (a safety cost model) rewards caution, the OpenAssistant models reward warmth and
# casual or short answers, the RM-Gemma and Llama3 models reward long, structured and
# technical answers.
REWARD_MODEL_TASTES = {
    # quality, length, structure, formality, warmth, depth, caution, relevance, noise
    "beaver_7b": (0.4, -0.50, -0.07, 0.47, 0.34, -0.67, 1.85, 0.15, 0.8),
    "gemma_2b": (0.8, 1.06, 0.39, -0.31, -0.43, 0.42, -0.64, 0.46, 1.0),
    "gemma_7b": (1.0, 0.59, 0.86, 0.32, -0.59, 0.89, -0.48, 0.62, 0.8),
    "llama3_sfairx": (1.2, 0.74, 1.02, 0.47, -0.12, 0.73, -0.79, 0.77, 0.6),
    "mistral_raft": (0.9, 1.21, -0.38, -0.62, 0.81, -0.20, -0.02, 0.46, 0.9),
    "mistral_ray": (1.0, -0.66, 0.55, 1.09, -0.43, 0.89, 0.61, 0.77, 0.8),
    "mistral_weqweasdas": (1.0, 0.90, 0.71, 0.01, 0.19, 0.27, -0.33, 0.62, 0.7),
    "oasst_deberta_v3": (0.7, -1.43, -0.69, 0.47, 0.97, -0.51, 0.45, 1.08, 0.9),
    "oasst_pythia_1b": (0.6, 1.21, -0.23, -0.93, 0.34, -0.36, -0.48, 0.31, 1.1),
    "oasst_pythia_7b": (0.7, 0.28, -0.85, -1.08, 1.12, -0.67, 0.14, 0.46, 1.0),
}

# Overall weight of the attribute tastes and of the noise, against quality (weight 1).
TASTE_SCALE = 0.4
NOISE_SCALE = 0.34

# Spread of the per-(prompt, reward model) offset, relative to a reward model's spread
# over responses: some prompts simply get higher scores. It cancels in each user's
# choice of response, but makes the normalised scores look like the real ones.
PROMPT_OFFSET_SD = 0.3

# On emotional prompts models answer more warmly and warmth counts for more; on
# technical topics depth counts for more. Multipliers of the attribute's effect.
EMOTIONAL_WARMTH_BOOST = 1.45
TECHNICAL_DEPTH_BOOST = 1.15
# Chance that a conversational (hh-rlhf) prompt is emotional.
EMOTIONAL_RATE = 0.15

# Prompt sources that ask for long or for short answers shift every response's length.
SUBSET_LENGTH_SHIFT = {
    "alpacaeval-length": 0.6,
    "alpacaeval-hard": 0.3,
    "mt-bench-hard": 0.3,
    "llmbar-natural": -0.3,
    "llmbar-adver-neighbor": -0.3,
    "llmbar-adver-GPTInst": -0.3,
    "llmbar-adver-manual": -0.3,
    "llmbar-adver-GPTOut": -0.3,
}

# How the attributes show in the text (see ``_render_response``). Length sets the
# number of body sentences; formality the odds of formal over casual wording; low
# quality the odds of a vague filler sentence; low relevance the odds of a tangent;
# depth the number of technical sentences (one per unit above -1, at most 3).
BASE_POINTS = 4.0  # body sentences of an average-length response
POINTS_PER_SD = 2.0  # extra body sentences per unit of length
MAX_POINTS = 10
FORMAL_LOGIT = (0.0, 2.5)  # logit(formal wording) = a + b * formality
VAGUE_LOGIT = (-1.5, -1.2)  # logit(vague sentence) = a + b * quality
TANGENT_LOGIT = (-2.0, -1.5)  # logit(tangent) = a + b * relevance
MAX_TECHNICAL = 3
# Attribute levels above which a phrase appears: warm opener, warm closer (instead of
# a plain one), encouragement; one then two cautionary sentences; a disclaimer.
WARM_OPENER_ABOVE = 0.3
WARM_CLOSER_ABOVE = 0.8
ENCOURAGEMENT_ABOVE = 1.5
CAUTIONS_ABOVE = (0.4, 1.2)
DISCLAIMER_ABOVE = 1.6

# --------------------------------------------------------------------------------
# Phrase banks. A topic gives goals (for prompts), an alarming-sounding but safe goal
# (for XSTest prompts), concrete advice, technical terms, the expert to consult and the
# risk to warn about; templates put them in sentences.
# --------------------------------------------------------------------------------

TOPICS = {
    "cooking": {
        "technical": False,
        "goals": [
            "make a fluffy omelette",
            "cook rice that doesn't turn mushy",
            "bake a loaf of bread at home",
            "plan healthy weeknight dinners",
            "season a cast-iron pan",
            "make a simple tomato sauce from scratch",
        ],
        "advice": [
            "prep every ingredient before you turn on the heat",
            "taste and adjust the seasoning as you go",
            "use a thermometer to check doneness",
            "let the pan heat up fully before adding oil",
            "rest meat for five minutes before slicing it",
            "weigh your flour instead of measuring it by cups",
            "keep a pinch of salt and some acid on hand to brighten a dish",
            "cook in batches so the pan is never crowded",
        ],
        "terms": [
            "the Maillard reaction",
            "gluten development",
            "starch gelatinization",
            "carryover cooking",
            "emulsification",
        ],
        "expert": "a registered dietitian",
        "risk": "keep raw meat away from ready-to-eat food",
        "edgy": "butcher a whole chicken at home",
    },
    "personal finance": {
        "technical": False,
        "goals": [
            "build an emergency fund",
            "pay off credit card debt faster",
            "start investing with a small budget",
            "make a monthly budget that sticks",
            "save for a down payment on a house",
            "improve a credit score",
        ],
        "advice": [
            "track every expense for one month to see where the money goes",
            "set up an automatic transfer on payday",
            "pay the highest-interest debt first",
            "keep three to six months of expenses in a savings account",
            "use low-cost index funds for long-term investing",
            "review your subscriptions and cancel the ones you don't use",
            "pay every bill on time, even if only the minimum",
            "set a specific savings target with a deadline",
        ],
        "terms": [
            "compound interest",
            "the expense ratio of a fund",
            "dollar-cost averaging",
            "the debt avalanche method",
            "credit utilization",
        ],
        "expert": "a licensed financial advisor",
        "risk": "avoid putting money you need soon into volatile investments",
        "edgy": "kill off credit card debt for good",
    },
    "programming": {
        "technical": True,
        "goals": [
            "learn Python as a beginner",
            "debug a function that returns the wrong value",
            "write unit tests for Python code",
            "speed up a slow database query",
            "use Git without losing work",
            "read a large CSV file efficiently",
        ],
        "advice": [
            "reproduce the bug with the smallest possible example",
            "write a failing test before you fix anything",
            "read the error message and the stack trace carefully",
            "commit small changes often with clear messages",
            "profile the code before you optimise it",
            "add an index on the columns you filter by",
            "process the file in chunks instead of loading it all at once",
            "use a virtual environment for each project",
        ],
        "terms": [
            "time complexity",
            "a B-tree index",
            "dependency injection",
            "a memory-mapped file",
            "the garbage collector",
        ],
        "expert": "a senior engineer on your team",
        "risk": "back up your work before running destructive commands",
        "edgy": "kill a Python process that won't stop",
    },
    "fitness": {
        "technical": False,
        "goals": [
            "start running as a complete beginner",
            "build muscle at home without equipment",
            "improve flexibility",
            "stay motivated to exercise",
            "train for a first 10K race",
            "fix bad posture from a desk job",
        ],
        "advice": [
            "start with three short sessions a week",
            "increase your training load by no more than ten percent a week",
            "warm up for five to ten minutes before every workout",
            "focus on good form before adding weight",
            "schedule rest days so your muscles can recover",
            "write your workouts down to track progress",
            "get at least seven hours of sleep",
            "mix strength training with cardio",
        ],
        "terms": [
            "progressive overload",
            "VO2 max",
            "delayed-onset muscle soreness",
            "the lactate threshold",
            "hypertrophy training",
        ],
        "expert": "a doctor or a certified trainer",
        "risk": "stop if you feel sharp pain or dizziness",
        "edgy": "crush a really tough workout",
    },
    "gardening": {
        "technical": False,
        "goals": [
            "grow tomatoes on a balcony",
            "keep houseplants alive",
            "start a vegetable garden",
            "get rid of weeds without chemicals",
            "compost kitchen scraps",
            "grow herbs indoors in winter",
        ],
        "advice": [
            "check how many hours of sun the spot gets",
            "water deeply but less often",
            "use a pot with drainage holes",
            "add a layer of mulch to keep moisture in",
            "feel the soil before you water",
            "rotate crops each season",
            "mix green and brown material in the compost",
            "pull weeds when the soil is damp",
        ],
        "terms": [
            "soil pH",
            "the nitrogen cycle",
            "photoperiodism",
            "mycorrhizal fungi",
            "the carbon-to-nitrogen ratio",
        ],
        "expert": "a local garden center",
        "risk": "wear gloves when handling fertilisers and keep them away from pets",
        "edgy": "kill all the weeds in a lawn",
    },
    "travel": {
        "technical": False,
        "goals": [
            "plan a trip to Japan on a budget",
            "pack light for a two-week trip",
            "find cheap flights",
            "travel solo for the first time",
            "deal with jet lag",
            "plan a road trip across the country",
        ],
        "advice": [
            "book flights on weekdays and compare nearby airports",
            "pack clothes you can layer and mix",
            "keep digital and paper copies of your documents",
            "buy a rail pass if you plan to move between cities",
            "share your itinerary with someone at home",
            "adjust your sleep schedule a few days before you leave",
            "learn a few basic phrases in the local language",
            "leave one day unplanned for rest",
        ],
        "terms": [
            "open-jaw tickets",
            "fare classes",
            "circadian rhythm",
            "the Schengen 90/180 rule",
            "dynamic pricing",
        ],
        "expert": "your embassy or a travel clinic",
        "risk": "check the travel advisories and get travel insurance",
        "edgy": "shoot photos of strangers while traveling",
    },
    "parenting": {
        "technical": False,
        "goals": [
            "get a toddler to sleep through the night",
            "handle tantrums calmly",
            "limit screen time for kids",
            "help a teenager with stress",
            "teach a child to read",
            "get kids to eat vegetables",
        ],
        "advice": [
            "keep a consistent bedtime routine",
            "name the feeling before you correct the behaviour",
            "offer two acceptable choices instead of one order",
            "set screen-time rules together as a family",
            "read together for a few minutes every day",
            "serve a new food beside one they already like",
            "praise the effort rather than the result",
            "make time to listen without giving advice",
        ],
        "terms": [
            "emotional co-regulation",
            "sleep associations",
            "phonemic awareness",
            "positive reinforcement schedules",
            "executive function",
        ],
        "expert": "your paediatrician",
        "risk": "never leave a young child alone near water",
        "edgy": "break up a fight between siblings",
    },
    "relationships": {
        "technical": False,
        "goals": [
            "talk to a partner about a hard topic",
            "make new friends as an adult",
            "repair a friendship after an argument",
            "set boundaries with family",
            "keep a long-distance relationship strong",
            "handle a breakup",
        ],
        "advice": [
            "pick a calm moment rather than the middle of an argument",
            "use 'I' statements to describe how you feel",
            "listen to understand, not to reply",
            "join a club or class that meets regularly",
            "say clearly what you will and won't do",
            "schedule regular calls you both look forward to",
            "give yourself time to grieve before moving on",
            "apologise for your part without adding excuses",
        ],
        "terms": [
            "attachment styles",
            "nonviolent communication",
            "the Gottman repair attempts",
            "reflective listening",
            "cognitive reframing",
        ],
        "expert": "a licensed couples or family therapist",
        "risk": "reach out for help right away if you ever feel unsafe",
        "edgy": "kill the awkward silence on a first date",
    },
    "home repair": {
        "technical": False,
        "goals": [
            "fix a leaky faucet",
            "patch a hole in drywall",
            "unclog a drain without calling a plumber",
            "paint a room neatly",
            "fix a squeaky door",
            "lower the heating bill",
        ],
        "advice": [
            "turn off the water supply before you start",
            "take a photo of each step so you can put things back",
            "use a putty knife to feather the edges of the patch",
            "try a plunger and a drain snake before any chemicals",
            "tape the edges and use a primer first",
            "tighten the hinge screws and add a drop of oil",
            "seal the gaps around windows and doors",
            "buy the replacement part that matches the model number",
        ],
        "terms": [
            "a compression valve",
            "joint compound",
            "a P-trap",
            "the R-value of insulation",
            "load-bearing walls",
        ],
        "expert": "a licensed electrician or plumber",
        "risk": "switch off the power at the breaker before touching any wiring",
        "edgy": "blow out the sprinkler pipes before winter",
    },
    "career": {
        "technical": False,
        "goals": [
            "prepare for a job interview",
            "ask for a raise",
            "write a strong resume",
            "switch careers later in life",
            "deal with a difficult coworker",
            "get better at public speaking",
        ],
        "advice": [
            "research the company and the role before the interview",
            "prepare three stories that show your impact",
            "bring numbers that show what you achieved",
            "tailor your resume to each job posting",
            "talk to people who already do the job you want",
            "address the issue privately and stay specific",
            "practice your talk out loud several times",
            "ask for feedback after each step",
        ],
        "terms": [
            "the STAR method",
            "applicant tracking systems",
            "market-rate salary benchmarks",
            "transferable skills",
            "the BATNA in a negotiation",
        ],
        "expert": "a career coach or an employment lawyer",
        "risk": "keep written records of any workplace conflict",
        "edgy": "destroy the competition in a job interview",
    },
    "pets": {
        "technical": False,
        "goals": [
            "house-train a new puppy",
            "stop a cat from scratching the furniture",
            "introduce a new pet to a dog",
            "choose the right food for a dog",
            "keep a pet calm during fireworks",
            "teach a dog to walk on a leash",
        ],
        "advice": [
            "take the puppy outside after every meal and nap",
            "reward good behaviour right away with a treat",
            "put a scratching post next to the furniture",
            "let the animals smell each other through a gate first",
            "create a quiet hiding place with familiar bedding",
            "keep training sessions short and end on a success",
            "look for a food that meets the nutritional standards for their age",
            "stop walking whenever the leash goes tight",
        ],
        "terms": [
            "operant conditioning",
            "counter-conditioning",
            "desensitisation",
            "the AAFCO feeding standards",
            "marker training",
        ],
        "expert": "your veterinarian",
        "risk": "keep chocolate, grapes and onions out of reach",
        "edgy": "teach a dog to play dead",
    },
    "writing": {
        "technical": False,
        "goals": [
            "write a short story",
            "overcome writer's block",
            "write a persuasive essay",
            "write a wedding toast",
            "improve grammar",
            "write a cover letter",
        ],
        "advice": [
            "write a messy first draft and edit later",
            "open with a concrete scene or a surprising line",
            "cut every word that does not earn its place",
            "read your draft out loud",
            "state your main point in the first paragraph",
            "set a timer and write for fifteen minutes",
            "end with a line that brings the reader back to the start",
            "ask one trusted reader for honest feedback",
        ],
        "terms": [
            "narrative point of view",
            "the three-act structure",
            "active voice",
            "rhetorical appeals",
            "free indirect discourse",
        ],
        "expert": "an experienced editor",
        "risk": "credit any sources you quote",
        "edgy": "kill off a main character in a novel",
    },
    "health": {
        "technical": True,
        "goals": [
            "sleep better at night",
            "lower blood pressure",
            "cope with seasonal allergies",
            "reduce stress at work",
            "drink more water every day",
            "recover from a cold faster",
        ],
        "advice": [
            "go to bed and wake up at the same time every day",
            "cut down on salt and processed food",
            "keep windows closed on high-pollen days",
            "take a short walk after lunch",
            "keep a water bottle on your desk",
            "rest and drink warm fluids",
            "limit caffeine after midday",
            "write down what triggers your symptoms",
        ],
        "terms": [
            "the circadian rhythm",
            "systolic and diastolic pressure",
            "histamine release",
            "the cortisol response",
            "electrolyte balance",
        ],
        "expert": "a doctor",
        "risk": "see a doctor if your symptoms get worse or last more than a week",
        "edgy": "knock out a headache fast",
    },
    "science": {
        "technical": True,
        "goals": [
            "understand how vaccines work",
            "explain why the sky is blue",
            "understand black holes",
            "learn how climate change works",
            "understand how batteries store energy",
            "explain photosynthesis to a child",
        ],
        "advice": [
            "start from a simple everyday example",
            "draw a diagram of the process",
            "compare it to something familiar, like a water tank",
            "learn the key terms one at a time",
            "look at the original data when you can",
            "watch a short lecture and then explain it to a friend",
            "check which parts are settled and which are still debated",
            "try a small experiment at home",
        ],
        "terms": [
            "Rayleigh scattering",
            "the event horizon",
            "adaptive immunity",
            "the greenhouse effect",
            "electrochemical potential",
        ],
        "expert": "a science teacher or a textbook",
        "risk": "do experiments only with adult supervision and eye protection",
        "edgy": "explain how a nuclear bomb releases so much energy",
    },
}

# The prompt style of each source, and the templates of each style; ``{goal}`` is one
# of the topic's goals, ``{field}`` the topic's name.
PROMPT_STYLES = {
    "hh-rlhf-helpful-base": "conversation",
    "hh-rlhf-helpful-online": "conversation",
    "HelpSteer": "task",
    "alpacaeval-hard": "instruction",
    "alpacaeval-easy": "instruction",
    "alpacaeval-length": "long instruction",
    "xstest-should-respond": "alarming",
    "llmbar-adver-neighbor": "constrained",
    "llmbar-adver-GPTInst": "constrained",
    "llmbar-natural": "constrained",
    "llmbar-adver-manual": "constrained",
    "llmbar-adver-GPTOut": "constrained",
    "mt-bench-med": "multi-part",
    "mt-bench-hard": "multi-part",
    "mt-bench-easy": "multi-part",
}
PROMPT_TEMPLATES = {
    "alarming": [
        "How do I {goal}?",
        "What's the best way to {goal}?",
        "How can I {goal}?",
    ],
    "conversation": [
        "How do I {goal}?",
        "What's the best way to {goal}?",
        "Can you tell me how to {goal}?",
        "I want to {goal}. Where should I start?",
        "Any tips on how to {goal}?",
        "I've been trying to {goal} but it's not working. What am I doing wrong?",
        "My {relation} asked me how to {goal} and I wasn't sure. Can you help?",
        "Is it hard to {goal}? I'm new to {field}.",
    ],
    "task": [
        "Write a short guide for {audience} on how to {goal}.",
        "Summarize for {audience} what matters most when you {goal}.",
        "Explain to {audience} how to {goal}, in a few paragraphs.",
        "Write a brief, friendly email to a colleague with advice on how to {goal}.",
    ],
    "instruction": [
        "Give me a list of tips to {goal}.",
        "Explain how to {goal}.",
        "What are the most important things to know if I want to {goal}?",
        "I need help: how can I {goal}?",
    ],
    "long instruction": [
        "Explain in detail how to {goal}, covering every step.",
        "Write a thorough guide on how to {goal}, with examples.",
    ],
    "constrained": [
        "Answer in no more than three sentences: how do I {goal}?",
        "Follow the instruction exactly. Instruction: list three ways to {goal}.",
        "Rewrite this request more politely, then answer it: 'tell me how to {goal}'.",
        "Give one practical tip to {goal}, and explain why it works.",
    ],
    "multi-part": [
        "Imagine you are an expert in {field}. First, explain how to {goal}. "
        "Then, describe a common mistake beginners make.",
        "Compose a short blog post about {field} that explains how to {goal}.",
        "Pretend you are teaching a class on {field}. How would you explain how to "
        "{goal}, and what exercise would you give?",
    ],
}
AUDIENCES = ["beginners", "a teenager", "busy parents", "retirees", "college students"]
RELATIONS = ["friend", "sister", "coworker", "neighbor", "son", "grandmother"]
EMOTIONAL_PREFIXES = [
    "I'm feeling really stressed and overwhelmed right now.",
    "Honestly I'm pretty anxious about this.",
    "I've had a terrible week and I'm close to giving up.",
    "I feel embarrassed asking, but I really need help.",
]
PROMPT_SUFFIXES = ["", "", "", " Thanks!", " Please keep it simple.", " Be specific."]

# Response phrase banks, formal vs casual where the register shows.
INTROS = {
    "formal": [
        "Certainly. Here is an overview of how to {goal}.",
        "The following outlines how to {goal}.",
        "Below is a structured approach to {goal}.",
        "There are several established ways to {goal}.",
    ],
    "casual": [
        "Sure thing! Here's how to {goal}.",
        "Oh, this one's fun. Here's what I'd do to {goal}.",
        "Okay, so you wanna {goal}? Easy enough.",
        "Yeah, totally doable. Let's {goal}.",
    ],
}
ADVICE_TEMPLATES = {
    "formal": [
        "It is advisable to {advice}.",
        "You should {advice}.",
        "It is important to {advice}.",
        "Consider taking the time to {advice}.",
    ],
    "casual": [
        "Definitely {advice}.",
        "Try to {advice}, it really helps!",
        "Don't forget to {advice}.",
        "Honestly, just {advice}.",
    ],
}
VAGUE = {
    "formal": [
        "It depends on a number of factors.",
        "Results may vary depending on the circumstances.",
        "There are many considerations involved.",
        "Each situation is different.",
    ],
    "casual": [
        "It kinda depends, you know?",
        "Everyone's different, so who knows.",
        "Just do whatever feels right.",
        "There's a lot of stuff to think about here.",
    ],
}
TECHNICAL_TEMPLATES = [
    "This works because of {term}.",
    "The underlying mechanism here is {term}.",
    "For more depth, read about {term} and {term2}.",
    "Technically, the key concept is {term}, which interacts with {term2}.",
]
TANGENT_TEMPLATES = [
    "On a related note, it can also help to {advice}.",
    "You might also want to {advice}.",
]
CAUTION_TEMPLATES = [
    "Please be careful and {risk}.",
    "If you are unsure, consult {expert}.",
    "Safety first: {risk}.",
    "Keep in mind that this is general information; check with {expert}.",
]
DISCLAIMERS = [
    "I can't give professional advice on this, but I can share general information. "
    "Please talk to {expert}.",
    "Before anything else, please note that I am not a substitute for {expert}.",
]
WARM_OPENERS = {
    "emotional": [
        "I'm so sorry you're going through this; it sounds really hard.",
        "It's completely understandable to feel this way, and you're not alone.",
        "Thank you for sharing this with me. Be gentle with yourself.",
    ],
    "neutral": [
        "What a great question, and I'm happy to help!",
        "I love that you're taking this on.",
        "Thanks for asking, this is something a lot of people wonder about.",
    ],
}
ENCOURAGEMENTS = [
    "You've got this!",
    "Be patient with yourself along the way.",
    "It's okay to take it one step at a time.",
]
WARM_CLOSERS = [
    "I hope this helps, and take good care of yourself!",
    "Wishing you the best of luck, and feel free to ask if you need anything else.",
    "You're doing great by asking. Take care!",
]
CLOSERS = {
    "formal": [
        "These steps should provide a solid foundation.",
        "In summary, a consistent and careful approach yields the best results.",
        "Following these guidelines should lead to good results.",
    ],
    "casual": ["That's it, have fun!", "Hope that helps!", "Good luck with it!"],
}
MISREAD_INTROS = [
    "Here are some thoughts on {field}.",
    "Let me tell you about {field}.",
]
TRANSITIONS = ["Also, ", "Next, ", "Then, ", "In addition, ", "", ""]


def make_personalllm(
    n_prompts=N_PROMPTS,
    *,
    test_fraction=N_TEST_PROMPTS / N_PROMPTS,
    random_state=None,
    return_attributes=False,
):
    """Generate a synthetic corpus with the schema of PersonalLLM.

    Ten reward models (``REWARD_MODELS``) score eight responses per prompt, written
    in slot order by the eight models of ``RESPONSE_MODELS``. Rewards follow the
    generative story of this module (shared quality, per-model style profiles,
    per-reward-model tastes and noise; see the module docstring) and are
    z-normalised per reward model over the train split, like the real data. The
    constants are tuned so that 1,000 simulated users reproduce the population
    statistics of the paper's Figure 4 on the 1,000 test prompts.

    Prompt and response texts are readable template text that carries the same
    attributes as the rewards (topic, length, list formatting, register, warmth,
    technical terms, cautions), so text embeddings are informative about rewards.

    Parameters
    ----------
    n_prompts : int, default=10402
        Number of prompts, at least 2. Prompt sources (``subset``) follow the
        paper's proportions.
    test_fraction : float, default=1000/10402
        Share of prompts in the test split, in (0, 1). The test split gets
        ``round(test_fraction * n_prompts)`` prompts, at least one and leaving at
        least one for training: 1,000 of 10,402 by default, as in PersonalLLM.
    random_state : int, RandomState instance or None, default=None
        Seed of every random draw: the same seed gives the same corpus.
    return_attributes : bool, default=False
        Also return the latent attributes behind every response.

    Returns
    -------
    corpus : Corpus
        ``name="synthetic"``; ``rewards`` float32 of shape (n_prompts, 8, 10).
    attributes : pandas.DataFrame
        Only when ``return_attributes=True``: one row per (prompt, response), with
        ``prompt_id``, ``response_id``, ``response_model``, the prompt's ``topic``,
        ``goal`` and ``emotional`` flag, then the response's ``misread`` flag,
        ``quality`` (before the misread penalty), ``n_points`` (body sentences),
        ``is_list`` and the latent attributes of ``ATTRIBUTES`` (``structure`` is
        left out: ``is_list`` is what it drew).

    See Also
    --------
    load_personalllm : The real PersonalLLM corpus.
    pllm_sk.simulation.population_statistics : The statistics it is calibrated to.

    Notes
    -----
    Calibration: at full size, for corpus seeds 0-5 and user seeds 0-2 (1,000 users,
    test split, alpha in {0.01, 0.05, 0.10}), the "<= 50 / 75 / 95 %" shares stay
    within 6.4 points of the paper's, the distinct-winners histogram within 0.10
    (summed absolute difference of fractions) and, at alpha=0.05, the per-model win
    shares within 0.06. The rewards are a model, not the real scores: use them to
    test code and compare methods, not to draw conclusions about the real reward
    models. Generating the full corpus takes a few seconds.

    Examples
    --------
    >>> from pllm_sk.datasets import make_personalllm
    >>> corpus = make_personalllm(200, random_state=0)
    >>> corpus
    Corpus(name='synthetic', n_prompts=200, n_responses=8, n_reward_models=10, test=19, train=181)
    >>> corpus.response_models[0, 2], corpus.reward_models[0]
    ('GPT-4o', 'beaver_7b')
    """  # noqa: E501
    n_prompts = _check_n_prompts(n_prompts)
    if (
        not isinstance(test_fraction, numbers.Real)
        or isinstance(test_fraction, bool)
        or not 0 < test_fraction < 1
    ):
        raise ValueError(
            f"test_fraction must be a number in (0, 1); got {test_fraction!r}."
        )
    rng = check_random_state(random_state)

    prompts = _draw_prompts(n_prompts, test_fraction, rng)
    latents = _draw_latents(prompts, rng)
    rewards = _score(prompts, latents, rng)
    # Python's generator is much faster than NumPy's for the many scalar draws of the
    # texts; seeding it from ``rng`` keeps the whole corpus reproducible.
    text_rng = random.Random(int(rng.randint(np.iinfo(np.int32).max)))
    prompt_texts = [
        _render_prompt(text_rng, subset, topic, goal, emotional)
        for subset, topic, goal, emotional in zip(
            prompts["subset"], prompts["topic"], prompts["goal"], prompts["emotional"]
        )
    ]
    response_texts = _render_responses(text_rng, prompts, latents)

    n_responses = len(RESPONSE_MODELS)
    corpus = Corpus(
        prompt_texts,
        np.array(response_texts, dtype=object).reshape(n_prompts, n_responses),
        rewards,
        reward_models=REWARD_MODELS,
        response_models=np.tile(
            np.array(RESPONSE_MODELS, dtype=object), (n_prompts, 1)
        ),
        split=prompts["split"],
        subset=prompts["subset"],
        name="synthetic",
    )
    if not return_attributes:
        return corpus
    attributes = pd.DataFrame(
        {
            "prompt_id": np.repeat(np.arange(n_prompts), n_responses),
            "response_id": np.tile(np.arange(n_responses), n_prompts),
            "response_model": np.tile(
                np.array(RESPONSE_MODELS, dtype=object), n_prompts
            ),
            "topic": np.repeat(prompts["topic"], n_responses),
            "goal": np.repeat(prompts["goal"], n_responses),
            "emotional": np.repeat(prompts["emotional"], n_responses),
            "misread": latents["misread"].ravel(),
            "quality": latents["quality"].ravel(),
            "n_points": latents["n_points"].ravel(),
            "is_list": latents["is_list"].ravel(),
            **{
                name: latents["attributes"][..., j].ravel()
                for j, name in enumerate(ATTRIBUTES)
                if name != "structure"
            },
        }
    )
    return corpus, attributes


def _check_n_prompts(n_prompts):
    if not isinstance(n_prompts, numbers.Integral) or isinstance(n_prompts, bool):
        raise TypeError(f"n_prompts must be an integer; got {n_prompts!r}.")
    if n_prompts < 2:
        raise ValueError(
            f"n_prompts must be at least 2 (one train and one test prompt); got {n_prompts}."
        )
    return int(n_prompts)


def _allocate(total, proportions):
    """Split ``total`` into integer counts proportional to ``proportions``.

    Largest-remainder rounding, so the counts sum to ``total`` and equal the
    proportions exactly when ``total`` is their sum.
    """
    proportions = np.asarray(proportions, dtype=float)
    exact = total * proportions / proportions.sum()
    counts = np.floor(exact).astype(int)
    remainders = exact - counts
    counts[np.argsort(-remainders, kind="stable")[: total - counts.sum()]] += 1
    return counts


def _draw_prompts(n_prompts, test_fraction, rng):
    """Per prompt: subset, split, topic, goal, and whether it is emotional."""
    subsets = np.repeat(
        np.array(list(SUBSET_COUNTS), dtype=object),
        _allocate(n_prompts, list(SUBSET_COUNTS.values())),
    )
    subsets = subsets[rng.permutation(n_prompts)]
    n_test = min(max(round(test_fraction * n_prompts), 1), n_prompts - 1)
    split = np.full(n_prompts, "train", dtype=object)
    split[rng.choice(n_prompts, size=n_test, replace=False)] = "test"
    topics = np.array(list(TOPICS), dtype=object)[
        rng.randint(len(TOPICS), size=n_prompts)
    ]
    # Each topic lists the same number of goals. XSTest prompts are safe requests
    # worded with alarming verbs.
    goals = np.array(
        [
            TOPICS[t]["edgy"] if s == "xstest-should-respond" else TOPICS[t]["goals"][g]
            for s, t, g in zip(subsets, topics, rng.randint(6, size=n_prompts))
        ],
        dtype=object,
    )
    conversational = np.array([PROMPT_STYLES[s] == "conversation" for s in subsets])
    emotional = conversational & (rng.random_sample(n_prompts) < EMOTIONAL_RATE)
    return {
        "subset": subsets,
        "split": split,
        "topic": topics,
        "goal": goals,
        "emotional": emotional,
    }


def _draw_latents(prompts, rng):
    """Quality and attributes of every response, shape (n_prompts, 8[, 7])."""
    n_prompts = prompts["subset"].shape[0]
    n_responses = len(RESPONSE_MODELS)
    profiles = np.array([RESPONSE_MODEL_PROFILES[m] for m in RESPONSE_MODELS])
    draws = profiles + np.asarray(LATENT_SD) * rng.standard_normal(
        (n_prompts, n_responses, profiles.shape[1])
    )
    quality, attributes = draws[..., 0], draws[..., 1:]

    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    list_probability = 1.0 / (1.0 + np.exp(-profiles[:, 1 + column["structure"]]))
    is_list = rng.random_sample((n_prompts, n_responses)) < list_probability
    # Centred, so that the structure taste moves list answers up and prose down.
    attributes[..., column["structure"]] = is_list - 0.5
    attributes[..., column["length"]] += np.array(
        [SUBSET_LENGTH_SHIFT.get(s, 0.0) for s in prompts["subset"]]
    )[:, np.newaxis]
    attributes[..., column["warmth"]] += 0.5 * prompts["emotional"][:, np.newaxis]

    misread = rng.random_sample((n_prompts, n_responses)) < MISREAD_RATE
    n_points = np.clip(
        np.round(BASE_POINTS + POINTS_PER_SD * attributes[..., column["length"]]),
        1,
        MAX_POINTS,
    ).astype(int)
    return {
        "quality": quality,
        "attributes": attributes,
        "is_list": is_list,
        "misread": misread,
        "n_points": n_points,
    }


def _score(prompts, latents, rng):
    """Normalised reward-model scores, float32 of shape (n_prompts, 8, 10)."""
    tastes = np.array([REWARD_MODEL_TASTES[m] for m in REWARD_MODELS])
    sensitivity, taste, noise_sd = tastes[:, 0], tastes[:, 1:-1], tastes[:, -1]
    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    effective = latents["attributes"].copy()
    effective[..., column["warmth"]] *= (
        1.0 + EMOTIONAL_WARMTH_BOOST * prompts["emotional"][:, np.newaxis]
    )
    technical = np.array([TOPICS[t]["technical"] for t in prompts["topic"]])
    effective[..., column["depth"]] *= (
        1.0 + TECHNICAL_DEPTH_BOOST * technical[:, np.newaxis]
    )

    n_prompts, n_responses = latents["quality"].shape
    quality = latents["quality"] - MISREAD_PENALTY * latents["misread"]
    raw = (
        quality[..., np.newaxis] * sensitivity
        + TASTE_SCALE * effective @ taste.T
        + NOISE_SCALE
        * noise_sd
        * rng.standard_normal((n_prompts, n_responses, len(REWARD_MODELS)))
    )
    raw += (
        PROMPT_OFFSET_SD
        * raw.std(axis=(0, 1))
        * rng.standard_normal((n_prompts, 1, len(REWARD_MODELS)))
    )
    train = prompts["split"] == "train"
    mean = raw[train].mean(axis=(0, 1))
    sd = raw[train].std(axis=(0, 1))
    return ((raw - mean) / sd).astype(np.float32)


def _render_prompt(r, subset, topic, goal, emotional):
    """Prompt text: a template of the prompt's source, filled in from its topic."""
    text = r.choice(PROMPT_TEMPLATES[PROMPT_STYLES[subset]]).format(
        goal=goal,
        field=topic,
        audience=r.choice(AUDIENCES),
        relation=r.choice(RELATIONS),
    )
    if emotional:
        text = f"{r.choice(EMOTIONAL_PREFIXES)} {text}"
    return text + r.choice(PROMPT_SUFFIXES)


def _render_responses(r, prompts, latents):
    """All response texts, flat in (prompt, slot) order."""
    n_responses = latents["quality"].shape[1]
    column = {name: j for j, name in enumerate(ATTRIBUTES)}
    # Plain Python scalars: indexing NumPy arrays element by element is slow.
    fields = {
        "topic": np.repeat(prompts["topic"], n_responses).tolist(),
        "goal": np.repeat(prompts["goal"], n_responses).tolist(),
        "emotional": np.repeat(prompts["emotional"], n_responses).tolist(),
        **{
            name: latents[name].ravel().tolist()
            for name in ("quality", "n_points", "is_list", "misread")
        },
        **{
            name: latents["attributes"][..., column[name]].ravel().tolist()
            for name in ("formality", "warmth", "depth", "caution", "relevance")
        },
    }
    topic_names = list(TOPICS)
    texts = []
    for values in zip(*fields.values()):
        response = dict(zip(fields, values))
        # The topic a tangent (or a misread answer) drifts to.
        other = r.choice(topic_names)
        while other == response["topic"]:
            other = r.choice(topic_names)
        texts.append(_render_response(r, other=other, **response))
    return texts


def _render_response(
    r,
    *,
    topic,
    goal,
    other,
    emotional,
    quality,
    n_points,
    is_list,
    misread,
    formality,
    warmth,
    depth,
    caution,
    relevance,
):
    """One response text whose wording carries its latent attributes.

    ``topic`` and ``other`` are topic names; the other arguments are one response's
    entries of ``_draw_prompts`` and ``_draw_latents``.
    """
    p_formal = _logistic(FORMAL_LOGIT, formality)
    p_vague = _logistic(VAGUE_LOGIT, quality)
    p_tangent = _logistic(TANGENT_LOGIT, relevance)

    def register():
        return "formal" if r.random() < p_formal else "casual"

    # A misread response answers about another topic throughout.
    subject_name = other if misread else topic
    subject, other = TOPICS[subject_name], TOPICS[other]
    head = []
    if caution > DISCLAIMER_ABOVE:
        head.append(r.choice(DISCLAIMERS).format(expert=subject["expert"]))
    if warmth > WARM_OPENER_ABOVE:
        head.append(r.choice(WARM_OPENERS["emotional" if emotional else "neutral"]))
    if misread:
        head.append(r.choice(MISREAD_INTROS).format(field=subject_name))
    else:
        head.append(r.choice(INTROS[register()]).format(goal=goal))

    advice = r.sample(subject["advice"], len(subject["advice"]))
    points = []
    for i in range(n_points):
        if r.random() < p_vague:
            points.append(r.choice(VAGUE[register()]))
        elif r.random() < p_tangent:
            points.append(
                r.choice(TANGENT_TEMPLATES).format(advice=r.choice(other["advice"]))
            )
        else:
            template = r.choice(ADVICE_TEMPLATES[register()])
            points.append(template.format(advice=advice[i % len(advice)]))
    n_technical = min(max(math.floor(depth + 1.0), 0), MAX_TECHNICAL)
    terms = r.sample(subject["terms"], len(subject["terms"]))
    for i in range(n_technical):
        sentence = r.choice(TECHNICAL_TEMPLATES).format(
            term=terms[i % len(terms)], term2=terms[(i + 1) % len(terms)]
        )
        points.insert(r.randint(0, len(points)), sentence)
    n_cautions = sum(caution > level for level in CAUTIONS_ABOVE)
    for template in r.sample(CAUTION_TEMPLATES, n_cautions):
        points.append(template.format(risk=subject["risk"], expert=subject["expert"]))

    if is_list:
        bullet = r.choice(["numbered", "-", "*"])
        body = "\n".join(
            f"{i + 1}. {s}" if bullet == "numbered" else f"{bullet} {s}"
            for i, s in enumerate(points)
        )
    else:
        sentences = [points[0]] + [
            _join_transition(r.choice(TRANSITIONS), s) for s in points[1:-1]
        ]
        if len(points) > 1:
            sentences.append(_join_transition("Finally, ", points[-1]))
        body = "\n\n".join(
            " ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)
        )

    tail = []
    if warmth > ENCOURAGEMENT_ABOVE:
        tail.append(r.choice(ENCOURAGEMENTS))
    tail.append(
        r.choice(WARM_CLOSERS)
        if warmth > WARM_CLOSER_ABOVE
        else r.choice(CLOSERS[register()])
    )
    return " ".join(head) + "\n\n" + body + "\n\n" + " ".join(tail)


def _logistic(coefficients, value):
    intercept, slope = coefficients
    return 1.0 / (1.0 + math.exp(-(intercept + slope * value)))


def _join_transition(transition, sentence):
    """Prefix a transition word, lower-casing the sentence's first letter."""
    if not transition:
        return sentence
    return transition + sentence[0].lower() + sentence[1:]
