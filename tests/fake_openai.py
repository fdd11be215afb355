"""A deterministic OpenAI-compatible HTTP server for tests and benchmarks, with fault injection.

Run it as a process::

    python tests/fake_openai.py --port 0 [--host 127.0.0.1] [--name A] [--model fake-model]
        [--api-key KEY] [--request-log FILE] [--max-model-len 4096]

It binds, then prints exactly one line ``LISTENING <port>`` on stdout (flushed) so a fixture can
read the port; SIGTERM or SIGINT stop it cleanly. In-process, ``FakeOpenAIServer(...).start()``
serves from a background thread; from a fixture, ``FakeServerProcess(...)`` runs the CLI as a
subprocess. Both expose ``port``, ``url``, ``base_url`` (``http://127.0.0.1:<port>/v1``),
``faults(rules)``, ``log()``, ``reset()``, ``stop()`` and the context manager protocol.

The server itself uses only the standard library (``jsonschema``, when installed, self-checks the
JSON it generates). Connections are kept alive (HTTP/1.1) and each one is served by a daemon
thread, so load runs can push hundreds of requests per second through it.

Endpoints
---------
``GET /v1/models``, ``GET /health`` (200), ``GET /metrics`` (``fake:requests_total{path=...}``,
``fake:responses_total{path=...,status=...}``, ``fake:faults_total{kind=...}``,
``fake:requests_in_flight``).

``POST /v1/chat/completions`` answers a standard ``chat.completion``:

* a wrong or missing ``Authorization: Bearer <key>`` (when ``--api-key`` is set) gives 401, a model
  other than the served one gives 404, a malformed body gives 400; errors use the OpenAI envelope
  ``{"error": {"message", "type", "param", "code"}}``.
* Without ``response_format`` the reply "enhances" the last user message line by line: a
  ``Label: `` speaker prefix (up to 40 characters without ``:``) is kept as is, the first letter of
  the text is capitalised and a final ``.`` is added unless it ends with ``.``, ``?`` or ``!``.
  No word is otherwise changed and empty lines stay, so a word-level faithfulness check passes.
* With ``response_format={"type": "json_schema", "json_schema": {"schema": ...}}`` (or vLLM's
  ``guided_json``) the reply is a JSON instance of the schema: every property is filled, strings
  are the property name plus the first 6 words of the last non-empty line of the last user
  message, enums take their first value, nullable unions take the non-null branch, arrays get
  ``max(1, minItems)`` items, numbers are 0 (or the minimum), booleans false; ``$ref``/``$defs``,
  ``allOf``/``anyOf``/``oneOf``, ``const`` and ``minLength``/``maxLength`` are honoured.
  ``{"type": "json_object"}`` gives ``{}``.
* With vLLM's ``structured_outputs={"regex": ...}`` (in ``extra_body``) the reply must match the
  pattern in full, as under a constrained decoder: the plain "enhancement" above is sent, and a
  ``rewrite`` fault is not applied when the rewritten text would not match (a constrained decoder
  cannot write it). A reply the fake cannot make match is still sent, with ``schema_error`` saying
  so in the log (and on stderr). An invalid pattern, or more than one constraint, gives 400.
* Tokens are whitespace-separated words everywhere (``usage`` and ``max_tokens``; also
  ``max_completion_tokens``) so tests can predict them. A reply longer than ``max_tokens`` is cut
  to that many words with ``finish_reason="length"`` (JSON replies then become invalid, on
  purpose). With ``ignore_eos`` (vLLM's extra parameter) the reply is padded to ``max_tokens``.

``POST /v1/completions`` answers ``"ok"`` (for one-token health checks), honouring ``max_tokens``.

Context length, as vLLM enforces it: a generation request whose prompt plus ``max_tokens`` exceeds
``--max-model-len`` is refused with HTTP 400 and vLLM's own message ("This model's maximum context
length is N tokens. ..."). Here prompt tokens are counted independently of any client's estimate:
``ceil(characters / 3.5)`` of the prompt rendered through a ChatML-style template, 3.5 being the
fewest characters per token measured with a real tokenizer on meeting transcripts (a worst case).
``POST /tokenize`` (no ``/v1``, as vLLM) answers ``{"count", "max_model_len", "tokens"}`` for a
``prompt`` or ``messages`` with that same count. ``--no-tokenize`` removes the route (404) and
``--no-context-report`` leaves ``max_model_len`` out of ``/v1/models``, like other servers.

Simulated accelerator
---------------------
With ``--accelerator STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]`` every generation request is paced by a
simulated GPU doing continuous batching: one engine thread takes a step every
``STEP_MS + PER_SEQ_MS × running`` milliseconds, and each step emits one token (a word of the reply,
at least one) for every running request; at most ``MAX_BATCH`` requests run (default 256), later
ones wait for a slot. Time per token thus grows slowly with the batch while tokens per second grow
almost linearly with it, as on a GPU, and the server spends almost no CPU doing it (the engine
thread sleeps between steps). ``/metrics`` adds ``fake:accelerator_tokens_total``,
``fake:accelerator_steps_total`` and ``fake:accelerator_batch_total`` (the running requests summed
over steps: over the steps, the mean batch). Faults apply before the pacing.

Control API (no auth, not logged, never faulted)
------------------------------------------------
``GET /_log`` returns the request log: one entry per API request with ``seq``, ``time``,
``server``, ``method``, ``path``, ``model``, ``auth`` (whether an Authorization header was sent;
the key itself is never stored), ``max_tokens``, ``temperature``, ``has_response_format``,
``response_format_type``, ``regex``, ``messages``, ``prompt``, ``status`` (None if no answer was sent),
``fault``, ``finish_reason``, ``schema_error`` and ``duration``. With ``--request-log FILE`` every
finished entry is also appended to FILE as one JSON line. ``POST /_reset`` clears the log, the
faults and the counters, and wakes hung requests. ``GET /_faults`` lists the rules with their
remaining ``times``; ``POST /_faults`` appends a JSON list of rules (or one rule):

=================  ==============================================================================
``status``         answer ``status`` (default 500) with an error body; 429 adds ``Retry-After: 0``
``delay``          answer normally after ``seconds``
``hang``           never answer: wait until the client disconnects, ``/_reset``, stop, or 600 s
``drop``           close the connection without answering
``malformed_json`` JSON requests only: the JSON reply cut in the middle, ``finish_reason="stop"``
``invalid_schema`` json_schema requests only: valid JSON that violates the schema (e.g. ``{}``)
``length``         the reply cut to half its words, ``finish_reason="length"``
``rewrite``        plain chat requests only: most words replaced, speaker labels kept
=================  ==============================================================================

Every rule also takes ``times`` (how many requests it hits; omitted means unlimited), ``match``
(only requests whose message contents or prompt contain this substring), ``path`` (only this
path; by default rules hit the two generation endpoints) and ``probability`` with ``seed`` (each
candidate request is hit with that probability, drawn from the rule's own seeded RNG). Rules are
tried in order and the first one that applies to a request is its only fault.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self
from urllib.parse import urlsplit

try:
    import jsonschema
except ImportError:  # pragma: no cover - the server itself needs only the standard library
    jsonschema = None  # type: ignore[assignment]

__all__ = [
    "FAULT_KINDS",
    "FakeOpenAIServer",
    "FakeServerProcess",
    "FaultRule",
    "count_words",
    "enhance",
    "instance_for_schema",
    "main",
    "truncate_words",
]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
TOKENIZE_PATH = "/tokenize"
# The fewest characters per token a real (Qwen-style BPE) tokenizer gave on meeting transcripts.
CHARS_PER_TOKEN = 3.5
GENERATION_PATHS = frozenset({CHAT_PATH, COMPLETIONS_PATH})
FAULT_KINDS = frozenset(
    {"status", "delay", "hang", "drop", "malformed_json", "invalid_schema", "length", "rewrite"}
)
# Faults that change the generated reply, so they only make sense on generation endpoints.
_CONTENT_KINDS = frozenset({"malformed_json", "invalid_schema", "length", "rewrite"})
HANG_SECONDS = 600.0
# How often sleeping requests look for a reset, a stop or a vanished client.
_POLL_SECONDS = 0.05
_SCRIPT = Path(__file__).resolve()

_WORD = re.compile(r"\S+")
_SPEAKER = re.compile(r"([^:\r\n]{1,40}): (.*)", re.S)
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


# --------------------------------------------------------------------------- text helpers


def count_words(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


def count_tokens(text: str) -> int:
    """The fake's *context* count: ceil(characters / 3.5), a worst case for clients' estimates."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def chat_prompt(messages: Sequence[Any]) -> str:
    """Messages rendered the way a ChatML chat template does, generation prompt included."""
    parts = [
        f"<|im_start|>{m.get('role', 'user')}\n{_content_text(m.get('content'))}<|im_end|>\n"
        for m in messages
        if isinstance(m, dict)
    ]
    return "".join(parts) + "<|im_start|>assistant\n"


