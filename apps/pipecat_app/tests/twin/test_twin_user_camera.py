"""The user's browser camera: TwinService keeps the latest frame and a visual turn sends it.

The frames are what pipecat's SmallWebRTC transport delivers
(``UserImageRawFrame``, raw RGB) made from scikit-image's photos; the vision
service is the real one (``twin-vision serve``, no camera of its own). The
browser end to end is ``tests/test_browser_camera.py``.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.vision import running_vision
from PIL import Image
from pipecat.frames.frames import LLMContextFrame, UserImageRawFrame
from pipecat.tests.utils import run_test
from skimage import data

from pipecat_app.twin.camera import UserCamera
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.observation import CLOSE, OPEN
from pipecat_app.twin.service import TwinService

from .twin_turns import expert, replay_server, sse, turn_context

pytestmark = pytest.mark.anyio


def camera_frame(name: str) -> UserImageRawFrame:
    """scikit-image's ``name`` photo as SmallWebRTC delivers a camera frame."""
    rgb = np.ascontiguousarray(getattr(data, name)()[..., :3])
    frame = UserImageRawFrame(
        user_id="pc-1", image=rgb.tobytes(), size=(rgb.shape[1], rgb.shape[0]), format="RGB"
    )
    frame.transport_source = "camera"
    return frame


def test_the_latest_frame_is_given_as_jpeg_until_it_is_too_old():
    camera = UserCamera(max_age_s=0.5)
    assert camera.jpeg() is None
    camera.keep(camera_frame("coffee"))
    camera.keep(camera_frame("astronaut"))
    jpeg = camera.jpeg()
    assert jpeg is not None
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.size) == ("JPEG", (512, 512))  # the astronaut; coffee is 600x400
    time.sleep(0.6)
    assert camera.jpeg() is None


def test_a_screen_share_frame_is_not_the_camera():
    camera = UserCamera()
    shared = camera_frame("astronaut")
    shared.transport_source = "screenVideo"
    camera.keep(shared)
    assert camera.jpeg() is None


@pytest.mark.slow
async def test_a_visual_turn_sends_the_users_latest_camera_frame(tmp_path: Path):
    with running_vision(tmp_path) as vision, replay_server([sse("One person.")]) as replay:
        twin = TwinService(
            TwinConfig.model_validate(
                {
                    "user_id": "ana",
                    "memory": {"path": str(tmp_path / "memory.sqlite3")},
                    "experts": [expert("general", replay.url)],
                    "tools": {"vision_url": vision.url, "timeout_s": 60},
                }
            )
        )
        await twin.start()
        try:
            twin.context.add_message({"role": "user", "content": "What do you see?"})
            down, _ = await run_test(
                twin.processors()[0],
                frames_to_send=[
                    camera_frame("coffee"),
                    camera_frame("astronaut"),
                    LLMContextFrame(context=twin.context),
                ],
            )
        finally:
            await twin.stop()
    assert not [f for f in down if isinstance(f, UserImageRawFrame)]  # kept, not passed on
    context = turn_context(replay.requests[0])
    seen = json.loads(context.split(OPEN, 1)[1].split(CLOSE, 1)[0].strip().split("\n")[-1])
    assert seen["camera"] == "user camera"
    assert seen["people"] == 1, seen  # the astronaut, the latest frame, not the coffee
    assert seen["faces"] == 1, seen
