"""The fake's routes, and one API request parsed and checked the way vLLM checks it.

Chat requests may ask for JSON (``response_format`` ``json_schema``/``json_object``, or vLLM's
``guided_json``) or for a reply matching a regex (vLLM's ``structured_outputs={"regex": ...}``);
an invalid pattern, or more than one constraint, is an error. ``max_tokens`` (or
``max_completion_tokens``) must be an integer of at least 1, and streaming is not offered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .text import chat_prompt, content_text, count_tokens

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
TOKENIZE_PATH = "/tokenize"
GENERATION_PATHS = frozenset({CHAT_PATH, COMPLETIONS_PATH})


@dataclass
class Call:
    """One parsed API request."""

    method: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    messages: list[Any] | None = None
    prompt: str | None = None
    response_format: dict[str, Any] | None = None
    schema: dict[str, Any] | None = None
    regex: str | None = None  # structured_outputs.regex: the reply must match it in full
    seq: int = 0  # its number in the request log, also used in the reply id

    @classmethod
    def parse(cls, method: str, path: str, raw: bytes) -> Call:
        call = cls(method, path)
        if method != "POST":
            return call
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            call.error = f"request body is not valid JSON: {exc}"
            return call
        if not isinstance(body, dict):
            call.error = "request body must be a JSON object"
            return call
        call.body = body
        if path == CHAT_PATH:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                call.error = "'messages' must be a non-empty list"
            else:
                call.messages = messages
            fmt = body.get("response_format")
            if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"):
                call.response_format = fmt
                spec = fmt.get("json_schema")
                if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
                    call.schema = spec["schema"]
            elif isinstance(body.get("guided_json"), dict):
                call.response_format = {"type": "json_schema"}
                call.schema = body["guided_json"]
            call._parse_structured_outputs(body.get("structured_outputs"))
        elif path == TOKENIZE_PATH:
            if isinstance(body.get("messages"), list):
                call.messages = body["messages"]
            elif isinstance(body.get("prompt"), str):
                call.prompt = body["prompt"]
            else:
                call.error = "either 'prompt' (a string) or 'messages' (a list) is required"
        elif path == COMPLETIONS_PATH:
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                prompt = "\n".join(p for p in prompt if isinstance(p, str))
            if not isinstance(prompt, str):
                call.error = "'prompt' must be a string"
            else:
                call.prompt = prompt
        limit = call.max_tokens
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            call.error = "'max_tokens' must be an integer"
        elif limit is not None and limit < 1:
            call.error = "'max_tokens' must be at least 1"  # as vLLM
        if body.get("stream"):
            call.error = "the fake server does not stream"
        return call

    def _parse_structured_outputs(self, spec: Any) -> None:
        if spec is None:
            return
        if not isinstance(spec, dict):
            self.error = "'structured_outputs' must be an object"
            return
        kinds = [k for k in ("json", "regex", "choice", "grammar", "json_object") if spec.get(k) is not None]
        if len(kinds) + (self.response_format is not None) > 1:
            self.error = "You can only use one kind of structured outputs constraint"
            return
        regex = spec.get("regex")
        if regex is None:
            return  # other kinds are not modelled; the reply is unconstrained
        if not isinstance(regex, str):
            self.error = "'structured_outputs.regex' must be a string"
            return
        try:
            re.compile(regex)
        except re.error as exc:
            self.error = f"invalid regex: {exc}"
            return
        self.regex = regex

    @property
    def model(self) -> Any:
        return self.body.get("model")

    @property
    def max_tokens(self) -> Any:
        value = self.body.get("max_tokens")
        return self.body.get("max_completion_tokens") if value is None else value

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None

    @property
    def text(self) -> str:
        """Everything the caller sent as text: what `match` filters and usage counts look at."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(content_text(m.get("content")) for m in self.messages or () if isinstance(m, dict))

    @property
    def context_tokens(self) -> int:
        """Prompt tokens as the server counts them against its context."""
        if self.messages is not None:
            return count_tokens(chat_prompt(self.messages))
        return count_tokens(self.prompt or "")

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return content_text(message.get("content"))
        return ""
