"""The evaluation suite: cases in YAML, and the fixed rule that splits them.

A case is a short conversation (``turns``, the user's side; the assistant
answers each one through TwinService), with what the assistant has to work
with where it matters: ``memory`` (facts already in its memory store),
``scene`` (what the camera sees: the vision service's answer to
``describe_scene``) and ``tools`` (false: the turn offers none). Its
``checks`` (:mod:`prompt_engineering.checks`) judge the last answer and the
tool calls made during the conversation.

The split is fixed by the case id alone: a case is held out when the first
byte of ``sha256(id)`` is below 86 (about one case in three). Adding a case
never moves another one between the sets.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

#: A case is held out when the first byte of sha256(id) is below this (86/256, about a third).
HELD_OUT_BELOW = 86

Split = Literal["train", "held_out", "all"]


class Check(BaseModel):
    """One deterministic check: its kind (a function in :mod:`.checks`) and arguments."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    args: dict[str, Any] = Field(default_factory=dict)


class Case(BaseModel):
    """One conversation and what its answer must satisfy."""

    model_config = ConfigDict(extra="forbid")

    id: str
    category: str
    turns: list[str] = Field(min_length=1)
    memory: list[str] = Field(default_factory=list)
    scene: str | None = None
    tools: bool = True
    checks: list[Check] = Field(min_length=1)

    @property
    def held_out(self) -> bool:
        """Whether the fixed rule puts this case in the held-out set."""
        return hashlib.sha256(self.id.encode()).digest()[0] < HELD_OUT_BELOW


def _parse_check(raw: Any, where: str) -> Check:
    if isinstance(raw, str):
        return Check(kind=raw)
    if isinstance(raw, dict) and len(raw) == 1:
        kind, args = next(iter(raw.items()))
        return Check(kind=kind, args=args or {})
    raise ValueError(f"{where}: a check is a name or a one-key mapping, not {raw!r}")


def default_cases_dir() -> Path:
    """The suite shipped in the package (``prompt_engineering/cases``)."""
    return Path(str(resources.files("prompt_engineering") / "cases"))


def load_cases(directory: Path | None = None) -> list[Case]:
    """Every case of every ``*.yaml`` file under ``directory``, in file then list order.

    Raises ValueError naming the file and case on a malformed case or a duplicate id.
    """
    directory = directory or default_cases_dir()
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        for index, raw in enumerate(yaml.safe_load(path.read_text(encoding="utf-8")) or []):
            where = f"{path.name} case {index + 1}"
            raw = dict(raw)
            raw["checks"] = [_parse_check(c, where) for c in raw.get("checks", [])]
            try:
                case = Case.model_validate(raw)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
            if case.id in seen:
                raise ValueError(f"{where}: id {case.id!r} already used in {seen[case.id].name}")
            seen[case.id] = path
            cases.append(case)
    return cases


def select(cases: list[Case], split: Split, limit: int | None = None) -> list[Case]:
    """The cases of one split (``all``: both), at most ``limit`` of them, spread over categories.

    With a limit the cases are taken round-robin over categories, so a small
    run still sees tools, memory, speech, refusals and the camera.
    """
    chosen = [c for c in cases if split == "all" or c.held_out == (split == "held_out")]
    if limit is None or limit >= len(chosen):
        return chosen
    by_category: dict[str, list[Case]] = {}
    for case in chosen:
        by_category.setdefault(case.category, []).append(case)
    picked: list[Case] = []
    while len(picked) < limit:
        for group in by_category.values():
            if group and len(picked) < limit:
                picked.append(group.pop(0))
    return picked
