"""The HTTP server: browser client, WebRTC offers, text chat, health and metrics.

Routes:

- ``/`` redirects to ``/client/``, pipecat's prebuilt voice client.
- ``/start``, ``/api/offer``, ``/sessions/{id}/api/offer``: WebRTC signalling.
- ``POST /api/chat``, ``/ws/chat``: typed conversations.
- ``/health``: 200 while the app is up: ``ok``, or ``degraded`` with the reasons
  (no expert known, discovery or the prompt watch failing), and the session
  counts and caps.
- ``/metrics``: Prometheus text format from ``pipecat_app.metrics.REGISTRY``.
- ``/login``: the page where a browser gives the access token once.

Who may talk to it (``endpoints/access.py``): with ``server.access_token``
set, every path but ``/health`` and ``/login`` needs the token (a bearer
header, or the cookie the browser gets for it); ``/metrics`` follows
``server.metrics_access``. Without a token, a warning at start says that
anyone who can reach the address may talk to the assistant. With
``server.tls_cert_file`` and ``tls_key_file`` it serves HTTPS, which browsers
on other machines need before they give a page the microphone.

Limits: voice and text sessions have caps of their own (``endpoints/sessions.py``);
request bodies over ``server.max_body_bytes`` get 413 (FastAPI's body limit);
a body that does not validate gets 422 naming the fields, never repeating
the input.

SIGTERM and SIGINT (uvicorn's handlers) stop new requests, end every session
and exit 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from twin_common.serve import serve_app

from pipecat_app.config import AppConfig, ServerConfig
from pipecat_app.endpoints.access import AccessToken, BrowserAccessGuard, login_router
from pipecat_app.endpoints.sessions import Kind, Refused
from pipecat_app.endpoints.text import TextSessions
from pipecat_app.endpoints.voice import WebRTCSessions
from pipecat_app.logs import setup_logging
from pipecat_app.metrics import REGISTRY, SESSIONS_REJECTED
from pipecat_app.session import TwinFactory, shared_twins

TEXT_PATHS = ("/api/chat", "/ws/chat")


def _kind(request: Request) -> Kind:
    return "text" if request.url.path in TEXT_PATHS else "voice"


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's error response, with refusals and bodies too large counted."""
    assert isinstance(exc, HTTPException)
    if isinstance(exc, Refused):
        exc.count()
    elif exc.status_code == 413:
        SESSIONS_REJECTED.labels(kind=_kind(request), reason="too_large").inc()
    return await http_exception_handler(request, exc)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """422 naming each field and what is wrong with it; the input is never sent back."""
    assert isinstance(exc, RequestValidationError)
    SESSIONS_REJECTED.labels(kind=_kind(request), reason="invalid").inc()
    errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()[:10]]
    return JSONResponse({"detail": errors}, status_code=422)


def _address(server: ServerConfig) -> str:
    scheme = "https" if server.tls else "http"
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{scheme}://{host}:{server.port}/"


def _log_access(server: ServerConfig, token: AccessToken) -> None:
    """Say at start who may talk to the assistant, and what to set to change it."""
    where = f"{server.host}:{server.port}"
    if not token.required:
        logger.bind(event="access_open").warning(
            f"no access token (server.access_token): anyone who can reach {where} can talk "
            "to the assistant and use its tools. That is fine for a demo on this machine "
            "(127.0.0.1); set server.access_token (TWIN_APP__SERVER__ACCESS_TOKEN) before "
            "others can reach it"
        )
    elif not server.tls:
        logger.bind(event="access_token_in_clear").warning(
            f"the access token crosses the network in clear: {where} serves plain HTTP; set "
            "server.tls_cert_file and server.tls_key_file to serve HTTPS"
        )


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

    webrtc = WebRTCSessions(config, twin_factory=twin_factory)
    token = AccessToken(config.server.access_token.get_secret_value())
    text = TextSessions(config, twin_factory=twin_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if cluster is not None:
            await cluster.start()
        expiry = asyncio.create_task(text.sessions.expire_forever(), name="text-idle-expiry")
        logger.bind(event="started").info(f"twin-app listening on {_address(config.server)}")
        _log_access(config.server, token)
        yield
        logger.bind(event="stopping").info("stopping: ending every session")
        expiry.cancel()
        await text.close()
        await webrtc.close()
        if cluster is not None:
            await cluster.stop()
        logger.bind(event="stopped").info("twin-app stopped")

    app = FastAPI(title="twin-app", lifespan=lifespan, max_body_size=config.server.max_body_bytes)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(BrowserAccessGuard, token=token, metrics_access=config.server.metrics_access)

    @app.get("/health")
    async def health() -> dict[str, object]:
        # 200 either way: a degraded app still answers (the fallback reply),
        # and a restart by Nomad would not bring Consul or an expert back.
        state, reasons = cluster.health() if cluster is not None else ("ok", [])
        return {
            "status": state,
            "reasons": reasons,
            "sessions": {
                "voice": len(webrtc.sessions),
                "text": len(text.sessions),
                "max": config.server.max_sessions,
                "max_text": config.server.max_text_sessions,
            },
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.include_router(login_router(token))
    app.include_router(text.router())
    app.include_router(webrtc.router())
    webrtc.mount_client(app)
    app.state.webrtc = webrtc
    app.state.text = text
    return app


def serve(config: AppConfig) -> None:
    """Run the server until SIGTERM/SIGINT, then end every session and return."""
    setup_logging(config.log)
    serve_app(
        create_app(config),
        config.server,
        on_exit=lambda signal: logger.bind(event="exit", signal=signal).info("exiting"),
        log_config=None,
        # /ws/chat's messages have the request bodies' cap (close code 1009).
        ws_max_size=config.server.max_body_bytes,
    )
