"""The `vllm_server` backend: any OpenAI-compatible server, through the official `openai` client.

The client never retries (`max_retries=0`): Celery owns retries, with backoff, so that a slow or dead
server is not hammered by two retry loops at once. Every `openai` exception is translated here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import openai

from maie.backends.base import Completion, Message
from maie.errors import BackendRejected, BackendUnavailable, ConfigError, MaieError
from maie.settings import Endpoint

__all__ = ["OpenAIServerBackend", "translate_openai_error"]

log = logging.getLogger(__name__)


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

    def __init__(self, endpoint: Endpoint, timeout_seconds: float) -> None:
        self.task = endpoint.task
        self.endpoint = endpoint.base_url
        self._model = endpoint.model_name
        self._lock = threading.Lock()
        self._max_model_len: int | None = None
        key = endpoint.api_key.get_secret_value() if endpoint.api_key else "EMPTY"
        self._client = openai.OpenAI(
            base_url=endpoint.base_url, api_key=key, max_retries=0, timeout=timeout_seconds
        )

    @property
    def model(self) -> str:
        """The configured model name, or the one model the server serves (asked once)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._discover()
        assert self._model is not None
        return self._model

    @property
    def max_model_len(self) -> int | None:
        if self._model is None:
            _ = self.model
        return self._max_model_len

    def _discover(self) -> None:
        try:
            models = self._client.models.list().data
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, self.endpoint) from None
        if not models:
            raise ConfigError(f"{self.endpoint} serves no model")
        chosen = models[0]
        if self._model is None:
            self._model = chosen.id
        for m in models:
            if m.id == self._model:
                # vLLM reports the context length of each served model.
                extra = m.model_extra or {}
                value = extra.get("max_model_len")
                self._max_model_len = int(value) if isinstance(value, int) else None

    def list_models(self) -> list[str]:
        try:
            return [m.id for m in self._client.models.list().data]
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, self.endpoint) from None

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        json_schema: dict[str, Any] | None = None,
        ignore_eos: bool = False,
    ) -> Completion:
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "summary", "schema": json_schema, "strict": True},
            }
        if ignore_eos:
            kwargs["extra_body"] = {"ignore_eos": True}
        try:
            reply = self._client.chat.completions.create(
                model=self.model,
                messages=list(messages),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                **kwargs,
            )
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
        return None  # the server's tokenizer is not at hand; callers use the approximation

    def close(self) -> None:
        self._client.close()
