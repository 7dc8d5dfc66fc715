"""Telemetry events as OpenTelemetry signals (docs/telemetry-otel.md), for the `otlp` sink.

Events are exported after the fact from the spool, so nothing here uses a live tracer: spans are built
with the timestamps the events carry, and their ids are derived from the session and action ids, so the
evaluation span of an action and its execution span share a trace even when they reach the sink in
different batches (or twice, after a retry: the same ids again, which a backend can collapse).

Imports the OpenTelemetry SDK at module level: only `sinks/otlp.py` imports this module, lazily.

Attribute names follow the OpenTelemetry GenAI semantic conventions for tool calls (`execute_tool`,
`gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.conversation.id`, `gen_ai.agent.id`, `error.type`),
written out rather than imported because those conventions are still incubating; aarmor's own facts are
`aarmor.*`. Parameter values never become attributes: only `aarmor.action.parameters_digest` does.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from aarmor.canonical import parse_ts
from aarmor.telemetry.events import TelemetryEvent

__all__ = ["EXECUTION_TYPES", "SEVERITY_NUMBERS", "ActionSpans", "common_attributes", "evaluation_start", "log_record",
           "span_context", "time_ns"]

EXECUTION_TYPES = ("action.executed", "action.failed")
#: aarmor severities as OpenTelemetry log severities (the aarmor name travels as `severity_text`)
SEVERITY_NUMBERS = {"info": SeverityNumber.INFO, "low": SeverityNumber.INFO4, "medium": SeverityNumber.WARN,
                    "high": SeverityNumber.ERROR, "critical": SeverityNumber.FATAL}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def time_ns(text: str) -> int:
    """An event timestamp (`2026-11-29T10:00:00.000Z`) as nanoseconds since the epoch, exactly."""
    delta = parse_ts(text) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _digest_int(*parts: str, size: int) -> int:
    raw = hashlib.sha256("|".join(("aarmor.otel", *parts)).encode()).digest()[:size]
    return int.from_bytes(raw, "big") or 1  # an all-zero id is invalid in OpenTelemetry


def span_context(session_id: str, action_id: str, role: str) -> SpanContext:
    """The deterministic context of one action's span: the trace is the action's (session, action id), and
    `role` (`evaluate` or `execute`) tells its spans apart."""
    return SpanContext(trace_id=_digest_int("trace", session_id, action_id, size=16),
                       span_id=_digest_int("span", role, session_id, action_id, size=8),
                       is_remote=False, trace_flags=_SAMPLED)


def _action_key(ev: TelemetryEvent) -> tuple[str, str] | None:
    action_id = (ev.action or {}).get("action_id")
    if not action_id:
        return None
    return ev.session_id or "", str(action_id)


def _put(attrs: dict[str, Any], key: str, value: Any) -> None:
    """Set an attribute when it has a value OpenTelemetry can carry (scalars, lists of strings)."""
    if value is None or value == "" or value == []:
        return
    if isinstance(value, (list, tuple)):
        attrs[key] = [str(v) for v in value]
    elif isinstance(value, (str, bool, int, float)):
        attrs[key] = value
    else:
        attrs[key] = str(value)


def common_attributes(ev: TelemetryEvent) -> dict[str, Any]:
    """What every signal of an event says about it: which event, session, action, identity (no values)."""
    act, ident = ev.action or {}, ev.identity or {}
    attrs: dict[str, Any] = {}
    _put(attrs, "aarmor.event.id", ev.event_id)
    _put(attrs, "aarmor.event.type", ev.type)
    _put(attrs, "aarmor.session.id", ev.session_id)
    _put(attrs, "aarmor.receipt.id", ev.receipt_id)
    _put(attrs, "aarmor.action.id", act.get("action_id"))
    _put(attrs, "aarmor.action.tool", act.get("tool"))
    _put(attrs, "aarmor.action.operation", act.get("operation"))
    _put(attrs, "aarmor.action.parameters_digest", act.get("parameters_digest"))
    for key in ("human", "service", "agent", "verified_by", "roles"):
        _put(attrs, f"aarmor.identity.{key}", ident.get(key))
    return attrs


def _decision_attributes(ev: TelemetryEvent) -> dict[str, Any]:
    dec = ev.decision or {}
    attrs: dict[str, Any] = {}
    for key in ("result", "rule_id", "reason", "classification", "risk_level"):
        _put(attrs, f"aarmor.decision.{key}", dec.get(key))
    _put(attrs, "aarmor.policy.id", dec.get("policy_id"))
    _put(attrs, "aarmor.policy.version", dec.get("policy_version"))
    _put(attrs, "aarmor.policy.hash", dec.get("policy_hash"))
    return attrs


def _genai_attributes(ev: TelemetryEvent) -> dict[str, Any]:
    act, ident = ev.action or {}, ev.identity or {}
    attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool"}
    _put(attrs, "gen_ai.tool.name", act.get("tool"))
    _put(attrs, "gen_ai.tool.call.id", act.get("action_id"))
    _put(attrs, "gen_ai.conversation.id", ev.session_id)
    _put(attrs, "gen_ai.agent.id", ident.get("agent"))
    return attrs


class ActionSpans:
    """Builds the spans of actions from their events.

    An event carries one instant. The evaluation span ends at `action.decided`'s time and starts at the
    action's own `timestamp` when the event carries one (events of `aarmor.telemetry/1` do not: the span is
    then an instant). The execution span ends at `action.executed`/`action.failed`'s time and starts at
    the latest earlier event of the same action this sink has seen (its decision, approval or deferral
    resolution: the moment it was released to run), else it is an instant too. `seen` is bounded.
    """

    def __init__(self, resource: Resource, scope: InstrumentationScope, *, remember: int = 65_536) -> None:
        self._resource = resource
        self._scope = scope
        self._remember = remember
        self._released: dict[tuple[str, str], int] = {}

    def note(self, ev: TelemetryEvent) -> None:
        """Remember when an action was last released (decided, approved, resolved) to start its execution."""
        key = _action_key(ev)
        if key is None or ev.type in EXECUTION_TYPES:
            return
        t = time_ns(ev.time)
        if t >= self._released.get(key, 0):
            self._released.pop(key, None)
            self._released[key] = t
            while len(self._released) > self._remember:
                del self._released[next(iter(self._released))]

    def span(self, ev: TelemetryEvent) -> ReadableSpan | None:
        """The span an event stands for (`action.decided`, `action.executed`, `action.failed`), else None."""
        key = _action_key(ev)
        if key is None:
            return None
        if ev.type == "action.decided":
            return self._evaluation(ev, key)
        if ev.type in EXECUTION_TYPES:
            return self._execution(ev, key)
        return None

    def _evaluation(self, ev: TelemetryEvent, key: tuple[str, str]) -> ReadableSpan:
        end = time_ns(ev.time)
        start = evaluation_start(ev)
        tool = (ev.action or {}).get("tool")
        attrs = common_attributes(ev) | _decision_attributes(ev)
        _put(attrs, "gen_ai.tool.name", tool)
        _put(attrs, "gen_ai.tool.call.id", key[1])
        _put(attrs, "gen_ai.conversation.id", ev.session_id)
        result = (ev.decision or {}).get("result")
        status = Status(StatusCode.ERROR, f"denied by rule {(ev.decision or {}).get('rule_id')}") \
            if result == "DENY" else Status(StatusCode.UNSET)
        return ReadableSpan(f"aarmor.evaluate {tool}" if tool else "aarmor.evaluate",
                            context=span_context(*key, "evaluate"), parent=None, resource=self._resource,
                            attributes=attrs, kind=SpanKind.INTERNAL, status=status,
                            start_time=min(start, end) if start is not None else end, end_time=end,
                            instrumentation_scope=self._scope)

    def _execution(self, ev: TelemetryEvent, key: tuple[str, str]) -> ReadableSpan:
        end = time_ns(ev.time)
        start = min(self._released.get(key, end), end)
        tool = (ev.action or {}).get("tool")
        execution = ev.execution or {}
        attrs = common_attributes(ev) | _decision_attributes(ev) | _genai_attributes(ev)
        _put(attrs, "aarmor.execution.success", execution.get("success"))
        _put(attrs, "aarmor.execution.output_digest", execution.get("output_digest"))
        _put(attrs, "aarmor.execution.classifications", execution.get("classifications"))
        status = Status(StatusCode.UNSET)
        if ev.type == "action.failed":
            error = execution.get("error")
            attrs["error.type"] = str(error) if error else "_OTHER"
            status = Status(StatusCode.ERROR, f"tool failed: {error}" if error else "tool failed")
        return ReadableSpan(f"execute_tool {tool}" if tool else "execute_tool",
                            context=span_context(*key, "execute"), parent=span_context(*key, "evaluate"),
                            resource=self._resource, attributes=attrs, kind=SpanKind.INTERNAL, status=status,
                            start_time=start, end_time=end, instrumentation_scope=self._scope)


def evaluation_start(ev: TelemetryEvent) -> int | None:
    """When the action was submitted (its `timestamp`), if the event carries it; else None."""
    raw = (ev.action or {}).get("timestamp")
    if not isinstance(raw, str):
        return None
    try:
        return time_ns(raw)
    except ValueError:
        return None


def log_record(ev: TelemetryEvent, body: str, resource: Resource, scope: InstrumentationScope,
               observed_ns: int) -> ReadableLogRecord:
    """The event as an OpenTelemetry log record: `body` is the formatted event, `event_name` its type, and
    an event about an action is correlated with that action's evaluation span."""
    key = _action_key(ev)
    context = None if key is None else trace_api.set_span_in_context(
        NonRecordingSpan(span_context(*key, "evaluate")))
    attrs = common_attributes(ev)
    _put(attrs, "aarmor.severity", ev.severity)
    _put(attrs, "aarmor.decision.result", (ev.decision or {}).get("result"))
    _put(attrs, "aarmor.alert.kind", (ev.alert or {}).get("kind"))
    severity = SEVERITY_NUMBERS.get(ev.severity, SeverityNumber.INFO)
    record = LogRecord(timestamp=time_ns(ev.time), observed_timestamp=observed_ns, context=context,
                       severity_text=ev.severity, severity_number=severity, body=body, attributes=attrs,
                       event_name=ev.type)
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope)
