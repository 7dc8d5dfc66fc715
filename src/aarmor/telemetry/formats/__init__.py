"""Wire formats of telemetry events (docs/telemetry-formats.md): one event, one line.

- `jsonl`: the event as aarmor documents it (`aarmor.telemetry/1`), compact JSON;
- `ocsf`: one OCSF 1.7.0 object (API Activity, Detection Finding, Application Lifecycle or Error), compact JSON;
- `cef`: one ArcSight CEF line (vendor and product aarmor).

No line ends with a newline: the sink frames lines (a file adds `\\n`, syslog one message per event).
"""

from __future__ import annotations

import json
from typing import Any

from aarmor.telemetry.events import TelemetryEvent
from aarmor.telemetry.formats.cef import to_cef
from aarmor.telemetry.formats.ocsf import to_ocsf

__all__ = ["FORMATS", "format_event"]

FORMATS = ("jsonl", "ocsf", "cef")


def format_event(event: TelemetryEvent, fmt: str) -> str:
    """`event` as one line of `fmt` (one of FORMATS)."""
    if fmt == "jsonl":
        return _compact(event.to_json())
    if fmt == "ocsf":
        return _compact(to_ocsf(event))
    if fmt == "cef":
        return to_cef(event)
    raise ValueError(f"unknown telemetry format `{fmt}`: expected one of {', '.join(FORMATS)}")


def _compact(obj: Any) -> str:
    # ensure_ascii keeps a line one line whatever the text holds (U+2028 and the like are escaped too)
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
