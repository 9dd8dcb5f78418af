"""Structured logs: loguru (pipecat's logger) for everything, uvicorn included.

With ``json_lines`` each record is one JSON object per line on stderr, with the
fields bound to it (``event``, ``pc_id``, turn timings...) under ``extra``.
"""

from __future__ import annotations

import logging
import sys

from loguru import logger

from pipecat_app.config import LogConfig


class _ToLoguru(logging.Handler):
    """Sends standard-library log records (uvicorn, httpx) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).bind(logger=record.name).log(
            level, record.getMessage()
        )


def setup_logging(config: LogConfig) -> None:
    """Route every log to stderr at the configured level and format."""
    logger.remove()
    logger.add(sys.stderr, level=config.level, serialize=config.json_lines, backtrace=False)
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.INFO, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        std = logging.getLogger(name)
        std.handlers = [_ToLoguru()]
        std.propagate = False
