"""apps/vision: the default describer on real photos, motion, and the HTTP API as a process.

The photos are scikit-image's bundled ones (astronaut: one frontal face;
camera: a man in profile; coffee, chelsea, rocket: no person; page: printed
text). The HTTP tests run the installed ``twin-vision serve`` and send it each
bad input the issue lists; after each the same process still describes a
photo.
"""

from __future__ import annotations

import base64
import struct
import zlib

import httpx
import numpy as np
import pytest
from helpers.vision import photo, running_vision
from vision.config import DetectConfig
from vision.describer import DefaultDescriber
from vision.images import decode_image
from vision.measures import MotionTracker
from vision.sentence import sentence

TOKEN = "vision-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def describer() -> DefaultDescriber:
    return DefaultDescriber(DetectConfig())


def _frame(name: str):
    return decode_image(photo(name), 10**8, 10**8)


def test_astronaut_one_frontal_face(describer):
    findings = describer.findings(_frame("astronaut"), ocr=False)
    assert [face.pose for face in findings.faces] == ["frontal"]
    assert findings.person_count == 1
    face = findings.faces[0].box
    # Her face is in the upper middle of the 512x512 photo.
    assert 120 < face.x + face.w / 2 < 320
    assert 40 < face.y + face.h / 2 < 200
    assert sentence(findings).startswith("One person, facing the camera.")


def test_camera_man_seen_in_profile(describer):
    findings = describer.findings(_frame("camera"), ocr=False)
    assert [face.pose for face in findings.faces] == ["profile"]
    assert findings.person_count == 1
    assert sentence(findings).startswith("One person, seen from the side.")


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_person_in_photos_without_one(describer, name):
    findings = describer.findings(_frame(name), ocr=False)
    assert findings.faces == []
    assert findings.people == []
    assert findings.person_count == 0
    assert sentence(findings).startswith("No one is in view.")


def test_page_text_is_read(describer):
    findings = describer.findings(_frame("page"), ocr=True)
    text = " ".join(line.text for line in findings.text).lower()
    assert "markers" in text
    assert "background" in text
    assert all(line.confidence >= 0.6 for line in findings.text)
    assert "Text in view reads 'Region-based" in sentence(findings)


def test_no_text_read_in_a_photo_without_any(describer):
    findings = describer.findings(_frame("coffee"), ocr=True)
    assert findings.text_read
    assert findings.text == []


def test_colours_brightness_and_blur(describer):
    blue = np.zeros((240, 320, 3), np.uint8)
    blue[:] = (200, 60, 20)  # BGR
    findings = describer.findings(blue, ocr=False)
    assert findings.colours[0].name == "blue"
    assert findings.colours[0].fraction > 0.95
    assert findings.blurry  # a flat colour has no edges
    dark = describer.findings(np.full((240, 320, 3), 10, np.uint8), ocr=False)
    assert dark.brightness < 0.1
    assert "It is dark." in sentence(dark)
    sharp = describer.findings(_frame("page"), ocr=False)
    assert not sharp.blurry


def test_motion_between_frames_and_none_between_identical_ones():
    tracker = MotionTracker(threshold=0.01)
    still = np.full((480, 640, 3), 90, np.uint8)
    assert tracker.update(still) is None  # nothing to compare with yet
    same = tracker.update(still.copy())
    assert same is not None
    assert same.fraction == 0
    assert not same.moving
    assert same.box is None
    moved = still.copy()
    moved[200:300, 400:520] = 250  # a bright block appears right of centre
    motion = tracker.update(moved)
    assert motion is not None
    assert motion.moving
    assert motion.box is not None
    assert 360 <= motion.box.x <= 420
    assert motion.box.x + motion.box.w >= 500
    again = tracker.update(moved.copy())
    assert again is not None
    assert not again.moving


# -- the HTTP API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_vision(
        tmp_path_factory.mktemp("vision"),
        {"SERVER__ACCESS_TOKEN": TOKEN, "SERVER__MAX_BODY_BYTES": "2000000"},
    ) as running:
        yield running


def _describe(url: str, **kwargs) -> httpx.Response:
    return httpx.post(
        f"{url}/describe", headers={**AUTH, **kwargs.pop("headers", {})}, timeout=60, **kwargs
    )


