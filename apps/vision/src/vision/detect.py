"""Faces and people with the detectors that ship inside opencv-python-headless.

Faces: Haar cascades, frontal and profile (the profile cascade finds faces
turned one way, so it also runs on the mirrored image). People: the HOG
detector with OpenCV's default people SVM, at a margin (``person_threshold``)
that a photo of a rocket or a cat does not reach. Both run on a grey copy
``detect_width`` pixels wide; boxes are scaled back to the image's pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from vision.findings import Box, Face, Person
from vision.images import Frame

# Speed: nearly all of a describe's time is the three cascade passes, and
# their cost grows with the pixels of the finest scales searched. So each
# pass steps by SCALE_FACTOR 1.2 (not 1.1: half the scales) and starts at
# MIN_FACE pixels of the detect copy (320 wide by default: faces at least a
# tenth of the frame's width) instead of the cascades' own 20-24 px windows.
# A face must pass this many neighbouring detections: fewer frontal ones find
# a second, false face in the astronaut photo's badge; at 1.2 the profile
# cascade gathers fewer neighbours per face, and 3 still finds the man in
# scikit-image's camera photo and nothing in the other photos.
FRONTAL_NEIGHBOURS = 5
PROFILE_NEIGHBOURS = 3
SCALE_FACTOR = 1.2
MIN_FACE = 32
# The HOG people detector's pyramid step (OpenCV's default 1.05 searches
# twice the levels and took 2.5 times as long on 640x480 frames).
HOG_SCALE = 1.1


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(
            f"OpenCV's {name} is missing at {path}: opencv-python-headless must be below 5"
        )
    return cascade


class Detector:
    """Holds the cascades and the HOG detector (loaded once; safe to share between calls)."""

    def __init__(self, detect_width: int, person_threshold: float) -> None:
        self.detect_width = detect_width
        self.person_threshold = person_threshold
        self._frontal = _cascade("haarcascade_frontalface_default.xml")
        self._profile = _cascade("haarcascade_profileface.xml")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def small(self, frame: Frame) -> tuple[Frame, float]:
        """``frame`` at most ``detect_width`` wide, and the factor back to its pixels."""
        height, width = frame.shape[:2]
        if width <= self.detect_width:
            return frame, 1.0
        scale = self.detect_width / width
        size = (self.detect_width, max(1, round(height * scale)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), 1.0 / scale

    def faces(self, grey: Frame, back: float) -> list[Face]:
        """Faces in the equalised grey copy, frontal first; a profile over a frontal is dropped."""
        found: list[Face] = []
        width = grey.shape[1]
        for cascade, pose, neighbours, mirrored in (
            (self._frontal, "frontal", FRONTAL_NEIGHBOURS, False),
            (self._profile, "profile", PROFILE_NEIGHBOURS, False),
            (self._profile, "profile", PROFILE_NEIGHBOURS, True),
        ):
            image = cv2.flip(grey, 1) if mirrored else grey
            rects, _, weights = cascade.detectMultiScale3(
                image,
                scaleFactor=SCALE_FACTOR,
                minNeighbors=neighbours,
                minSize=(MIN_FACE, MIN_FACE),
                outputRejectLevels=True,
            )
            for (x, y, w, h), weight in zip(rects, np.ravel(weights), strict=False):
                left = width - x - w if mirrored else x
                box = _scaled(left, y, w, h, back)
                if any(_overlap(box, face.box) > 0.3 for face in found):
                    continue
                found.append(Face(box=box, pose=pose, confidence=round(float(weight), 3)))
        return found

    def people(self, small: Frame, back: float) -> list[Person]:
        """Standing people whose HOG margin reaches ``person_threshold``."""
        if small.shape[0] < 128 or small.shape[1] < 64:
            return []
        rects, weights = self._hog.detectMultiScale(
            small, winStride=(8, 8), padding=(8, 8), scale=HOG_SCALE
        )
        people: list[Person] = []
        for (x, y, w, h), weight in zip(rects, np.ravel(weights), strict=False):
            if float(weight) < self.person_threshold:
                continue
            box = _scaled(x, y, w, h, back)
            if any(_overlap(box, person.box) > 0.5 for person in people):
                continue
            people.append(Person(box=box, confidence=round(float(weight), 3)))
        return people


def _scaled(x: float, y: float, w: float, h: float, back: float) -> Box:
    return Box(x=round(x * back), y=round(y * back), w=round(w * back), h=round(h * back))


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    smaller = min(a.w * a.h, b.w * b.h)
    return (ix * iy) / smaller if smaller else 0.0


def inside(inner: Box, outer: Box) -> bool:
    """Most of ``inner`` lies in ``outer`` (a face inside a person's box)."""
    return _overlap(inner, outer) > 0.5 and inner.w * inner.h <= outer.w * outer.h
