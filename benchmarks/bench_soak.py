"""Soak: voice sessions open and close over WebRTC for a fixed time; the app's memory stays flat.

    python benchmarks/bench_soak.py --out DIR [--duration 300] [--clients 3] [--max-sessions 2]

Starts llama-server (SmolLM2-135M) and ``twin-app serve`` with the embedded
default in a subprocess, as ``make demo`` runs them, with
``server.max_sessions`` set to ``--max-sessions``. ``--clients`` headless
WebRTC clients (aiortc, the library pipecat's SmallWebRTC transport is built
on; no browser) each loop until the time is up, through the app's real HTTP
signalling and media path:

- POST an SDP offer with one audio track to ``/api/offer``;
- refused (any status but 200): note the status and the app's reason, wait
  for its ``Retry-After`` (else a second) and offer again;
- answered: connect, say a question (Piper, in real time like a
  microphone), listen until a second of the spoken answer has arrived, hang
  up (close the peer connection), as a user who has heard enough does.

More clients than sessions allowed make the app refuse some offers. Every
5 s the app process's resident memory (``/proc/PID/statm``) and ``/health``'s
session counts are sampled. Writes ``DIR/soak.json`` (summary, every session,
every sample) and prints a table: sessions handled and how they ended,
refusals by reason, and the resident memory over time. The goal is a flat
line: after the first quarter of the run (models loaded, allocators warm),
the memory should not grow with the sessions handled; the table gives its
range over the second half.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# app_helpers: the app as a subprocess, as the app's tests start it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "pipecat_app" / "tests"))

from helpers.llama_server import start_llama_server
from helpers.llm_assets import llama_server_bin, smollm2_gguf

QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What do bees make?",
    "Which planet do we live on?",
]
RATE = 16000
FRAME_S = 0.02
SAMPLE_EVERY_S = 5.0
CONNECT_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 60.0
LISTEN_S = 1.0  # answer audio heard before hanging up
LOUD_RMS = 300.0  # 16-bit RMS of a frame that is speech, not comfort silence


class Microphone(MediaStreamTrack):
    """An outgoing audio track: silence, or the utterance given to :meth:`say`, in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.spoken = asyncio.Event()
        self._pcm = b""
        self._offset = 0
        self._sent = 0
        self._start: float | None = None

    def say(self, pcm: bytes) -> None:
        """Play 16-bit mono PCM at 16 kHz; ``spoken`` is set when it has been sent."""
        self._pcm, self._offset = pcm, 0
        self.spoken.clear()

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms, when it is due."""
        samples = int(RATE * FRAME_S)
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._sent / RATE - time.monotonic()))
        chunk = self._pcm[self._offset : self._offset + samples * 2]
        if self._pcm:
            self._offset += samples * 2
            if self._offset >= len(self._pcm):
                self._pcm = b""
                self.spoken.set()
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(chunk.ljust(samples * 2, b"\x00"), dtype=np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += samples
        return frame


@dataclass
class Session:
    """One offer and what became of it."""

    client: int
    offered_at: float
    outcome: str = ""
    status: int | None = None
    reason: str | None = None
    answer_after_s: float | None = None
    ended_at: float | None = None


@dataclass
class Soak:
    """What every client saw, and the app's memory over time."""

    sessions: list[Session] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


