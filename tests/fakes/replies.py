"""What the fake answers: completions, the model list, vLLM's context refusal and error bodies.

Without ``response_format`` a chat reply "enhances" the last user message line by line (see
``text.enhance``): no word is changed, so a word-level faithfulness check passes. A request for
notes on a part of a transcript (``<transcript>...</transcript>``) gets a short note. JSON requests
get an instance of their schema (``schema_fill``), ``json_object`` gives ``{}``. Under a regex
constraint the plain "enhancement" is sent, and a ``rewrite`` fault is not applied when the
rewritten text would not match (a constrained decoder cannot write it); a reply the fake cannot make
match is still sent, with ``schema_error`` saying so in the log (and on stderr). A reply longer than
``max_tokens`` is cut to that many words with ``finish_reason="length"`` (JSON replies then become
invalid, on purpose); with ``ignore_eos`` (vLLM's extra parameter) it is padded to ``max_tokens``.
``/v1/completions`` answers ``"ok"`` (for one-token health checks).

Context length, as vLLM enforces it: a generation request whose prompt plus ``max_tokens`` exceeds
the server's ``max_model_len`` is refused with HTTP 400 and vLLM's own message.
"""

from __future__ import annotations

import json
import re
import sys
import time
from http import HTTPStatus
from typing import Any

from .calls import COMPLETIONS_PATH, Call
from .schema_fill import instance_for_schema, schema_error, violating_instance
from .text import FILLER, count_words, enhance, notes, rewrite, truncate_words


class Outcome:
    """What a request ended with, for its log entry."""

    __slots__ = ("status", "fault", "finish_reason", "schema_error")

    def __init__(self) -> None:
        self.status: int | None = None
        self.fault: str | None = None
        self.finish_reason: str | None = None
        self.schema_error: str | None = None


def failure(status: int, message: str, outcome: Outcome) -> tuple[int, dict[str, Any]]:
    outcome.status = status
    return status, error_body(status, message)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def error_body(status: int, message: str) -> dict[str, Any]:
    """The OpenAI error envelope, with the type/code pairs the official API and vLLM use."""
    kinds = {
        400: ("invalid_request_error", "bad_request"),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("permission_error", "forbidden"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }
    default = ("server_error", "internal_error") if status >= 500 else ("invalid_request_error",)
    err_type, *code = kinds.get(status, default)
    fallback = phrase(status).lower().replace(" ", "_")
    return {
        "error": {
            "message": message,
            "type": err_type,
            "param": None,
            "code": code[0] if code else fallback,
        }
    }


def models_body(model_name: str, max_model_len: int | None) -> dict[str, Any]:
    """The one served model; `max_model_len` None leaves it out, as servers other than vLLM do."""
    model: dict[str, Any] = {
        "id": model_name,
        "object": "model",
        "created": 0,
        "owned_by": "fake",
        "root": model_name,
    }
    if max_model_len is not None:
        model["max_model_len"] = max_model_len  # vLLM reports it; clients may read it
    return {"object": "list", "data": [model]}


def context_error(call: Call, limit: int) -> str | None:
    """vLLM's 400 message when prompt plus max_tokens exceed the context, else None."""
    wanted = call.max_tokens
    if isinstance(wanted, int) and wanted > limit:
        return (
            f"max_tokens={wanted} cannot be greater than max_model_len={limit}. "
            "Please request fewer output tokens."
        )
    prompt = call.context_tokens
    if prompt + (wanted if isinstance(wanted, int) else 0) > limit or prompt >= limit:
        return (
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains {prompt} input tokens, which exceeds this limit even without any output "
            "tokens. Please reduce the length of the input prompt."
        )
    return None


def completion(call: Call, fault: str | None, outcome: Outcome, *, name: str, model: str) -> dict[str, Any]:
    """The completion body for a generation request, with any content fault applied."""
    if call.path == COMPLETIONS_PATH:
        content = "ok"
    elif call.wants_json:
        content = _json_content(call, fault, outcome)
    elif "<transcript>" in call.last_user_text:
        # A request for notes on a part of a transcript: a short, deterministic note.
        content = notes(call.last_user_text)
    else:
        content = enhance(call.last_user_text)
        if fault == "rewrite" and (call.regex is None or re.fullmatch(call.regex, rewrite(content))):
            content = rewrite(content)
        if call.regex is not None and not re.fullmatch(call.regex, content):
            outcome.schema_error = "the reply does not match the requested regex"
            print(f"fake_openai: {outcome.schema_error}", file=sys.stderr, flush=True)
    finish = "stop"
    if fault == "length":
        words = count_words(content)
        content = truncate_words(content, words // 2) if words > 1 else content[: len(content) // 2]
        finish = "length"
    limit = call.max_tokens
    if limit is not None and call.body.get("ignore_eos"):
        # vLLM then generates exactly max_tokens tokens, whatever the model would say.
        missing = limit - count_words(content)
        if missing > 0:
            pad = " ".join(FILLER[i % len(FILLER)] for i in range(missing))
            content = f"{content} {pad}" if content else pad
        finish = "length"
    if limit is not None and count_words(content) > limit:
        content = truncate_words(content, limit)
        finish = "length"
    outcome.finish_reason = finish
    prompt_tokens = count_words(call.text)
    completion_tokens = count_words(content)
    created = int(time.time())
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    seq = call.seq
    if call.path == COMPLETIONS_PATH:
        return {
            "id": f"cmpl-{name}-{seq}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": content, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
    return {
        "id": f"chatcmpl-{name}-{seq}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def _json_content(call: Call, fault: str | None, outcome: Outcome) -> str:
    schema = call.schema
    value: Any
    if schema is None:
        value = {}  # json_object: any object will do
    elif fault == "invalid_schema":
        value = violating_instance(schema)
    else:
        try:
            value = instance_for_schema(schema, call.last_user_text)
        except (KeyError, TypeError, ValueError) as exc:
            value = {}
            outcome.schema_error = f"cannot fill schema: {exc!r}"
        else:
            outcome.schema_error = schema_error(schema, value)
        if outcome.schema_error is not None:
            print(f"fake_openai: {outcome.schema_error}", file=sys.stderr, flush=True)
    content = json.dumps(value)
    if fault == "malformed_json":
        content = content[: max(1, len(content) // 2)]  # a JSON text cut short never parses
    return content