def notes(prompt: str) -> str:
    """"- " plus the first twelve words between <transcript> and </transcript>."""
    inner = prompt.split("<transcript>", 1)[1].split("</transcript>", 1)[0]
    return "- " + " ".join(inner.split()[:12])


def truncate_words(text: str, limit: int) -> str:
    """Keep the first `limit` words, with the original whitespace between them."""
    for index, match in enumerate(_WORD.finditer(text)):
        if index == max(limit, 0):
            return text[: match.start()].rstrip()
    return text


def _polish(text: str) -> str:
    """Capitalise the first letter of the first word and end the sentence with a full stop."""
    core = text.rstrip()
    if not core:
        return text
    trail = text[len(core) :]
    start = len(core) - len(core.lstrip())
    for pos in range(start, len(core)):
        char = core[pos]
        if char.isspace():
            break  # the first word has no letter: leave the case alone
        if char.isalpha():
            core = core[:pos] + char.upper() + core[pos + 1 :]
            break
    if core[-1] not in ".?!":
        core += "."
    return core + trail


def _split_label(line: str) -> tuple[str, str]:
    """Split a `Speaker: text` line into its label prefix (kept verbatim) and its text."""
    match = _SPEAKER.fullmatch(line)
    if match is None:
        return "", line
    return match.group(1) + ": ", match.group(2)


