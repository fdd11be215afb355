"""Summary: a template's prompt, a schema-constrained call, validation, one repair.

Knows no Celery. The schema is rendered into the prompt *and* enforced through structured output;
the reply is still parsed and validated with jsonschema, because a server may ignore the constraint
or stop mid-object. A reply cut off by max_tokens is never parsed as if complete: it is retried with
a larger budget where the context allows, else the call fails saying so. An invalid reply gets one
repair attempt with the validation errors fed back; still invalid, the call fails with those errors.
Nothing edits a summary after it has been validated.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from maie.backends.base import Completion, LLMBackend, Message
from maie.chunking import approx_token_count
from maie.errors import BackendRejected
from maie.settings import LlmTaskSettings
from maie.templates import Template

__all__ = ["SYSTEM_PROMPT", "SummaryOutcome", "build_messages", "output_budget", "summarize_text"]

SYSTEM_PROMPT = (
    "You write faithful structured summaries of transcripts. Answer with one JSON object that "
    "matches the given JSON Schema, and nothing else."
)

# Tokens kept free for the chat template's own markup around the messages.
_TEMPLATE_OVERHEAD = 32


@dataclass(frozen=True)
class SummaryOutcome:
    data: dict[str, Any]
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def build_messages(template: Template, transcript: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": template.render(transcript)},
    ]


def prompt_tokens(backend: LLMBackend, messages: list[Message]) -> int:
    text = "\n".join(m["content"] for m in messages)
    counted = backend.count_tokens(text)
    return (counted if counted is not None else approx_token_count(text)) + _TEMPLATE_OVERHEAD


def output_budget(backend: LLMBackend, messages: list[Message], wanted: int) -> int:
    """`wanted` tokens, or what the context leaves after the prompt if that is less."""
    limit = backend.max_model_len
    if limit is None:
        return wanted
    room = limit - prompt_tokens(backend, messages)
    if room < 16:
        raise BackendRejected(
            f"summary prompt needs about {limit - room} tokens but the model's context is {limit}"
        )
    return min(wanted, room)


def _parse(reply: Completion, template: Template) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        data = json.loads(reply.text)
    except json.JSONDecodeError as exc:
        return None, [f"reply is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
    if not isinstance(data, dict):
        return None, [f"reply is JSON {type(data).__name__}, not an object"]
    return data, template.validate(data)


def summarize_text(
    backend: LLMBackend, template: Template, transcript: str, cfg: LlmTaskSettings
) -> SummaryOutcome:
    """Summarize `transcript` into a dict valid against `template.schema`."""
    started = time.monotonic()
    messages = build_messages(template, transcript)
    budget = output_budget(backend, messages, cfg.max_tokens)
    used_prompt = used_completion = 0
    attempts = 0
    repaired = False
    while True:
        attempts += 1
        reply = backend.chat(
            messages,
            max_tokens=budget,
            temperature=cfg.temperature if attempts == 1 else 0.0,
            top_p=cfg.top_p,
            json_schema=template.schema,
        )
        used_prompt += reply.prompt_tokens or 0
        used_completion += reply.completion_tokens or 0
        if reply.finish_reason == "length":
            larger = output_budget(backend, messages, budget * 2)
            if larger <= budget or attempts >= 4:
                raise BackendRejected(
                    f"summary reply was cut off at max_tokens={budget} (finish_reason=length) "
                    "and the model's context leaves no room for a larger budget"
                    if larger <= budget
                    else f"summary reply was still cut off at max_tokens={budget} after {attempts} attempts"
                )
            budget = larger
            continue
        data, errors = _parse(reply, template)
        if data is not None and not errors:
            return SummaryOutcome(
                data, attempts, used_prompt, used_completion, round(time.monotonic() - started, 4)
            )
        if repaired:
            raise BackendRejected(
                f"summary does not match template '{template.id}' after one repair: " + "; ".join(errors[:5])
            )
        repaired = True
        # Feed the errors back once: the model sees its own reply and what is wrong with it.
        messages = messages + [
            {"role": "assistant", "content": reply.text},
            {
                "role": "user",
                "content": "That reply does not match the JSON Schema:\n- "
                + "\n- ".join(errors[:10])
                + "\nReply again with only the corrected JSON object.",
            },
        ]
        budget = output_budget(backend, messages, budget)
