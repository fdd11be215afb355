"""Summary: a template's prompt, a schema-constrained call, validation, one repair.

Knows no Celery. The schema is rendered into the prompt *and* enforced through structured output;
the reply is still parsed and validated with jsonschema, because a server may ignore the constraint
or stop mid-object. A reply cut off by max_tokens is never parsed as if complete: it is retried with
a larger budget where the context allows, else the call fails saying so. An invalid reply gets one
repair attempt with the validation errors fed back; still invalid, the call fails with those errors.
Nothing edits a summary after it has been validated.

Transcripts longer than the context are summarised in levels: notes on groups of chunks, then (when
the notes themselves are still too long) notes on groups of notes, until the text fits one call.
Prompts are measured with the backend's exact count where it has one, else with an estimate and a
margin (maie/tokens.py); a request the server still refuses as too long (`ContextExceeded`) is split.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from maie.backends.base import Completion, LLMBackend, Message
from maie.errors import BackendRejected, ContextExceeded
from maie.settings import LlmTaskSettings
from maie.templates import Template
from maie.tokens import count_text, prompt_tokens

__all__ = [
    "SYSTEM_PROMPT",
    "SummaryOutcome",
    "build_messages",
    "output_budget",
    "summarize_text",
    "fits_in_one_call",
    "plan_groups",
    "partial_notes",
]

SYSTEM_PROMPT = (
    "You write faithful structured summaries of transcripts. Answer with one JSON object that "
    "matches the given JSON Schema, and nothing else."
)

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


def output_budget(backend: LLMBackend, messages: list[Message], wanted: int) -> int:
    """`wanted` tokens, or what the context leaves after the prompt if that is less."""
    limit = backend.max_model_len
    room = limit - prompt_tokens(backend, messages)
    if room < 16:
        raise ContextExceeded(
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


# -- transcripts longer than the summary model's context -----------------------------------------
def fits_in_one_call(
    backend: LLMBackend, template: Template, transcript: str, cfg: LlmTaskSettings, scale: float = 1.0
) -> bool:
    """Whether prompt, schema and the output budget fit the model's context (times `scale`, below 1
    after the server refused a request that MAIE's count said would fit)."""
    limit = int(backend.max_model_len * scale)
    wanted = min(cfg.max_tokens, limit // 2)
    return prompt_tokens(backend, build_messages(template, transcript)) + wanted <= limit


def notes_budget(backend: LLMBackend, cfg: LlmTaskSettings, language: str, scale: float = 1.0) -> int:
    """Output tokens for one group's notes: at most max_tokens, and at most a fifth of what the
    context leaves after the notes prompt, so that a group always holds at least two notes of the
    level below, even counted by an estimate up to twice their real size: every level at least
    halves the text, and the levels always end."""
    limit = int(backend.max_model_len * scale)
    available = limit - prompt_tokens(backend, notes_messages("", language))
    return max(16, min(cfg.max_tokens, available // 5))


def notes_messages(transcript: str, language: str) -> list[Message]:
    from maie.templates import render_partial_notes

    return [{"role": "user", "content": render_partial_notes(transcript, language)}]


def plan_groups(
    texts: list[str], backend: LLMBackend, cfg: LlmTaskSettings, language: str, scale: float = 1.0
) -> list[tuple[int, int]]:
    """Consecutive texts (chunks, or notes of a lower level) packed into groups [start, end) whose
    notes prompt and notes budget fit the context (times `scale`)."""
    limit = int(backend.max_model_len * scale)
    overhead = prompt_tokens(backend, notes_messages("", language))
    room = limit - overhead - notes_budget(backend, cfg, language, scale)
    if room < 32:
        raise BackendRejected(f"the summary model's context ({limit} tokens) is too small for partial notes")
    groups: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, text in enumerate(texts):
        n = count_text(backend, text) + 1  # + the newline that joins it to the next one
        if i > start and used + n > room:
            groups.append((start, i))
            start, used = i, 0
        used += n
    groups.append((start, len(texts)))
    return groups


def partial_notes(
    backend: LLMBackend, texts: list[str], language: str, cfg: LlmTaskSettings, scale: float = 1.0
) -> Completion:
    """Plain-text notes of consecutive parts of a long transcript, to be summarised with the others.

    A group the server still refuses as too long is halved and each half noted in turn (a single
    text is halved between words), so a wrong count costs one more call, not the job."""
    messages = notes_messages("\n".join(texts), language)
    try:
        budget = output_budget(backend, messages, notes_budget(backend, cfg, language, scale))
        return backend.chat(messages, max_tokens=budget, temperature=cfg.temperature, top_p=cfg.top_p)
    except ContextExceeded:
        halves = _halves(texts)
        if halves is None:
            raise
    first, second = (partial_notes(backend, half, language, cfg, scale) for half in halves)
    return Completion(
        text=f"{first.text.strip()}\n{second.text.strip()}",
        finish_reason="length" if "length" in (first.finish_reason, second.finish_reason) else "stop",
        prompt_tokens=(first.prompt_tokens or 0) + (second.prompt_tokens or 0),
        completion_tokens=(first.completion_tokens or 0) + (second.completion_tokens or 0),
    )


def _halves(texts: list[str]) -> tuple[list[str], list[str]] | None:
    """Two halves of a list of texts, or of its only text (between words); None if one word."""
    if len(texts) > 1:
        middle = len(texts) // 2
        return texts[:middle], texts[middle:]
    words = texts[0].split(" ") if texts else []
    if len(words) < 2:
        return None
    middle = len(words) // 2
    return [" ".join(words[:middle])], [" ".join(words[middle:])]
