"""Running a service's ASGI app under uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from twin_common.config import ServerSection


def serve_app(
    app: ASGIApp,
    server: ServerSection,
    *,
    on_exit: Callable[[str], None],
    **options: Any,
) -> None:
    """Serve ``app`` where ``server`` says (HTTPS with its pair) until a signal stops it.

    Uvicorn restores the signal handlers it found and re-raises the signal it
    shut down on; with these, a clean stop on SIGTERM (Nomad's kill_signal)
    exits 0 after ``on_exit`` is called with the signal's name. ``options``
    go to :class:`uvicorn.Config` as they are.
    """

    def after_shutdown(signum: int, _frame: FrameType | None) -> None:
        on_exit(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, after_shutdown)
    uvicorn.Server(
        uvicorn.Config(
            app,
            host=server.host,
            port=server.port,
            ssl_certfile=server.tls_cert_file,
            ssl_keyfile=server.tls_key_file,
            timeout_graceful_shutdown=10,
            **options,
        )
    ).run()
