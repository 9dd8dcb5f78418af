"""Dominant colours, brightness, sharpness and motion: plain pixel statistics."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.findings import Box, Colour, Motion
from vision.images import Frame

#: Side of the thumbnail the colours and motion are computed on.
THUMB = (80, 60)
#: A colour must cover this share of the image to be named.
MIN_COLOUR = 0.1
#: Below this variance of the Laplacian (on the detect-size grey copy) a frame is blurry.
BLUR_THRESHOLD = 60.0
#: A pixel whose grey level moves by more than this between frames has changed.
PIXEL_CHANGE = 25

# Hue bands (OpenCV hue, 0..179) of the chromatic names.
_HUES = [
    (0, 8, "red"),
    (8, 20, "orange"),
    (20, 33, "yellow"),
    (33, 80, "green"),
    (80, 100, "cyan"),
    (100, 130, "blue"),
    (130, 160, "purple"),
    (160, 180, "red"),
]


def _names(hsv: NDArray[np.uint8]) -> NDArray[np.object_]:
    hue = hsv[..., 0].astype(np.int32)
    sat = hsv[..., 1].astype(np.int32)
    val = hsv[..., 2].astype(np.int32)
    names = np.empty(hue.shape, dtype=object)
    for low, high, name in _HUES:
        names[(hue >= low) & (hue < high)] = name
    brownish = ((names == "orange") | (names == "red") | (names == "yellow")) & (val < 150)
    names[brownish & (sat > 60)] = "brown"
    names[(names == "red") & (sat < 150) & (val > 150)] = "pink"
    names[sat < 50] = "grey"
    names[(sat < 50) & (val > 200)] = "white"
    names[val < 50] = "black"
    return names


def colours(frame: Frame, limit: int = 3) -> list[Colour]:
    """The named colours covering at least :data:`MIN_COLOUR` of the frame, largest first."""
    thumb = cv2.resize(frame, THUMB, interpolation=cv2.INTER_AREA)
    names = _names(cv2.cvtColor(thumb, cv2.COLOR_BGR2HSV))
    found: list[Colour] = []
    total = names.size
    for name in set(names.ravel().tolist()):
        mask = names == name
        fraction = float(mask.sum()) / total
        if fraction < MIN_COLOUR:
            continue
        b, g, r = thumb[mask].mean(axis=0)
        found.append(
            Colour(
                name=name, rgb=f"#{int(r):02x}{int(g):02x}{int(b):02x}", fraction=round(fraction, 3)
            )
        )
    found.sort(key=lambda colour: colour.fraction, reverse=True)
    return found[:limit]


def brightness(grey: Frame) -> float:
    """Mean luminance, 0..1."""
    return round(float(grey.mean()) / 255.0, 3)


def sharpness(grey: Frame) -> float:
    """Variance of the Laplacian of the grey copy."""
    return round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 1)


class MotionTracker:
    """Compares each frame of one source with the one before it."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: Frame | None = None

    def update(self, frame: Frame) -> Motion | None:
        """Motion since the previous frame; None for the first one (or a new size)."""
        height, width = frame.shape[:2]
        grey = cv2.GaussianBlur(
            cv2.cvtColor(
                cv2.resize(frame, THUMB, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY
            ),
            (5, 5),
            0,
        )
        previous, self._previous = self._previous, grey
        if previous is None:
            return None
        changed = cv2.absdiff(grey, previous) > PIXEL_CHANGE
        fraction = float(changed.mean())
        box = None
        if changed.any():
            ys, xs = np.nonzero(changed)
            sx, sy = width / THUMB[0], height / THUMB[1]
            box = Box(
                x=round(xs.min() * sx),
                y=round(ys.min() * sy),
                w=round((xs.max() - xs.min() + 1) * sx),
                h=round((ys.max() - ys.min() + 1) * sy),
            )
        return Motion(fraction=round(fraction, 4), moving=fraction >= self.threshold, box=box)
