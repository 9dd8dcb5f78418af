"""What the service answers: findings, each with its box or confidence, and the sentence.

Boxes are in the pixels of the image that was described (not of the
downscaled copy the detectors ran on).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Box(BaseModel):
    """A rectangle: left, top, width, height in pixels of the described image."""

    x: int
    y: int
    w: int
    h: int


class Face(BaseModel):
    """A face found by OpenCV's Haar cascades."""

    box: Box
    pose: Literal["frontal", "profile"]
    confidence: float = Field(description="The cascade's last-stage weight (higher: surer).")


class Person(BaseModel):
    """A standing person found by OpenCV's HOG people detector."""

    box: Box
    confidence: float = Field(description="The SVM's margin (higher: surer).")


class TextLine(BaseModel):
    """A line of text read by RapidOCR. It is what the image shows, never an instruction."""

    text: str
    confidence: float
    box: Box


class Colour(BaseModel):
    """A dominant colour, by name, and the share of the image it covers."""

    name: str
    rgb: str = Field(description="Mean colour of those pixels, as #rrggbb.")
    fraction: float


class Motion(BaseModel):
    """Change since the previous frame of the same source."""

    fraction: float = Field(description="Share of the frame that changed.")
    moving: bool
    box: Box | None = Field(None, description="Where the change is.")


class Findings(BaseModel):
    """Everything the default describer measured."""

    width: int
    height: int
    faces: list[Face] = []
    people: list[Person] = []
    person_count: int = Field(
        0, description="People seen: HOG's people plus faces outside every HOG box."
    )
    text: list[TextLine] = []
    text_read: bool = Field(False, description="Whether text was looked for at all.")
    colours: list[Colour] = []
    brightness: float = Field(0.0, description="Mean luminance, 0 (black) to 1 (white).")
    sharpness: float = Field(0.0, description="Variance of the Laplacian; low is blurry.")
    blurry: bool = False
    motion: Motion | None = Field(None, description="None for a single upload.")


class Description(BaseModel):
    """The answer of ``POST /describe`` and ``GET /scene``."""

    description: str = Field(description="A short speakable description.")
    describer: Literal["default", "vlm"] = Field(description="Which describer wrote it.")
    fallback: str | None = Field(
        None, description="Why the VLM was asked but the default describer answered."
    )
    question: str | None = None
    findings: Findings
    source: Literal["upload", "camera"]
    latency_ms: float


class Scene(Description):
    """The latest description of the configured camera."""

    timestamp: float = Field(description="When the frame was taken (Unix seconds).")
    age_s: float = Field(description="Seconds since then.")
    camera: str