async def _listen(track: MediaStreamTrack, heard: list[tuple[float, float]]) -> None:
    """Keep (time, RMS) of every incoming audio frame."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        samples = frame.to_ndarray().astype(np.float64)
        heard.append((time.monotonic(), float(np.sqrt(np.mean(samples**2)))))


async def _one_session(
    http: httpx.AsyncClient, url: str, client: int, question: bytes, soak: Soak
) -> float:
    """Offer, talk, hang up; returns how long to wait before the next offer."""
    session = Session(client=client, offered_at=time.monotonic())
    soak.sessions.append(session)
    pc = RTCPeerConnection()
    microphone = Microphone()
    heard: list[tuple[float, float]] = []
    listeners: list[asyncio.Task[None]] = []
    pc.addTrack(microphone)

    @pc.on("track")
    def _track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            listeners.append(asyncio.create_task(_listen(track, heard)))

    try:
        await pc.setLocalDescription(await pc.createOffer())
        response = await http.post(
            f"{url}/api/offer",
            json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type},
        )
        session.status = response.status_code
        if response.status_code != 200:
            session.outcome = "refused"
            session.reason = _reason(response)
            return _retry_after(response)
        answer = response.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                session.outcome = f"not connected ({pc.connectionState})"
                return 1.0
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # the pipeline starts listening once the peer is connected
        microphone.say(question)
        await microphone.spoken.wait()
        spoken_at = time.monotonic()
        deadline = spoken_at + ANSWER_TIMEOUT_S
        first: float | None = None
        while time.monotonic() < deadline:
            loud = [t for t, rms in heard if t >= spoken_at and rms > LOUD_RMS]
            first = loud[0] if loud else None
            if first is not None and time.monotonic() - first >= LISTEN_S:
                break
            await asyncio.sleep(0.1)
        if first is None:
            session.outcome = "no answer"
        else:
            session.outcome = "answered"
            session.answer_after_s = round(first - spoken_at, 3)
        return 0.0
    except Exception as exc:  # a soak counts failures, it does not stop at one
        session.outcome = f"error: {type(exc).__name__}"
        session.reason = str(exc)[:200]
        return 1.0
    finally:
        await pc.close()
        for task in listeners:
            task.cancel()
        session.ended_at = time.monotonic()


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail if detail is not None else response.text[:120])


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(30.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


async def _client(url: str, client: int, questions: list[bytes], until: float, soak: Soak) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        turn = client
        while time.monotonic() < until:
            pause = await _one_session(http, url, client, questions[turn % len(questions)], soak)
            turn += 1
            await asyncio.sleep(min(pause, max(0.0, until - time.monotonic())))


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _sample(url: str, pid: int, started: float, soak: Soak, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            try:
                health = (await http.get(f"{url}/health")).json()
            except (httpx.HTTPError, ValueError):
                health = {}
            ended = sum(1 for s in soak.sessions if s.ended_at is not None and s.status == 200)
            soak.samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mb": round(rss_mb(pid), 1),
                    "sessions_ended": ended,
                    "health_sessions": health.get("sessions"),
                }
            )
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
                return
            except TimeoutError:
                pass


async def _soak(url: str, pid: int, args: argparse.Namespace, questions: list[bytes]) -> Soak:
    soak = Soak()
    started = time.monotonic()
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(url, pid, started, soak, stop))
    until = started + args.duration
    await asyncio.gather(*(_client(url, c, questions, until, soak) for c in range(args.clients)))
    # Every client has hung up: wait for the app to end the last sessions.
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            sessions = (await http.get(f"{url}/health")).json().get("sessions", {})
            if not sessions.get("voice"):
                break
            await asyncio.sleep(0.5)
    await asyncio.sleep(SAMPLE_EVERY_S)
    stop.set()
    await sampler
    for session in soak.sessions:
        session.offered_at = round(session.offered_at - started, 2)
        if session.ended_at is not None:
            session.ended_at = round(session.ended_at - started, 2)
    return soak


def _summary(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    rss = [s["rss_mb"] for s in soak.samples]
    warm_at = args.duration / 4
    warm = next((s for s in soak.samples if s["t_s"] >= warm_at), soak.samples[-1])
    after_warm = [s["rss_mb"] for s in soak.samples if s["t_s"] >= warm["t_s"]]
    second_half = [s["rss_mb"] for s in soak.samples if s["t_s"] >= args.duration / 2]
    handled = [s for s in soak.sessions if s.status == 200]
    refused = [s for s in soak.sessions if s.outcome == "refused"]
    latencies = [s.answer_after_s for s in handled if s.answer_after_s is not None]
    return {
        "benchmark": "soak",
        "duration_s": args.duration,
        "clients": args.clients,
        "max_sessions": args.max_sessions,
        "offers": len(soak.sessions),
        "sessions_handled": len(handled),
        "outcomes": dict(Counter(s.outcome for s in soak.sessions)),
        "refusals_by_reason": dict(Counter(f"{s.status} {s.reason}" for s in refused)),
        "answer_after_question_s_p50": round(float(np.median(latencies)), 3) if latencies else None,
        "rss_mb": {
            "first_sample": rss[0],
            "warm": warm["rss_mb"],
            "warm_at_s": warm["t_s"],
            "max_after_warm": max(after_warm),
            "end": rss[-1],
            "growth_after_warm": round(max(after_warm) - warm["rss_mb"], 1),
            "second_half": [min(second_half), max(second_half)],
            "sessions_after_warm": soak.samples[-1]["sessions_ended"] - warm["sessions_ended"],
        },
    }


def _table(summary: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    lines = [
        f"soak: {summary['duration_s']} s, {summary['clients']} clients, "
        f"max_sessions {summary['max_sessions']}: {summary['offers']} offers, "
        f"{summary['sessions_handled']} sessions handled",
        "how the offers ended:",
        *(f"  {count:>5}  {outcome}" for outcome, count in summary["outcomes"].items()),
        "refusals by reason:",
        *(f"  {count:>5}  {reason}" for reason, count in summary["refusals_by_reason"].items()),
    ]
    if not summary["refusals_by_reason"]:
        lines.append("      -  none")
    lines.append(f"{'t s':>7}{'sessions ended':>16}{'RSS MiB':>10}")
    step = max(1, round(60 / SAMPLE_EVERY_S))
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    lines += [f"{s['t_s']:>7.0f}{s['sessions_ended']:>16}{s['rss_mb']:>10.0f}" for s in shown]
    rss = summary["rss_mb"]
    lines.append(
        f"resident memory: {rss['warm']:.0f} MiB at {rss['warm_at_s']:.0f} s (warm), "
        f"at most {rss['max_after_warm']:.0f} MiB over the {rss['sessions_after_warm']} "
        f"sessions after it (+{rss['growth_after_warm']:.0f}), {rss['end']:.0f} MiB at the end; "
        f"{rss['second_half'][0]:.0f}-{rss['second_half'][1]:.0f} MiB over the second half"
    )
    return "\n".join(lines)


def main() -> int:
    """Run the soak and write DIR/soak.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for soak.json")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of offers")
    parser.add_argument("--clients", type=int, default=3, help="clients offering at once")
    parser.add_argument("--max-sessions", type=int, default=2, help="the app's server.max_sessions")
    args = parser.parse_args()
    if args.duration <= 0 or args.clients < 1 or args.max_sessions < 1:
        parser.error("--duration, --clients and --max-sessions must be positive")
    args.out.mkdir(parents=True, exist_ok=True)

    from app_helpers import app_environ, start_app
    from helpers.speech import silence, synthesize
    from pipecat_app.config import DEMO_CONFIG, load_config

    state = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    tts = load_config(DEMO_CONFIG, environ={}).tts
    questions = [silence(0.3) + synthesize(q, tts) + silence(0.5) for q in QUESTIONS]  # type: ignore[arg-type]
    load_before = os.getloadavg()
    with start_llama_server(
        llama_server_bin(), smollm2_gguf(), jinja=False, log=state / "llama-server.log"
    ) as llama:
        env = app_environ(state, llama.base_url)
        env["TWIN_APP__SERVER__MAX_SESSIONS"] = str(args.max_sessions)
        env["TWIN_APP__VAD__TURN_STOP_TIMEOUT_S"] = "20"
        app = start_app(env, state / "app.log")
        try:
            soak = asyncio.run(_soak(app.url, app.proc.pid, args, questions))
        finally:
            code = app.stop()

    summary = _summary(soak, args)
    summary["app_exit_code"] = code
    summary["setup"] = {
        "driven": "twin-app serve over HTTP signalling and WebRTC media (aiortc clients)",
        "config": "apps/pipecat_app/config/demo.toml",
        "llm": "SmolLM2-135M-Instruct Q4_1 on llama-server",
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    out = args.out / "soak.json"
    out.write_text(
        json.dumps(
            {**summary, "samples": soak.samples, "sessions": [asdict(s) for s in soak.sessions]},
            indent=2,
        )
        + "\n"
    )
    print(_table(summary, soak.samples))
    print(f"wrote {out}")
    shutil.rmtree(state, ignore_errors=True)
    return 0 if summary["outcomes"].get("answered") else 1


if __name__ == "__main__":
    sys.exit(main())
