"""What the prompt evolution's real runs share: a repeatable SmolLM2 and a prompt that must lose.

- :func:`repeatable_smollm2`: SmolLM2-135M on the shared llama-server build,
  sampling with temperature 0 and a fixed seed, so a run repeats.
- :data:`LOSING_PROMPT`: a deliberately bad "current" prompt, longer than
  SmolLM2's 2048-token context, so every case gets no answer and scores 0;
  a run that starts from it as the published prompt must publish its best.
"""

from __future__ import annotations

from pathlib import Path

from helpers.llama_server import LlamaServer
from helpers.llm_skip import smollm2_server_or_skip

LOSING_PROMPT = "You are Twin. " + " ".join(
    ["Always answer with a long markdown table, then a bulleted list with emoji and links."] * 180
)


def repeatable_smollm2(log: Path) -> LlamaServer:
    """SmolLM2 with ``--temp 0 --seed 42`` (skips the test when the build or model is missing)."""
    return smollm2_server_or_skip(extra_args=["--temp", "0", "--seed", "42"], log=log)
