"""The HTTP server: browser client, WebRTC offers, text chat, health and metrics.

Routes:

- ``/`` redirects to ``/client/``, pipecat's prebuilt voice client.
- ``/start``, ``/api/offer``, ``/sessions/{id}/api/offer``: WebRTC signalling.
- ``POST /api/chat``, ``/ws/chat``: typed conversations.
- ``/health``: 200 with the session counts while the app is up.
- ``/metrics``: Prometheus text format from ``pipecat_app.metrics.REGISTRY``.

SIGTERM and SIGINT (uvicorn's handlers) stop new requests, end every session
and exit 0.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipecat_app.config import AppConfig
from pipecat_app.endpoints.text import TextSessions
from pipecat_app.endpoints.voice import WebRTCSessions
from pipecat_app.logs import setup_logging
from pipecat_app.metrics import REGISTRY
from pipecat_app.session import TwinFactory, shared_twins


def create_app(config: AppConfig, *, twin_factory: TwinFactory | None = None) -> FastAPI:
    """The FastAPI app for ``config``; sessions are created per client.

    Every session's TwinService reads one :class:`~pipecat_app.twin.ClusterView`
    (experts, vision service, prompt), started with the app and stopped after
    the last session: one set of Consul watches per process, however many
    conversations. ``twin_factory`` replaces the TwinService (tests).
    """
    cluster = None
    if twin_factory is None:
        cluster, twin_factory = shared_twins(config.twin)

    def active() -> int:
        return len(webrtc.sessions) + len(text.sessions) + text.open_sockets

    def has_capacity() -> bool:
        return active() < config.server.max_sessions

    webrtc = WebRTCSessions(config, capacity=has_capacity, twin_factory=twin_factory)
    text = TextSessions(config, capacity=has_capacity, twin_factory=twin_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if cluster is not None:
            await cluster.start()
        logger.bind(event="started").info(
            f"twin-app listening on http://{config.server.host}:{config.server.port}/"
        )
        yield
        logger.bind(event="stopping").info("stopping: ending every session")
        await text.close()
        await webrtc.close()
        if cluster is not None:
            await cluster.stop()
        logger.bind(event="stopped").info("twin-app stopped")

    app = FastAPI(title="twin-app", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {
            "status": "ok",
            "sessions": {
                "voice": len(webrtc.sessions),
                "text": len(text.sessions) + text.open_sockets,
                "max": config.server.max_sessions,
            },
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.include_router(text.router())
    app.include_router(webrtc.router())
    webrtc.mount_client(app)
    app.state.webrtc = webrtc
    app.state.text = text
    return app


def _after_shutdown(signum: int, _frame: FrameType | None) -> None:
    """Uvicorn re-raises the signal it shut down on; by then the stop was clean."""
    logger.bind(event="exit", signal=signal.Signals(signum).name).info("exiting")


def serve(config: AppConfig) -> None:
    """Run the server until SIGTERM/SIGINT, then end every session and return."""
    setup_logging(config.log)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _after_shutdown)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.server.host,
            port=config.server.port,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
