"""The speakable sentence, built only from the findings: nothing is invented."""

from __future__ import annotations

from vision.findings import Findings

_NUMBERS = ["No one", "One person", "Two people", "Three people", "Four people", "Five people"]
#: Longest text quoted in the sentence; the findings carry all of it.
MAX_QUOTED = 80


def _people(findings: Findings) -> str:
    count = findings.person_count
    if count == 0:
        return "No one is in view."
    head = _NUMBERS[count] if count < len(_NUMBERS) else f"{count} people"
    if count == 1 and findings.faces:
        pose = findings.faces[0].pose
        return f"{head}, {'facing the camera' if pose == 'frontal' else 'seen from the side'}."
    return f"{head}."


def _text(findings: Findings) -> str | None:
    lines = [line.text.strip() for line in findings.text if line.text.strip()]
    if not lines:
        return None
    quoted = " ".join(lines)
    if len(quoted) > MAX_QUOTED:
        quoted = quoted[: MAX_QUOTED - 3].rstrip() + "..."
    return f"Text in view reads '{quoted}'."


def _colours(findings: Findings) -> str | None:
    names = [colour.name for colour in findings.colours[:2]]
    if not names:
        return None
    return f"Mostly {' and '.join(names)}."


def _light(findings: Findings) -> str | None:
    if findings.brightness < 0.15:
        return "It is dark."
    if findings.brightness > 0.9:
        return "It is very bright."
    return None


def sentence(findings: Findings) -> str:
    """One to five short sentences from ``findings``, most important first."""
    parts = [_people(findings), _text(findings)]
    if findings.motion is not None and findings.motion.moving:
        parts.append("Something is moving.")
    parts += [_colours(findings), _light(findings)]
    if findings.blurry:
        parts.append("The picture is blurry.")
    return " ".join(part for part in parts if part)
