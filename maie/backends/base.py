"""The backend protocol: what a task needs from an LLM, whatever serves it.

Two implementations: `openai_server.OpenAIServerBackend` (any OpenAI-compatible server, such as
`vllm serve`) and `local_vllm.LocalVllmBackend` (an in-process vLLM engine). Both translate their
library's errors into MAIE's error tree at this edge, so tasks and the LLM logic see only
`BackendUnavailable` (retry can help), `BackendRejected` (it cannot) and `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Required, TypedDict, Unpack

from maie.errors import BackendRejected

__all__ = ["Message", "Decoding", "DecodingArgs", "Completion", "LLMBackend", "STRUCTURED_OUTPUTS_CONFIG"]

# Constrained decoding for the in-process engine and for the servers `maie serve` starts: xgrammar,
# JSON without free whitespace (otherwise xgrammar lets a small model loop on whitespace inside an
# object until max_tokens cuts it off; seen with vLLM 0.32 on CPU).
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}


class Message(TypedDict):
    role: str
    content: str


class DecodingArgs(TypedDict, total=False):
    max_tokens: Required[int]
    temperature: Required[float]
    top_p: float
    json_schema: dict[str, Any] | None
    ignore_eos: bool
    regex: str | None


@dataclass(frozen=True)
class Decoding:
    """How one reply is decoded. With `json_schema` decoding is constrained to that schema, with
    `regex` to texts the pattern matches in full (at most one of the two)."""

    max_tokens: int
    temperature: float
    top_p: float = 1.0
    json_schema: dict[str, Any] | None = None
    ignore_eos: bool = False  # benchmarks: replies of exactly max_tokens
    regex: str | None = None

    def __post_init__(self) -> None:
        if self.json_schema is not None and self.regex is not None:
            raise BackendRejected("a request takes a JSON schema or a regex, not both")


@dataclass(frozen=True)
class Completion:
    text: str
    # "stop", "length", ...; "length" means the reply was cut off by max_tokens.
    finish_reason: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LLMBackend(Protocol):
    @property
    def kind(self) -> str:
        """"vllm_server" or "local_vllm"."""
        ...

    @property
    def task(self) -> str:
        """"enhance" or "summary"."""
        ...

    @property
    def endpoint(self) -> str:
        """The base URL, or "local:<model path>"."""
        ...

    @property
    def model(self) -> str:
        """The served model name or the model path."""
        ...

    @property
    def max_model_len(self) -> int:
        """The model's context length in tokens: what the engine or server says, else the setting."""
        ...

    @property
    def discovered(self) -> bool:
        """Whether the model and its context are known without a call."""
        ...

    def discover(self) -> None:
        """Learn the model and its context now (start-up). Raises ConfigError when the configured
        model is not there, BackendUnavailable when the LLM cannot be reached yet."""
        ...

    def chat(self, messages: Sequence[Message], **decoding: Unpack[DecodingArgs]) -> Completion:
        """One chat completion, decoded as `Decoding(**decoding)` says."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` counted exactly (the model's tokenizer, or the server's `/tokenize`),
        or None when no exact count is at hand and the caller must estimate."""
        ...

    def close(self) -> None: ...
