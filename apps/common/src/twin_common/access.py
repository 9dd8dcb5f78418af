"""Who may use a service: ``server.access_token`` and ``server.metrics_access``.

:class:`AccessGuard` is ASGI middleware. With a token set, every path but
the open ones (``/health``) needs it: deny by default, so an endpoint added
later is guarded without anyone remembering to. :class:`BearerToken` checks
``Authorization: Bearer <token>`` in constant time; a service that takes the
token in other ways too (the assistant's browser cookie) subclasses it.

Refusals: 401 with a JSON ``detail`` saying what was missing or wrong (and
``WWW-Authenticate: Bearer``); a websocket is accepted and closed at once
with code 1008 and the reason, so its client can read why.

``/metrics`` follows ``server.metrics_access``: ``local`` answers clients on
the loopback only (403 to others), ``open`` anyone, ``token`` those with the
token, as above.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Collection

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from twin_common.config import MetricsAccess

#: Websocket close code for a refused client (RFC 6455: policy violation).
WS_POLICY_VIOLATION = 1008


class BearerToken:
    """``server.access_token``: checks a client's bearer token; empty = everyone may."""

    #: What a client without the token is told.
    missing = "access token missing: send 'Authorization: Bearer <token>'"
    #: What a client with another token is told.
    wrong = "access token wrong"

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def required(self) -> bool:
        """Whether clients must show a token."""
        return bool(self._token)

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return self.required and hmac.compare_digest(given.encode(), self._token)

    def check(self, connection: HTTPConnection) -> str | None:
        """None when ``connection`` may pass, else the reason it may not."""
        if not self.required:
            return None
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return None if self.matches(credentials.strip()) else self.wrong
        return self.check_without_header(connection)

    def check_without_header(self, connection: HTTPConnection) -> str | None:
        """The reason a client without a bearer header may not pass (None: it may)."""
        return self.missing


def client_host(connection: HTTPConnection) -> str:
    """The client's address, for log lines."""
    return connection.client.host if connection.client else "?"


def _on_loopback(connection: HTTPConnection) -> bool:
    try:
        return ipaddress.ip_address(client_host(connection)).is_loopback
    except ValueError:
        return False


def refused(status: int, reason: str) -> Response:
    """The JSON answer to a refused request."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": reason}, status_code=status, headers=headers)


class AccessGuard:
    """ASGI middleware: lets through the clients ``server.access_token`` and
    ``server.metrics_access`` allow, and answers the others itself.

    A service changes what a refused HTTP client gets by overriding
    :meth:`answer`, and where refusals are logged by overriding
    :meth:`log_refusal`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: BearerToken,
        metrics_access: MetricsAccess,
        open_paths: Collection[str] = frozenset({"/health"}),
    ) -> None:
        self.app = app
        self.token = token
        self.metrics_access = metrics_access
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope, receive)
        refusal = self.refusal(connection)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, reason = refusal
        self.log_refusal(connection, status, reason)
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive, send)
            await websocket.accept()
            await websocket.close(code=WS_POLICY_VIOLATION, reason=reason[:120])
            return
        response = self.answer(connection, status, reason)
        await response(scope, receive, send)

    def refusal(self, connection: HTTPConnection) -> tuple[int, str] | None:
        """None to let the request through, else its status and reason."""
        path = connection.url.path
        if path == "/metrics":
            if self.metrics_access == "open":
                return None
            if self.metrics_access == "local":
                if _on_loopback(connection):
                    return None
                return 403, (
                    "/metrics answers only clients on this machine (server.metrics_access "
                    "= 'local'); set it to 'token' or 'open' to scrape from elsewhere"
                )
        elif path in self.open_paths:
            return None
        reason = self.token.check(connection)
        return None if reason is None else (401, reason)

    def answer(self, connection: HTTPConnection, status: int, reason: str) -> Response:
        """What a refused HTTP request gets."""
        return refused(status, reason)

    def log_refusal(self, connection: HTTPConnection, status: int, reason: str) -> None:
        """Say who was refused what, and why."""
        logging.getLogger("twin.access").info(
            "refused %s to %s (%d): %s",
            connection.url.path,
            client_host(connection),
            status,
            reason,
        )
