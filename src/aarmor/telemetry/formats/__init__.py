"""Event formats (placeholder until the OCSF and CEF formats land: jsonl only)."""

from __future__ import annotations

import json

from aarmor.telemetry.events import TelemetryEvent

__all__ = ["FORMATS", "format_event"]

FORMATS = ("jsonl",)


def format_event(event: TelemetryEvent, fmt: str) -> str:
    if fmt != "jsonl":
        raise ValueError(f"telemetry format `{fmt}` is not one of {', '.join(FORMATS)}")
    return json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False)
