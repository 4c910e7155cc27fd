"""Prompt templates: how a problem becomes the text the policy continues.

- ``chat``: the problem as the user turn of the tokenizer's chat template (the embedded default).
- ``qwen_math``: Qwen2.5-Math's boxed chain-of-thought system prompt + the problem, chat template.
- ``dapo``: DAPO-Math-17k's "Answer:" instruction around the problem, chat template.
- ``plain``: no chat template; the problem followed by the boxed instruction (base models).

A problem that is already a chat (verl's ``prompt`` column: a list of ``{role, content}`` messages, its
system turn and instruction included) bypasses these templates: ``render_messages`` passes the list to
the chat template as given, as verl does, so a verl parquet trains on the prompts it was built with.
"""
from __future__ import annotations

from rlvr_cli.errors import UserError

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
TEMPLATES = ("chat", "qwen_math", "dapo", "plain")


def _chat(tokenizer, messages: list[dict[str, str]]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("this tokenizer has no chat template: use data.template=plain")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_messages(messages: list[dict[str, str]], tokenizer) -> str:
    """A chat-format problem (verl's ``prompt`` column) through the chat template as given."""
    return _chat(tokenizer, messages)


def render_prompt(problem: str, tokenizer, template: str = "chat") -> str:
    if template == "chat":
        return _chat(tokenizer, [{"role": "user", "content": problem}])
    if template == "qwen_math":
        return _chat(tokenizer, [{"role": "system", "content": QWEN_MATH_SYSTEM}, {"role": "user", "content": problem}])
    if template == "dapo":
        return _chat(tokenizer, [{"role": "user", "content": DAPO_PREFIX + problem + DAPO_SUFFIX}])
    if template == "plain":
        return f"{problem}\n{QWEN_MATH_SYSTEM}\n"
    raise UserError(f"unknown prompt template {template!r}; valid: {', '.join(TEMPLATES)}")
