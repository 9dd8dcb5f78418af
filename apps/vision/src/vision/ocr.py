"""Text read with RapidOCR, whose ONNX models ship inside the rapidocr-onnxruntime wheel."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from vision.findings import Box, TextLine
from vision.images import Frame


class Reader:
    """RapidOCR, loaded on first use (about half a second) and then shared."""

    def __init__(self, min_confidence: float) -> None:
        self.min_confidence = min_confidence
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR  # slow import: on first use

                self._engine = RapidOCR()
        return self._engine

    def read(self, frame: Frame) -> list[TextLine]:
        """Lines of text in ``frame``, top to bottom, above ``min_confidence``."""
        # No angle classifier: signs and pages are upright, and it costs a third of the time.
        result, _ = self._load()(frame, use_cls=False)
        lines: list[TextLine] = []
        for points, text, score in result or []:
            if float(score) < self.min_confidence or not str(text).strip():
                continue
            corners = np.asarray(points, dtype=np.float64)
            x0, y0 = corners.min(axis=0)
            x1, y1 = corners.max(axis=0)
            lines.append(
                TextLine(
                    text=str(text),
                    confidence=round(float(score), 3),
                    box=Box(x=round(x0), y=round(y0), w=round(x1 - x0), h=round(y1 - y0)),
                )
            )
        lines.sort(key=lambda line: (line.box.y, line.box.x))
        return lines
