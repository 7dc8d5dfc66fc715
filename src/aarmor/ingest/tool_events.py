"""Agent tool events in decoded OTLP: GenAI `execute_tool` spans and Claude Code tool log records.

What counts as a tool event (everything else in a payload is accepted and ignored):
- a span with `gen_ai.operation.name = execute_tool` (OpenTelemetry GenAI semantic conventions): tool
  `gen_ai.tool.name`, arguments `gen_ai.tool.call.arguments`, output `gen_ai.tool.call.result`, call id
  `gen_ai.tool.call.id`; it ran (a span of its execution), failed when the span status is ERROR or it
  has `error.type`; timing from the span's start and end;
- a log record whose event name (`event_name`, else the `event.name` attribute) is `tool_result` or
  `tool_use`, optionally prefixed `claude_code.` (Claude Code, AARM 4.3): tool `tool_name`, arguments
  `tool_parameters` (a JSON object, or a string holding one), `success`, `error`, `duration_ms`,
  `tool_use_id`, and the permission prompt's `source` (or `decision_source`) and `decision` (or
  `decision_type`); time from `event.timestamp`, else the record's time;
- a `user_prompt` log record's `prompt` (Claude Code sends it with `OTEL_LOG_USER_PROMPTS=1`) is the
  original request of a session it starts (one not seen before).

Session and identity: `session.id` (record, span or resource attribute), else `gen_ai.conversation.id`,
else the trace id (spans) or `otel-<service.name>` (logs); `service.name` (resource) is the identity's
service; the human is `user.email`, else `user.id`/`enduser.id`/`user.account_uuid`; the agent is
`gen_ai.agent.name`, else `gen_ai.agent.id`/`agent_id`.

Rules:
- Each event has a stable key for deduplication: `span:<trace id><span id>` for spans; for log records
  `log:<event>:<session>:<tool_use_id>`, else a digest of the record's time, event name, session, sequence
  number, tool and parameters. An exporter's retry delivers the same key.
- A tool event that cannot be read (no tool name, parameters that are not a JSON object, no span id) is
  rejected with a reason naming the record; the rest of the payload is still taken (partial success).
- Only what was reported is said: no `success` attribute means success unknown; `tool_use` alone means
  executed unknown (the request was seen, not its outcome); `user_reject`/`user_abort` mean not executed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aarmor.ingest.otlp_codec import hex_id
from aarmor.observed import Observation

__all__ = ["APPROVAL_SOURCES", "Parsed", "Prompt", "ToolEvent", "parse_logs", "parse_traces"]

#: Claude Code's permission `source` values (AARM 4.3): (granted, what it means); absent: no prompt
APPROVAL_SOURCES: dict[str, tuple[bool, str]] = {
    "user_permanent": (True, "approved by the user and allow-listed"),
    "user_temporary": (True, "approved by the user once"),
    "user_reject": (False, "rejected by the user"),
    "user_abort": (False, "aborted by the user"),
    "config": (True, "allowed by the agent's own configuration, no prompt"),
}
_TOOL_LOG_EVENTS = ("tool_result", "tool_use")
_SESSION_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """One observed tool call, ready for `Session.observe`."""

    key: str
    session_id: str
    human: str | None
    service: str | None
    agent: str | None
    #: the tool as reported (a meta-tool such as `Skill` is resolved by the pipeline, which keeps this name)
    tool: str
    arguments: Mapping[str, Any]
    observation: Observation


@dataclass(frozen=True, slots=True)
class Prompt:
    """A user prompt (Claude Code `user_prompt`): the original request of a session that starts with it."""

    session_id: str
    text: str
    human: str | None
    service: str | None
    agent: str | None


@dataclass(slots=True)
class Parsed:
    events: list[ToolEvent] = field(default_factory=list)
    #: session id -> the first user prompt seen for it in this payload
    prompts: dict[str, Prompt] = field(default_factory=dict)
    #: one reason per rejected tool record
    rejected: list[str] = field(default_factory=list)


class _Bad(ValueError):
    """A tool record that cannot be read (becomes a rejection, never an exception out of the parser)."""


def any_value(v: Any) -> Any:
    """An OTLP `AnyValue` as plain Python (kvlists as dicts, arrays as lists, bytes as hex)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _ts(nanos: int) -> datetime | None:
    return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None


