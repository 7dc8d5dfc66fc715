"""Telemetry for security teams (AARM R8; docs/telemetry.md).

    commit (log entries + receipt) --project--> events in the store's spool (same transaction)
        --exporter thread per sink--> filter --> format (jsonl | ocsf | cef) --> sink.send(batch)

- `events.py`: the event model (`aarmor.telemetry/1`) and `project`, pure.
- `formats/`: `jsonl` (the event as is), `ocsf` (OCSF 1.x: API Activity 6003, Detection Finding 2004,
  Authorization-style mapping for approvals and deferrals), `cef` (ArcSight/QRadar, vendor aarmor).
- `sinks/`: `file` (rotating JSON lines), `syslog` (RFC 5424, UDP/TCP), `webhook`, `splunk_hec`, `otlp`.
- `exporter.py`: one thread per sink, a durable cursor per sink, retries with backoff, a `telemetry.degraded`
  alert after repeated failures, bounded spool with counted drops (`telemetry.dropped`). A slow or dead
  sink never blocks a decision: decisions only ever write the spool.

Contracts for sinks and formats (each sink module validates its own `options`):
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aarmor.telemetry.events import EVENT_TYPES, SCHEMA, SEVERITIES, TelemetryEvent

__all__ = ["EVENT_TYPES", "SCHEMA", "SEVERITIES", "Sink", "SinkError", "SinkRejected", "TelemetryEvent"]


class SinkError(Exception):
    """A sink could not deliver a batch (the exporter retries it, in order, later)."""


class SinkRejected(SinkError):
    """The receiver refused the batch for good (an event that cannot be formatted, an HTTP 4xx other than 408
    or 429): sending it again would fail again. The exporter then sends the batch's events one at a time and
    sets aside each one refused alone, counted in a `telemetry.dropped` alert (the rest are delivered)."""


class Sink(Protocol):
    """A destination. `send` delivers the whole batch or raises (`SinkError` or any exception): the exporter
    then keeps its cursor before the batch and sends it again later, so a sink may see an event twice and
    must pass `event_id` on as the idempotency key its receiver can drop duplicates by."""

    name: str

    def send(self, events: Sequence[TelemetryEvent]) -> None: ...

    def close(self) -> None: ...


class SinkFactory(Protocol):
    """`build(name, formatter, options)` in each sink module (`formatter` turns an event into one line)."""

    def __call__(self, name: str, formatter: Callable[[TelemetryEvent], str], options: Mapping[str, Any]) -> Sink: ...
