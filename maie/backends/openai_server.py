"""The `vllm_server` backend: any OpenAI-compatible server, through the official `openai` client.

The client never retries (`max_retries=0`): Celery owns retries, with backoff, so that a slow or dead
server is not hammered by two retry loops at once. Every `openai` exception is translated here.

The context length is learnt from the server, whatever the model is called: `/v1/models` is asked
once (`discover()`, at worker start-up or on first use when the server was down then) and gives the
configured model's `max_model_len`; a model name the server does not serve is a configuration error.
A server that does not report the context falls back to the task's `LLM_*__MAX_MODEL_LEN`. Tokens are
counted exactly by vLLM's `POST /tokenize` (the base URL without `/v1`); a server without that route
leaves callers to estimate, with a margin.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any, Unpack

import openai
from openai.types.chat import ChatCompletion

from maie.backends.base import Completion, Decoding, DecodingArgs, Message
from maie.errors import BackendRejected, BackendUnavailable, ConfigError, ContextExceeded, MaieError
from maie.settings import Endpoint

__all__ = ["OpenAIServerBackend", "ModelNotServed", "translate_openai_error"]

log = logging.getLogger(__name__)

class ModelNotServed(ConfigError):
    """The configured model name is not among those the endpoint serves: no request can work."""


# How vLLM (and OpenAI) word a request that does not fit the context; matched on a 400's message.
_CONTEXT_MESSAGE = re.compile(
    r"maximum context length|context length|max_model_len|too many tokens|prompt is too long", re.I
)


def translate_openai_error(exc: Exception, endpoint: str) -> MaieError:
    """Map an `openai` exception to MAIE's tree: retryable, not retryable, or configuration."""
    if isinstance(exc, openai.APITimeoutError):
        return BackendUnavailable(f"timed out waiting for {endpoint}")
    if isinstance(exc, openai.APIConnectionError):
        return BackendUnavailable(f"cannot connect to {endpoint}: {exc.__cause__ or exc}")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ConfigError(
            f"{endpoint} refused the API key (HTTP {exc.status_code}): check the API_KEY setting "
            "for this endpoint"
        )
    if isinstance(exc, openai.NotFoundError):
        return ConfigError(f"{endpoint} answered 404: {_short(exc)} (check the MODEL_NAME setting)")
    if isinstance(exc, openai.RateLimitError):
        return BackendUnavailable(f"{endpoint} is busy (HTTP 429): {_short(exc)}")
    if isinstance(exc, openai.InternalServerError):
        return BackendUnavailable(f"{endpoint} failed (HTTP {exc.status_code}): {_short(exc)}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in (400, 413) and _CONTEXT_MESSAGE.search(_short(exc)):
            return ContextExceeded(f"{endpoint}: the request does not fit the context: {_short(exc)}")
        if exc.status_code in (408, 409) or exc.status_code >= 500:
            return BackendUnavailable(f"{endpoint} failed (HTTP {exc.status_code}): {_short(exc)}")
        return BackendRejected(f"{endpoint} rejected the request (HTTP {exc.status_code}): {_short(exc)}")
    return BackendRejected(f"{endpoint}: unexpected reply: {_short(exc)}")


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return " ".join(text.split())[:300]


class OpenAIServerBackend:
    """One task's OpenAI-compatible endpoint: its URL, key and model."""

    kind = "vllm_server"

    def __init__(self, endpoint: Endpoint, timeout_seconds: float, fallback_context: int) -> None:
        self.task = endpoint.task
        self.endpoint = endpoint.base_url
        self._model = endpoint.model_name
        self._fallback_context = fallback_context
        self._lock = threading.Lock()
        self._discovered = False
        self._max_model_len = fallback_context
        self._tokenize_url: str | None = re.sub(r"/v1/?$", "", endpoint.base_url.rstrip("/")) + "/tokenize"
        key = endpoint.api_key.get_secret_value() if endpoint.api_key else "EMPTY"
        self._client = openai.OpenAI(
            base_url=endpoint.base_url, api_key=key, max_retries=0, timeout=timeout_seconds
        )

    @property
    def model(self) -> str:
        """The configured model name, or the one model the server serves."""
        self.discover()
        assert self._model is not None
        return self._model

    @property
    def max_model_len(self) -> int:
        """The served model's context as the server reports it, else `LLM_*__MAX_MODEL_LEN`."""
        self.discover()
        return self._max_model_len

    @property
    def discovered(self) -> bool:
        return self._discovered

    def discover(self) -> None:
        """Ask `/v1/models` once: the model to use and its context length.

        Raises ModelNotServed when a configured model name is not served there, ConfigError when
        the key is refused, and BackendUnavailable while the server cannot be reached (the next
        call asks again)."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            models = self._list()
            if not models:
                raise ConfigError(f"{self.endpoint} serves no model")
            if self._model is None:
                self._model = models[0].id
            chosen = next((m for m in models if m.id == self._model), None)
            if chosen is None:
                served = ", ".join(m.id for m in models)
                setting = f"LLM_SERVER__{self.task.upper()}_MODEL_NAME"
                raise ModelNotServed(
                    f"model {self._model!r} is not served by {self.endpoint} (it serves: {served}); "
                    f"check {setting}"
                )
            value = (chosen.model_extra or {}).get("max_model_len")
            if isinstance(value, int) and value > 0:
                self._max_model_len = value
                source = "reported by the server"
            else:
                prefix = "LLM_ENHANCE" if self.task == "enhance" else "LLM_SUM"
                source = f"not reported by the server: {prefix}__MAX_MODEL_LEN"
            log.info(
                "LLM %s endpoint %s: model=%s max_model_len=%d (%s)",
                self.task,
                self.endpoint,
                self._model,
                self._max_model_len,
                source,
            )
            self._discovered = True

    def _list(self) -> list[Any]:
        try:
            return list(self._client.models.list().data)
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, self.endpoint) from None

    def list_models(self) -> list[str]:
        return [m.id for m in self._list()]

    def chat(self, messages: Sequence[Message], **decoding: Unpack[DecodingArgs]) -> Completion:
        d = Decoding(**decoding)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": d.max_tokens,
            "temperature": d.temperature,
            "top_p": d.top_p,
        }
        if d.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "summary", "schema": d.json_schema, "strict": True},
            }
        if d.regex is not None:
            # vLLM's own request field (0.12 and later; the older `guided_regex` is ignored now).
            body["structured_outputs"] = {"regex": d.regex}
        if d.ignore_eos:
            body["ignore_eos"] = True
        try:
            # The client's generic POST with the body built here: `chat.completions.create` would
            # first walk the body through the SDK's parameter transform, a tenth of an enhance
            # worker's CPU per chunk when profiled (bench/RESULTS.md, B3); the reply is parsed alike.
            reply = self._client.post("/chat/completions", body=body, cast_to=ChatCompletion)
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, self.endpoint) from None
        if not reply.choices:
            raise BackendRejected(f"{self.endpoint} returned no choices")
        choice = reply.choices[0]
        usage = reply.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    def count_tokens(self, text: str) -> int | None:
        """The server's exact count (vLLM's `POST /tokenize`), or None where it has no such route."""
        url = self._tokenize_url
        if url is None or not text:
            return 0 if not text else None
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        try:
            reply = self._client.post(url, cast_to=object, body=body)
        except (openai.NotFoundError, openai.APIStatusError) as exc:
            if isinstance(exc, openai.NotFoundError) or exc.status_code in (400, 405, 501):
                # Not vLLM (or a proxy in front of it): estimate from now on, with a margin.
                log.warning("LLM %s endpoint %s has no usable /tokenize: estimating tokens", self.task, url)
                self._tokenize_url = None
                return None
            raise translate_openai_error(exc, self.endpoint) from None
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, self.endpoint) from None
        count = reply.get("count") if isinstance(reply, dict) else None
        if not isinstance(count, int):
            self._tokenize_url = None
            return None
        return count

    def close(self) -> None:
        self._client.close()
