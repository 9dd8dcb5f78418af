"""This conversation's browser camera: the latest frame, for ``describe_scene`` to send.

With the camera on, the voice page sends a video track; pipecat's SmallWebRTC
transport (``video_in_enabled``, the camera captured at a low rate) turns it
into ``UserImageRawFrame``s of raw RGB. TwinService's turn stage hands each to
:meth:`UserCamera.keep` and passes none on (a turn needs only the latest, and
raw frames need not travel the rest of the pipeline). ``describe_scene`` asks
:meth:`UserCamera.jpeg` for it; a frame older than ``max_age_s`` (the camera
was turned off, or its track stopped) counts as none, and the tool asks the
node camera instead.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from PIL import Image
from pipecat.frames.frames import UserImageRawFrame


@dataclass(frozen=True)
class _Latest:
    image: bytes
    size: tuple[int, int]
    mode: str
    at: float


class UserCamera:
    """The newest camera frame of this conversation's user.

    Args:
        max_age_s: Oldest frame :meth:`jpeg` still gives.
    """

    def __init__(self, *, max_age_s: float = 5.0) -> None:
        self._max_age_s = max_age_s
        self._latest: _Latest | None = None

    def keep(self, frame: UserImageRawFrame) -> None:
        """Keep ``frame`` when it comes from the camera (not a screen share)."""
        if frame.transport_source in (None, "camera"):
            self._latest = _Latest(frame.image, frame.size, frame.format or "RGB", time.monotonic())

    def jpeg(self) -> bytes | None:
        """The newest frame as JPEG, or None without a recent one (CPU work: off the loop)."""
        latest = self._latest
        if latest is None or time.monotonic() - latest.at > self._max_age_s:
            return None
        buffer = io.BytesIO()
        image = Image.frombytes(latest.mode, latest.size, latest.image)
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()
