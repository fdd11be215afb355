"""An in-process vLLM engine serving one task (`LLM_BACKEND=local_vllm`).

One engine thread owns the `vllm.LLM` and runs continuous batching: it adds every pending request
to the engine as soon as it arrives and steps the engine while any is unfinished. `chat()` may be
called from many threads at once (a Celery threads pool); each call queues its request and waits
on a future, so concurrent calls share the engine's batches instead of running one after another.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any, Unpack

from maie.backends.base import STRUCTURED_OUTPUTS_CONFIG, Completion, Decoding, DecodingArgs, Message
from maie.errors import BackendRejected, BackendUnavailable, ConfigError, ContextExceeded
from maie.settings import LlmTaskSettings

__all__ = ["LocalVllmBackend"]

logger = logging.getLogger(__name__)

_MISSING_VLLM = (
    "LLM_BACKEND=local_vllm needs the vllm module: pip install 'maie[cpu]' (CPU) or 'maie[gpu]' (GPU)"
)
_GIB = 1 << 30
# How often a waiting caller checks that the engine process is still alive.
_LIVENESS_POLL_SECONDS = 1.0
# How long close() waits for the engine thread to shut the engine down.
_CLOSE_TIMEOUT_SECONDS = 60.0

# Engines start one at a time: two loads at once on a small machine only slow each other down.
_LOAD_LOCK = threading.Lock()


@dataclass
class _Pending:
    prompt_token_ids: list[int]
    params: Any  # vllm.SamplingParams
    future: Future[Completion] = field(default_factory=Future)
    # Set by the caller that stopped waiting: the engine thread aborts the request.
    abandoned: bool = False


def await_completion(
    future: Future[Completion], timeout: float, alive: Callable[[], str | None], what: str
) -> Completion:
    """The completion of `future`, waiting at most `timeout` s. `alive()` returns why the engine
    is dead, or None; checked every second, so a dead engine fails its callers at once."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return future.result(timeout=max(0.0, min(_LIVENESS_POLL_SECONDS, left)))
        except FutureTimeout:
            pass
        dead = alive()
        if dead is not None and not future.done():
            raise BackendUnavailable(dead)
        if time.monotonic() >= deadline and not future.done():
            raise BackendUnavailable(f"{what} did not answer within {timeout:g} s")


