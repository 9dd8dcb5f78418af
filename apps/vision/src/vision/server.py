"""The HTTP service: ``POST /describe``, ``GET /scene``, ``/health``, ``/metrics``.

``POST /describe`` takes, by content type:

- ``multipart/form-data``: an ``image`` file, optional ``question`` and ``ocr`` fields;
- ``image/jpeg`` or ``image/png``: the image as the body, ``?question=`` and ``?ocr=``;
- ``application/json``: ``{"question": str, "image": base64 str, "ocr": bool}``, every
  key optional. Without ``image`` the camera's newest frame is described: that is what
  TwinService's ``describe_scene`` sends (``{"question": ...}``), and it reads
  ``description`` from the answer.

A refused input gets a 4xx with ``{"detail": <what was wrong>, "kind": <kind>}``;
the process goes on serving.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from twin_common.access import AccessGuard, BearerToken
from twin_common.serve import serve_app

from vision.config import VisionConfig
from vision.images import ImageError, decode_image
from vision.service import NoFrame, Vision

MAX_QUESTION = 500
ACCEPTED = (
    "send multipart/form-data with an 'image' file, a raw image/jpeg or image/png body, "
    'or JSON {"question": ..., "image": <base64>}'
)


class DescribeJSON(BaseModel):
    """The JSON form of ``POST /describe``."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, max_length=MAX_QUESTION)
    image: str | None = Field(None, description="The image, base64 (standard alphabet).")
    ocr: bool = True


class Refused(Exception):
    """A request the service will not take; ``status`` and ``kind`` go into the answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


async def _body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(413, "too_large", f"the body is {declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _flag(value: str | None, default: bool, name: str) -> bool:
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise Refused(400, "bad_field", f"{name} must be true or false, got {value[:20]!r}")


def _question(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_QUESTION:
        raise Refused(
            400, "bad_field", f"question must be text of at most {MAX_QUESTION} characters"
        )
    return value


async def _parse(request: Request, limit: int) -> tuple[bytes | None, str | None, bool]:
    """The image bytes (None: the camera's frame), the question and the OCR flag."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in ("image/jpeg", "image/png"):
        body = await _body(request, limit)
        ocr = _flag(request.query_params.get("ocr"), True, "ocr")
        return body, _question(request.query_params.get("question")), ocr
    if media == "application/json":
        body = await _body(request, limit)
        try:
            parsed = DescribeJSON.model_validate(json.loads(body or b"null"))
        except (ValueError, ValidationError) as exc:
            detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise Refused(
                400, "bad_json", f"the JSON body is not valid: {detail}; {ACCEPTED}"
            ) from exc
        image = None
        if parsed.image is not None:
            try:
                image = base64.b64decode(parsed.image, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise Refused(400, "bad_base64", "image is not valid base64") from exc
        return image, parsed.question, parsed.ocr
    if media == "multipart/form-data":
        body = await _body(request, limit)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(
                max_files=1, max_fields=4, max_part_size=limit
            )
        except MultiPartException as exc:
            raise Refused(400, "bad_multipart", f"the form cannot be read: {exc.message}") from exc
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise Refused(400, "no_image", "the form has no 'image' file field")
        question = form.get("question")
        ocr = form.get("ocr")
        return (
            await upload.read(),
            _question(question if isinstance(question, str) else None),
            _flag(ocr if isinstance(ocr, str) else None, True, "ocr"),
        )
    shown = media or "none"
    raise Refused(415, "content_type", f"content type {shown[:60]!r} is not taken: {ACCEPTED}")


def create_app(config: VisionConfig, vision: Vision | None = None) -> FastAPI:
    """The ASGI app over one :class:`Vision`."""
    vision = vision or Vision(config)
    server = config.server

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await vision.start()
        try:
            yield
        finally:
            await vision.stop()

    app = FastAPI(title="twin vision", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.vision = vision

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        vision.metrics.errors.labels(exc.kind).inc()
        return JSONResponse({"detail": exc.message, "kind": exc.kind}, status_code=exc.status)

    @app.post("/describe")
    async def describe(request: Request) -> JSONResponse:
        data, question, ocr = await _parse(request, server.max_body_bytes)
        if data is None:
            try:
                answer = await vision.describe_camera(question, ocr)
            except NoFrame as exc:
                raise Refused(409, "no_frame", str(exc)) from exc
            return JSONResponse(answer.model_dump(mode="json"))
        try:
            frame = decode_image(data, server.max_body_bytes, server.max_pixels)
        except ImageError as exc:
            raise Refused(exc.status, exc.kind, exc.message) from exc
        answer = await vision.describe(frame, question, "upload", ocr)
        return JSONResponse(answer.model_dump(mode="json"))

    @app.get("/scene")
    async def scene() -> JSONResponse:
        try:
            latest = vision.latest_scene()
        except NoFrame as exc:
            raise Refused(409 if vision.camera is None else 503, "no_frame", str(exc)) from exc
        return JSONResponse(latest.model_dump(mode="json"))

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(vision.health())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(vision.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        AccessGuard,
        token=BearerToken(server.access_token.get_secret_value()),
        metrics_access=server.metrics_access,
    )
    return app


def serve(config: VisionConfig) -> None:
    """Run the service until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=config.log.level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    where = (
        f"{'https' if config.server.tls else 'http'}://{config.server.host}:{config.server.port}"
    )
    if not config.server.access_token.get_secret_value():
        logging.getLogger("vision").warning(
            "no access token (server.access_token): anyone who can reach %s sees the camera", where
        )
    serve_app(
        create_app(config),
        config.server,
        on_exit=lambda signal: logging.getLogger("vision").info("exiting on %s", signal),
        log_level=config.log.level.lower(),
        access_log=False,
    )
