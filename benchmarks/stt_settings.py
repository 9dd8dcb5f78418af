"""faster-whisper settings compared on the voice benchmark's spoken questions.

    python benchmarks/stt_settings.py --out DIR [--rounds 3] [--variant NAME ...]

Not part of ``make bench`` (no ``bench_`` prefix): a tool to choose the
``[stt]`` defaults. Piper speaks ``bench_voice.QUESTIONS``; each is cut the way
pipecat's segmented STT hands it to the model (pre-roll, the speech, the VAD's
``stop_secs`` of silence, the service's trailing silence) and transcribed by
the app's own service (``providers.make_stt``) with each variant's ``[stt]``
settings, question by question, so a busy shared CPU slows all variants alike.
Reports per variant the wall time p50/p95 and the CPU time p50 of one
transcription (CPU time is the steadier number on a shared machine), the first
(cold) call, and the word error rate against the text Piper was given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_voice import QUESTIONS

RATE = 16000
PRE_ROLL_S = 0.8  # the 1 s the segmented STT keeps, less the VAD's start_secs of speech
STOP_S = 0.2  # the VAD's stop_secs, inside the segment
TRAILING_S = 0.5  # SegmentedSTTService's trailing_silence_secs

# [stt] settings per variant, applied to the embedded default. "pipecat" is
# what pipecat 1.14's WhisperSTTService did before the app tuned it:
# faster-whisper's defaults and CTranslate2's 4 threads.
PIPECAT: dict[str, Any] = {
    "window": "full",
    "beam_size": 5,
    "timestamps": True,
    "temperature_fallback": True,
    "condition_on_previous_text": True,
    "cpu_threads": 4,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "pipecat": PIPECAT,
    "float32": {**PIPECAT, "compute_type": "float32"},
    "threads_per_cpu": {**PIPECAT, "cpu_threads": 0},
    "beam1": {**PIPECAT, "beam_size": 1},
    "no_timestamps": {**PIPECAT, "timestamps": False},
    "no_fallback": {**PIPECAT, "temperature_fallback": False},
    "no_condition": {**PIPECAT, "condition_on_previous_text": False},
    "full_fast": {"window": "full"},
    "default": {},
    "default_greedy": {"beam_size": 1},
    "fit15": {"fit_min_s": 15},
    "fit20": {"fit_min_s": 20},
}


# Spellings tiny.en prefers that are not errors.
_SAME = {"colour": "color", "2": "two", "3": "three"}


def _words(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
    return [_SAME.get(w, w) for w in words]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def _segments() -> list[tuple[str, np.ndarray]]:
    from helpers.speech import silence, synthesize
    from pipecat_app.config import DEMO_CONFIG, load_config

    config = load_config(DEMO_CONFIG, environ={})
    out = []
    for text in QUESTIONS:
        pcm = silence(PRE_ROLL_S) + synthesize(text, config.tts) + silence(STOP_S + TRAILING_S)
        out.append((text, np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0))
    return out


def main() -> int:
    """Transcribe every question with every variant; write DIR/stt_settings.json."""
    from pipecat_app.config import DEMO_CONFIG, WhisperSTTConfig, load_config
    from pipecat_app.providers import make_stt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    args = parser.parse_args()
    names = args.variant or list(VARIANTS)
    stt = load_config(DEMO_CONFIG, environ={}).stt
    assert isinstance(stt, WhisperSTTConfig)

    segments = _segments()
    services: dict[str, Any] = {}
    cold: dict[str, float] = {}
    for name in names:
        settings = {**VARIANTS[name], "warm_up": False}
        services[name] = make_stt(stt.model_validate({**stt.model_dump(), **settings}))

    def run(name: str, audio: np.ndarray) -> tuple[float, float, str]:
        cpu = _cpu_s()
        start = time.perf_counter()
        pieces = services[name]._transcribe(audio)
        # pipecat keeps pieces with no_speech_prob below 0.4.
        text = " ".join(p.text for p in pieces if p.no_speech_prob < 0.4)
        return time.perf_counter() - start, _cpu_s() - cpu, text

    for name in names:
        cold[name] = run(name, segments[0][1])[0]
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, int] = dict.fromkeys(names, 0)
    ref_words = 0
    misheard: dict[str, list[str]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        for text, audio in segments:
            if round_ == 0:
                ref_words += len(_words(text))
            for name in names:
                seconds, cpu_s, hyp = run(name, audio)
                times[name].append(seconds)
                cpu[name].append(cpu_s)
                if round_ == 0:
                    print(f"  {name}: {seconds:.3f} s {hyp.strip()!r}", flush=True)
                    dist = _edit_distance(_words(text), _words(hyp))
                    errors[name] += dist
                    if dist:
                        misheard[name].append(hyp.strip())

    rows = {
        name: {
            "p50_s": round(float(np.percentile(times[name], 50)), 4),
            "p95_s": round(float(np.percentile(times[name], 95)), 4),
            "mean_s": round(float(np.mean(times[name])), 4),
            "cpu_p50_s": round(float(np.percentile(cpu[name], 50)), 4),
            "cold_s": round(cold[name], 4),
            "wer": round(errors[name] / ref_words, 4),
            "misheard": misheard[name],
            "settings": VARIANTS[name],
        }
        for name in names
    }
    print(f"{'variant':<16}{'p50 s':>8}{'p95 s':>8}{'cpu p50':>8}{'cold s':>8}{'WER':>7}")
    for name, row in rows.items():
        print(
            f"{name:<16}{row['p50_s']:>8.3f}{row['p95_s']:>8.3f}{row['cpu_p50_s']:>8.3f}"
            f"{row['cold_s']:>8.3f}{row['wer']:>7.3f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"loadavg": os.getloadavg(), "questions": len(segments), "variants": rows}
    (args.out / "stt_settings.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
