"""Who may use the service: ``server.access_token`` and ``server.metrics_access``.

As the assistant does it: with a token set, every path but ``/health`` needs
``Authorization: Bearer <token>`` (deny by default, so a path added later is
guarded too), compared in constant time; a refusal is 401 with a JSON
``detail`` and ``WWW-Authenticate: Bearer``. ``/metrics`` answers loopback
clients only (``local``), anyone (``open``) or token holders (``token``).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from vision.config import MetricsAccess

OPEN_PATHS = frozenset({"/health"})


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessMiddleware:
    """ASGI middleware that lets through only the clients the settings allow."""

    def __init__(self, app: ASGIApp, token: str, metrics_access: MetricsAccess) -> None:
        self.app = app
        self.token = token.encode()
        self.metrics_access = metrics_access

    def _token_ok(self, connection: HTTPConnection) -> str | None:
        """None when the token is right (or none is needed), else why not."""
        if not self.token:
            return None
        header = connection.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return "access token missing: send 'Authorization: Bearer <token>'"
        if not hmac.compare_digest(given.strip().encode(), self.token):
            return "access token wrong"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if scope["path"] == "/metrics" and self.metrics_access != "token":
            client = connection.client.host if connection.client else None
            if self.metrics_access == "local" and not _loopback(client):
                response = JSONResponse(
                    {"detail": "/metrics answers clients on this machine only (metrics_access)"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        refusal = self._token_ok(connection)
        if refusal is not None:
            response = JSONResponse(
                {"detail": refusal}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
