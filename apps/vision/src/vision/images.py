"""From request bytes to a frame, refusing what cannot be one before decoding it.

:func:`decode_image` reads the header first (Pillow opens a file lazily), so a
small PNG that claims 20000x20000 pixels is refused from its dimensions before
a byte of it is decompressed. Everything it refuses raises :class:`ImageError`
with the HTTP status and a message that says what was wrong.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

#: Formats taken in, by Pillow's name, and the content types they are sent as.
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}

Frame = NDArray[np.uint8]
"""An image as OpenCV holds it: height x width x 3, BGR."""


class ImageError(Exception):
    """An input that is not an image the service takes; ``status`` is the HTTP answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> Frame:
    """The BGR frame in ``data`` (JPEG or PNG), or :class:`ImageError` saying why not."""
    if not data:
        raise ImageError(400, "empty", "the image is empty (zero bytes)")
    if len(data) > max_bytes:
        raise ImageError(
            413, "too_large", f"the image is {len(data)} bytes, over the limit of {max_bytes}"
        )
    with warnings.catch_warnings():
        # Pillow's own bomb warning: the pixel check below decides, with a clear message.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError as exc:
            raise ImageError(
                415, "not_an_image", "the body is not a JPEG or PNG image (unrecognised content)"
            ) from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(
                413, "too_many_pixels", f"the image is too large ({exc}); it was not decoded"
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                400, "corrupt", f"the image's header cannot be read (truncated or damaged): {exc}"
            ) from exc
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageError(400, "no_pixels", f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(
                413,
                "too_many_pixels",
                f"the image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{max_pixels}; it was not decoded",
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                400,
                "corrupt",
                f"the {image.format} image cannot be decoded (truncated or damaged): {exc}",
            ) from exc
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def encode_jpeg(frame: Frame, quality: int = 85) -> bytes:
    """``frame`` as JPEG bytes (for the VLM's data: URI)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])).save(
        buffer, format="JPEG", quality=quality
    )
    return buffer.getvalue()
