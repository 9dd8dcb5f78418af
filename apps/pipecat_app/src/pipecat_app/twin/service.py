"""TwinService: memory, tools and mixture-of-experts routing as one pipecat stage.

Pipeline placement (the app builds it)::

    Pipeline([transport.input(), stt, user_agg, *twin.processors(), tts,
              transport.output(), assistant_agg])

:class:`TwinService` builds the parts (memory, discovery, prompt, router,
expert client, tools) and runs their lifecycle; :class:`TwinLLMProcessor`,
given those parts, runs the turns. It takes the user aggregator's
``LLMContextFrame`` and, for each turn: builds the request from the system
prompt, the history, and the turn's context (the memory recalled within the
token budget) just before the user's message, so the request's prefix stays
the same from turn to turn and llama-server reuses its prompt cache
(:func:`fit_history`; neither prompt nor context is added to the
``LLMContext``: pipecat 1.x keeps the system prompt on the LLM service, not
in the context), routes the turn (:mod:`~pipecat_app.twin.router`),
streams the chosen expert's answer (:mod:`~pipecat_app.twin.llm`) as
``LLMFullResponseStartFrame``, ``LLMTextFrame``..., ``LLMFullResponseEndFrame``
so TTS and the assistant aggregator work unchanged, runs tool calls (native
or JSON-schema fallback) and fails over to the next healthy expert when one
fails, times out or replies with something other than an answer (garbled or
empty: :class:`~pipecat_app.twin.llm.ExpertError`), before or during
streaming; an answer cut off inside a sentence is ended with an ellipsis
first (:func:`cut_off_ending`). A visual turn (``twin.tools.visual_trigger``)
gets the scene before the expert answers, as a marked observation in the
turn's context (:meth:`TwinLLMProcessor.look`); a destructive tool runs only
when the user's own words ask for it (``user_words`` to
:meth:`~pipecat_app.twin.toolbox.ToolBox.call`). Every other frame passes on. An
interruption cancels the running turn (pipecat cancels the processor's
frame task) and the stream is closed.

A speculative context frame (``LLMContextFrame.speculation``: pipecat's
``EagerUserTurnStrategies`` guessed the turn ended at a short pause) is
answered behind pipecat's :class:`~pipecat.turns.speculation_gate.SpeculationGate`,
as pipecat's ``LLMService`` does: the answer is held until the turn is
confirmed (``UserStoppedSpeakingFrame`` releases it) and dropped when the
guess is withdrawn (``EagerEndOfTurnCancelFrame``, which also cancels the turn
and so closes the expert's stream). Until it is confirmed a turn changes
nothing: its routing state, route label and memory are settled only on
confirmation (:meth:`TwinLLMProcessor.settle`), and a tool call (or a visual
turn's scene) withdraws the speculation instead of running, so the turn is
answered again once the user has finished.

Streaming uses the ``openai`` client pipecat depends on rather than an
``OpenAILLMService`` per expert; :mod:`pipecat_app.twin.llm` says why.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.adapters.llm.services.open_ai_adapter import OpenAILLMAdapter
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    ErrorFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    UserImageRawFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import (
    LLMContext,
    is_given,
    standard_message_text,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.speculation_gate import SpeculationGate

from pipecat_app.metrics import EXPERT_ERRORS, ROUTING_DECISIONS, SPECULATIONS, TURN_STAGE
from pipecat_app.twin.camera import UserCamera
from pipecat_app.twin.cluster import ClusterView
from pipecat_app.twin.config import ToolsConfig, TwinConfig
from pipecat_app.twin.discovery import Expert, ExpertDirectory
from pipecat_app.twin.exchange import as_plain_text, call_arguments, call_message, result_message
from pipecat_app.twin.llm import ExpertClient, ExpertError, TextDelta, ToolCalls, ToolChoice
from pipecat_app.twin.memory import MemoryStore, TurnMemory, estimate_tokens
from pipecat_app.twin.observation import unavailable
from pipecat_app.twin.prompt import PromptSource
from pipecat_app.twin.route_label import route_label, route_message
from pipecat_app.twin.router import NoExpertsError, RouteDecision, Router, RoutingState
from pipecat_app.twin.toolbox import Tool, ToolBox
from pipecat_app.twin.tools import builtin_tools, describe_scene

#: Key of an ``LLMFullResponseEndFrame``'s metadata naming the expert whose
#: answer it ends (None: no expert answered); the app's turn log reads it.
ANSWERED_BY = "twin_answered_by"
#: Said when every expert failed, so the user still gets an answer to the turn.
NO_EXPERT_REPLY = "Sorry, I cannot reach any of my language models right now. Please try again."
#: Ends an answer cut off inside a sentence (pipecat's sentence aggregator takes it
#: for a sentence end, so TTS speaks the half sentence at once).
CUT_OFF = "…"
# A sentence's end, then closing quotes (straight or typographic) or brackets.
_SENTENCE_END = re.compile("[.!?\u2026][\"'\u201d\u2019)\\]]*$")


class SpeculationWithdrawn(Exception):
    """A speculative turn reached something it may not do before the turn is confirmed."""


def cut_off_ending(text: str) -> str:
    """What to add to an answer an expert stopped giving: :data:`CUT_OFF`, or nothing.

    Nothing when nothing was said or the text already ends a sentence;
    otherwise the ellipsis, so what follows (another expert's continuation,
    the apology) never runs on inside a half sentence ("The story of Sorry, I
    cannot reach...").
    """
    text = text.rstrip()
    return "" if not text or _SENTENCE_END.search(text) else CUT_OFF


def _plain(message: Any) -> dict[str, Any]:
    return dict(message) if isinstance(message, dict) else {}


def fit_history(
    messages: list[dict[str, Any]],
    system: str,
    context_length: int,
    reserve: int,
    *,
    turn_context: str = "",
    turn_start: int | None = None,
) -> list[dict[str, Any]]:
    """The request's messages: system prompt, history, this turn's context, this turn.

    The system message, then the newest messages that fit ``context_length -
    reserve`` tokens (the last message, the user's turn, is always kept).
    ``turn_context`` (this turn's recalled memory and camera observation) goes
    in as a system message of its own just before ``messages[turn_start]``
    (default: the last message), the message that starts this turn; nothing
    when it is empty.

    The order keeps the request's prefix stable from turn to turn: what
    changes every turn comes after everything the next turn sends again
    (system prompt and history), so llama-server reuses that prefix from its
    prompt cache instead of evaluating the whole prompt anew. The next turn's
    request drops this turn's context message: it begins with this request's
    messages up to that message.
    """
    start = len(messages) - 1 if turn_start is None else turn_start
    budget = max(0, context_length - reserve - estimate_tokens(system))
    budget -= estimate_tokens(turn_context) + 4 if turn_context else 0
    kept: list[dict[str, Any]] = []
    for message in reversed(messages):
        cost = estimate_tokens(json.dumps(message.get("content") or "")) + 4
        if kept and cost > budget:
            break
        kept.append(message)
        budget -= cost
    kept.reverse()
    # A history must not start with tool results cut from their call.
    while len(kept) > 1 and kept[0].get("role") == "tool":
        kept.pop(0)
    fitted = [{"role": "system", "content": system}, *kept]
    if turn_context:
        at = 1 + max(0, start - (len(messages) - len(kept)))
        fitted.insert(at, {"role": "system", "content": turn_context})
    return fitted


class TwinService:
    """The assistant's brain for one conversation: builds its parts and runs their lifecycle.

    Args:
        config: ``[twin]`` (see :mod:`pipecat_app.twin.config`).
        cluster: The process's view of the experts, the vision service and
            the prompt, shared by its conversations (the server's); without
            one, the service makes its own and starts and stops it.
        toolbox: The tools to offer (default: the built-in tools, or none
            when ``twin.tools.enabled`` is false).
        client: Streams to the experts (default: one with
            ``twin.routing.expert_timeout_s``).

    ``__init__`` does no I/O; :meth:`start` opens memory and starts its own
    cluster view if it has one; :meth:`stop` undoes it. The turns themselves
    are :class:`TwinLLMProcessor`'s, given these parts.
    """

    def __init__(
        self,
        config: TwinConfig,
        *,
        cluster: ClusterView | None = None,
        toolbox: ToolBox | None = None,
        client: ExpertClient | None = None,
    ) -> None:
        self.config = config
        self._owns_cluster = cluster is None
        self.cluster = cluster or ClusterView(config)
        self.memory = MemoryStore.from_config(config.memory)
        self.turn_memory = TurnMemory(self.memory, config.memory, config.user_id)
        # Routing and recall share the turn's one embedding (the store keeps it).
        self.router = Router(config.routing, embedder=self.memory)
        self.routing_state = RoutingState()
        self.client = client or ExpertClient(
            timeout_s=config.routing.expert_timeout_s,
            max_tokens=config.routing.max_answer_tokens,
            tls=config.discovery.service_tls("an expert"),
        )
        self.camera = UserCamera()
        if toolbox is None:
            experts, vision = self.cluster.experts, self.cluster.vision
            toolbox = ToolBox(
                builtin_tools(
                    self.memory,
                    lambda: config.user_id,
                    config.tools,
                    config.discovery,
                    vision_url=lambda: vision.url,
                    consul_up=lambda: experts.consul_answering,
                    camera_frame=self.camera.jpeg,
                )
                if config.tools.enabled
                else [],
                timeout_s=config.tools.timeout_s,
            )
        self.toolbox = toolbox
        # pipecat 1.x keeps the system prompt out of the context (a context
        # system message is deprecated since 1.9): like an LLM service's
        # ``system_instruction`` it is applied to each request, from the
        # prompt source, so a new prompt takes effect on the next turn.
        # Its tools are set again at every turn, to those available then.
        self._context = LLMContext(tools=self.toolbox.tools_schema(self.toolbox.available()))

    @property
    def context(self) -> LLMContext:
        """The conversation's LLMContext (turns and tools) for ``LLMContextAggregatorPair``.

        It carries no system message (pipecat 1.x): the system prompt is
        :attr:`system_prompt`, applied to every request. Its tools are those
        offered on the latest turn (each turn sets them to the tools available
        then).
        """
        return self._context

    @property
    def system_prompt(self) -> str:
        """The current system prompt (local default or the Consul KV value)."""
        return self.cluster.prompt.text

    def processors(self) -> list[FrameProcessor]:
        """The stages to put between the user aggregator and TTS."""
        return [
            TwinLLMProcessor(
                prompt=self.cluster.prompt,
                turn_memory=self.turn_memory,
                experts=self.cluster.experts,
                router=self.router,
                routing_state=self.routing_state,
                client=self.client,
                toolbox=self.toolbox,
                tools=self.config.tools,
                camera=self.camera,
            )
        ]

    async def start(self) -> None:
        """Open memory; start the cluster view when it is this service's own."""
        self.turn_memory.open()
        if self._owns_cluster:
            await self.cluster.start()

    async def stop(self) -> None:
        """Close memory and HTTP clients; stop the cluster view when it is this service's own."""
        if self._owns_cluster:
            await self.cluster.stop()
        await self.client.close()
        self.turn_memory.close()


@dataclass
class _Turn:
    """What one turn has produced so far (kept across failovers)."""

    started: float
    choice: ToolChoice
    user_words: str = ""  # the user's own words this turn: what may ask for a destructive tool
    tools: list[Tool] = field(default_factory=list)
    offer_tools: bool = True
    context: str = ""  # recalled memory and the camera's observation: after the history
    start: int = 0  # index of the turn's first message (the user's) in the history
    spoken: list[str] = field(default_factory=list)
    first_token: bool = False
    first_text_at: float | None = None  # when the answer's first text left
    answered_by: Expert | None = None  # the expert that finished the answer
    failed: list[Expert] = field(default_factory=list)  # experts that failed this turn
    withdrawn: bool = False  # a speculation this turn withdrew itself (a tool call)

    @property
    def text(self) -> str:
        return "".join(self.spoken)


def first_round_choice(context: LLMContext) -> ToolChoice:
    """The context's ``tool_choice`` for the first round ("auto" unless set).

    ``"required"`` forces a tool call in the first round only; later rounds
    are ``"auto"`` so the model can answer with the result.
    """
    choice = context.tool_choice
    if is_given(choice) and choice in ("auto", "required", "none"):
        return choice
    return "auto"


class TwinLLMProcessor(FrameProcessor):
    """Answers each ``LLMContextFrame`` with the best available expert (see module doc).

    Args:
        prompt: The system prompt.
        turn_memory: What memory recalls into each turn's context, and
            where each turn is stored.
        experts: The experts known now (discovery; read from memory, no I/O).
        router: Picks each turn's expert and failover order, and remembers
            which experts failed.
        routing_state: The conversation's routing state, committed when a
            turn ends.
        client: Streams a request to one expert.
        toolbox: The tools; each turn offers those available then.
        tools: ``[twin.tools]`` (``trigger``, ``max_rounds``).
        camera: Keeps the user's camera frames (``UserImageRawFrame``, not
            passed on) for ``describe_scene``; None: they pass on.
    """

    def __init__(
        self,
        *,
        prompt: PromptSource,
        turn_memory: TurnMemory,
        experts: ExpertDirectory,
        router: Router,
        routing_state: RoutingState,
        client: ExpertClient,
        toolbox: ToolBox,
        tools: ToolsConfig,
        camera: UserCamera | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._prompt = prompt
        self._turn_memory = turn_memory
        self._experts = experts
        self._router = router
        self._routing_state = routing_state
        self._client = client
        self._toolbox = toolbox
        self._tools = tools
        self._camera = camera
        self._adapter = OpenAILLMAdapter()
        # Holds a speculative answer until its turn is confirmed (push_frame).
        self._gate = SpeculationGate(name=f"{self}::SpeculationGate")
        # A finished speculative turn's settle(), run when the turn is confirmed.
        self._unconfirmed: Callable[[], Awaitable[None]] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Run a turn for each context frame; pass everything else on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            # Told before the turn starts, so a confirmation that overtakes the
            # answer (system frames do) is already counted when it arrives.
            self._unconfirmed = None
            self._gate.begin_speculation(frame.speculation)
            await self._turn(frame.context)
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            if self._gate.is_speculating:
                SPECULATIONS.labels(outcome="withdrawn").inc()
                await self._start_interruption()  # cancels the turn: the stream closes
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserImageRawFrame) and self._camera is not None:
            self._camera.keep(frame)
        else:
            await self.push_frame(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Push through the speculation gate; settle a held turn its confirmation released."""
        speculating = self._gate.is_speculating
        for gated, gated_direction in self._gate.process(frame, direction):
            await super().push_frame(gated, gated_direction)
        confirmed = isinstance(frame, UserStoppedSpeakingFrame)
        if speculating and confirmed and not self._gate.is_speculating:
            SPECULATIONS.labels(outcome="confirmed").inc()
        if self._unconfirmed is not None and not self._gate.is_speculating:
            settle, self._unconfirmed = self._unconfirmed, None
            if confirmed:
                await settle()

    async def _withdraw(self, why: str) -> None:
        """Withdraw this turn's speculation, as pipecat's LLMService does for a tool call.

        The cancel frame goes both ways: down it discards what the gate held,
        up it tells the user aggregator to answer the turn again once it ends.
        """
        logger.debug(f"twin: speculative turn wants {why}; withdrawing it")
        SPECULATIONS.labels(outcome="tool").inc()
        await self.broadcast_frame(EagerEndOfTurnCancelFrame)
        raise SpeculationWithdrawn(why)

    def system_message(self) -> str:
        """The request's system message: the system prompt alone, the same every turn."""
        return self._prompt.text

    def recalled(self, user_text: str) -> str:
        """The memory recalled for this turn, within the token budget (empty: none).

        It goes into the turn's context message, after the history
        (:func:`fit_history`), not into the system message.
        """
        return self._turn_memory.recalled(user_text)

    async def look(self, user_words: str) -> str | None:
        """The scene as a marked observation when the turn is visual, else None.

        A 135M model seldom chooses ``describe_scene``, so a turn matching
        ``twin.tools.visual_trigger`` gets the scene here, while the vision
        service is there, before the expert is asked. A failure becomes an
        observation saying the camera could not be read.
        """
        scene = self._toolbox.get(describe_scene.__name__)
        trigger = self._tools.visual_trigger
        if scene is None or not scene.available or not trigger:
            return None
        if re.search(trigger, user_words) is None:
            return None
        if self._gate.is_speculating:
            await self._withdraw("the scene")
        result = await self._toolbox.call(
            scene.name, {"question": user_words[:500]}, user_words=user_words
        )
        if result["ok"]:
            return str(result["result"]["observation"])
        return unavailable(result["error"]["message"])

    def wants_tools(self, user_text: str) -> bool:
        """Whether this turn looks like it needs a tool (``twin.tools.trigger``)."""
        trigger = self._tools.trigger
        return not trigger or re.search(trigger, user_text) is not None

    async def history(self, context: LLMContext) -> list[dict[str, Any]]:
        """The context's messages in OpenAI form, without system messages."""
        params = await self._adapter.get_llm_invocation_params(
            context, convert_developer_to_user=True
        )
        return [_plain(m) for m in params["messages"] if _plain(m).get("role") != "system"]

    async def _turn(self, context: LLMContext) -> None:
        messages = context.get_messages()
        user_text = standard_message_text(messages[-1]) if messages else ""
        by_user = bool(messages) and _plain(messages[-1]).get("role") == "user"
        # Only the tools whose needs exist now (memory, a vision service,
        # Consul); the context carries them, as pipecat's LLM services read it.
        tools = self._toolbox.available()
        context.set_tools(self._toolbox.tools_schema(tools))
        turn = _Turn(
            started=time.monotonic(),
            choice=first_round_choice(context),
            tools=tools,
            offer_tools=self.wants_tools(user_text),
            user_words=user_text if by_user else "",
        )
        decision: RouteDecision | None = None
        await self.push_frame(LLMFullResponseStartFrame())
        try:
            # Recall is a few ms of SQLite: off the event loop, audio keeps flowing.
            recalled = await asyncio.to_thread(self.recalled, user_text)
            seen = await self.look(turn.user_words)
            turn.context = "\n\n".join(part for part in (recalled, seen) if part)
            history = await self.history(context)
            turn.start = max(0, len(history) - 1)
            try:
                decision = self._router.route(user_text, self._experts.experts, self._routing_state)
            except NoExpertsError:
                logger.error("twin: no experts known; answering with the apology")
                await self._say(turn, NO_EXPERT_REPLY)
                return
            await self._answer(decision, self.system_message(), history, turn)
        except SpeculationWithdrawn:
            turn.withdrawn = True
        finally:
            ended = time.monotonic()
            if turn.withdrawn:
                pass
            elif self._gate.is_speculating:  # held, or cancelled and about to be dropped
                self._unconfirmed = lambda: self.settle(decision, turn, user_text, ended)
            else:
                await self.settle(decision, turn, user_text, ended)
            end = LLMFullResponseEndFrame()
            end.metadata[ANSWERED_BY] = turn.answered_by.name if turn.answered_by else None
            await self.push_frame(end)

    async def settle(
        self, decision: RouteDecision | None, turn: _Turn, user_text: str, ended: float
    ) -> None:
        """What a turn changes once it is the user's: routing state, route label, memory.

        Run at the turn's end, or, for a speculative turn, when the turn is
        confirmed (its label then follows the released answer).
        """
        if decision is not None:
            self._routing_state.commit(decision, turn.answered_by)
        if decision is not None and turn.answered_by is not None:
            # A system frame: it reaches the client before the end frame does.
            label = route_label(
                decision,
                turn.answered_by,
                turn.failed,
                started=turn.started,
                first_text=turn.first_text_at,
                ended=ended,
            )
            await self.push_frame(route_message(label))
        self._turn_memory.remember_turn("user", user_text)
        self._turn_memory.remember_turn("assistant", turn.text)

    async def _say(self, turn: _Turn, text: str) -> None:
        if not turn.first_token:
            turn.first_token = True
            turn.first_text_at = time.monotonic()
            TURN_STAGE.labels(stage="llm_ttfb").observe(time.monotonic() - turn.started)
        turn.spoken.append(text)
        await self.push_frame(LLMTextFrame(text))

    async def _answer(
        self, decision: RouteDecision, system: str, history: list[dict[str, Any]], turn: _Turn
    ) -> None:
        """Try the experts in the decision's order until one answers."""
        for attempt, expert in enumerate(decision.order):
            if attempt > 0:
                ROUTING_DECISIONS.labels(expert=expert.name, reason="failover").inc()
                logger.warning(f"twin: failing over to {expert.name}")
            try:
                await self._run_expert(expert, system, history, turn)
            except ExpertError as exc:
                EXPERT_ERRORS.labels(expert=exc.expert.name, kind=exc.kind).inc()
                self._router.mark_failed(exc.expert)
                turn.failed.append(exc.expert)
                logger.error(f"twin: expert {exc}")
                # Half a sentence said: end it before the next expert or the apology.
                if ending := cut_off_ending(turn.text):
                    await self._say(turn, ending)
                continue
            self._router.mark_ok(expert)
            turn.answered_by = expert
            return
        await self.push_frame(
            ErrorFrame(error="twin: every expert failed this turn"), FrameDirection.UPSTREAM
        )
        await self._say(turn, (" " if turn.spoken else "") + NO_EXPERT_REPLY)

    async def _run_expert(
        self, expert: Expert, system: str, history: list[dict[str, Any]], turn: _Turn
    ) -> None:
        """One expert, with up to ``max_rounds`` tool rounds; raises ExpertError on failure."""
        tools = turn.tools
        exchange: list[dict[str, Any]] = list(history)
        if turn.spoken:
            # Failover mid-answer: the next expert continues what was already said.
            exchange.append({"role": "assistant", "content": turn.text})
            exchange.append(
                {"role": "user", "content": "(continue your answer from where it stopped)"}
            )
        max_rounds = self._tools.max_rounds
        for round_no in range(max_rounds + 1):
            choice: ToolChoice = turn.choice if round_no == 0 else "auto"
            if not tools or round_no == max_rounds:
                choice = "none"
            elif choice == "auto" and not expert.tool_calls and not turn.offer_tools:
                # The JSON-schema fallback costs a constrained decode: only on
                # turns that look like they need a tool (twin.tools.trigger).
                choice = "none"
            sent = exchange if expert.tool_calls else as_plain_text(exchange)
            messages = fit_history(
                sent,
                system,
                expert.context_length,
                self._client.max_tokens,
                turn_context=turn.context,
                turn_start=turn.start,
            )
            calls: ToolCalls | None = None
            said: list[str] = []
            async for event in self._client.stream(expert, messages, tools, choice=choice):
                if isinstance(event, TextDelta):
                    said.append(event.text)
                    if turn.text.strip() or event.text.strip():  # no answer starts blank
                        await self._say(turn, event.text)
                else:
                    calls = event
            if calls is None:
                return
            if self._gate.is_speculating:  # no tool runs before the turn is confirmed
                await self._withdraw("a tool call")
            await self._run_tools(calls, exchange, "".join(said), turn.user_words)

    async def _run_tools(
        self, calls: ToolCalls, exchange: list[dict[str, Any]], said: str, user_words: str
    ) -> None:
        """Execute the calls and append the round to the turn's exchange and the context.

        ``said`` is the text the expert streamed (and the user heard) before
        its calls in this round; it stays in the assistant message.
        ``user_words`` (the user's own words this turn) decide whether a
        destructive tool may run (:meth:`ToolBox.call`). The calls
        and their results are broadcast as pipecat's function-call frames, so
        the assistant aggregator writes them into the ``LLMContext`` as it
        does for pipecat's own LLM services (``run_llm=False``: this turn's
        next round is run here, not by a new context frame).
        """
        exchange.append(call_message(said, calls.calls))
        await self.broadcast_frame(
            FunctionCallsStartedFrame,
            function_calls=[
                FunctionCallFromLLM(c.name, c.id, call_arguments(c.arguments), None)
                for c in calls.calls
            ],
        )
        for call in calls.calls:
            # What pipecat's in-progress and result frames both say of the call.
            named: dict[str, Any] = {
                "function_name": call.name,
                "tool_call_id": call.id,
                "arguments": call_arguments(call.arguments),
            }
            await self.broadcast_frame(
                FunctionCallInProgressFrame, **named, cancel_on_interruption=True
            )
            try:
                result = await self._toolbox.call(call.name, call.arguments, user_words=user_words)
            except asyncio.CancelledError:
                await self.broadcast_frame(
                    FunctionCallCancelFrame, function_name=call.name, tool_call_id=call.id
                )
                raise
            logger.info(f"twin: tool {call.name} -> {result}")
            exchange.append(result_message(call, result))
            await self.broadcast_frame(
                FunctionCallResultFrame, **named, result=result, run_llm=False
            )
