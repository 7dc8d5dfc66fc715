"""Redaction of tool outputs before they reach the agent: the `redact_output` modification (AARM 4.2 MODIFY).

A policy rule may say `modifications: {redact_output: [CREDENTIALS, email]}`: after the tool ran, every
value the pattern detectors find for those labels is replaced by `[REDACTED:<detector>]` in what the
caller (the agent) receives.

Rules this module enforces:
- Labels are detector names (`email`, `api_key`, ...), categories (`PII`, `FINANCIAL`, `CREDENTIALS`) or
  `ALL`; an unknown label is an error when the policy loads, not a silent no-op at run time.
- Only validated detector hits are replaced (the same detectors and validators that classify outputs), so
  what redaction removes is exactly what classification counts.
- A PEM private key is redacted from its BEGIN line through its END line (or the end of the text), not
  only the header the classifier keys on.
- JSON-like values are walked (str, mappings, lists, tuples; numbers, booleans and None pass); any other
  object cannot be inspected, so `redact_output` raises `OutputNotRedactable` and the caller must
  withhold it (fail closed: an output that might hold a secret is not handed over unredacted).
- The input is never mutated. The report counts replacements per detector; it never holds a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .detectors import DEFAULT_DETECTORS, Detector

__all__ = ["OUTPUT_LABELS", "OutputNotRedactable", "RedactionReport", "check_output_labels", "redact_output"]

_ALL = "ALL"
#: every label `redact_output` accepts
OUTPUT_LABELS: frozenset[str] = frozenset(
    {_ALL, *(d.name for d in DEFAULT_DETECTORS), *(c for d in DEFAULT_DETECTORS for c in d.categories)})
_PEM_BLOCK = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
                        r".*?(?:-----END [A-Z0-9 ]{0,60}PRIVATE KEY(?: BLOCK)?-----|\Z)", re.DOTALL)


class OutputNotRedactable(TypeError):
    """The output holds a value whose text cannot be inspected, so it cannot be handed over redacted."""


@dataclass(slots=True)
class RedactionReport:
    """What was replaced, by detector (counts only)."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"redacted": self.total, "detectors": dict(sorted(self.counts.items()))}


def check_output_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """The labels as given, if all are known.

    Raises:
        ValueError: a label that is no detector, category or `ALL` (names the label and the known ones).
    """
    out = tuple(labels)
    for lab in out:
        if lab not in OUTPUT_LABELS:
            raise ValueError(f"unknown redact_output label `{lab}`; expected ALL, a category "
                             f"(CREDENTIALS, FINANCIAL, PII) or a detector ({', '.join(_detector_names())})")
    return out


def _detector_names() -> list[str]:
    return [d.name for d in DEFAULT_DETECTORS]


def _selected(labels: Iterable[str]) -> tuple[Detector, ...]:
    wanted = set(check_output_labels(labels))
    if _ALL in wanted:
        return DEFAULT_DETECTORS
    return tuple(d for d in DEFAULT_DETECTORS if d.name in wanted or d.categories & wanted)


def redact_output(output: Any, labels: Iterable[str]) -> tuple[Any, RedactionReport]:
    """A copy of `output` with the selected detectors' hits replaced, and what was replaced.

    Raises:
        ValueError: an unknown label. OutputNotRedactable: a value that is not JSON-like.
    """
    detectors = _selected(labels)
    report = RedactionReport()
    return _walk(output, detectors, report, 0), report


def _walk(value: Any, detectors: tuple[Detector, ...], report: RedactionReport, depth: int) -> Any:
    if depth > 200:
        raise OutputNotRedactable("output nested deeper than 200 levels")
    if isinstance(value, str):
        return _redact_text(value, detectors, report)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: _walk(v, detectors, report, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_walk(v, detectors, report, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    raise OutputNotRedactable(f"cannot redact an output holding a `{type(value).__name__}`")


def _redact_text(text: str, detectors: tuple[Detector, ...], report: RedactionReport) -> str:
    spans: list[tuple[int, int, str]] = []
    for d in detectors:
        if d.name == "pem_private_key":
            spans += [(m.start(), m.end(), d.name) for m in _PEM_BLOCK.finditer(text)]
        else:
            spans += [(s, e, d.name) for s, e in d.spans(text)]
    if not spans:
        return text
    spans.sort(key=lambda s: (s[0], -s[1]))
    out, pos = [], 0
    for start, end, name in spans:
        if start < pos:  # overlaps a span already replaced: extend it, count it once
            pos = max(pos, end)
            continue
        out += [text[pos:start], f"[REDACTED:{name}]"]
        report.counts[name] = report.counts.get(name, 0) + 1
        pos = end
    out.append(text[pos:])
    return "".join(out)
