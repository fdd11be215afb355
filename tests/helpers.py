"""What several test modules share: polling, the fake servers' request logs, transcripts and the
checks on their results, the `maie` command and the `maie api` process, the malformed submissions, and
the engine tier's template and job. Fixtures defined here are imported by the modules that use them.
The reliability rig is in rig.py, the operations scripts' Redis and environment in ops.py.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from conftest import base_env
from fakes.process import ManagedProcess, free_port
from fakes.server_process import FakeServerProcess

from maie import Job, JobResult, submit
from maie.enhance import normalize_words
from maie.settings import load_settings

# -- waiting: for a condition, for an HTTP endpoint ---------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def poll(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout} s")


# -- the fake servers' requests, transcripts and the checks on a job's result ---------------------


def chat_requests(server: FakeServerProcess, match: str | None = None) -> list[dict[str, Any]]:
    entries = [e for e in server.log() if str(e["path"]).endswith("/chat/completions")]
    if match is not None:
        entries = [e for e in entries if match in str(e["messages"])]
    return entries


def in_flight(server: FakeServerProcess, match: str | None = None) -> list[dict[str, Any]]:
    """Requests the server is still working on (delayed or hanging)."""
    return [e for e in chat_requests(server, match) if e["duration"] is None]


def content_words(text: str) -> list[str]:
    """The spoken words, without speaker labels (a turn split across chunks repeats its label)."""
    return normalize_words("\n".join(re.sub(r"^[^:\n]{1,40}:\s", "", line) for line in text.splitlines()))


def transcript(lines: int, marker: dict[int, str] | None = None) -> str:
    """A transcript of distinct speaker lines; `marker` puts a unique word into chosen lines."""
    speakers = ("Ann", "Bob", "Cleo")
    out = []
    for i in range(lines):
        extra = f" {marker[i]}" if marker and i in marker else ""
        out.append(f"{speakers[i % 3]}: line {i} we talk about item number {i} and its plan{extra}")
    return "\n".join(out) + "\n"


def n_chunks(job: Job) -> int:
    return job.store.meta(job.id).n_chunks


def assert_complete_once(result: JobResult, source: str, n: int) -> None:
    """Success, every chunk present exactly once and in order, no word lost or doubled."""
    assert result.status == "SUCCESS", result.error
    assert [c.index for c in result.chunks] == list(range(n))
    assert result.enhanced_text is not None
    assert content_words(result.enhanced_text) == content_words(source)


# -- the `maie` command and the HTTP API as users start them (`maie api`, a uvicorn subprocess) ----


def maie_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`maie ARGS` as its own process."""
    maie = Path(sys.executable).parent / "maie"
    return subprocess.run(
        [str(maie), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


KEY = "test-api-key-0123456789abcdef0123456789"


class ApiServer(ManagedProcess):
    """`maie api --port P` in its own process, with `env`; stop() ends it (SIGTERM)."""

    def __init__(self, env: dict[str, str], workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        maie = str(Path(sys.executable).parent / "maie")
        cmd = [maie, "api", "--host", "127.0.0.1", "--port", str(self.port), *args]
        super().__init__("maie api", cmd, workdir / "api.out", env=env, cwd=workdir)
        self.start()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request never
        # goes out on a connection the server is closing at that moment.
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=60,
            headers={"X-API-Key": KEY},
            limits=httpx.Limits(keepalive_expiry=1.0),
        )

    def wait_ready(self, timeout: float = 90) -> Self:  # type: ignore[override]
        return super().wait_ready(self._answers, timeout)

    def _answers(self) -> bool:
        try:
            return self.client.get("/openapi.json").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        self.client.close()
        super().stop(sig, timeout)

    def wait_status(self, task_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        """Poll GET /v1/status until the job's status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/v1/status/{task_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {task_id} still {body['status']} after {timeout} s: {body}")
            time.sleep(0.1)


# -- malformed submissions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One malformed submission: a file (name, bytes), or stdin, plus options and environment."""

    id: str
    content: bytes | None = None
    name: str = "t.txt"
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes | None = None
    expect: str = ""  # a fragment of the one-line message


GOOD = b"Ann: hello there\nBob: hi\n"
BAD_INPUTS = [
    Bad("empty-file", b"", expect="empty"),
    Bad("whitespace-only", b"  \n\t \n", expect="blank"),
    Bad("nul-bytes", b"Ann: hello\x00world\n", expect="NUL"),
    Bad("invalid-utf8", b"Ann: caf\xe9 au lait\n", expect="UTF-8"),
    Bad("control-characters", b"\x01\x02\x03\x04 binary \x05\x06", expect="control"),
    Bad("over-max-input-bytes", b"word " * 400, env={"MAX_INPUT_BYTES": "1000"}, expect="1000"),
    Bad("json-segments-not-a-list", b'{"segments": 3}', name="t.json", expect="segments"),
    Bad("json-list-of-numbers", b"[1, 2, 3]", name="t.json", expect="segment"),
    Bad("json-cut-short", b'{"segments": [{"text": "hi"', name="t.json", expect="JSON"),
    Bad(
        "json-negative-timestamp",
        b'{"segments": [{"start": -1.5, "end": 2.0, "text": "hi"}]}',
        name="t.json",
        expect="negative",
    ),
    Bad(
        "json-reversed-timestamps",
        b'{"segments": [{"start": 5.0, "end": 1.0, "text": "hi"}]}',
        name="t.json",
        expect="before it starts",
    ),
    Bad("srt-reversed-cue", b"1\n00:00:05,000 --> 00:00:01,000\nhello\n", name="t.srt", expect="before"),
    Bad("srt-broken-timing", b"1\n00:00:xx,000 --> 00:00:01,000\nhello\n", name="t.srt", expect="SRT"),
    Bad(
        "vtt-reversed-cue", b"WEBVTT\n\n00:00:05.000 --> 00:00:01.000\nhello\n", name="t.vtt", expect="before"
    ),
    Bad("vtt-broken-timing", b"WEBVTT\n\n00:00:0x.000 --> 00:00:01.000\nhello\n", name="t.vtt", expect="VTT"),
    Bad("unknown-template", GOOD, args=("--template", "no_such_template"), expect="unknown template"),
    Bad("template-id-with-dots", GOOD, args=("--template", "../etc/passwd"), expect="invalid template id"),
    Bad("template-id-absolute-path", GOOD, args=("--template", "/etc/passwd"), expect="invalid template id"),
    Bad("unknown-feature", GOOD, args=("--features", "enhance,translate"), expect="unknown feature"),
    Bad("no-feature", GOOD, args=("--features", ","), expect="no feature"),
    Bad("directory", None, name="a-directory", expect="directory"),
    Bad("missing-file", None, name="missing.txt", expect="missing.txt"),
    Bad("empty-stdin", stdin=b"", expect="empty"),
]


# -- the engine tier: a template with short bounded fields, worker settings, a job ----------------

TRANSCRIPT = (
    "Anna: so the budget for the new remote is twenty euros\n"
    "Ben: and we ship it in may with a yellow case\n"
    "Anna: okay ben will call the factory on monday\n"
)

# One chunk for constrained enhancement: speaker labels, English and Vietnamese, a mark already there.
CONSTRAINED_CHUNK = (
    "Anna: so the budget for the new remote is twenty euros, right\n"
    "Minh: đúng vậy and we ship it in may with a yellow case"
)

# A template with short bounded fields: a random model fills strings up to their maxLength.
TINY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "x-language": "en",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "decided": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["title", "decided", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module", name="templates_dir")
def templates_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("templates")
    bundle = root / "tiny_notes"
    bundle.mkdir()
    (bundle / "schema.json").write_text(json.dumps(TINY_SCHEMA, indent=2))
    (bundle / "example.json").write_text(json.dumps({"title": "Budget", "decided": True, "tags": ["x"]}))
    (bundle / "prompt.jinja").write_text(
        "Summarise the transcript as JSON matching this schema:\n{{ schema_json }}\n\n"
        "Transcript:\n{{ transcript }}\n"
    )
    return root


def engine_env(templates: Path, **extra: str) -> dict[str, str]:
    return base_env(
        HF_HUB_OFFLINE="1",
        TEMPLATES_DIR=str(templates),
        LLM_ENHANCE__MAX_MODEL_LEN="1024",
        LLM_SUM__MAX_MODEL_LEN="2048",
        LLM_ENHANCE__ENFORCE_EAGER="true",
        LLM_SUM__ENFORCE_EAGER="true",
        LLM_SUM__MAX_TOKENS="256",
        LLM_SERVER__REQUEST_TIMEOUT_SECONDS="120",
        **extra,
    )


def run_job(templates: Path, **kwargs: Any) -> JobResult:
    settings = load_settings(env_file=None, templates_dir=templates)
    return submit(TRANSCRIPT, template_id="tiny_notes", settings=settings, **kwargs).wait(timeout=300)
