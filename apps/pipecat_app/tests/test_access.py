"""Who may talk to the assistant: the access token on every endpoint but /health, and /metrics.

The app runs in the test's process (FastAPI's ``TestClient``, the whole ASGI
stack with the access middleware), with ``TestClient``'s ``client`` standing
for the address a request comes from. Its expert is a port nobody listens
on: a text turn that gets through answers with TwinService's fallback reply,
which is enough to tell "let through" from "refused" here; the real model
answering a client with the token, over HTTPS from another address, is in
test_https_browser.py. The warning the real process logs when the token is
off is in test_server.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from loguru import logger
from starlette.websockets import WebSocketDisconnect

from inprocess import config_for
from pipecat_app.endpoints.access import COOKIE, MISSING, WRONG
from pipecat_app.server import create_app

TOKEN = "correct horse battery staple"
REMOTE = ("10.20.30.40", 50123)
LOOPBACK = ("127.0.0.1", 50123)


@contextmanager
def served(
    tmp_path, *, client: tuple[str, int] = REMOTE, base_url: str = "http://testserver", **settings
) -> Iterator[TestClient]:
    config = config_for(tmp_path, **settings)
    with TestClient(
        create_app(config), client=client, base_url=base_url, follow_redirects=False
    ) as running:
        yield running


@pytest.fixture
def guarded(tmp_path) -> Iterator[TestClient]:
    with served(tmp_path, server__access_token=f'"{TOKEN}"') as running:
        yield running


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Every endpoint that acts for a user, with a body its handler answers
# (status below 500) once the request is let through.
USER_ENDPOINTS = [
    ("POST", "/api/chat", {"text": "hello"}),
    ("POST", "/start", {}),
    ("POST", "/api/offer", {"type": "offer"}),
    ("PATCH", "/api/offer", {"pc_id": "x", "candidates": []}),
    ("POST", "/sessions/s1/api/offer", {"type": "offer"}),
    ("PATCH", "/sessions/s1/api/offer", {"pc_id": "x", "candidates": []}),
    ("GET", "/voice", None),
    ("GET", "/client/", None),
    ("GET", "/client/local-media.js", None),
]
IDS = [f"{method} {path}" for method, path, _ in USER_ENDPOINTS]


def call(client: TestClient, method: str, path: str, body: Any, **kwargs: Any):
    return client.request(method, path, json=body, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), USER_ENDPOINTS, ids=IDS)
def test_without_the_token_every_user_endpoint_is_a_401_that_says_so(guarded, method, path, body):
    reply = call(guarded, method, path, body)
    assert reply.status_code == 401
    assert reply.json() == {"detail": MISSING}
    assert reply.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), USER_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize(
    "headers",
    [bearer("wrong"), bearer(TOKEN[:-1]), bearer(TOKEN + "x"), {"Cookie": f"{COOKIE}=forged"}],
    ids=["wrong", "prefix", "longer", "forged-cookie"],
)
def test_a_wrong_token_or_cookie_is_a_401_that_says_it_is_wrong(
    guarded, method, path, body, headers
):
    reply = call(guarded, method, path, body, headers=headers)
    assert reply.status_code == 401
    assert reply.json() == {"detail": WRONG}


@pytest.mark.parametrize(("method", "path", "body"), USER_ENDPOINTS, ids=IDS)
def test_with_the_bearer_token_every_user_endpoint_answers(guarded, method, path, body):
    reply = call(guarded, method, path, body, headers=bearer())
    assert reply.status_code != 401
    assert reply.status_code < 500, reply.text


def test_a_chat_with_the_token_gets_its_answer(guarded):
    reply = guarded.post("/api/chat", json={"text": "hello"}, headers=bearer())
    assert reply.status_code == 200
    assert reply.json()["text"]


def test_health_stays_open_with_the_token_on(guarded):
    reply = guarded.get("/health")
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"


def test_the_websocket_without_the_token_is_closed_with_1008_and_the_reason(guarded):
    with guarded.websocket_connect("/ws/chat") as ws:
        ws.send_text("   ")  # a socket let through answers this with an error message
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    assert closed.value.reason.startswith("access token missing")
    assert guarded.get("/health").json()["sessions"]["text"] == 0


def test_the_websocket_with_a_wrong_token_is_closed_with_1008_and_the_reason(guarded):
    with guarded.websocket_connect("/ws/chat", headers=bearer("wrong")) as ws:
        ws.send_text("   ")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    assert closed.value.reason == WRONG


def test_the_websocket_with_the_token_converses(guarded):
    with guarded.websocket_connect("/ws/chat", headers=bearer()) as ws:
        ws.send_json({"text": "hello"})
        pieces = []
        while (message := ws.receive_json())["type"] == "text":
            pieces.append(message["text"])
        assert message == {"type": "end"}
    assert "".join(pieces)


def test_a_page_with_the_token_in_its_address_sets_the_cookie_and_drops_the_token(guarded):
    reply = guarded.get(f"/client/?token={TOKEN}&lang=en")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/client/?lang=en"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert TOKEN.split()[0] not in cookie, "the cookie must not hold the token itself"
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes, "a Secure cookie is never sent back over plain HTTP"
    # The browser sends the cookie with what the page asks for next, no header added.
    assert guarded.post("/start").status_code == 200
    assert guarded.post("/api/chat", json={"text": "hello"}).status_code == 200
    assert guarded.get("/login/status").json() == {"required": True, "granted": True}


def test_the_cookie_is_secure_over_https(tmp_path):
    with served(
        tmp_path, base_url="https://testserver", server__access_token=f'"{TOKEN}"'
    ) as client:
        reply = client.get(f"/?token={TOKEN}")
    assert reply.status_code == 303
    attributes = {part.strip().lower() for part in reply.headers["set-cookie"].split(";")[1:]}
    assert {"httponly", "samesite=strict", "secure"} <= attributes


def test_a_wrong_token_in_the_address_sets_no_cookie(guarded):
    reply = guarded.get("/client/?token=wrong")
    assert reply.status_code == 401
    assert reply.json() == {"detail": WRONG}
    assert "set-cookie" not in reply.headers
    assert guarded.post("/start").status_code == 401


def test_a_browser_opening_a_page_without_the_token_is_sent_to_the_login_page(guarded):
    reply = guarded.get("/voice?x=1", headers={"Accept": "text/html,application/xhtml+xml"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fvoice%3Fx%3D1"
    page = guarded.get("/login")
    assert page.status_code == 200
    assert 'type="password"' in page.text


def test_the_login_page_sets_the_cookie_for_the_right_token_only(guarded):
    assert guarded.get("/login/status").json() == {"required": True, "granted": False}
    wrong = guarded.post("/login", json={"token": "wrong"})
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": WRONG}
    assert "set-cookie" not in wrong.headers
    right = guarded.post("/login", json={"token": TOKEN})
    assert right.status_code == 204
    assert "httponly" in right.headers["set-cookie"].lower()
    assert guarded.get("/login/status").json() == {"required": True, "granted": True}
    assert guarded.get("/voice").status_code == 200


def test_without_a_token_everyone_may_talk_and_the_login_page_says_none_is_needed(tmp_path):
    with served(tmp_path) as client:
        assert client.post("/start").status_code == 200
        assert client.post("/api/chat", json={"text": "hello"}).status_code == 200
        assert client.get("/login/status").json() == {"required": False, "granted": True}


@pytest.mark.parametrize(
    ("access", "client", "headers", "status"),
    [
        ("local", LOOPBACK, {}, 200),
        ("local", REMOTE, {}, 403),
        ("local", REMOTE, bearer(), 403),
        ("open", REMOTE, {}, 200),
        ("token", REMOTE, {}, 401),
        ("token", LOOPBACK, bearer("wrong"), 401),
        ("token", REMOTE, bearer(), 200),
    ],
    ids=[
        "local-from-loopback",
        "local-from-elsewhere",
        "local-token-no-help",
        "open",
        "token-missing",
        "token-wrong",
        "token-given",
    ],
)
def test_metrics_follow_metrics_access(tmp_path, access, client, headers, status):
    with served(
        tmp_path,
        client=client,
        server__access_token=f'"{TOKEN}"',
        server__metrics_access=f'"{access}"',
    ) as running:
        reply = running.get("/metrics", headers=headers)
    assert reply.status_code == status, reply.text
    if status == 200:
        assert "twin_sessions_active" in reply.text
    else:
        assert "twin_" not in reply.text
        assert "metrics_access" in reply.json()["detail"] or reply.json()["detail"] in (
            MISSING,
            WRONG,
        )


def test_metrics_are_local_by_default_with_the_token_off_too(tmp_path):
    with served(tmp_path, client=REMOTE) as remote:
        assert remote.get("/metrics").status_code == 403
    with served(tmp_path, client=LOOPBACK) as local:
        assert local.get("/metrics").status_code == 200


def startup_warnings(tmp_path, **settings) -> list[str]:
    records: list[str] = []
    sink = logger.add(
        lambda m: records.append(m.record["message"]),
        level="WARNING",
        filter=lambda r: r["extra"].get("event", "").startswith("access_"),
    )
    try:
        with served(tmp_path, **settings):
            pass
    finally:
        logger.remove(sink)
    return records


def test_the_start_up_warning_says_anyone_may_talk_only_while_the_token_is_off(tmp_path):
    (off,) = startup_warnings(tmp_path)
    assert "anyone who can reach 127.0.0.1:7860 can talk to the assistant and use its tools" in off
    assert "server.access_token" in off
    (in_clear,) = startup_warnings(tmp_path, server__access_token=f'"{TOKEN}"')
    assert "crosses the network in clear" in in_clear
    assert TOKEN not in in_clear
