"""The one chat encoder: prompts (and the model's own earlier answers) -> token ids.

Self-distillation and every benchmark encode prompts here, so heads are trained on exactly the
prompt layout they are measured on:

    ids = encode_turn(tokenizer, prompt, 0)                  # first turn
    ids = encode_turn(tokenizer, prompt, 1, [answer0])       # turn 1 holds the model's turn-0 answer

A "chat" prompt goes through the tokenizer's chat template (its text tokenized without added
special tokens: the template writes them). A "raw" prompt, or any prompt when the tokenizer has
no template, is plain text tokenized with the tokenizer's own special tokens (BOS): one turn is
its text as is, several turns a "User: ... / Assistant: ..." transcript.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mtp.data imports this module: no import cycle at run time
    from mtp.data.prompts import Prompt


def render(tokenizer, messages: list[dict], fmt: str = "chat") -> tuple[str, bool]:
    """(text, add_special_tokens) of a conversation that ends with a user message, ready for the
    assistant's reply."""
    if fmt == "chat" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
    if len(messages) == 1:
        return messages[0]["content"], True
    parts = [("User: " if m["role"] == "user" else "Assistant: ") + m["content"] for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant: ", True


def encode_chat(tokenizer, messages: list[dict], fmt: str = "chat") -> list[int]:
    """Token ids of `messages` ([{"role", "content"}], ending with a user turn); see `render`."""
    text, special = render(tokenizer, messages, fmt)
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def messages_for_turn(prompt: Prompt, turn: int, answers: list[str] = (), first: str | None = None) -> list[dict]:
    """The conversation up to user turn `turn` (0-based): user turns with answers[i] after turn i.
    `first` replaces the first user turn's text (long-input padding)."""
    if not 0 <= turn < len(prompt.turns):
        raise ValueError(f"{prompt.id} has {len(prompt.turns)} turns, asked for turn {turn}")
    if len(answers) < turn:
        raise ValueError(f"turn {turn} of {prompt.id} needs the {turn} earlier answers, got {len(answers)}")
    msgs: list[dict] = []
    for i in range(turn + 1):
        msgs.append({"role": "user", "content": first if i == 0 and first is not None else prompt.turns[i]})
        if i < turn:
            msgs.append({"role": "assistant", "content": answers[i]})
    return msgs


def _context_prefix(tokenizer, need: int) -> str:
    """Reference documents of at least `need` tokens, to put before a prompt (long-input mixes)."""
    from mtp.eval_suites.passages import PASSAGES

    docs, n = [], 0
    i = 0
    while n < need:
        title, body = PASSAGES[i % len(PASSAGES)]
        docs.append(f"Reference document {i + 1} ({title}):\n{body}")
        n = len(tokenizer("\n\n".join(docs), add_special_tokens=False).input_ids)
        i += 1
    return "\n\n".join(docs) + "\n\n"


def encode_turn(tokenizer, prompt: Prompt, turn: int, answers: list[str] = ()) -> list[int]:
    """Token ids of the prompt for turn `turn` (0-based), holding answers[i] after turn i < turn.
    A prompt with `min_input_tokens` has its first turn preceded by reference documents up to
    that many tokens."""
    first = None
    if prompt.min_input_tokens:
        n0 = len(tokenizer(prompt.turns[0], add_special_tokens=False).input_ids)
        if n0 < prompt.min_input_tokens:
            first = _context_prefix(tokenizer, prompt.min_input_tokens - n0) + prompt.turns[0]
    return encode_chat(tokenizer, messages_for_turn(prompt, turn, answers, first), prompt.format)
