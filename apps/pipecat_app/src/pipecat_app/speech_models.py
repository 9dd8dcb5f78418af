"""The speech models, loaded once per process and shared by every voice session.

A voice session has its own pipecat services (they keep per-conversation
state: the VAD's recurrent state, smart-turn's audio buffer, the STT's
segment, the TTS's contexts), but the models behind them are read-only and
the same for every session. pipecat 1.14 loads a model inside each service's
constructor and takes no loaded one (pipecat-ai/pipecat#2050, open): a session
cost about 170 MB of models, loaded again for every browser tab. Here each
model is loaded once, on first use, and handed to the services:

- faster-whisper's ``WhisperModel`` (:func:`whisper_model`): faster-whisper
  and CTranslate2 take calls from several threads, which queue on the
  model's worker.
- the Piper voice (:func:`piper_voice`): synthesis only reads the voice; its
  ONNX run is thread-safe, and piper phonemizes under its own lock. Its
  session gives back after each sentence what the sentence took
  (:class:`ShrinkingSession`): shared for the process's life, it would
  otherwise keep what the longest sentence ever spoken needed.
- Silero VAD's ONNX session (:func:`silero_session`): ``run`` is
  thread-safe; the recurrent state stays in each session's analyzer.
- smart-turn v3's ONNX session (:func:`smart_turn_session`): the same; the
  audio buffer and the thread the model runs on stay in each analyzer.

Sessions are built in worker threads, so loading is under a lock: two
sessions starting together load a model once. The classes below are pipecat's
own services and analyzers, constructed with a shared model instead of
loading one; their constructors are pipecat's without the load
(``tests/test_speech_models.py`` checks they set every attribute pipecat's do).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import onnxruntime
from faster_whisper import WhisperModel
from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.utils.env import env_truthy
from piper import PiperVoice
from piper.config import PiperConfig

# The model files pipecat ships (what its analyzers load by default).
SILERO_MODEL = ("pipecat.audio.vad.data", "silero_vad.onnx")
SMART_TURN_MODEL = ("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")

T = TypeVar("T")

_lock = threading.Lock()
_models: dict[tuple[Any, ...], Any] = {}


def _shared(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """The model under ``key``, loaded by ``load`` the first time it is asked for.

    One lock for every model (they load once, so it is rarely waited on);
    ``load`` must not ask for another model.
    """
    with _lock:
        if key not in _models:
            logger.debug(f"loading {key[0]} model {key[1:]}")
            _models[key] = load()
        return _models[key]  # type: ignore[no-any-return]


def loaded() -> list[tuple[Any, ...]]:
    """The keys of the models this process has loaded (kind first, then what the load took)."""
    with _lock:
        return list(_models)


def _packaged(package: str, name: str) -> str:
    return str(resources.files(package).joinpath(name))


def whisper_model(model: str, *, device: str, compute_type: str, cpu_threads: int) -> WhisperModel:
    """faster-whisper's model from a local directory (or name), loaded once per settings."""
    return _shared(
        ("whisper", model, device, compute_type, cpu_threads),
        lambda: WhisperModel(
            model, device=device, compute_type=compute_type, cpu_threads=cpu_threads
        ),
    )


class ShrinkingSession(onnxruntime.InferenceSession):
    """An ONNX session whose memory arena gives back, after each run, what the run added.

    ONNX Runtime keeps the largest buffers a session ever needed. Piper's
    grow with the sentence: one long sentence (an answer without a full stop)
    held 800 MB for good. The shrinkage costs no measurable time per sentence.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shrink = onnxruntime.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(
        self,
        output_names: Any,
        input_feed: Any,
        run_options: onnxruntime.RunOptions | None = None,
    ) -> Any:
        """``InferenceSession.run``, shrinking the arena after it unless told otherwise."""
        return super().run(output_names, input_feed, run_options or self._shrink)


def piper_voice(model: Path) -> PiperVoice:
    """A Piper voice (``<voice>.onnx`` with its ``.onnx.json``) on the CPU, loaded once.

    As ``PiperVoice.load`` loads it, with a :class:`ShrinkingSession`.
    """
    if not model.exists():
        # PiperTTSService would download it; the app never downloads a model.
        raise FileNotFoundError(f"Piper voice {model} not found")

    def load() -> PiperVoice:
        config = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
        session = ShrinkingSession(
            str(model),
            sess_options=onnxruntime.SessionOptions(),
            providers=["CPUExecutionProvider"],
        )
        return PiperVoice(config=PiperConfig.from_dict(config), session=session)

    return _shared(("piper", str(model)), load)


def silero_session() -> onnxruntime.InferenceSession:
    """Silero VAD's ONNX session, with the options pipecat's ``SileroOnnxModel`` uses."""

    def load() -> onnxruntime.InferenceSession:
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        return onnxruntime.InferenceSession(
            _packaged(*SILERO_MODEL), providers=["CPUExecutionProvider"], sess_options=options
        )

    return _shared(("silero", *SILERO_MODEL), load)


def smart_turn_session(cpu_count: int = 1) -> onnxruntime.InferenceSession:
    """smart-turn v3's ONNX session, with the options ``LocalSmartTurnAnalyzerV3`` uses."""

    def load() -> onnxruntime.InferenceSession:
        options = onnxruntime.SessionOptions()
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = cpu_count
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        return onnxruntime.InferenceSession(_packaged(*SMART_TURN_MODEL), sess_options=options)

    return _shared(("smart-turn", *SMART_TURN_MODEL, cpu_count), load)


class _SileroState(SileroOnnxModel):
    """pipecat's Silero wrapper (one recurrent state) over a shared session."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """``SileroVADAnalyzer`` whose model state is its own and whose ONNX session is shared.

    pipecat's constructor opens a new session on the model file and takes no
    open one; this is that constructor with :func:`silero_session`.
    """

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None) -> None:
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = _SileroState(silero_session())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """``LocalSmartTurnAnalyzerV3`` (pipecat's bundled model) over a shared ONNX session.

    pipecat's constructor opens a new session on the model file and takes no
    open one; this is that constructor with :func:`smart_turn_session`. The
    audio buffer and the thread the model runs on stay the analyzer's own.
    """

    def __init__(
        self, *, sample_rate: int | None = None, params: SmartTurnParams | None = None
    ) -> None:
        BaseSmartTurn.__init__(self, sample_rate=sample_rate, params=params)
        self._log_data = env_truthy("PIPECAT_SMART_TURN_LOG_DATA", default=False)
        self._session = smart_turn_session()


class SharedPiperTTSService(PiperTTSService):
    """``PiperTTSService`` speaking with an already loaded voice.

    pipecat's constructor loads the voice (downloading it if it is missing)
    and takes no loaded one; this is that constructor with :func:`piper_voice`.

    Args:
        voice: The loaded voice (:func:`piper_voice`).
        settings: The service's settings; ``voice`` names the loaded voice.
        **kwargs: ``TTSService`` arguments.
    """

    def __init__(
        self, *, voice: PiperVoice, settings: PiperTTSService.Settings, **kwargs: Any
    ) -> None:
        defaults = self.Settings(model=None, voice=None, language=None)
        defaults.apply_update(settings)
        TTSService.__init__(
            self, push_start_frame=True, push_stop_frames=True, settings=defaults, **kwargs
        )
        self._voice = voice