def enhance(text: str) -> str:
    """The deterministic "enhancement": punctuation and capitals only, words and labels kept."""
    lines = []
    for line in text.split("\n"):
        if line.strip():
            label, body = _split_label(line)
            line = label + _polish(body)
        lines.append(line)
    return "\n".join(lines)


def _swap_words(body: str) -> str:
    counter = itertools.count()

    def swap(match: re.Match[str]) -> str:
        index = next(counter)
        return match.group(0) if index % 4 == 3 else _FILLER[index % len(_FILLER)]

    return _WORD.sub(swap, body)


def rewrite(text: str) -> str:
    """Replace three words out of four (labels kept) so a faithfulness check must fail."""
    lines = []
    for line in text.split("\n"):
        label, body = _split_label(line)
        lines.append(label + _swap_words(body))
    return "\n".join(lines)


def _snippet(text: str) -> str:
    """First 6 words of the last non-empty line: lets tests see that the input was read."""
    for line in reversed(text.split("\n")):
        if line.strip():
            return " ".join(line.split()[:6])
    return ""


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


# --------------------------------------------------------------------------- JSON schemas


class _SchemaFiller:
    """Builds one deterministic instance of a JSON schema (the subset LLM tooling emits)."""

    def __init__(self, root: Mapping[str, Any], snippet: str) -> None:
        self.root = root
        self.snippet = snippet

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node: Any = self.root
        for part in ref.lstrip("#").split("/"):
            if part:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            if isinstance(sub, Mapping) and "$ref" in sub:
                sub = self._resolve(sub["$ref"])
            if not isinstance(sub, Mapping):
                continue
            for key, value in sub.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def value(self, schema: Any, name: str, index: int = 0, depth: int = 0) -> Any:
        if depth > 40 or schema is False:
            return None
        if not isinstance(schema, Mapping):
            return self._string({}, name, index)
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, Mapping) else rest
        if "allOf" in schema:
            schema = self._merge_all_of(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options:
                chosen = next((o for o in options if not _is_null_schema(o)), options[0])
                rest = {k: v for k, v in schema.items() if k != key}
                merged = {**rest, **chosen} if isinstance(chosen, Mapping) else chosen
                return self.value(merged, name, index, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer", index)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self._string(schema, name, index)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        out = {key: self.value(sub, key, 0, depth + 1) for key, sub in props.items()}
        for key in schema.get("required") or ():
            if key not in out:
                out[key] = self._string({}, key, 0)
        return out

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        count = max(1, int(schema.get("minItems", 0)), len(prefix))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self.value(sub, name, i, depth + 1))
        return out

    def _string(self, schema: Mapping[str, Any], name: str, index: int) -> str:
        fmt = schema.get("format")
        fixed = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00Z",
            "email": "fake@example.com",
            "uri": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000",
        }
        if fmt in fixed:
            return fixed[fmt]
        text = f"{name} {self.snippet}".strip() or "text"
        if index:
            text += f" {index + 1}"  # keeps items distinct for uniqueItems
        min_len = int(schema.get("minLength", 0))
        if len(text) < min_len:
            text = text.ljust(min_len, "x")
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _number(schema: Mapping[str, Any], integer: bool, index: int) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    step = 1 if integer else 0.5
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = schema["exclusiveMinimum"] + step
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = schema["exclusiveMaximum"] - step
    value: float = index
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return int(math.ceil(value)) if integer else float(value)


