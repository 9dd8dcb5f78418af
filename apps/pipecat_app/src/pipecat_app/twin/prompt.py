"""The system prompt: a local default file, replaced live by a Consul KV key.

``prompt_engineering/`` publishes evolved prompts to the key in
``twin.prompt.consul_key`` (documented default: ``twin/prompts/system``).
A blocking-query watch on ``/v1/kv/<key>`` applies every new value without
a restart; when the key is deleted (404) or empty the local default comes
back. Consul being unreachable keeps the current prompt (logged).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from pipecat_app.twin.config import DiscoveryConfig, PromptConfig
from pipecat_app.twin.consul_watch import BlockingWatch, Followed


def load_default(config: PromptConfig) -> str:
    """The local default prompt: ``file`` when it exists and is not empty, else ``text``."""
    if config.file:
        path = Path(config.file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            logger.warning(
                f"prompt: cannot read twin.prompt.file {path}: {exc}; using twin.prompt.text"
            )
        else:
            if text:
                return text
    return config.text.strip()


def kv_value(body: Any) -> str | None:
    """The decoded value of a ``/v1/kv/<key>`` response (None when absent or empty)."""
    if not body:
        return None
    raw = body[0].get("Value")
    if not raw:
        return None
    text = base64.b64decode(raw).decode("utf-8").strip()
    return text or None


class PromptSource(Followed):
    """Holds the current system prompt and tells ``on_change`` when it changes.

    Args:
        config: ``[twin.prompt]``.
        consul: ``[twin.discovery]`` (Consul address and token).
        on_change: Called with the new prompt text.
    """

    def __init__(
        self,
        config: PromptConfig,
        consul: DiscoveryConfig,
        *,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._consul = consul
        self._on_change = on_change
        self._default = config.text.strip()
        self.text = self._default
        self.source = "default"

    def _apply(self, text: str, source: str) -> None:
        if text == self.text:
            self.source = source
            return
        self.text = text
        self.source = source
        logger.info(f"prompt: system prompt now from {source} ({len(text)} chars)")
        if self._on_change is not None:
            self._on_change(text)

    def _kv_changed(self, body: Any) -> None:
        value = kv_value(body)
        if value is None:
            self._apply(self._default, "default")
        else:
            self._apply(value, f"consul:{self._config.consul_key}")

    def _failed(self, exc: Exception) -> None:
        logger.error(
            f"prompt: Consul KV {self._config.consul_key!r} unreachable "
            f"({self.last_error or exc}); keeping the current prompt ({self.source})"
        )

    async def start(self) -> None:
        """Load the default file and start watching the Consul key (if any)."""
        self._default = load_default(self._config)
        self._apply(self._default, "default")
        if not self._config.consul_key:
            return
        self._follow(
            BlockingWatch(
                self._consul.resolved_consul_addr(),
                self._consul.resolved_consul_token(),
                f"/v1/kv/{self._config.consul_key.strip('/')}",
                wait=self._consul.wait,
                retry_s=self._consul.retry_s,
                on_change=self._kv_changed,
                on_error=self._failed,
                tls=self._consul.consul_tls(),
            )
        )