class LocalVllmBackend:
    """The LLMBackend of one task, served by a vLLM engine in this process."""

    kind = "local_vllm"

    def __init__(self, task: str, cfg: LlmTaskSettings) -> None:
        self.task = task
        self.model = cfg.model
        self.endpoint = f"local:{cfg.model}"
        self._cfg = cfg
        self.timeout = cfg.request_timeout_seconds
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ConfigError(_MISSING_VLLM) from exc

        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._dead: str | None = None  # why the engine stopped, once it has
        self._in_flight: dict[str, _Pending] = {}  # engine thread only
        self._ids = itertools.count()
        # Set by the engine thread before `loaded` resolves.
        self._llm: Any = None
        self._tokenizer: Any = None
        self._default_sampling: dict[str, Any] = {}
        loaded: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(loaded,), name=f"vllm-engine-{task}", daemon=True
        )
        self._thread.start()
        loaded.result()  # re-raises a load failure here, in the constructor

    # -- the LLMBackend protocol ------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        return int(self._llm.llm_engine.model_config.max_model_len)

    @property
    def discovered(self) -> bool:
        return True  # loaded in the constructor

    def discover(self) -> None:
        """Nothing to ask: the engine's own configuration is the truth once it is loaded."""

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def chat(self, messages: Sequence[Message], **decoding: Unpack[DecodingArgs]) -> Completion:
        d = Decoding(**decoding)
        if self._dead is not None:
            raise BackendUnavailable(self._dead)
        prompt_ids = self._render(messages)
        limit = self.max_model_len
        room = limit - len(prompt_ids)
        if room < 1:
            raise ContextExceeded(
                f"prompt of {len(prompt_ids)} tokens leaves no room for a reply in the "
                f"{limit}-token context of {self.model} ({self.task})"
            )
        pending = _Pending(prompt_ids, self._sampling_params(replace(d, max_tokens=min(d.max_tokens, room))))
        self._queue.put(pending)
        try:
            what = f"LLM engine of {self.task}"
            return await_completion(pending.future, self.timeout, self._why_dead, what)
        except BackendUnavailable:
            pending.abandoned = True  # a timed-out request must not keep a slot of the batch
            raise

    @property
    def dead(self) -> bool:
        """The engine has stopped: this backend can serve nothing more (see get_backend)."""
        return self._dead is not None or not self._thread.is_alive()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(_CLOSE_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                logger.warning("LLM engine of %s did not shut down in time", self.task)

    def _why_dead(self) -> str | None:
        if self._dead is None and self._engine_alive():
            return None
        reason = self._dead or self._engine_dead_message()
        self._wake_engine_thread()
        return reason

    def _engine_alive(self) -> bool:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            self._llm.llm_engine.engine_core.ensure_alive()
        except EngineDeadError:
            return False
        except AttributeError:  # an in-process engine core has no liveness check
            pass
        return self._thread.is_alive()

    def _wake_engine_thread(self) -> None:
        # vLLM 0.32: when the engine process dies during step(), the step waits forever on its
        # output queue. Hand it the error it would have raised, so the engine thread fails
        # every request and stops.
        from vllm.v1.engine.exceptions import EngineDeadError

        outputs = getattr(self._llm.llm_engine.engine_core, "outputs_queue", None)
        if isinstance(outputs, queue.Queue):
            outputs.put_nowait(EngineDeadError())

    # -- request preparation (caller threads) ----------------------------------------------

    def _render(self, messages: Sequence[Message]) -> list[int]:
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        # vLLM's tokenizer is safe to share between threads (it lends out copies).
        prompt = self._tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        # The template already wrote any BOS token into the text.
        ids: list[int] = self._tokenizer.encode(prompt, add_special_tokens=False)
        return ids

    def _sampling_params(self, d: Decoding) -> Any:
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        # The model's generation_config defaults first, as `vllm serve` applies them too.
        args: dict[str, Any] = dict(self._default_sampling)
        args.update(
            max_tokens=d.max_tokens, temperature=d.temperature, top_p=d.top_p, ignore_eos=d.ignore_eos
        )
        try:
            if d.json_schema is not None or d.regex is not None:
                args["structured_outputs"] = StructuredOutputsParams(json=d.json_schema, regex=d.regex)
            return SamplingParams.from_optional(**args)
        except (ValueError, TypeError) as exc:
            raise BackendRejected(f"invalid sampling parameters: {exc}") from exc

    # -- the engine thread ------------------------------------------------------------------

    def _load(self) -> Any:
        import vllm
        from vllm.platforms import current_platform

        cfg = self._cfg
        args: dict[str, Any] = {
            "model": cfg.model,
            "tokenizer": cfg.tokenizer,
            "dtype": cfg.dtype,
            "max_model_len": cfg.max_model_len,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "max_num_seqs": cfg.max_num_seqs,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "enforce_eager": cfg.enforce_eager,
            # Compact JSON only: with free whitespace between fields, small models can emit
            # whitespace until max_tokens runs out and the object never closes. The flag is
            # per engine (the per-request one is ignored) and needs an explicit backend.
            "structured_outputs_config": dict(STRUCTURED_OUTPUTS_CONFIG),
        }
        if current_platform.is_cpu():
            # Same effect as VLLM_CPU_KVCACHE_SPACE (which still wins when set), but per engine:
            # the environment variable is process-wide and two engines may share the process.
            # Without either, the CPU build reserves gpu_memory_utilization of all RAM.
            args["kv_cache_memory_bytes"] = cfg.cpu_kvcache_space_gb * _GIB
        logger.info("loading LLM engine: task=%s model=%s", self.task, cfg.model)
        started = time.monotonic()
        with _LOAD_LOCK:
            llm = vllm.LLM(**args)
        logger.info(
            "LLM engine loaded: task=%s model=%s max_model_len=%d in %.1f s",
            self.task,
            cfg.model,
            llm.llm_engine.model_config.max_model_len,
            time.monotonic() - started,
        )
        return llm

    def _run(self, loaded: Future[None]) -> None:
        try:
            self._llm = self._load()
            self._tokenizer = self._llm.get_tokenizer()
            self._default_sampling = self._llm.llm_engine.model_config.get_diff_sampling_param()
        except BaseException as exc:
            self._dead = f"LLM engine of {self.task} failed to load"
            loaded.set_exception(
                ConfigError(f"could not load the {self.task} LLM engine from {self.model}: {exc}")
            )
            return
        loaded.set_result(None)
        try:
            self._serve()
        except BaseException as exc:
            logger.exception("LLM engine of %s failed", self.task)
            self._fail(f"{self._engine_dead_message()}: {exc}")
        finally:
            self._shutdown()

    def _serve(self) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        engine = self._llm.llm_engine
        in_flight = self._in_flight
        while True:
            # Block only when idle; while requests run, pick up new ones between steps.
            try:
                item = self._queue.get(block=not in_flight)
            except queue.Empty:
                item = _NOTHING
            while item is not _NOTHING:
                if item is None:
                    self._fail(f"LLM engine of {self.task} was closed")
                    return
                assert isinstance(item, _Pending)
                request_id = str(next(self._ids))
                try:
                    engine.add_request(
                        request_id, TokensPrompt(prompt_token_ids=item.prompt_token_ids), item.params
                    )
                    in_flight[request_id] = item
                except EngineDeadError:
                    item.future.set_exception(BackendUnavailable(self._engine_dead_message()))
                    self._fail(self._engine_dead_message())
                    return
                except Exception as exc:  # the engine refused this one request
                    item.future.set_exception(BackendRejected(f"LLM engine refused: {exc}"))
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = _NOTHING
            for request_id in [r for r, p in in_flight.items() if p.abandoned]:
                engine.abort_request([request_id])
                in_flight.pop(request_id)
            if not in_flight:
                continue
            # An exception here (EngineDeadError or worse) ends the engine: see _run.
            outputs = engine.step()
            for output in outputs:
                if output.finished:
                    done = in_flight.pop(output.request_id, None)
                    if done is not None:
                        done.future.set_result(_completion(output))

    def _engine_dead_message(self) -> str:
        return f"LLM engine of {self.task} ({self.model}) is dead"

    def _fail(self, reason: str) -> None:
        """Stop taking work and fail everything queued or running."""
        self._dead = reason
        for pending in self._in_flight.values():
            pending.future.set_exception(BackendUnavailable(reason))
        self._in_flight.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(BackendUnavailable(reason))

    def _shutdown(self) -> None:
        try:
            self._llm.llm_engine.engine_core.shutdown()
        except Exception:  # already dead: nothing left to release
            logger.debug("LLM engine shutdown of %s failed", self.task, exc_info=True)


_NOTHING: Any = object()


def _completion(output: Any) -> Completion:
    first = output.outputs[0]
    return Completion(
        text=first.text,
        finish_reason=first.finish_reason,
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(first.token_ids),
    )
