"""A real browser with its camera on asks "what do you see?" and the expert is told.

Headless Chromium opens the voice page, turns the camera toggle on and
connects. Its fake camera plays a y4m file made from scikit-image's astronaut
photo (one person, facing the camera); its fake microphone asks "What do you
see?". The app (a real process) runs the whole voice pipeline: SmallWebRTC
delivers the camera's frames (``UserImageRawFrame``), the turn is visual, so
TwinService sends the latest frame to the real vision service (``twin-vision
serve``, no camera of its own) and the expert's request carries the finding,
one person, in the marked observation. The expert is SmolLM2 on a real
llama-server, behind a proxy that keeps each request.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from helpers.vision import running_vision
from skimage import data

from app_helpers import app_environ, free_port, question_wav, start_app
from chromium_cdp import CHROMIUM, Chromium
from pipecat_app.twin.observation import CLOSE, OPEN
from twin.twin_turns import RecordingProxy, recording_proxy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)"),
]


def astronaut_y4m(path: Path, frames: int = 2) -> Path:
    """The astronaut photo as a y4m video Chromium's fake camera plays.

    Chromium reads only ``C420`` (4:2:0, JPEG-centred chroma) and refuses
    ffmpeg's default ``C420mpeg2``; the planes are I420 from OpenCV.
    """
    rgb = np.ascontiguousarray(data.astronaut()[..., :3])
    height, width = rgb.shape[:2]
    planes = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()
    header = f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420\n".encode()
    path.write_bytes(header + b"".join(b"FRAME\n" + planes for _ in range(frames)))
    return path


def observations(proxy: RecordingProxy) -> list[dict[str, Any]]:
    """The data of each observation the expert was sent."""
    found = []
    for request in proxy.requests:
        marked = [
            str(m.get("content")) for m in request["messages"] if OPEN in str(m.get("content"))
        ]
        for text in marked:
            block = text.split(OPEN, 1)[1].split(CLOSE, 1)[0].strip().split("\n")
            found.append(json.loads(block[-1]))
    return found


def asked(turns: list[dict[str, Any]]) -> bool:
    """A turn heard the question ("what do you see?") and ended."""
    return any("see" in t.get("transcript", "").lower() for t in turns)


def frames_described(vision_url: str) -> float:
    """``vision_frames_total{source="upload"}``: images sent to the vision service."""
    metrics = httpx.get(f"{vision_url}/metrics", timeout=5).text
    match = re.search(r'^vision_frames_total\{source="upload"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_browser_camera_frame_reaches_the_vision_service_and_the_expert(llama, tmp_path):
    wav = question_wav(tmp_path / "question.wav", "What do you see?")
    video = astronaut_y4m(tmp_path / "astronaut.y4m")
    with running_vision(tmp_path) as vision, recording_proxy(llama.url) as proxy:
        env = app_environ(tmp_path, expert_url=f"http://127.0.0.1:{proxy.port}/v1")
        env["TWIN_APP__VAD__TURN_STOP_TIMEOUT_S"] = "20"
        env["TWIN_APP__TWIN__TOOLS__VISION_URL"] = vision.url
        app = start_app(env, tmp_path / "app.log")
        chromium = Chromium(wav, tmp_path / "profile", free_port(), video=video)
        try:
            chromium.open(f"{app.url}/voice")
            chromium.wait_for_text("Camera")
            chromium.evaluate("document.getElementById('camera').click()")
            chromium.click_button("connect")
            deadline = time.monotonic() + 150
            while not (observations(proxy) and asked(app.turns())):
                assert time.monotonic() < deadline, (
                    f"no visual turn ended with an observation sent; turns: {app.turns()}; "
                    f"observations: {observations(proxy)}\npage: {chromium.console[-5:]}"
                    f"\napp log tail:\n{app.logs()[-3000:]}"
                )
                time.sleep(1)
            sent = frames_described(vision.url)
        finally:
            chromium.close()
            app.stop()

    seen = observations(proxy)[0]
    assert sent >= 1, "the vision service was sent no image"
    assert seen["camera"] == "user camera"
    assert seen["people"] == 1, seen
    assert seen["faces"] == 1, seen