def instance_for_schema(schema: Mapping[str, Any], text: str = "") -> Any:
    """A deterministic instance of `schema`, its strings seeded from the last line of `text`."""
    return _SchemaFiller(schema, _snippet(text)).value(schema, "value")


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A compiled validator, cached because load runs send the same schema again and again."""
    if jsonschema is None:
        return None
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_error(schema: Mapping[str, Any], instance: Any) -> str | None:
    """The first reason `instance` does not validate, or None (also None without jsonschema)."""
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except Exception as exc:  # an invalid schema is reported, not raised
        return f"invalid schema: {exc}"
    if validator is None:
        return None
    error = next(iter(validator.iter_errors(instance)), None)
    return None if error is None else f"{error.json_path}: {error.message}"


def _violating_instance(schema: Mapping[str, Any]) -> Any:
    """Valid JSON that the schema rejects: `{}` when fields are required, else a wrong type."""
    candidates: tuple[Any, ...] = ({}, [], "invalid", 0)
    for candidate in candidates:
        if schema_error(schema, candidate) is not None:
            return candidate
    return {}


# --------------------------------------------------------------------------- requests


@dataclass
class _Call:
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
    def parse(cls, method: str, path: str, raw: bytes) -> _Call:
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
        return "\n".join(
            _content_text(m.get("content")) for m in self.messages or () if isinstance(m, dict)
        )

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
                return _content_text(message.get("content"))
        return ""


class _Generation:
    __slots__ = ("remaining", "done")

    def __init__(self, tokens: int) -> None:
        self.remaining = max(1, tokens)
        self.done = threading.Event()


class SimulatedAccelerator:
    """Continuous batching on a simulated GPU (see "Simulated accelerator" in the module docstring)."""

    def __init__(self, step_ms: float, per_seq_ms: float = 0.0, max_batch: int = 256) -> None:
        if step_ms <= 0 or per_seq_ms < 0 or max_batch < 1:
            raise ValueError("--accelerator needs STEP_MS > 0, PER_SEQ_MS >= 0 and MAX_BATCH >= 1")
        self.step_ms, self.per_seq_ms, self.max_batch = step_ms, per_seq_ms, max_batch
        self.tokens = self.steps = self.batch_total = 0
        self._cond = threading.Condition()
        self._waiting: list[_Generation] = []
        self._running: list[_Generation] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="accelerator", daemon=True)
        self._thread.start()

    @classmethod
    def parse(cls, spec: str) -> SimulatedAccelerator:
        parts = [p.strip() for p in spec.split(",")]
        if not 1 <= len(parts) <= 3:
            raise ValueError("--accelerator takes STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]")
        per_seq = float(parts[1]) if len(parts) > 1 else 0.0
        return cls(float(parts[0]), per_seq, int(parts[2]) if len(parts) > 2 else 256)

    def generate(self, tokens: int, wake: threading.Event) -> bool:
        """Block until `tokens` tokens are generated (True), or `wake` is set first (False)."""
        job = _Generation(tokens)
        with self._cond:
            self._waiting.append(job)
            self._cond.notify()
        while not job.done.wait(_POLL_SECONDS):
            if wake.is_set():
                return False
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._running or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                free = self.max_batch - len(self._running)
                self._running += self._waiting[:free]
                del self._waiting[:free]
                batch = len(self._running)
            time.sleep((self.step_ms + self.per_seq_ms * batch) / 1000.0)
            with self._cond:
                self.steps += 1
                self.batch_total += batch
                self.tokens += batch
                finished = [g for g in self._running if g.remaining <= 1]
                for g in self._running:
                    g.remaining -= 1
                self._running = [g for g in self._running if g.remaining > 0]
            for g in finished:
                g.done.set()


class FaultRule:
    """One fault injection rule (see the module docstring for its fields)."""

    _KEYS = frozenset(
        {"kind", "status", "seconds", "times", "match", "path", "probability", "seed"}
    )

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if not isinstance(spec, Mapping):
            raise ValueError("a fault rule must be a JSON object")
        unknown = set(spec) - self._KEYS
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {sorted(FAULT_KINDS)}, got {kind!r}")
        self.kind: str = kind
        self.status = _int(spec.get("status", 500), "status")
        if not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        self.seconds = float(spec.get("seconds", 1.0))
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")
        times = spec.get("times")
        self.times: int | None = None if times is None else _int(times, "times")
        if self.times is not None and self.times < 0:
            raise ValueError("times must not be negative")
        self.match: str | None = _opt_str(spec.get("match"), "match")
        self.path: str | None = _opt_str(spec.get("path"), "path")
        probability = spec.get("probability")
        self.probability: float | None = None if probability is None else float(probability)
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        self.seed = spec.get("seed", 0)
        if not isinstance(self.seed, int | str):
            raise ValueError("seed must be an integer or a string")
        # Each rule draws from its own RNG so load runs are reproducible rule by rule.
        self._rng = random.Random(self.seed)
        self.hits = 0

    def applies_to(self, call: _Call) -> bool:
        """Whether this rule may hit `call` (ignoring probability)."""
        if self.times == 0:
            return False
        if self.path is not None:
            if call.path != self.path:
                return False
        elif call.path not in GENERATION_PATHS:
            return False
        if self.kind in _CONTENT_KINDS and call.path not in GENERATION_PATHS:
            return False
        if self.kind == "malformed_json" and not call.wants_json:
            return False
        if self.kind == "invalid_schema" and call.schema is None:
            return False
        if self.kind == "rewrite" and (call.path != CHAT_PATH or call.wants_json):
            return False
        return self.match is None or self.match in call.text

    def take(self, call: _Call) -> bool:
        """Apply the rule to `call` if it applies and the dice agree; consumes one of `times`."""
        if not self.applies_to(call):
            return False
        if self.probability is not None and self._rng.random() >= self.probability:
            return False
        if self.times is not None:
            self.times -= 1
        self.hits += 1
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "times": self.times, "hits": self.hits}
        if self.kind == "status":
            out["status"] = self.status
        if self.kind == "delay":
            out["seconds"] = self.seconds
        for key in ("match", "path", "probability"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.probability is not None:
            out["seed"] = self.seed
        return out


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _opt_str(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def parse_rules(payload: Any) -> list[FaultRule]:
    """Rules from a JSON list (or a single object); all or nothing."""
    specs = payload if isinstance(payload, list) else [payload]
    return [FaultRule(spec) for spec in specs]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _error_body(status: int, message: str) -> dict[str, Any]:
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
    fallback = _phrase(status).lower().replace(" ", "_")
    return {
        "error": {
            "message": message,
            "type": err_type,
            "param": None,
            "code": code[0] if code else fallback,
        }
    }


# --------------------------------------------------------------------------- the server


class _Outcome:
    """What a request ended with, for its log entry."""

    __slots__ = ("status", "fault", "finish_reason", "schema_error")

    def __init__(self) -> None:
        self.status: int | None = None
        self.fault: str | None = None
        self.finish_reason: str | None = None
        self.schema_error: str | None = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog (5) makes bursts of new connections wait for SYN retries.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeOpenAIServer) -> None:
        self.fake = fake
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Daemon threads are not tracked by socketserver; track them so stop() can join them.
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="fake-openai-conn"
        )
        with self.fake._lock:
            self.fake._threads.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError) or self.fake._stopping.is_set():
            return  # a client that went away, or connections cut by stop(): not news
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so load runs reuse connections
    disable_nagle_algorithm = True  # headers and body are separate writes
    server_version = "fake-openai/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client is gone; nothing left to flush
        finally:
            self.server.fake._untrack(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one stderr line per request would dominate a load run

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing

    def _send(
        self,
        status: int,
        payload: Any,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _client_gone(self) -> bool:
        try:
            data: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def _sleep(self, seconds: float, *, until_reset: bool) -> bool:
        """Wait `seconds`; False if stopped, reset (when `until_reset`) or the client left."""
        fake = self.server.fake
        wake = fake._wake if until_reset else fake._stopping
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if wake.wait(min(remaining, _POLL_SECONDS)) or fake._stopping.is_set():
                return False
            if self._client_gone():
                return False
        return True

    # -- routing

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(400, _error_body(400, "bad Content-Length"))
            return
        if path.startswith("/_"):
            self._control(method, path, raw)
            return
        fake._count(path)
        if path == "/health" and method == "GET":
            self._send(200, {"status": "ok", "name": fake.name})
        elif path == "/metrics" and method == "GET":
            self._send(200, fake.metrics_text().encode(), content_type="text/plain; version=0.0.4")
        elif (method, path) in (
            ("GET", MODELS_PATH),
            ("POST", CHAT_PATH),
            ("POST", COMPLETIONS_PATH),
        ) or ((method, path) == ("POST", TOKENIZE_PATH) and fake.tokenize):
            self._api(_Call.parse(method, path, raw))
        elif path in (MODELS_PATH, CHAT_PATH, COMPLETIONS_PATH, "/health", "/metrics"):
            self._send(405, _error_body(405, f"{method} is not allowed on {path}"))
        else:
            self._send(404, _error_body(404, f"no route for {method} {path}"))

    def _control(self, method: str, path: str, raw: bytes) -> None:
        fake = self.server.fake
        if (method, path) == ("GET", "/_log"):
            self._send(200, fake._log_json().encode())
        elif (method, path) == ("POST", "/_reset"):
            fake.reset()
            self._send(200, {"reset": True})
        elif (method, path) == ("GET", "/_faults"):
            self._send(200, fake.fault_rules())
        elif (method, path) == ("POST", "/_faults"):
            try:
                rules = parse_rules(json.loads(raw or b"null"))
            except ValueError as exc:
                self._send(400, _error_body(400, f"bad fault rules: {exc}"))
                return
            fake._add_rules(rules)
            self._send(200, {"added": len(rules)})
        else:
            self._send(404, _error_body(404, f"no control route for {method} {path}"))

    def _api(self, call: _Call) -> None:
        fake = self.server.fake
        entry = fake._open_entry(call, auth=self.headers.get("Authorization") is not None)
        outcome = _Outcome()
        try:
            answer = self._serve(call, outcome)
        finally:
            # Logged before the answer leaves, so a client that got it also finds it in the log.
            fake._close_entry(entry, outcome)
        if answer is None:
            self.close_connection = True  # drop, hang, or a delay cut short: never answer
            return
        status, payload = answer
        headers = {"Retry-After": "0"} if status == 429 else None
        self._send(status, payload, headers=headers)

    def _serve(self, call: _Call, outcome: _Outcome) -> tuple[int, dict[str, Any]] | None:
        """The answer to send (status, JSON body), or None to close without answering."""
        fake = self.server.fake
        if fake.api_key is not None:
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                # Unlike the real API, never echo the key, not even masked.
                return _failure(401, "Incorrect API key provided.", outcome)
        if call.error is not None:
            return _failure(400, call.error, outcome)
        if call.path != MODELS_PATH and call.model is not None and call.model != fake.model:
            return _failure(404, f"The model `{call.model}` does not exist.", outcome)
        rule = fake._pick_fault(call)
        kind = rule.kind if rule is not None else None
        outcome.fault = kind
        if call.path == TOKENIZE_PATH:
            outcome.status = 200
            n = call.context_tokens
            return 200, {"count": n, "max_model_len": fake.max_model_len, "tokens": list(range(n))}
        if call.path in GENERATION_PATHS:
            refused = fake.context_error(call)
            if refused is not None:
                return _failure(400, refused, outcome)
        if rule is not None and kind == "status":
            message = f"injected fault: HTTP {rule.status} ({_phrase(rule.status)})"
            return _failure(rule.status, message, outcome)
        if kind == "drop":
            return None
        if kind == "hang":
            self._sleep(HANG_SECONDS, until_reset=True)
            return None  # whatever ended the wait
        if rule is not None and kind == "delay":
            if not self._sleep(rule.seconds, until_reset=False):
                return None  # stopped, or the client gave up
        outcome.status = 200
        if call.path == MODELS_PATH:
            return 200, fake.models_body()
        body = fake.reply(call, kind, outcome)
        if fake.accelerator is not None and call.path in GENERATION_PATHS:
            if not fake.accelerator.generate(body["usage"]["completion_tokens"], fake._wake):
                return None  # reset or stopped while generating
        return 200, body


def _failure(status: int, message: str, outcome: _Outcome) -> tuple[int, dict[str, Any]]:
    outcome.status = status
    return status, _error_body(status, message)


class FakeOpenAIServer:
    """The fake server, served from a background thread once started."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "fake",
        model: str = "fake-model",
        api_key: str | None = None,
        request_log: str | Path | None = None,
        max_model_len: int = 4096,
        report_context: bool = True,
        tokenize: bool = True,
        accelerator: SimulatedAccelerator | None = None,
    ) -> None:
        self.host = host
        self.name = name
        self.model = model
        self.accelerator = accelerator
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.report_context = report_context
        self.tokenize = tokenize
        self._requested_port = port
        self._request_log = Path(request_log) if request_log is not None else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Replaced on every reset, so hung requests wake up and later ones hang anew.
        self._wake = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._log: list[dict[str, Any]] = []
        self._rules: list[FaultRule] = []
        self._requests: dict[str, int] = {}
        self._responses: dict[tuple[str, str], int] = {}
        self._fault_hits: dict[str, int] = {}
        self._in_flight = 0
        self._seq = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log_file: IO[str] | None = None
        self._port: int | None = None

    # -- lifecycle

    def start(self) -> Self:
        """Bind and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        if self._request_log is not None:
            self._log_file = self._request_log.open("a", encoding="utf-8")
        try:
            self._httpd = _HTTPServer((self.host, self._requested_port), self)
        except BaseException:
            if self._log_file is not None:
                self._log_file.close()
            raise
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fake-openai-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, cut open connections, wake sleepers and join every thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        if self.accelerator is not None:
            self.accelerator.stop()
        with self._lock:
            self._wake.set()
            conns = list(self._conns)
        httpd.shutdown()
        for conn in conns:
            _shutdown_socket(conn)  # unblocks handlers idle on keep-alive connections
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> Self:
        return self.start() if self._httpd is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            stopping = self._stopping.is_set()
        if stopping:  # accepted while stop() was cutting connections
            _shutdown_socket(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- control (the same operations as the HTTP control API)

    def faults(self, rules: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Append fault rules (validated; raises ValueError on a bad rule)."""
        self._add_rules(parse_rules(rules if isinstance(rules, Mapping) else list(rules)))

    def _add_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules.extend(rules)

    def fault_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]

    def log(self) -> list[dict[str, Any]]:
        """A copy of the request log."""
        entries: list[dict[str, Any]] = json.loads(self._log_json())  # a deep copy
        return entries

    def _log_json(self) -> str:
        with self._lock:
            return json.dumps(self._log)

    def reset(self) -> None:
        """Clear the log, the faults and the counters; wake hung requests."""
        with self._lock:
            self._wake.set()
            self._wake = threading.Event()
            self._log.clear()
            self._rules.clear()
            self._requests.clear()
            self._responses.clear()
            self._fault_hits.clear()
            self._seq = 0

    # -- bookkeeping

    def _count(self, path: str) -> None:
        with self._lock:
            self._requests[path] = self._requests.get(path, 0) + 1

    def _pick_fault(self, call: _Call) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.take(call):
                    self._fault_hits[rule.kind] = self._fault_hits.get(rule.kind, 0) + 1
                    return rule
        return None

    def _open_entry(self, call: _Call, *, auth: bool) -> dict[str, Any]:
        fmt = call.response_format
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            call.seq = self._seq
            entry: dict[str, Any] = {
                "seq": self._seq,
                "time": time.time(),
                "server": self.name,
                "method": call.method,
                "path": call.path,
                "model": call.model,
                "auth": auth,
                "max_tokens": call.max_tokens,
                "temperature": call.body.get("temperature"),
                "has_response_format": fmt is not None,
                "response_format_type": fmt.get("type") if fmt is not None else None,
                "regex": call.regex,
                "messages": call.messages,
                "prompt": call.prompt,
                "status": None,
                "fault": None,
                "finish_reason": None,
                "schema_error": None,
                "duration": None,
            }
            self._log.append(entry)
        return entry

    def _close_entry(self, entry: dict[str, Any], outcome: _Outcome) -> None:
        with self._lock:
            self._in_flight -= 1
            entry["status"] = outcome.status
            entry["fault"] = outcome.fault
            entry["finish_reason"] = outcome.finish_reason
            entry["schema_error"] = outcome.schema_error
            entry["duration"] = round(time.time() - entry["time"], 6)
            key = (entry["path"], str(outcome.status or 0))
            self._responses[key] = self._responses.get(key, 0) + 1
            if self._log_file is not None:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()

    def metrics_text(self) -> str:
        """Prometheus text exposition of the counters."""
        lines = ["# TYPE fake:requests_total counter"]
        with self._lock:
            lines += [
                f'fake:requests_total{{path="{_label(p)}"}} {n}'
                for p, n in sorted(self._requests.items())
            ]
            lines.append("# TYPE fake:responses_total counter")
            lines += [
                f'fake:responses_total{{path="{_label(p)}",status="{s}"}} {n}'
                for (p, s), n in sorted(self._responses.items())
            ]
            lines.append("# TYPE fake:faults_total counter")
            lines += [
                f'fake:faults_total{{kind="{k}"}} {n}' for k, n in sorted(self._fault_hits.items())
            ]
            lines += [
                "# TYPE fake:requests_in_flight gauge",
                f"fake:requests_in_flight {self._in_flight}",
            ]
        acc = self.accelerator
        if acc is not None:
            lines += [
                "# TYPE fake:accelerator_tokens_total counter",
                f"fake:accelerator_tokens_total {acc.tokens}",
                "# TYPE fake:accelerator_steps_total counter",
                f"fake:accelerator_steps_total {acc.steps}",
                "# TYPE fake:accelerator_batch_total counter",
                f"fake:accelerator_batch_total {acc.batch_total}",
            ]
        return "\n".join(lines) + "\n"

    # -- replies

    def models_body(self) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": self.model,
            "object": "model",
            "created": 0,
            "owned_by": "fake",
            "root": self.model,
        }
        if self.report_context:
            model["max_model_len"] = self.max_model_len  # vLLM reports it; clients may read it
        return {"object": "list", "data": [model]}

    def context_error(self, call: _Call) -> str | None:
        """vLLM's 400 message when prompt plus max_tokens exceed the context, else None."""
        limit = self.max_model_len
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

    def reply(self, call: _Call, fault: str | None, outcome: _Outcome) -> dict[str, Any]:
        """The completion body for a generation request, with any content fault applied."""
        if call.path == COMPLETIONS_PATH:
            content = "ok"
        elif call.wants_json:
            content = self._json_content(call, fault, outcome)
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
            content = (
                truncate_words(content, words // 2) if words > 1 else content[: len(content) // 2]
            )
            finish = "length"
        limit = call.max_tokens
        if limit is not None and call.body.get("ignore_eos"):
            # vLLM then generates exactly max_tokens tokens, whatever the model would say.
            missing = limit - count_words(content)
            if missing > 0:
                pad = " ".join(_FILLER[i % len(_FILLER)] for i in range(missing))
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
                "id": f"cmpl-{self.name}-{seq}",
                "object": "text_completion",
                "created": created,
                "model": self.model,
                "choices": [
                    {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}
                ],
                "usage": usage,
            }
        return {
            "id": f"chatcmpl-{self.name}-{seq}",
            "object": "chat.completion",
            "created": created,
            "model": self.model,
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

    def _json_content(self, call: _Call, fault: str | None, outcome: _Outcome) -> str:
        schema = call.schema
        value: Any
        if schema is None:
            value = {}  # json_object: any object will do
        elif fault == "invalid_schema":
            value = _violating_instance(schema)
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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _shutdown_socket(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its handler


# --------------------------------------------------------------------------- the subprocess form


class FakeServerProcess:
    """Runs the fake server as a subprocess (``sys.executable tests/fake_openai.py``) for fixtures.

    The control methods talk to the control API with urllib, so they work from any process.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        request_log: str | Path | None = None,
        max_model_len: int | None = None,
        report_context: bool = True,
        tokenize: bool = True,
        accelerator: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.requested_port = port  # 0: any free port; a fixed one lets a restart come back on it
        self.name = name
        self.model = model
        self.api_key = api_key
        self.request_log = request_log
        self.max_model_len = max_model_len
        self.report_context = report_context
        self.tokenize = tokenize
        self.accelerator = accelerator
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._port: int | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, str(_SCRIPT), "--port", str(self.requested_port), "--host", self.host]
        options = {
            "--name": self.name,
            "--model": self.model,
            "--api-key": self.api_key,
            "--request-log": self.request_log,
            "--max-model-len": self.max_model_len,
            "--accelerator": self.accelerator,
        }
        for flag, value in options.items():
            if value is not None:
                cmd += [flag, str(value)]
        if not self.report_context:
            cmd.append("--no-context-report")
        if not self.tokenize:
            cmd.append("--no-tokenize")
        return cmd

    def start(self) -> Self:
        """Start the subprocess and wait for its ``LISTENING <port>`` line."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = ""
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if selector.select(self.startup_timeout):
                line = self._proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"fake OpenAI server did not start (first line: {line!r})")
        self._port = int(line.split()[1])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the subprocess and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server not running")
        return self._proc.pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode(errors="replace")
            raise ValueError(f"{method} {path} failed: HTTP {exc.code}: {detail}") from None

    def faults(self, rules: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Append fault rules (raises ValueError if the server rejects them)."""
        self._call("POST", "/_faults", rules if isinstance(rules, Mapping) else list(rules))

    def fault_rules(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_faults")
        return result

    def log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_log")
        return result

    def reset(self) -> None:
        self._call("POST", "/_reset", {})


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="fake", help="shown in logs and reply ids")
    parser.add_argument("--model", default="fake-model", help="the one served model name")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--request-log", default=None, help="append each request as a JSON line")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--no-context-report", action="store_true", help="no max_model_len in /v1/models")
    parser.add_argument("--no-tokenize", action="store_true", help="no POST /tokenize route")
    parser.add_argument(
        "--accelerator", default=None, help="STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]: pace replies like a GPU"
    )
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        args.host,
        args.port,
        name=args.name,
        model=args.model,
        api_key=args.api_key,
        request_log=args.request_log,
        max_model_len=args.max_model_len,
        report_context=not args.no_context_report,
        tokenize=not args.no_tokenize,
        accelerator=SimulatedAccelerator.parse(args.accelerator) if args.accelerator else None,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"LISTENING {server.port}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
