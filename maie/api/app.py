"""The HTTP API application: middleware, error answers, the routes, and its own health.

The routes are a thin layer over `maie.submit` and `maie.Job`: nothing queues, reads or writes a job
any other way than the Python API and the CLI do, and no state is kept between requests
(everything is in Redis), so instances can run side by side behind a load balancer. Routes are
plain functions: FastAPI runs them in its thread pool, since `submit` and `Job` talk to Redis
synchronously.
"""

from __future__ import annotations

import logging
import os

import redis
from fastapi import FastAPI, Response
from kombu.exceptions import KombuError

from maie.api.auth import ApiKeyMiddleware
from maie.api.catalog import catalog_router
from maie.api.compat import pipeline_version
from maie.api.errors import install_error_handlers
from maie.api.jobs import jobs_router
from maie.api.limits import BodyLimitMiddleware
from maie.api.models import HealthResponse
from maie.api.openapi import CURL
from maie.celery import client_app
from maie.errors import BackendUnavailable, ConfigError
from maie.lanes import pool_of
from maie.logs import set_pool, setup_logging
from maie.names import QUEUES
from maie.settings import Settings, load_settings
from maie.submit import queue_depths

__all__ = ["create_app", "INSECURE_ENV"]

log = logging.getLogger("maie.api")

# Set by `maie api --insecure` for the server processes it starts: serve without a key.
INSECURE_ENV = "MAIE_API_INSECURE"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application; refuses to start without SECRET_API_KEY unless started --insecure."""
    s = settings or load_settings()
    key = s.secret_api_key.get_secret_value() if s.secret_api_key else ""
    if not key and os.environ.get(INSECURE_ENV) != "1":
        raise ConfigError(
            "SECRET_API_KEY is not set: the API does not start without a key "
            "(or start it with `maie api --insecure`, which serves on 127.0.0.1 only)"
        )
    # The same app.log and errors.log as the pools, each line tagged pool=api.
    set_pool("api")
    setup_logging(s.log_dir, s.log_level, max_bytes=s.log_max_bytes, backups=s.log_backup_count)
    api = FastAPI(
        title="MAIE API",
        version=pipeline_version().removeprefix("maie ").strip() or "0",
        summary="Speech transcripts to clean text and structured summaries, over HTTP.",
        description=(
            "Submit a transcript, poll its status, read its results. Send the key in the "
            "`X-API-Key` header on every `/v1/` route except `/v1/templates`." + CURL
        ),
    )
    api.add_middleware(BodyLimitMiddleware, max_bytes=s.api_max_upload_bytes)
    api.add_middleware(ApiKeyMiddleware, expected=key.encode() if key else None)
    install_error_handlers(api)
    # Registered in this order, which is the order of the OpenAPI document's paths.
    api.include_router(jobs_router(s))
    api.include_router(catalog_router(s))
    _add_health_route(api, s)
    return api


def _add_health_route(api: FastAPI, s: Settings) -> None:
    @api.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Redis unreachable."}},
        tags=["Health"],
        summary="Redis, queue depths, the pools consuming each queue",
    )
    def health(response: Response) -> HealthResponse:
        report = _health(s)
        if not report.redis_connected:
            response.status_code = 503
        return report


def _health(s: Settings) -> HealthResponse:
    depths: dict[str, int] = {}
    try:
        depths = queue_depths(s)
        connected = True
    except (redis.RedisError, BackendUnavailable):  # BackendUnavailable: RabbitMQ unreachable
        connected = False
    pools: dict[str, list[str]] = {q: [] for q in QUEUES}
    if connected:
        # Workers answer a broadcast on the broker; one second is plenty on a healthy network.
        try:
            replies = client_app(s).control.inspect(timeout=1.0).active_queues() or {}
        except (KombuError, redis.RedisError, OSError) as exc:
            log.warning("health: cannot ask the workers: %s", exc)
            replies = {}
        for worker, queues in sorted(replies.items()):
            for q in queues or []:
                pool = pool_of(str(q.get("name")))
                if pool in pools and worker not in pools[pool]:  # a pool consumes its lanes too
                    pools[pool].append(worker)
    # The asr pool serves recordings only: a deployment without one is healthy until a recording
    # waits on its queue with no worker to take it.
    active = all(pools[q] for q in QUEUES if q != "asr") and bool(pools["asr"] or not depths.get("asr"))
    return HealthResponse(
        status="healthy" if connected and active else "unhealthy",
        version=pipeline_version(),
        redis_connected=connected,
        queue_depth=sum(depths.values()),
        worker_active=active,
        queues=depths,
        pools=pools,
    )