def _str(attrs: Mapping[str, Any], *names: str) -> str | None:
    for n in names:
        v = attrs.get(n)
        if isinstance(v, str) and v.strip():
            return v
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
    return None


def _bool(value: Any, what: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Bad(f"`{what}` must be a boolean (or \"true\"/\"false\"), found `{str(value)[:64]}`")


def _arguments(value: Any, what: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _Bad(f"`{what}` is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Bad(f"`{what}` must be a JSON object, found {type(value).__name__}")
    return value


def _session(raw: str) -> str:
    """The aarmor session id for a reported one: kept when it is a plain id, else a digest of it."""
    return raw if _SESSION_ID.fullmatch(raw) else "otel_" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def _who(attrs: Mapping[str, Any], res: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    both = {**res, **attrs}
    return (_str(both, "user.email", "user.id", "enduser.id", "user.account_uuid"), _str(res, "service.name"),
            _str(both, "gen_ai.agent.name", "gen_ai.agent.id", "agent_id"))


# --- traces ------------------------------------------------------------------------------------------

def parse_traces(request: Any) -> Parsed:
    """The tool events in an `ExportTraceServiceRequest`."""
    out = Parsed()
    for rs in request.resource_spans:
        res = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                attrs = attributes(span.attributes)
                if attrs.get("gen_ai.operation.name") != "execute_tool":
                    continue
                where = f"span {hex_id(span.span_id) or '(no span id)'} `{span.name[:64]}`"
                try:
                    out.events.append(_span_event(span, attrs, res))
                except _Bad as exc:
                    out.rejected.append(f"{where}: {exc}")
    return out


def _span_event(span: Any, attrs: Mapping[str, Any], res: Mapping[str, Any]) -> ToolEvent:
    tool = _str(attrs, "gen_ai.tool.name")
    if tool is None:
        raise _Bad("an execute_tool span without `gen_ai.tool.name`")
    if len(span.span_id) != 8 or len(span.trace_id) != 16:
        raise _Bad("a span needs a 16-byte trace id and an 8-byte span id (they identify it for deduplication)")
    trace, sid = hex_id(span.trace_id), hex_id(span.span_id)
    arguments = _arguments(attrs.get("gen_ai.tool.call.arguments"), "gen_ai.tool.call.arguments")
    error_type = _str(attrs, "error.type")
    failed = span.status.code == _STATUS_ERROR or error_type is not None
    error = (span.status.message or error_type or "error") if failed else None
    session = _str(attrs, "session.id") or _str(res, "session.id") or _str(attrs, "gen_ai.conversation.id") \
        or "trace-" + trace
    human, service, agent = _who(attrs, res)
    source = {"format": "otlp", "signal": "traces", "convention": "gen_ai", "trace_id": trace, "span_id": sid,
              "span_name": span.name[:256], "tool_call_id": _str(attrs, "gen_ai.tool.call.id"),
              "reported_tool": tool}
    obs = Observation(executed=True, success=not failed, output=attrs.get("gen_ai.tool.call.result"),
                      error=error, started_at=_ts(span.start_time_unix_nano),
                      completed_at=_ts(span.end_time_unix_nano), source=source)
    return ToolEvent(f"span:{trace}{sid}", _session(session), human, service, agent, tool, arguments, obs)


# --- logs --------------------------------------------------------------------------------------------

def _event_name(rec: Any, attrs: Mapping[str, Any]) -> str:
    name = rec.event_name or _str(attrs, "event.name") or ""
    return name.removeprefix("claude_code.")


def parse_logs(request: Any) -> Parsed:
    """The tool events (and user prompts) in an `ExportLogsServiceRequest`."""
    out = Parsed()
    for rl in request.resource_logs:
        res = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for i, rec in enumerate(sl.log_records):
                attrs = attributes(rec.attributes)
                name = _event_name(rec, attrs)
                if name == "user_prompt":
                    prompt, session = _str(attrs, "prompt"), _log_session(attrs, res)
                    if prompt is not None:
                        out.prompts.setdefault(session, Prompt(session, prompt, *_who(attrs, res)))
                    continue
                if name not in _TOOL_LOG_EVENTS:
                    continue
                try:
                    out.events.append(_log_event(rec, name, attrs, res))
                except _Bad as exc:
                    out.rejected.append(f"log record {i} (`{name}`, tool `{_str(attrs, 'tool_name') or '?'}`"
                                        f"): {exc}")
    return out


def _log_session(attrs: Mapping[str, Any], res: Mapping[str, Any]) -> str:
    raw = _str(attrs, "session.id") or _str(res, "session.id") or _str(attrs, "gen_ai.conversation.id")
    return _session(raw or "otel-" + (_str(res, "service.name") or "unknown"))


def _log_event(rec: Any, name: str, attrs: Mapping[str, Any], res: Mapping[str, Any]) -> ToolEvent:
    tool = _str(attrs, "tool_name", "tool.name", "gen_ai.tool.name")
    if tool is None:
        raise _Bad("no `tool_name`")
    arguments = _arguments(attrs.get("tool_parameters"), "tool_parameters")
    session = _log_session(attrs, res)
    prompt_source = _str(attrs, "source", "decision_source")
    decision = (_str(attrs, "decision", "decision_type") or "").lower()
    refused = prompt_source in ("user_reject", "user_abort") or decision == "reject"
    success = _bool(attrs.get("success"), "success")
    executed: bool | None = False if refused else (True if name == "tool_result" else None)
    # Claude Code's own `event.timestamp` first, then the record's time, then when the SDK observed it
    at = _iso(_str(attrs, "event.timestamp")) or _ts(rec.time_unix_nano) or _ts(rec.observed_time_unix_nano)
    duration = attrs.get("duration_ms")
    started, completed = at, None
    if name == "tool_result" and at is not None and isinstance(duration, int | float) and not isinstance(
            duration, bool) and 0 <= duration < 10**12:
        started, completed = at - timedelta(milliseconds=float(duration)), at  # the event marks its end
    error = _str(attrs, "error") if executed else None
    human, service, agent = _who(attrs, res)
    approval = None
    if prompt_source is not None or decision:
        granted, meaning = APPROVAL_SOURCES.get(prompt_source or "", (None, "as reported"))
        approval = {"reported": True, "by": "the agent's own permission check", "source": prompt_source,
                    "decision": decision or None, "granted": False if refused else granted, "meaning": meaning,
                    "approver": human if prompt_source in ("user_permanent", "user_temporary", "user_reject",
                                                           "user_abort") else None,
                    "decided_at": at.isoformat().replace("+00:00", "Z") if at else None}
    use_id = _str(attrs, "tool_use_id", "gen_ai.tool.call.id")
    if use_id is not None:
        key = f"log:{name}:{session}:{use_id}"
    else:
        ident = json.dumps([rec.time_unix_nano, name, session, attrs.get("event.sequence"), tool, arguments],
                           sort_keys=True, default=str)
        key = f"log:{name}:{hashlib.sha256(ident.encode()).hexdigest()}"
    source = {"format": "otlp", "signal": "logs", "convention": "claude_code", "event_name": rec.event_name
              or _str(attrs, "event.name"), "tool_use_id": use_id, "reported_tool": tool,
              "trace_id": hex_id(rec.trace_id) or None, "span_id": hex_id(rec.span_id) or None,
              "duration_ms": _number(duration), "tool_result_size_bytes": _number(attrs.get("tool_result_size_bytes"))}
    obs = Observation(executed=executed, success=success if executed else None, error=error,
                      started_at=started, completed_at=completed, approval=approval,
                      source={k: v for k, v in source.items() if v is not None})
    return ToolEvent(key, session, human, service, agent, tool, arguments, obs)


def _number(value: Any) -> int | float | None:
    """A reported count for the receipt: receipts hold only integers JSON numbers carry exactly (2^53)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or abs(value) >= 2**53:
        return None
    return value


def _iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
