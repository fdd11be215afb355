"""Fault injection: rules posted to ``/_faults`` that make the fake fail the way servers do.

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

import random
from collections.abc import Mapping
from typing import Any

from .calls import CHAT_PATH, GENERATION_PATHS, Call

FAULT_KINDS = frozenset(
    {"status", "delay", "hang", "drop", "malformed_json", "invalid_schema", "length", "rewrite"}
)
# Faults that change the generated reply, so they only make sense on generation endpoints.
_CONTENT_KINDS = frozenset({"malformed_json", "invalid_schema", "length", "rewrite"})
HANG_SECONDS = 600.0
# How often sleeping requests look for a reset, a stop or a vanished client.
POLL_SECONDS = 0.05


class FaultRule:
    """One fault injection rule (see the module docstring for its fields)."""

    _KEYS = frozenset({"kind", "status", "seconds", "times", "match", "path", "probability", "seed"})

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

    def applies_to(self, call: Call) -> bool:
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

    def take(self, call: Call) -> bool:
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
