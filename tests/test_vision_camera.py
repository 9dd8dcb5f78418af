"""apps/vision's camera loop against a real HTTP camera: a snapshot server this test
starts as its own process, killed and restarted on the same port, and an MJPEG stream.

V4L2 and RTSP cameras can only be tested live: set TWIN_VISION_V4L2 (a
/dev/video* device) or TWIN_VISION_RTSP (an rtsp:// URL) to run those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import httpx
import pytest
from helpers.ports import free_port
from helpers.vision import photo, running_vision

TOKEN = "camera-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# A camera: GET /snapshot answers the astronaut photo as JPEG; GET /stream is
# an MJPEG stream of it (multipart/x-mixed-replace), five frames a second.
CAMERA = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    JPEG = open(sys.argv[2], "rb").read()
    class Camera(BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def do_GET(self):
            if self.path == "/snapshot":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(JPEG)))
                self.end_headers()
                self.wfile.write(JPEG)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            while True:
                self.wfile.write(b"--frame\\r\\nContent-Type: image/jpeg\\r\\n")
                self.wfile.write(b"Content-Length: %d\\r\\n\\r\\n" % len(JPEG) + JPEG + b"\\r\\n")
                time.sleep(0.2)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Camera).serve_forever()
    """
)


def _start_camera(tmp_path, port: int) -> subprocess.Popen[bytes]:
    image = tmp_path / "astronaut.jpg"
    image.write_bytes(photo("astronaut"))
    process = subprocess.Popen([sys.executable, "-c", CAMERA, str(port), str(image)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/snapshot", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the test camera did not start")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()


def test_snapshot_camera_killed_and_restarted(tmp_path):
    port = free_port()
    camera = _start_camera(tmp_path, port)
    settings = {
        "SERVER__ACCESS_TOKEN": TOKEN,
        "CAMERA__SOURCE": f"http://127.0.0.1:{port}/snapshot",
        "CAMERA__FPS": "4",
        "CAMERA__RETRY_MIN_S": "0.2",
        "CAMERA__RETRY_MAX_S": "1",
        "CAMERA__TIMEOUT_S": "2",
    }
    try:
        with running_vision(tmp_path, settings) as vision:
            _wait(lambda: _health(vision.url)["camera"]["frames"] >= 2, 60, "camera frames")
            scene = httpx.get(f"{vision.url}/scene", headers=AUTH, timeout=5).json()
            assert scene["description"].startswith("One person, facing the camera.")
            assert scene["camera"] == settings["CAMERA__SOURCE"]
            assert 0 <= scene["age_s"] < 30
            assert scene["findings"]["motion"] is not None  # a second frame was compared
            assert not scene["findings"]["motion"]["moving"]  # the same photo each time

            # TwinService's describe_scene: {"question"} -> the camera's frame, described now.
            asked = httpx.post(
                f"{vision.url}/describe",
                json={"question": "Describe the scene briefly."},
                headers=AUTH,
                timeout=60,
            )
            assert asked.status_code == 200, asked.text
            assert asked.json()["source"] == "camera"
            assert asked.json()["description"].startswith("One person")

            camera.kill()
            camera.wait()
            _wait(lambda: _health(vision.url)["camera"]["state"] == "failing", 30, "failing")
            health = _health(vision.url)
            assert health["status"] == "degraded"
            assert health["camera"]["consecutive_failures"] >= 1
            assert str(port) in health["camera"]["last_error"]
            assert any("camera failing" in reason for reason in health["reasons"])
            _wait(lambda: _health(vision.url)["camera"]["consecutive_failures"] >= 3, 30, "retries")
            # Backoff: the wait between retries grew, capped at retry_max_s.
            assert 0.2 < _health(vision.url)["camera"]["retry_in_s"] <= 1
            stale = httpx.get(f"{vision.url}/scene", headers=AUTH, timeout=5).json()
            assert stale["age_s"] > 0.5  # the last good scene, aged
            assert vision.process.poll() is None

            frames = _health(vision.url)["camera"]["frames"]
            camera = _start_camera(tmp_path, port)
            _wait(lambda: _health(vision.url)["camera"]["state"] == "ok", 30, "recovery")
            _wait(lambda: _health(vision.url)["camera"]["frames"] > frames, 30, "new frames")
            health = _health(vision.url)
            assert health["status"] == "ok"
            assert health["camera"]["consecutive_failures"] == 0
            metrics = httpx.get(f"{vision.url}/metrics", timeout=5).text
            assert "vision_camera_up 1.0" in metrics
            assert 'vision_errors_total{kind="camera"}' in metrics
    finally:
        camera.kill()
        camera.wait()


def test_mjpeg_stream_camera(tmp_path):
    port = free_port()
    camera = _start_camera(tmp_path, port)
    try:
        with running_vision(
            tmp_path,
            {"CAMERA__SOURCE": f"http://127.0.0.1:{port}/stream", "CAMERA__FPS": "2"},
        ) as vision:
            _wait(lambda: _health(vision.url)["camera"]["frames"] >= 3, 60, "stream frames")
            scene = httpx.get(f"{vision.url}/scene", timeout=5).json()
            assert scene["findings"]["faces"][0]["pose"] == "frontal"
            assert _health(vision.url)["camera"]["consecutive_failures"] == 0
    finally:
        camera.kill()
        camera.wait()


def test_dead_camera_from_the_start_is_reported_not_fatal(tmp_path):
    port = free_port()  # nothing listens here
    with running_vision(
        tmp_path,
        {"CAMERA__SOURCE": f"http://127.0.0.1:{port}/snapshot", "CAMERA__RETRY_MIN_S": "0.2"},
    ) as vision:
        _wait(lambda: _health(vision.url)["camera"]["state"] == "failing", 30, "failing")
        scene = httpx.get(f"{vision.url}/scene", timeout=5)
        assert scene.status_code == 503
        assert "has no frame yet" in scene.json()["detail"]
        upload = httpx.post(
            f"{vision.url}/describe",
            content=photo("coffee"),
            headers={"Content-Type": "image/jpeg"},
            params={"ocr": "false"},
            timeout=60,
        )
        assert upload.status_code == 200


@pytest.mark.live
@pytest.mark.parametrize("variable", ["TWIN_VISION_V4L2", "TWIN_VISION_RTSP"])
def test_live_opencv_camera(tmp_path, variable):
    source = os.environ.get(variable)
    if not source:
        pytest.skip(f"{variable} is not set (a /dev/video* device or an rtsp:// URL)")
    with running_vision(tmp_path, {"CAMERA__SOURCE": source}) as vision:
        _wait(lambda: _health(vision.url)["camera"]["frames"] >= 2, 60, "live frames")
        scene = httpx.get(f"{vision.url}/scene", timeout=5).json()
        assert scene["findings"]["width"] > 0
        assert scene["description"]
