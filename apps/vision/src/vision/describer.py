"""The embedded default describer: findings from OpenCV and RapidOCR, then the sentence."""

from __future__ import annotations

import threading

import cv2

from vision.config import DetectConfig
from vision.detect import Detector, inside
from vision.findings import Findings, Motion
from vision.images import Frame
from vision.measures import BLUR_THRESHOLD, brightness, colours, sharpness
from vision.ocr import Reader


class DefaultDescriber:
    """Offline on any CPU; one call at a time (OpenCV's detectors are not shared safely)."""

    name = "default"

    def __init__(self, config: DetectConfig) -> None:
        self._detector = Detector(config.detect_width, config.person_threshold)
        self._reader = Reader(config.ocr_min_confidence)
        self._lock = threading.Lock()

    def findings(self, frame: Frame, ocr: bool, motion: Motion | None = None) -> Findings:
        """Everything measured in ``frame``; ``motion`` comes from the source's tracker."""
        with self._lock:
            height, width = frame.shape[:2]
            small, back = self._detector.small(frame)
            grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
            faces = self._detector.faces(cv2.equalizeHist(grey), back)
            people = self._detector.people(small, back)
            loose_faces = [f for f in faces if not any(inside(f.box, p.box) for p in people)]
            sharp = sharpness(grey)
            return Findings(
                width=width,
                height=height,
                faces=faces,
                people=people,
                person_count=len(people) + len(loose_faces),
                text=self._reader.read(frame) if ocr else [],
                text_read=ocr,
                colours=colours(small),
                brightness=brightness(grey),
                sharpness=sharp,
                blurry=sharp < BLUR_THRESHOLD,
                motion=motion,
            )
