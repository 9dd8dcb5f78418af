"""Voice sessions that end give their memory back.

The speech models (faster-whisper, Piper, Silero VAD, smart-turn) are the
process's, loaded once and shared (``speech_models``); a session holds only
its own services and pipeline. After warm-up rounds, more rounds of voice
sessions open, hear a question, answer it aloud and close, two at a time, on
the real pipeline with the tests' in-memory audio transport; the process's
resident memory stays near its level after the warm-up.

No LLM is needed: the one expert is an address nothing listens on, so
TwinService answers every turn with its fallback reply, which Piper speaks.
Every speech model of every session runs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import time
import weakref

import pytest
from helpers.ports import free_port
from helpers.speech import silence, synthesize

from app_helpers import expert_environ, voice_session
from pipecat_app.config import DEMO_CONFIG, AppConfig, load_config

pytestmark = pytest.mark.slow

AT_ONCE = 2
#: The first rounds raise the allocators' high-water mark for two sessions'
#: inference at once (ONNX Runtime's arenas, glibc's per-thread heaps): up
#: to 160 MB over the first round's level here. The warm level is after them.
WARM_UP_ROUNDS = 2
ROUNDS = 4
#: How far above the warm level the resident memory may go. A session that
#: loads its own speech models adds about 170 MB for them (over 250 MB here
#: once they have run), so one round of two such sessions fails. Sessions
#: sharing the models added at most 70 MB over these rounds here: what is
#: left of the allocators' growth, and ended pipelines waiting for Python's
#: cycle collector (pipecat's processors refer to each other; a few MB each).
BOUND_MB = 150


def rss_mb() -> float:
    """This process's resident memory."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


def unreachable_expert_config(tmp_path) -> AppConfig:
    environ = {
        **expert_environ(f"http://127.0.0.1:{free_port()}/v1"),
        "TWIN_APP__TWIN__MEMORY__PATH": str(tmp_path / "memory.sqlite3"),
        "TWIN_APP__VAD__TURN_STOP_TIMEOUT_S": "20",
    }
    return load_config(DEMO_CONFIG, environ=environ)


def test_voice_sessions_that_end_give_their_memory_back(tmp_path):
    config = unreachable_expert_config(tmp_path)
    question = synthesize("What is the capital of France?", config.tts)  # type: ignore[arg-type]
    ended: list[weakref.ref[object]] = []

    async def talk() -> tuple[str, int]:
        """One session: the question in, the spoken answer out; its transcript and audio."""
        async with voice_session(config) as (session, transport):
            ended.append(weakref.ref(session.worker))
            spoken = transport.say(silence(0.3) + question + silence(0.3))
            await spoken.done.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                last = transport.received[-1][0] if transport.received else None
                if last is not None and time.time() - last > 1.0:
                    break
                await asyncio.sleep(0.1)
            turns = session.turn_metrics.turns
            return (turns[0].transcript if turns else ""), len(transport.received)

    async def rounds() -> tuple[float, list[float]]:
        heard = []
        for _ in range(WARM_UP_ROUNDS):
            heard += await asyncio.gather(*(talk() for _ in range(AT_ONCE)))
        warm = rss_mb()
        levels = []
        for _ in range(ROUNDS):
            heard += await asyncio.gather(*(talk() for _ in range(AT_ONCE)))
            levels.append(rss_mb())
        for transcript, audio in heard:
            assert {"capital", "france"} <= set(words(transcript)), transcript
            assert audio, "a session spoke no answer"
        return warm, levels

    warm, levels = asyncio.run(rounds())

    print(f"resident memory: warm {warm:.0f} MB, after each round {[round(x) for x in levels]}")
    assert max(levels) - warm < BOUND_MB, (
        f"resident memory grew from {warm:.0f} MB to {max(levels):.0f} MB "
        f"over {ROUNDS * AT_ONCE} sessions after the warm-up (bound {BOUND_MB} MB)"
    )
    gc.collect()
    left = [ref for ref in ended if ref() is not None]
    assert not left, f"{len(left)} of {len(ended)} ended sessions' pipelines are still held"
