"""A job's metadata record: what `submit` decided and what its stages learnt along the way.

Stored as one Redis hash per job (a JSON value per field, so a stage updates its own fields
without rewriting the others); read back as this typed model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["JobMeta"]


class JobMeta(BaseModel):
    # Records written by other releases may carry fields this one does not know.
    model_config = ConfigDict(extra="allow")

    # -- set by submit ---------------------------------------------------------------------------
    features: list[str] = Field(default_factory=list)  # "enhance", "summary", in pipeline order
    template_id: str | None = None
    n_chunks: int = 0  # for a recording: set once it is recognised
    created_at: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    input: Literal["text", "audio"] = "text"
    audio: dict[str, Any] | None = None  # name and format facts of a recording

    # -- recognition (maie.asr_tasks) ------------------------------------------------------------
    asr_parts: int = 0
    asr_spans: list[tuple[int, int]] = Field(default_factory=list)  # sample ranges of the parts
    asr_started_at: float | None = None
    audio_seconds: float | None = None
    asr_done: bool = False
    version_asr: dict[str, Any] | None = None

    # -- summary (maie.tasks) --------------------------------------------------------------------
    summary_levels: int = 0  # levels of notes taken for a transcript too long for one call
    context_scale: float = 1.0  # lowered after the server refused what MAIE counted as fitting

    # -- reconciler ------------------------------------------------------------------------------
    redispatches: int = 0

    # Earlier releases kept the enhancement version here, not in each chunk record.
    version_enhance: dict[str, Any] | None = None

    @property
    def waits_for_recognition(self) -> bool:
        return self.input == "audio" and not self.asr_done

    @property
    def enhanced_chunks(self) -> int:
        """How many chunk tasks the job runs (none when it does not enhance)."""
        return self.n_chunks if "enhance" in self.features else 0
