"""Who may talk to the assistant: the access token, and who may read ``/metrics``.

With ``server.access_token`` set, every path but ``/health`` and the login
page needs the token: deny by default, so an endpoint added later is guarded
without anyone remembering to. A client shows it in one of two ways:

- ``Authorization: Bearer <token>``: curl, scripts, Prometheus;
- the ``twin_access`` cookie, for browsers. A page cannot add a header to
  what pipecat's prebuilt client sends (its ``/start`` endpoint and the
  offers are fixed in its bundle), but the browser sends a same-origin
  cookie with each of them. The server sets the cookie (HttpOnly,
  SameSite=Strict, Secure over HTTPS) once the user has given the token:
  on ``/login`` (a small page; a browser opening any page without the
  token is sent there), or with ``?token=<token>`` on any page, which
  then redirects to the same address without it.

The cookie holds an HMAC of the token, not the token; a new token makes
every cookie worthless. Tokens and cookies are compared in constant time.

Refusals: 401 with a JSON ``detail`` saying what was missing or wrong (and
``WWW-Authenticate: Bearer``); a websocket is accepted and closed at once
with code 1008 and the reason, so its client can read why.

``/metrics`` follows ``server.metrics_access``: ``local`` answers clients on
the loopback only (403 to others), ``open`` anyone, ``token`` those with the
token, as above.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from loguru import logger
from pydantic import BaseModel, Field
from starlette.datastructures import URL
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from pipecat_app.config import MetricsAccess

LOGIN_PAGE = Path(__file__).resolve().parent.parent / "static" / "login.html"

#: The browser's cookie; it holds :meth:`AccessToken.cookie_value`, not the token.
COOKIE = "twin_access"
#: How long a browser keeps the cookie (Chromium keeps none longer than 400 days).
COOKIE_MAX_AGE_S = 400 * 24 * 3600
#: Paths anyone may ask for: the health check, and the page that asks for the token.
OPEN_PATHS = frozenset({"/health", "/login", "/login/status"})
#: Websocket close code for a refused client (RFC 6455: policy violation).
WS_POLICY_VIOLATION = 1008

MISSING = (
    "access token missing: send 'Authorization: Bearer <token>', or open /login in a "
    "browser (or any page with ?token=<token>)"
)
WRONG = "access token wrong: ask the assistant's operator for the current one"


class AccessToken:
    """``server.access_token``: checks a client's token or cookie; empty = everyone may."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._cookie = (
            hmac.new(self._token, b"twin-app browser cookie", hashlib.sha256).hexdigest().encode()
            if token
            else b""
        )

    @property
    def required(self) -> bool:
        """Whether clients must show a token."""
        return bool(self._token)

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time)."""
        return self.required and hmac.compare_digest(given.encode(), self._token)

    def cookie_value(self) -> str:
        """What the browser's cookie holds once the user has given the token."""
        return self._cookie.decode()

    def check(self, connection: HTTPConnection) -> str | None:
        """None when ``connection`` may pass, else the reason it may not."""
        if not self.required:
            return None
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return None if self.matches(credentials.strip()) else WRONG
        cookie = connection.cookies.get(COOKIE)
        if cookie is None:
            return MISSING
        return None if hmac.compare_digest(cookie.encode(), self._cookie) else WRONG

    def set_cookie(self, response: Response, *, secure: bool) -> None:
        """Give the browser the cookie that stands for the token."""
        response.set_cookie(
            COOKIE,
            self.cookie_value(),
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )


def _on_loopback(connection: HTTPConnection) -> bool:
    host = connection.client.host if connection.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_page_visit(connection: HTTPConnection) -> bool:
    """A browser opening a page (not a script's fetch, which does not ask for HTML)."""
    return connection.scope.get("method") in ("GET", "HEAD") and "text/html" in (
        connection.headers.get("accept", "")
    )


def _refused(status: int, reason: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": reason}, status_code=status, headers=headers)


class AccessGuard:
    """ASGI middleware: lets through the clients ``server.access_token`` and
    ``server.metrics_access`` allow, and answers the others itself."""

    def __init__(self, app: ASGIApp, *, token: AccessToken, metrics_access: MetricsAccess) -> None:
        self.app = app
        self.token = token
        self.metrics_access = metrics_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope, receive)
        refusal = self._refusal(connection)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, reason = refusal
        logger.bind(
            event="access_refused", path=scope["path"], status=status, client=_client(connection)
        ).info(f"refused {scope['path']}: {reason}")
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive, send)
            await websocket.accept()
            await websocket.close(code=WS_POLICY_VIOLATION, reason=reason[:120])
            return
        response = self._answer(connection, status, reason)
        await response(scope, receive, send)

    def _refusal(self, connection: HTTPConnection) -> tuple[int, str] | None:
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
        elif path in OPEN_PATHS:
            return None
        reason = self.token.check(connection)
        return None if reason is None else (401, reason)

    def _answer(self, connection: HTTPConnection, status: int, reason: str) -> Response:
        """What a refused HTTP request gets: a cookie for ``?token=``, the login page, or 401."""
        given = connection.query_params.get("token")
        if status == 401 and given is not None and connection.scope["method"] in ("GET", "HEAD"):
            if not self.token.matches(given):
                return _refused(401, WRONG)
            # The same address without the token, so it leaves the address bar.
            rest = [(k, v) for k, v in connection.query_params.multi_items() if k != "token"]
            target = URL(path=connection.url.path, query=urlencode(rest))
            response = RedirectResponse(str(target), status_code=303)
            self.token.set_cookie(response, secure=connection.url.scheme == "https")
            return response
        if status == 401 and _is_page_visit(connection):
            page = connection.url.path + (
                f"?{connection.url.query}" if connection.url.query else ""
            )
            return RedirectResponse(f"/login?{urlencode({'next': page})}", status_code=303)
        return _refused(status, reason)


def _client(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "?"


class Login(BaseModel):
    """The token a user typed on the login page."""

    token: str = Field(max_length=1024)


def login_router(token: AccessToken) -> APIRouter:
    """``/login``: the page asking for the token, its status, the POST that sets the cookie."""
    router = APIRouter()

    @router.get("/login", include_in_schema=False)
    async def login_page() -> FileResponse:
        return FileResponse(LOGIN_PAGE, media_type="text/html")

    @router.get("/login/status")
    async def login_status(request: Request) -> dict[str, bool]:
        """Whether a token is needed, and whether this client has shown it."""
        return {"required": token.required, "granted": token.check(request) is None}

    @router.post("/login", status_code=204, responses={401: {"description": "Wrong token."}})
    async def login(body: Login, request: Request) -> Response:
        """Check the token and give the browser its cookie."""
        if not token.required:
            return Response(status_code=204)
        if not token.matches(body.token):
            logger.bind(event="access_refused", path="/login", client=_client(request)).info(
                "refused /login: wrong token"
            )
            return _refused(401, WRONG)
        response = Response(status_code=204)
        token.set_cookie(response, secure=request.url.scheme == "https")
        return response

    return router
