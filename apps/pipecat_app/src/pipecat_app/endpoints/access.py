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

The guard itself is twin_common's (``twin_common.access``), shared with the
vision service: the bearer check, ``server.metrics_access`` for ``/metrics``,
and the refusals (401 with a JSON ``detail``, a websocket closed with 1008).
This module adds the browser's ways in: the cookie, ``?token=`` and the
login page.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from loguru import logger
from pydantic import BaseModel, Field
from starlette.datastructures import URL
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp
from twin_common.access import AccessGuard, BearerToken, client_host, refused
from twin_common.config import MetricsAccess

LOGIN_PAGE = Path(__file__).resolve().parent.parent / "static" / "login.html"

#: The browser's cookie; it holds :meth:`AccessToken.cookie_value`, not the token.
COOKIE = "twin_access"
#: How long a browser keeps the cookie (Chromium keeps none longer than 400 days).
COOKIE_MAX_AGE_S = 400 * 24 * 3600
#: Paths anyone may ask for: the health check, and the page that asks for the token.
OPEN_PATHS = frozenset({"/health", "/login", "/login/status"})
MISSING = (
    "access token missing: send 'Authorization: Bearer <token>', or open /login in a "
    "browser (or any page with ?token=<token>)"
)
WRONG = "access token wrong: ask the assistant's operator for the current one"


class AccessToken(BearerToken):
    """``server.access_token``: checks a client's token or cookie; empty = everyone may."""

    missing = MISSING
    wrong = WRONG

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self._cookie = (
            hmac.new(self._token, b"twin-app browser cookie", hashlib.sha256).hexdigest().encode()
            if token
            else b""
        )

    def cookie_value(self) -> str:
        """What the browser's cookie holds once the user has given the token."""
        return self._cookie.decode()

    def check_without_header(self, connection: HTTPConnection) -> str | None:
        """A browser shows the cookie instead of a header."""
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


def _is_page_visit(connection: HTTPConnection) -> bool:
    """A browser opening a page (not a script's fetch, which does not ask for HTML)."""
    return connection.scope.get("method") in ("GET", "HEAD") and "text/html" in (
        connection.headers.get("accept", "")
    )


class BrowserAccessGuard(AccessGuard):
    """twin_common's guard, with a browser's ways to give the token: ``?token=`` on
    any page sets the cookie, and a page visit without it is sent to ``/login``.
    Refusals are logged as ``access_refused`` events."""

    def __init__(self, app: ASGIApp, *, token: AccessToken, metrics_access: MetricsAccess) -> None:
        super().__init__(app, token=token, metrics_access=metrics_access, open_paths=OPEN_PATHS)
        self.browser_token = token

    def log_refusal(self, connection: HTTPConnection, status: int, reason: str) -> None:
        path = connection.url.path
        logger.bind(
            event="access_refused", path=path, status=status, client=client_host(connection)
        ).info(f"refused {path}: {reason}")

    def answer(self, connection: HTTPConnection, status: int, reason: str) -> Response:
        """What a refused HTTP request gets: a cookie for ``?token=``, the login page, or 401."""
        given = connection.query_params.get("token")
        if status == 401 and given is not None and connection.scope["method"] in ("GET", "HEAD"):
            if not self.token.matches(given):
                return refused(401, WRONG)
            # The same address without the token, so it leaves the address bar.
            rest = [(k, v) for k, v in connection.query_params.multi_items() if k != "token"]
            target = URL(path=connection.url.path, query=urlencode(rest))
            response = RedirectResponse(str(target), status_code=303)
            self.browser_token.set_cookie(response, secure=connection.url.scheme == "https")
            return response
        if status == 401 and _is_page_visit(connection):
            page = connection.url.path + (
                f"?{connection.url.query}" if connection.url.query else ""
            )
            return RedirectResponse(f"/login?{urlencode({'next': page})}", status_code=303)
        return refused(status, reason)


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
            logger.bind(event="access_refused", path="/login", client=client_host(request)).info(
                "refused /login: wrong token"
            )
            return refused(401, WRONG)
        response = Response(status_code=204)
        token.set_cookie(response, secure=request.url.scheme == "https")
        return response

    return router
