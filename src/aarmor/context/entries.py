"""What the context log records: the entry kinds and the shape of each body.

Rules this module enforces:
- Parameters are logged only as the caller passes them (`parameters_view`, already redacted by the
  pipeline) plus their digest; the raw `Action.parameters` never reach the log.
- Tool output is never logged: only its `TAG_OUTPUT` digest, its size, the bytes scanned, the labels
  and the names of the detectors that fired (never the matched values).
- Error messages are cut to `MAX_ERROR_CHARS` characters.
- Explicit context values have identifier names that cannot shadow the built-in facts
  (`context.data_classification`, `context.action_count`, ...), JSON values within
  `limits.max_argument_bytes`, and a named source.
- Event kinds (approval, deferral, ...) are lower-case identifiers other than the built-in kinds.
- Injection indicators are logged as their kinds only (`"injection": [...]`, absent when none were
  found, so entries written before the scanner existed hash and replay unchanged); never the evidence.
- Door-supplied signals (`signal`) have identifier names that are not derived signal names
  (`DERIVED_SIGNAL_NAMES`), a JSON scalar or a list of strings as value, and an optional JSON detail,
  together within `limits.max_argument_bytes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from aarmor.canonical import canonical_bytes, format_ts, to_json
from aarmor.errors import InputError, LimitExceeded
from aarmor.limits import Limits
from aarmor.model import Action, Decision, Identity, ToolSpec

from .classify import OutputClass
from .signals import DERIVED_SIGNAL_NAMES

__all__ = [
    "ACTION_OUTCOME",
    "ACTION_REQUESTED",
    "BUILTIN_KINDS",
    "CONTEXT_VALUE",
    "RESERVED_VALUE_NAMES",
    "SESSION_END",
    "SESSION_START",
    "SIGNAL",
]

SESSION_START = "session_start"
ACTION_REQUESTED = "action_requested"
ACTION_OUTCOME = "action_outcome"
CONTEXT_VALUE = "context_value"
SESSION_END = "session_end"
SIGNAL = "signal"
BUILTIN_KINDS = frozenset({SESSION_START, ACTION_REQUESTED, ACTION_OUTCOME, CONTEXT_VALUE, SESSION_END, SIGNAL})

#: names of the built-in `context.*` facts; explicit values may not shadow them
RESERVED_VALUE_NAMES = frozenset({
    "data_classification", "data_accessed", "max_classification", "prior_actions", "action_count",
    "elapsed_seconds", "semantic_distance", "alignment", "confidence", "original_request",
    "intent_classification", "risk_signals", "session_id", "started_at", "chain_head",
})
MAX_ERROR_CHARS = 1024
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,63}")


def start_body(identity: Identity, original_request: str | None, intent_classification: str | None,
               tools: Iterable[ToolSpec] | None, limits: Limits) -> dict[str, Any]:
    if not isinstance(identity, Identity):
        raise InputError(f"identity must be an Identity, found {type(identity).__name__}")
    if original_request is not None:
        if not isinstance(original_request, str):
            raise InputError(f"original request must be a string, found {type(original_request).__name__}")
        if len(original_request) > limits.max_request_chars:
            raise LimitExceeded("max_request_chars", limits.max_request_chars, len(original_request),
                                "original request")
    if intent_classification is not None and not isinstance(intent_classification, str):
        raise InputError(f"intent classification must be a string, found `{intent_classification!r}`")
    specs = None
    if tools is not None:
        specs = []
        for t in tools:
            if not isinstance(t, ToolSpec):
                raise InputError(f"tool catalogue entries must be ToolSpec, found {type(t).__name__}")
            specs.append(t.to_json())
    return {"identity": identity.to_json(), "original_request": original_request,
            "intent_classification": intent_classification, "tools": specs}


def requested_body(action: Action, decision: Decision, identity_json: Any, parameters_view: Any,
                   parameters_digest: str, alerts: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(decision, Decision):
        raise InputError(f"decision must be a Decision, found {type(decision).__name__}")
    if not isinstance(parameters_view, Mapping):
        raise InputError(f"parameters_view must be a mapping, found {type(parameters_view).__name__}")
    if not isinstance(parameters_digest, str) or not parameters_digest.startswith("sha256:"):
        raise InputError(f"parameters_digest must be a `sha256:` digest, found `{parameters_digest!r}`")
    act: dict[str, Any] = {
        "action_id": action.action_id,
        "timestamp": format_ts(action.timestamp),
        "tool": action.tool,
        "operation": action.operation,
        "session_id": action.session_id,
        "identity": identity_json,
        "parameters": parameters_view,
        "parameters_digest": parameters_digest,
    }
    if action.raw_tool is not None:
        act["raw_tool"] = action.raw_tool
    body: dict[str, Any] = {"action": act, "decision": decision.to_json()}
    if alerts:  # INVARIANT: absent when none, so entries without alerts keep their hash and meaning
        body["alerts"] = sorted(alerts)
    return body


def error_json(error: BaseException | None) -> dict[str, str] | None:
    if error is None:
        return None
    cls = type(error)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        msg = str(error)
    except Exception:
        msg = "<unprintable>"
    return {"class": name, "message": msg[:MAX_ERROR_CHARS]}


def outcome_body(action: Action, executed: bool, success: bool | None, oc: OutputClass,
                 error: BaseException | None, injection: Iterable[str] = (),
                 provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(executed, bool) or (success is not None and not isinstance(success, bool)):
        raise InputError(f"executed must be a bool and success a bool or None, found `{executed!r}`, "
                         f"`{success!r}`")
    view = oc.output
    body: dict[str, Any] = {
        "action_id": action.action_id,
        "tool": action.tool,
        "operation": action.operation,
        "executed": executed,
        "success": success,
        "output_digest": view.digest if view else None,
        "output_form": view.form if view else None,
        "output_bytes": view.total_bytes if view else 0,
        "scanned_bytes": view.scanned_bytes if view else 0,
        "classifications": sorted(oc.labels),
        "level": oc.level,
        "detectors": list(oc.detectors),
        "declared": oc.declared,
        "unclassified": oc.unclassified,
        "error": error_json(error),
    }
    kinds = sorted(injection)
    if kinds:  # INVARIANT: absent when none, so older entries keep their hash and meaning
        body["injection"] = kinds
    if provenance:  # the same: absent when the output held no value to track
        body["provenance"] = provenance
    return body


def value_body(name: str, value: Any, source: str, limits: Limits) -> dict[str, Any]:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise InputError(f"context value name `{name}` must be a lower-case identifier like `ticket_status`")
    if name in RESERVED_VALUE_NAMES:
        raise InputError(f"context value name `{name}` would shadow the built-in fact `context.{name}`")
    if not isinstance(source, str) or not source.strip() or len(source) > limits.max_name_length:
        raise InputError(f"context value `{name}`: source must be a non-empty string of at most "
                         f"{limits.max_name_length} characters, found `{source!r}`")
    plain = to_json(value, path=f"context.{name}")
    size = len(canonical_bytes(plain))
    if size > limits.max_argument_bytes:
        raise LimitExceeded("max_argument_bytes", limits.max_argument_bytes, size, f"context value `{name}`")
    return {"name": name, "value": plain, "source": source}


def check_event(kind: str, body: Any) -> dict[str, Any]:
    if not isinstance(kind, str) or not _IDENT.fullmatch(kind) or kind in BUILTIN_KINDS:
        raise InputError(f"event kind `{kind}` must be a lower-case identifier other than "
                         f"{', '.join(sorted(BUILTIN_KINDS))}")
    if not isinstance(body, Mapping):
        raise InputError(f"event `{kind}` body must be a mapping, found {type(body).__name__}")
    return dict(body)


def signal_value(name: Any, value: Any) -> Any:
    """The plain JSON of a door-supplied signal's value (None clears the signal).

    Raises:
        InputError: a malformed or derived name, or a value that is not a JSON scalar or a list of strings.
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise InputError(f"signal name `{name}` must be a lower-case identifier like `tool_definition_changed`")
    if name in DERIVED_SIGNAL_NAMES:
        raise InputError(f"signal name `{name}` is derived by aarmor (`risk_signals.{name}`); a door cannot set it")
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        bad = next((x for x in items if not isinstance(x, str)), None)
        if bad is not None:
            raise InputError(f"signal `{name}`: list items must be strings, found `{bad!r}`")
        return items
    if value is None or isinstance(value, bool | int | float | str):
        return to_json(value, path=f"risk_signals.{name}")
    raise InputError(f"signal `{name}` value must be a JSON scalar or a list of strings, found "
                     f"{type(value).__name__}")


def signal_body(name: str, value: Any, detail: Any, limits: Limits) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "value": signal_value(name, value)}
    if detail is not None:
        body["detail"] = to_json(detail, path=f"signal `{name}` detail")
    size = len(canonical_bytes(body))
    if size > limits.max_argument_bytes:
        raise LimitExceeded("max_argument_bytes", limits.max_argument_bytes, size, f"signal `{name}`")
    return body
