"""Input limits: what the app refuses, how it says so, and that nothing refused reaches a turn.

Malformed offers get 400 with the reason; ``/api/chat`` and ``/ws/chat`` take
the same text (a non-blank string of at most 4000 characters) and the same
size cap (``server.max_body_bytes``); errors never repeat the input. The
fuzz tests send a generated set of malformed bodies and frames to the real
server process: it stays up, and every reply is a 4xx or a close code with a
reason.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers.memory_db import query
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app_helpers import App, turn_log
from inprocess import config_for, sample
from pipecat_app.endpoints.text import MAX_TEXT_CHARS
from pipecat_app.server import create_app


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(config_for(tmp_path))) as running:
        yield running


def stored_texts(tmp_path) -> list[str]:
    """Every text in the app's memory (none when no conversation ever opened it)."""
    path = tmp_path / "memory.sqlite3"
    if not path.exists():
        return []
    return [row[0] for row in query(path, "SELECT text FROM memories")]


AUDIO_SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 opus/48000/2\r\n"
)
VIDEO_SDP = AUDIO_SDP.replace("m=audio", "m=video").replace("opus/48000/2", "VP8/90000")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (json.dumps({"type": "bogus", "sdp": AUDIO_SDP}), "type: Input should be 'offer'"),
        (json.dumps({"type": "answer", "sdp": AUDIO_SDP}), "type: Input should be 'offer'"),
        (json.dumps({"type": "offer", "sdp": 5}), "sdp: Input should be a valid string"),
        (json.dumps({"type": "offer"}), "sdp: Field required"),
        (json.dumps({"type": "offer", "sdp": ""}), "sdp: String should have at least 1"),
        (json.dumps({"type": "offer", "sdp": VIDEO_SDP}), "no audio media"),
        (json.dumps({"type": "offer", "sdp": "v=0\r\n"}), "no audio media"),
        (json.dumps({"type": "offer", "sdp": "\x8f\x00 junk"}), "no audio media"),
        (json.dumps([1, 2, 3]), "Input should be an object"),
        (bytes(range(256)), "Invalid JSON"),
    ],
    ids=[
        "type-bogus",
        "type-answer",
        "sdp-number",
        "no-sdp",
        "empty-sdp",
        "video-only",
        "no-media",
        "random-sdp",
        "not-an-object",
        "random-bytes",
    ],
)
def test_a_malformed_offer_is_a_400_that_says_what_is_wrong(client, body, said):
    before = sample("twin_sessions_rejected_total", kind="voice", reason="invalid")
    for path in ("/api/offer", f"/sessions/{client.post('/start').json()['sessionId']}/api/offer"):
        reply = client.post(path, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 400, reply.text
        assert said in reply.json()["detail"]
    assert sample("twin_sessions_rejected_total", kind="voice", reason="invalid") == before + 2
    assert client.get("/health").json()["sessions"]["voice"] == 0


def test_an_offer_with_a_made_up_pc_id_is_refused_before_any_work(client):
    before = sample("twin_sessions_rejected_total", kind="voice", reason="unknown_session")
    reply = client.post(
        "/api/offer", json={"type": "offer", "sdp": AUDIO_SDP, "pc_id": "SmallWebRTC-made-up"}
    )
    assert reply.status_code == 404
    assert "unknown pc_id" in reply.json()["detail"]
    assert sample("twin_sessions_rejected_total", kind="voice", reason="unknown_session") == (
        before + 1
    )
    assert client.get("/health").json()["sessions"]["voice"] == 0


def test_a_malformed_ice_patch_is_a_400(client):
    reply = client.patch("/api/offer", json={"candidates": "none"})
    assert reply.status_code == 400
    assert "pc_id: Field required" in reply.json()["detail"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "], ids=["empty", "spaces", "whitespace"])
def test_blank_text_is_refused_like_empty_text_and_runs_no_turn(client, text):
    with turn_log() as turns:
        reply = client.post("/api/chat", json={"text": text})
    assert reply.status_code == 422
    assert reply.json()["detail"] == [
        {"loc": ["body", "text"], "msg": "empty text", "type": "blank_text"}
    ]
    assert turns == []
    assert client.get("/health").json()["sessions"]["text"] == 0


@pytest.mark.parametrize(
    "body",
    [{"text": None}, {"text": 5}, {"a": 1}, [1, 2, 3], {"text": "a" * (MAX_TEXT_CHARS + 1)}],
    ids=["null", "number", "no-text", "list", "too-long"],
)
def test_a_chat_request_that_does_not_validate_is_a_422_without_the_input(client, body, tmp_path):
    before = sample("twin_sessions_rejected_total", kind="text", reason="invalid")
    reply = client.post("/api/chat", json=body)
    assert reply.status_code == 422
    assert all(set(error) == {"loc", "msg", "type"} for error in reply.json()["detail"])
    assert "aaaa" not in reply.text
    assert len(reply.content) < 1024
    assert sample("twin_sessions_rejected_total", kind="text", reason="invalid") == before + 1
    assert stored_texts(tmp_path) == []


def test_an_invalid_body_under_the_cap_is_not_echoed(client):
    marker = "echo-me-" * 5000  # 40 kB: over the text limit, under the 64 KiB body cap
    reply = client.post("/api/chat", json={"text": marker})
    assert reply.status_code == 422
    assert "echo-me" not in reply.text
    assert len(reply.content) < 1024


def served_sample(app: App, name: str, **labels: str) -> float:
    """One sample of the served app's /metrics (0 when it has none yet)."""
    for family in text_string_to_metric_families(httpx.get(f"{app.url}/metrics").text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def test_a_body_over_the_cap_is_a_413_however_it_is_sent(app):
    labels = {"kind": "text", "reason": "too_large"}
    before = served_sample(app, "twin_sessions_rejected_total", **labels)
    big = b'{"text": "' + b"a" * (20 * 1024 * 1024) + b'"}'
    reply = httpx.post(f"{app.url}/api/chat", content=big, timeout=60)
    assert reply.status_code == 413
    assert len(reply.content) < 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"text": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}'

    reply = httpx.post(f"{app.url}/api/chat", content=chunks(), timeout=60)
    assert reply.status_code == 413
    assert len(reply.content) < 1024
    assert served_sample(app, "twin_sessions_rejected_total", **labels) == before + 2
    assert httpx.get(f"{app.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("frame", "said"),
    [
        ('{"text": null}', '"text" must be a string'),
        ("5", 'send {"text": "..."} or plain text'),
        ('{"a": 1}', 'no "text" in the message'),
        ("[1, 2, 3]", 'send {"text": "..."} or plain text'),
        ('{"text": 5}', '"text" must be a string'),
        ("   ", "empty text"),
        ('{"text": "  "}', "empty text"),
        ("a" * (MAX_TEXT_CHARS + 1), f"text longer than {MAX_TEXT_CHARS} characters"),
    ],
    ids=["null", "number", "no-text", "list", "text-number", "blank", "json-blank", "too-long"],
)
def test_a_websocket_message_that_is_not_user_text_is_refused_not_answered(
    client, tmp_path, frame, said
):
    with turn_log() as turns, client.websocket_connect("/ws/chat") as ws:
        ws.send_text(frame)
        assert ws.receive_json() == {"type": "error", "error": said}
    assert turns == []
    assert stored_texts(tmp_path) == []


def test_a_binary_websocket_message_closes_with_1003_and_a_reason(client, tmp_path):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_bytes(b'{"text": "hello"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1003
    assert closed.value.reason == "binary messages are not accepted: send text"
    assert stored_texts(tmp_path) == []


def test_a_websocket_message_over_the_cap_closes_with_1009_and_stores_nothing(client, tmp_path):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_text(json.dumps({"text": "a" * 70_000}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1009
    assert closed.value.reason == "message over 65536 bytes"
    assert stored_texts(tmp_path) == []
    assert client.get("/health").json()["sessions"]["text"] == 0


def test_the_real_server_closes_a_5_mib_websocket_message_with_1009(app):
    with connect(app.url.replace("http", "ws") + "/ws/chat", open_timeout=30) as ws:
        ws.send(json.dumps({"text": "a" * (5 * 1024 * 1024)}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert closed.value.rcvd.reason
    assert httpx.get(f"{app.url}/health").status_code == 200


def malformed_bodies(seed: int = 9, count: int = 120) -> list[bytes]:
    """Request bodies /api/chat must refuse: wrong JSON, wrong types, blank or long text, bytes."""
    rng = random.Random(seed)
    wrong_values = [None, 0, -1, 1.5, True, [], {}, [None], {"text": "hi"}, "", " ", "\t\n"]
    not_objects = [None, 0, -1, 1.5, True, [], [None], ["hi"], "hi", ""]
    bodies = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"text"',
        b'{"text": }',
        b'{"text": "hi"',
        b"\xff\xfe\x00",
        json.dumps({"text": "a" * (MAX_TEXT_CHARS + 1)}).encode(),
        json.dumps({"text": "hi", "session_id": "s" * 65}).encode(),
    ]
    while len(bodies) < count:
        shape = rng.randrange(4)
        if shape == 0:
            bodies.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif shape == 1:
            bodies.append(json.dumps({"text": rng.choice(wrong_values)}).encode())
        elif shape == 2:
            key = rng.choice(["txt", "Text", "message", "", "session_id"])
            bodies.append(json.dumps({key: "hello"}).encode())
        else:
            bodies.append(json.dumps(rng.choice(not_objects)).encode())
    return bodies


def malformed_frames(seed: int = 11, count: int = 60) -> list[str | bytes]:
    """Websocket messages /ws/chat must refuse: JSON that is not user text, blanks, bytes."""
    rng = random.Random(seed)
    frames: list[str | bytes] = ["", " ", "\n", "0", "[]", "{}", "null", "true", '"x"']
    while len(frames) < count:
        shape = rng.randrange(4)
        if shape == 0:
            frames.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100))))
        elif shape == 1:
            value = rng.choice([None, 0, 2.5, False, [], {}, ["hi"], {"text": "hi"}, "  "])
            frames.append(json.dumps({"text": value}))
        elif shape == 2:
            frames.append(json.dumps(rng.choice([1, [1, 2], {"a": 1}, None, False])))
        else:
            frames.append("x" * (MAX_TEXT_CHARS + 1 + rng.randrange(100)))
    return frames


def test_fuzz_http_chat_refuses_every_malformed_body_with_a_4xx(app):
    with httpx.Client(base_url=app.url, timeout=30) as http:
        for body in malformed_bodies():
            reply = http.post(
                "/api/chat", content=body, headers={"content-type": "application/json"}
            )
            assert 400 <= reply.status_code < 500, (body[:80], reply.status_code, reply.text)
            assert len(reply.content) < 2048, body[:80]
        assert http.get("/health").json()["sessions"]["text"] == 0
    assert app.proc.poll() is None
    assert "Traceback" not in app.logs()


def test_fuzz_websocket_chat_refuses_every_malformed_frame_with_an_error_or_a_close(app):
    ws_url = app.url.replace("http", "ws") + "/ws/chat"
    frames = malformed_frames()
    errors, closes = [], []
    ws = connect(ws_url, open_timeout=30)
    try:
        for frame in frames:
            ws.send(frame)
            try:
                errors.append((frame, json.loads(ws.recv(timeout=30))))
            except ConnectionClosed as closed:
                closes.append((frame, closed.rcvd))
                ws = connect(ws_url, open_timeout=30)
    finally:
        ws.close()
    assert len(errors) + len(closes) == len(frames)
    assert [(f, m) for f, m in errors if m["type"] != "error" or not m["error"]] == []
    unclean = [(f, c) for f, c in closes if c is None or c.code not in (1003, 1009)]
    assert unclean == []
    assert all(c.reason for _f, c in closes)
    assert closes, "no frame was closed on (binary frames are)"
    assert app.proc.poll() is None
    assert httpx.get(f"{app.url}/health").json()["sessions"]["text"] <= 1
    assert "Traceback" not in app.logs()
