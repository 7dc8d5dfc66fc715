"""MODIFY enforcement helper: apply a decision's `modifications` to an action's parameters (AARM 4.2).

- `parameters` (alias `params`): shallow merge; a dotted key (`options.limit`) sets a nested value,
  creating intermediate objects.
- `redact: [keys or dotted paths]`: present values become `"[REDACTED]"`; absent paths are skipped.
- `add_filter: {...}`: sets `params["_aarm_filter"]`.
- `redact_output: [labels]` does not touch the parameters: the mediator applies it to the tool's output
  (aarmor.context.output_redaction).
The input is never mutated; the result is a new `FrozenMap`. Applying twice gives the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aarmor.model import FrozenMap, freeze, thaw

__all__ = ["REDACTED", "apply_modifications"]

REDACTED = "[REDACTED]"


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            d[p] = nxt
        d = nxt
    d[parts[-1]] = thaw(value)


def _redact(d: Any, parts: list[str]) -> None:
    for p in parts[:-1]:
        if isinstance(d, dict):
            d = d.get(p)
        elif isinstance(d, list) and p.isdigit() and int(p) < len(d):
            d = d[int(p)]
        else:
            return
    last = parts[-1]
    if isinstance(d, dict) and last in d:
        d[last] = REDACTED
    elif isinstance(d, list) and last.isdigit() and int(last) < len(d):
        d[int(last)] = REDACTED


def apply_modifications(params: Mapping[str, Any], modifications: Mapping[str, Any] | None) -> FrozenMap:
    """Return new parameters with `modifications` applied (see the module docstring).

    Raises:
        ValueError: `modifications` has a key other than parameters, params, redact, add_filter,
            redact_output.
    """
    out = thaw(params)
    if not modifications:
        return freeze(out)  # type: ignore[no-any-return]
    unknown = set(modifications) - {"parameters", "params", "redact", "add_filter", "redact_output"}
    if unknown:
        raise ValueError(
            f"unknown modification `{sorted(unknown)[0]}`, expected parameters, redact, add_filter, redact_output"
        )
    for key in ("parameters", "params"):
        for k, v in (modifications.get(key) or {}).items():
            _set(out, k, v)
    redact = modifications.get("redact") or ()
    for path in (redact,) if isinstance(redact, str) else redact:
        _redact(out, str(path).split("."))
    if modifications.get("add_filter"):
        out["_aarm_filter"] = thaw(modifications["add_filter"])
    return freeze(out)  # type: ignore[no-any-return]
