"""The in-context prompt: the PersonalLLM paper's template, filled and tokenized.

The paper's appendix gives the template: a header, one block per example
(``User:``, ``Liked Response:``, optionally ``Disliked Response:``), an instruction,
then the test prompt and ``Response:``. Unlike the paper's reference code, the
header is separated from the first example by a blank line.
"""

import re

__all__ = ["PLACEHOLDERS", "ContextBuilder", "check_template", "default_template"]

PLACEHOLDERS = ("{examples}", "{prompt}")
_PLACEHOLDER = re.compile(r"\{examples\}|\{prompt\}")

_HEADER = {
    "liked": "Below are some examples of past conversations with liked responses "
    "per prompt.",
    "liked_disliked": "Below are some examples of past conversations with liked and "
    "disliked responses per prompt.",
}
_INSTRUCTION = {
    "liked": "Use the contexts above to generate a good response for the user prompt "
    "below. Your response should be similar to the winning responses.",
    "liked_disliked": "Use the contexts above to generate a good response for the "
    "user prompt below. Your response should be similar to the winning responses "
    "and dissimilar from the losing responses.",
}


def default_template(responses_shown):
    """The paper's template for ``"liked"`` or ``"liked_disliked"`` examples."""
    return (
        f"{_HEADER[responses_shown]}\n\n{{examples}}\n\n"
        f"{_INSTRUCTION[responses_shown]}\n\nUser: {{prompt}}\nResponse:"
    )


def check_template(template):
    """A user template must contain both placeholders; returns it."""
    missing = [name for name in PLACEHOLDERS if name not in template]
    if missing:
        raise ValueError(
            f"template is missing the placeholder(s) {missing}: it must contain "
            f"{' and '.join(PLACEHOLDERS)}, where the examples and the test prompt go "
            f"(got {template!r})."
        )
    return template


def render_examples(examples, responses_shown):
    """The example blocks: ``examples`` is a list of (prompt, liked, disliked) texts."""
    blocks = []
    for prompt, liked, disliked in examples:
        block = f"User: {prompt}\nLiked Response: {liked}"
        if responses_shown == "liked_disliked":
            block += f"\nDisliked Response: {disliked}"
        blocks.append(block)
    return "\n\n".join(blocks)


def fill_template(template, examples_text, prompt):
    """One pass over the template, so that a text containing ``{prompt}`` stays as is."""
    values = {"{examples}": examples_text, "{prompt}": prompt}
    return _PLACEHOLDER.sub(lambda match: values[match.group()], template)


class ContextBuilder:
    """Token ids of contexts and candidates for one tokenizer and truncation setting.

    With a chat template, a context is one user turn (the filled template, or the
    bare prompt for the zero-example context) followed by the assistant's turn
    opening; a candidate response is scored as the assistant's text. Without one, the
    context is plain text (``"User: <prompt>\\nResponse:"`` for zero examples) and a
    candidate is scored as ``" " + response``.

    Texts shown in a context (example prompts and responses, the test prompt) are
    cut to ``max_example_tokens`` tokens, candidates to ``max_response_tokens``;
    tokenizations are memoized for the builder's lifetime (one predict call).
    """

    def __init__(self, tokenizer, *, max_example_tokens, max_response_tokens):
        self.tokenizer = tokenizer
        self.max_example_tokens = max_example_tokens
        self.max_response_tokens = max_response_tokens
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self._shown, self._candidates = {}, {}

    def _encode(self, text):
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def shown(self, text):
        """``text`` cut to ``max_example_tokens`` tokens."""
        if text not in self._shown:
            ids = self._encode(text)
            limit = self.max_example_tokens
            self._shown[text] = (
                text
                if limit is None or len(ids) <= limit
                else self.tokenizer.decode(ids[:limit])
            )
        return self._shown[text]

    def candidate(self, text):
        """Token ids of a candidate response, cut to ``max_response_tokens``."""
        if text not in self._candidates:
            ids = self._encode(text if self.chat else " " + text)
            limit = self.max_response_tokens
            self._candidates[text] = tuple(ids if limit is None else ids[:limit])
        return self._candidates[text]

    def context(self, prompt, examples=None, *, template=None, responses_shown="liked"):
        """Token ids of the context for ``prompt``; no ``examples``: zero-example."""
        prompt = self.shown(prompt)
        if examples:
            shown = [
                tuple(self.shown(text) for text in example) for example in examples
            ]
            message = fill_template(
                template, render_examples(shown, responses_shown), prompt
            )
        elif self.chat:
            message = prompt
        else:
            message = f"User: {prompt}\nResponse:"
        if not self.chat:
            return tuple(self.tokenizer(message)["input_ids"])
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}],
            add_generation_prompt=True,
            tokenize=False,
        )
        return tuple(self._encode(text))
