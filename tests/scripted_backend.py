"""A scripted LLM backend for driving the LLM logic directly, without Celery or a server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maie.backends.base import Completion, Message


class ScriptedBackend:
    """Answers each chat call with the next scripted reply and records the calls."""

    kind = "scripted"
    task = "test"
    endpoint = "scripted://"
    model = "scripted"
    discovered = True

    def __init__(
        self, replies: list[Completion | Exception], max_model_len: int = 8192, exact: bool = True
    ) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []
        self._max_model_len = max_model_len
        self.exact = exact

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def discover(self) -> None:
        pass

    def chat(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        self.calls.append({"messages": list(messages), **kwargs})
        answer = self.replies.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def count_tokens(self, text: str) -> int | None:
        return len(text.split()) if self.exact else None

    def close(self) -> None:
        pass


def reply(text: str, finish: str = "stop") -> Completion:
    return Completion(text, finish, 10, 10)


class EchoBackend(ScriptedBackend):
    """Replies with the last message itself (a faithful enhancement), unless an error is scripted."""

    def chat(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        self.calls.append({"messages": list(messages), **kwargs})
        if self.replies:
            answer = self.replies.pop(0)
            if isinstance(answer, Exception):
                raise answer
        return reply(messages[-1]["content"])
