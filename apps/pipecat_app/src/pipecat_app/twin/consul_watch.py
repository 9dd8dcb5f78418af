"""Consul blocking queries: one watch loop shared by expert discovery and the prompt.

A blocking query sends the last ``X-Consul-Index`` as ``index`` with a ``wait``
time; Consul answers when the data changes or the wait ends. Index handling
follows Consul's guidance on blocking queries: an index that goes backwards
(a snapshot restore, a new cluster) or is not positive resets to 0 so the
next request returns at once instead of waiting on a stale index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from loguru import logger
from twin_common.tasks import BackgroundTask

from pipecat_app.twin.api_tls import ApiTLS, describe_failure

#: Called with the decoded body (or None for a 404) after every change.
OnChange = Callable[[Any], Awaitable[None] | None]
#: Called with the exception when a request fails.
OnError = Callable[[Exception], None]


def next_index(previous: int, header: str | None) -> int:
    """The index to send next, from the previous one and the response header."""
    try:
        index = int(header or 0)
    except ValueError:
        return 0
    if index <= 0 or index < previous:
        return 0
    return index


def wait_seconds(wait: str) -> float:
    """Seconds in a Consul duration like ``"55s"`` or ``"5m"``."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if wait.endswith(suffix):
            return float(wait[: -len(suffix)]) * units[suffix]
    return float(wait)


class BlockingWatch:
    """Follow one Consul endpoint with blocking queries in a background task.

    The watch owns its HTTP client: opened by :meth:`start`, closed by :meth:`stop`.
    Over ``https`` it trusts the CA of ``tls`` (the system's CAs without one)
    and shows ``tls``'s client certificate when there is one.

    Args:
        addr: Consul HTTP(S) address (``http://127.0.0.1:8500``, ``https://127.0.0.1:8501``).
        token: ACL token sent as ``X-Consul-Token`` (empty: none).
        path: API path such as ``/v1/health/service/llm-expert``.
        params: Extra query parameters (``passing``...).
        wait: Blocking wait (Consul duration).
        retry_s: Pause after a failed request.
        on_change: Called with the decoded JSON (None on 404) when the index moves.
        on_error: Called with the exception when a request fails.
        tls: Consul's CA and client certificate (default: the system's CAs, none).
    """

    def __init__(
        self,
        addr: str,
        token: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        wait: str = "55s",
        retry_s: float = 2.0,
        on_change: OnChange,
        on_error: OnError,
        tls: ApiTLS | None = None,
    ) -> None:
        self._addr = addr
        self._tls = tls if tls is not None else ApiTLS("Consul")
        self._headers = {"X-Consul-Token": token} if token else {}
        self._client: httpx.AsyncClient | None = None
        self._path = path
        self._params = dict(params or {})
        self._wait = wait
        self._retry_s = retry_s
        self._on_change = on_change
        self._on_error = on_error
        self.index = 0
        #: Requests that failed in a row; back to 0 as soon as Consul answers one.
        self.consecutive_failures = 0
        #: Why the last request failed, while it is the latest (None once one succeeds);
        #: a refused TLS handshake says which CA was trusted and what to set.
        self.last_error: str | None = None
        self._task = BackgroundTask(self.run, f"consul-watch {path}")
        self.first_result = asyncio.Event()

    @property
    def answering(self) -> bool:
        """Whether Consul answered the last request (False until it first does)."""
        return self.first_result.is_set() and self.consecutive_failures == 0

    @property
    def failing(self) -> bool:
        """Whether the last request failed (False before the first one ends)."""
        return self.consecutive_failures > 0

    async def poll_once(self) -> bool:
        """One blocking request; returns True when the index moved (``on_change`` ran)."""
        params = {**self._params, "index": str(self.index), "wait": self._wait}
        timeout = wait_seconds(self._wait) * 1.1 + 5.0
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._addr, headers=self._headers, verify=self._tls.ssl_context()
            )
        response = await self._client.get(self._path, params=params, timeout=timeout)
        if response.status_code not in (200, 404):
            response.raise_for_status()
        self.consecutive_failures = 0
        self.last_error = None
        new_index = next_index(self.index, response.headers.get("X-Consul-Index"))
        changed = new_index != self.index or new_index == 0 or not self.first_result.is_set()
        if new_index < self.index:
            logger.info(f"consul: index of {self._path} went back to {new_index}, resetting")
        self.index = new_index
        if changed:
            body = response.json() if response.status_code == 200 else None
            result = self._on_change(body)
            if asyncio.iscoroutine(result):
                await result
            self.first_result.set()
        return changed

    async def run(self) -> None:
        """Loop until cancelled; errors are reported and retried after ``retry_s``."""
        while True:
            try:
                await self.poll_once()
                if self.index == 0:
                    # A reset (or an endpoint without an index): do not spin.
                    await asyncio.sleep(self._retry_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.consecutive_failures += 1
                self.last_error = describe_failure(exc, self._tls, self._addr)
                self._on_error(exc)
                await asyncio.sleep(self._retry_s)

    def start(self) -> None:
        """Start the background task (once)."""
        self._task.start()

    async def stop(self) -> None:
        """Cancel the background task, wait for it, and close the HTTP client."""
        await self._task.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class Followed:
    """Base of what a process follows in Consul with one :class:`BlockingWatch` while started.

    The experts, the vision service and the prompt each start their watch in
    their own ``start`` (:meth:`_follow`) and share :attr:`watch` and :meth:`stop`.
    """

    _watch: BlockingWatch | None = None

    @property
    def watch(self) -> BlockingWatch | None:
        """The Consul watch, while one runs (None: not started, or nothing to follow)."""
        return self._watch

    @property
    def failing(self) -> bool:
        """Whether the watch's last request to Consul failed (False without a watch)."""
        return self._watch is not None and self._watch.failing

    @property
    def last_error(self) -> str | None:
        """Why the watch's last request failed, while it is failing."""
        return self._watch.last_error if self._watch is not None else None

    def _follow(self, watch: BlockingWatch) -> None:
        self._watch = watch
        watch.start()

    async def stop(self) -> None:
        """Stop the watch (it closes its HTTP client)."""
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