def test_describe_multipart_upload(service):
    response = _describe(
        service.url,
        files={"image": ("astronaut.jpg", photo("astronaut"), "image/jpeg")},
        data={"question": "who is there?", "ocr": "false"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["describer"] == "default"
    assert body["fallback"] is None
    assert body["source"] == "upload"
    assert body["question"] == "who is there?"
    assert body["description"].startswith("One person, facing the camera.")
    assert body["findings"]["faces"][0]["pose"] == "frontal"
    assert body["findings"]["text_read"] is False


def test_describe_raw_png_and_json_base64(service):
    raw = _describe(
        service.url, content=photo("page", "PNG"), headers={"Content-Type": "image/png"}
    )
    assert raw.status_code == 200, raw.text
    assert "markers" in " ".join(t["text"] for t in raw.json()["findings"]["text"]).lower()
    as_json = _describe(
        service.url,
        json={"image": base64.b64encode(photo("coffee")).decode(), "ocr": False},
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["findings"]["person_count"] == 0


def test_describe_scene_request_without_a_camera_says_why(service):
    # What TwinService's describe_scene sends: {"question": ...} and nothing else.
    response = _describe(service.url, json={"question": "Describe the scene briefly."})
    assert response.status_code == 409
    assert "no camera is configured" in response.json()["detail"]
    scene = httpx.get(f"{service.url}/scene", headers=AUTH)
    assert scene.status_code == 409
    assert "no camera" in scene.json()["detail"]


def _bomb_png(side: int = 20000) -> bytes:
    """A valid PNG of side x side black pixels, about 400 kB: rows of zeros deflate well."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    row = b"\x00" * (side + 1)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


BAD_INPUTS = {
    "zero-byte body": (
        dict(content=b"", headers={"Content-Type": "image/jpeg"}),
        400,
        "empty",
    ),
    "text named .jpg": (
        dict(files={"image": ("photo.jpg", b"just some text, not a picture\n" * 20, "image/jpeg")}),
        415,
        "not a JPEG or PNG",
    ),
    "truncated JPEG": (
        dict(content=photo("astronaut")[:9000], headers={"Content-Type": "image/jpeg"}),
        400,
        "truncated",
    ),
    "over the size limit": (
        dict(content=b"\xff\xd8" + b"\0" * 2_100_000, headers={"Content-Type": "image/jpeg"}),
        413,
        "over the limit",
    ),
    "wrong content type": (
        dict(content=photo("astronaut"), headers={"Content-Type": "text/plain"}),
        415,
        "'text/plain' is not taken",
    ),
    "broken base64": (dict(json={"image": "not base64!!"}), 400, "base64"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_and_the_service_stays_up(service, case):
    kwargs, status, message = BAD_INPUTS[case]
    response = _describe(service.url, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert service.process.poll() is None
    after = _describe(
        service.url,
        content=photo("astronaut"),
        headers={"Content-Type": "image/jpeg"},
        params={"ocr": "false"},
    )
    assert after.status_code == 200
    assert after.json()["findings"]["person_count"] == 1


def test_decompression_bomb_is_refused_from_its_header(service):
    bomb = _bomb_png()
    assert len(bomb) < 2_000_000  # under the body limit: only its dimensions give it away
    assert struct.unpack(">II", bomb[16:24]) == (20000, 20000)  # IHDR width, height
    response = _describe(service.url, content=bomb, headers={"Content-Type": "image/png"})
    assert response.status_code == 413, response.text
    assert "20000" in response.json()["detail"] or "400000000" in response.json()["detail"]
    assert httpx.get(f"{service.url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'vision_errors_total{kind="too_many_pixels"}' in metrics


def test_token_is_required_except_on_health(service):
    denied = httpx.post(
        f"{service.url}/describe", content=photo("coffee"), headers={"Content-Type": "image/jpeg"}
    )
    assert denied.status_code == 401
    assert "Bearer" in denied.json()["detail"]
    wrong = httpx.get(f"{service.url}/scene", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "access token wrong"
    assert httpx.get(f"{service.url}/health").status_code == 200


def test_metrics_count_frames_and_latency(service):
    _describe(service.url, content=photo("chelsea"), headers={"Content-Type": "image/jpeg"})
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'vision_frames_total{source="upload"}' in metrics
    assert 'vision_describe_seconds_count{describer="default",source="upload"}' in metrics
