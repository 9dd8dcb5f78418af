"""Running TwinService turns in tests: a configured service and one user turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import run_test

from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.llm import ExpertClient
from pipecat_app.twin.service import TwinService
from pipecat_app.twin.toolbox import ToolBox


def expert(name: str, base_url: str, *, tool_calls: bool = False) -> dict[str, Any]:
    """A ``[[twin.experts]]`` entry for a general expert at ``base_url``."""
    return {
        "name": name,
        "domain": "general",
        "description": "Everyday conversation and general knowledge",
        "base_url": base_url,
        "model": "smollm2-135m",
        "tool_calls": tool_calls,
    }


def make_twin(
    tmp_path: Path,
    experts: list[dict[str, Any]],
    timeout_s: float = 30,
    *,
    toolbox: ToolBox | None = None,
    client: ExpertClient | None = None,
) -> TwinService:
    """TwinService for user ``ana`` with a memory under ``tmp_path`` and static experts.

    ``toolbox`` and ``client`` replace the built-in tools and the default client.
    """
    config = TwinConfig.model_validate(
        {
            "user_id": "ana",
            "memory": {"path": str(tmp_path / "memory.sqlite3")},
            "experts": experts,
            "routing": {"expert_timeout_s": timeout_s},
        }
    )
    return TwinService(config, toolbox=toolbox, client=client)


async def ask(twin: TwinService, text: str, *, extra: list[FrameProcessor] = ()) -> str:
    """One user turn through the pipeline; returns the answer (and keeps it in the context)."""
    twin.context.add_message({"role": "user", "content": text})
    stage = Pipeline([*twin.processors(), *extra]) if extra else twin.processors()[0]
    down, _ = await run_test(stage, frames_to_send=[LLMContextFrame(context=twin.context)])
    kinds = [type(f) for f in down]
    assert kinds[0] is LLMFullResponseStartFrame
    assert kinds[-1] is LLMFullResponseEndFrame
    answer = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    twin.context.add_message({"role": "assistant", "content": answer})
    return answer
