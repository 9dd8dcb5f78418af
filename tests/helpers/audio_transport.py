"""A transport that speaks recorded audio into the pipeline and records the answer.

The input side streams 20 ms chunks in real time, like a microphone: silence,
except while an utterance given to :meth:`AudioFileTransport.say` is playing.
The output side plays the bot's audio in real time (so interruptions happen
when they would for a listener) and keeps it with timestamps. The app's voice
tests (``app_helpers.voice_session``) and the voice benchmark drive the real
pipeline with it.
"""

from __future__ import annotations

import asyncio
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

CHUNK_SECS = 0.02


def read_wav(path: Path) -> tuple[bytes, int]:
    """16-bit mono PCM and its sample rate from a WAV file."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need 16-bit mono PCM")
        return wav.readframes(wav.getnframes()), wav.getframerate()


@dataclass
class Utterance:
    """One utterance to play and when it was played."""

    pcm: bytes
    started_at: float | None = None
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Input(BaseInputTransport):
    def __init__(self, params: TransportParams) -> None:
        super().__init__(params)
        self._queue: asyncio.Queue[Utterance] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._task = self.create_task(self._stream(), name="audio-file-input")
        self.started.set()

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_stream()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_stream()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        await self._stop_stream()
        await super().cleanup()

    async def _stop_stream(self) -> None:
        if self._task:
            await self.cancel_task(self._task)
            self._task = None

    def say(self, utterance: Utterance) -> None:
        self._queue.put_nowait(utterance)

    async def _stream(self) -> None:
        rate = self.sample_rate
        chunk_bytes = int(rate * CHUNK_SECS) * 2
        silence = b"\x00" * chunk_bytes
        current: Utterance | None = None
        offset = 0
        next_at = time.monotonic()
        while True:
            if current is None and not self._queue.empty():
                current, offset = self._queue.get_nowait(), 0
                current.started_at = time.time()
            if current is not None:
                chunk = current.pcm[offset : offset + chunk_bytes]
                offset += chunk_bytes
                if len(chunk) < chunk_bytes:
                    chunk = chunk + silence[len(chunk) :]
                if offset >= len(current.pcm):
                    current.ended_at = time.time()
                    current.done.set()
                    current = None
            else:
                chunk = silence
            await self.push_audio_frame(
                InputAudioRawFrame(audio=chunk, sample_rate=rate, num_channels=1)
            )
            next_at += CHUNK_SECS
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


class _Output(BaseOutputTransport):
    def __init__(self, params: TransportParams) -> None:
        super().__init__(params)
        self.audio: list[tuple[float, bytes]] = []
        self._next_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        now = time.monotonic()
        self.audio.append((time.time(), frame.audio))
        self._next_at = max(self._next_at, now) + len(frame.audio) / 2 / frame.sample_rate
        await asyncio.sleep(max(0.0, self._next_at - time.monotonic()))
        return True


class AudioFileTransport(BaseTransport):
    """Plays utterances in as a microphone would and records what the bot says."""

    def __init__(self, sample_rate_in: int = 16000, sample_rate_out: int = 24000) -> None:
        super().__init__()
        self._params = TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=sample_rate_in,
            audio_out_enabled=True,
            audio_out_sample_rate=sample_rate_out,
        )
        self._input = _Input(self._params)
        self._output = _Output(self._params)

    def input(self) -> FrameProcessor:
        """The microphone side."""
        return self._input

    def output(self) -> FrameProcessor:
        """The loudspeaker side."""
        return self._output

    async def wait_started(self) -> None:
        """Until the pipeline has started and the microphone side streams."""
        await self._input.started.wait()

    @property
    def sample_rate_in(self) -> int:
        """Sample rate the utterances must have."""
        return self._params.audio_in_sample_rate or 16000

    @property
    def received(self) -> list[tuple[float, bytes]]:
        """The bot's audio so far: (wall-clock time written, 16-bit PCM)."""
        return self._output.audio

    def say(self, pcm: bytes) -> Utterance:
        """Queue 16-bit mono PCM at ``sample_rate_in``; returns it to await ``done``."""
        utterance = Utterance(pcm=pcm)
        self._input.say(utterance)
        return utterance
