"""A real llama-server on a free local port, for tests and benchmarks.

The one place that starts llama-server for them: find the binary and the
model with :mod:`helpers.llm_assets`, then::

    server = start_llama_server(llama_server_bin(), smollm2_gguf())
    httpx.post(server.base_url + "/chat/completions", json=...)
    server.kill()

(or ``with start_llama_server(...) as server:``). :func:`tokens_predicted`
reads how many tokens a server started with ``--metrics`` has generated: a
test that needs the model to have answered checks that the count went up.
Pytest's skips for a machine that cannot have the binary or the model are in
:mod:`helpers.llm_skip`.

Why here (``tests/helpers``) and how it is imported: test support must not
ship in the app's wheel, and the root tests, the app's tests and the
benchmarks all need it. ``tests/`` is a plain directory (no ``__init__``) that
holds the ``helpers`` package; the root ``pyproject.toml`` puts it on
``sys.path`` for pytest (``[tool.pytest.ini_options] pythonpath``), so every
test file, under ``tests/`` or ``apps/pipecat_app/tests/``, imports
``helpers.<module>``; a benchmark puts ``<repo>/tests`` on ``sys.path`` itself.
This module needs only the standard library and httpx, never pytest.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from helpers.ports import free_port


@dataclass
class LlamaServer:
    """One running llama-server on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path | None = None

    @property
    def url(self) -> str:
        """The server's root URL (``/health``, ``/metrics``, ``/props``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL."""
        return f"{self.url}/v1"

    def kill(self) -> None:
        """Kill the server (SIGKILL) and wait for it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log, or a note that it was not kept."""
        if self.log is None:
            return "(llama-server's output was not kept: pass log=)"
        return self.log.read_text(errors="replace")[-chars:]

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


def tokens_predicted(url: str) -> float:
    """``llamacpp:tokens_predicted_total``: the tokens llama-server at ``url`` has generated.

    ``url`` is its root URL or OpenAI base URL (``.../v1``). The server must run
    with ``--metrics`` (or ``LLAMA_ARG_ENDPOINT_METRICS=1``); the count covers
    finished requests, so read it after the answer has ended.
    """
    response = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=5)
    if response.status_code != 200:
        raise RuntimeError(
            f"no metrics at {url} (HTTP {response.status_code}): start llama-server with --metrics"
        )
    found = re.search(r"^llamacpp:tokens_predicted_total (\S+)$", response.text, re.M)
    if found is None:
        raise RuntimeError(f"no tokens_predicted_total in {url}'s metrics:\n{response.text[:1000]}")
    return float(found.group(1))


def start_llama_server(
    binary: Path,
    model: Path,
    *,
    jinja: bool = True,
    extra_args: Sequence[str] = (),
    log: Path | None = None,
    threads: int | None = 1,
    nice: bool = True,
    timeout: float = 120.0,
) -> LlamaServer:
    """Start llama-server on a free port and wait until ``/health`` answers 200.

    It serves ``model`` with a 2048-token context and one slot, without the
    web UI. ``jinja`` applies the model's chat template with ``--jinja``
    (native tool calls); ``extra_args`` are appended to the command line;
    ``log`` is a file for its output (discarded without one); ``threads``
    is ``-t`` (None: llama-server's own choice, every core); ``nice`` runs it
    under ``nice`` (tests on a shared machine; a benchmark measuring latency
    passes False). Raises RuntimeError, with the log's end, if the server
    exits or is not healthy within ``timeout`` seconds.
    """
    port = free_port()
    cmd = [*(["nice"] if nice else []), str(binary), "-m", str(model)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "-c", "2048", "-np", "1", "--no-webui"]
    if threads is not None:
        cmd += ["-t", str(threads)]
    if jinja:
        cmd.append("--jinja")
    cmd.extend(extra_args)
    if log is None:
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    else:
        with log.open("wb") as output:
            process = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT)
    server = LlamaServer(process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"llama-server exited with {process.returncode}: {' '.join(cmd)}\n"
                f"{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"llama-server was not healthy in {timeout:.0f} s\n{server.log_tail()}")
