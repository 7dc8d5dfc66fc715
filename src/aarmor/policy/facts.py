"""The facts namespace: what a rule can reference, resolved lazily from (Action, ContextSnapshot).

Rules this module enforces (docs/internal/contracts.md, "The facts namespace"):
- A path is resolved once at load into a small resolver function; evaluation never parses a path.
- A resolver returns the value, `MISSING` (the field is absent: conditions on it are false) or
  `UNPOPULATED` (a context field the session has not populated yet: AARM R3 DEFER trigger (a)).
- Parameters and identity fields are never "unpopulated": an absent parameter is simply absent.
- Nothing is copied: resolvers walk the frozen action and snapshot. The CEL activation (plain dicts) is
  built at most once per decision, and only when a candidate rule has `when:`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aarmor.model import Action, ContextSnapshot, FrozenMap, thaw

__all__ = [
    "MISSING",
    "UNPOPULATED",
    "Facts",
    "Resolver",
    "canonical_path",
    "resolver_for",
]


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING: Any = _Sentinel("MISSING")
UNPOPULATED: Any = _Sentinel("UNPOPULATED")


class Facts:
    """The per-decision view the matchers read. Built once per `evaluate` call; cheap to build."""

    __slots__ = ("_cel", "_names", "action", "now", "snapshot")

    def __init__(self, action: Action, snapshot: ContextSnapshot, now: datetime) -> None:
        self.action = action
        self.snapshot = snapshot
        self.now = now
        self._names: tuple[str, ...] | None = None
        self._cel: dict[str, Any] | None = None

    def prior_names(self) -> tuple[str, ...]:
        if self._names is None:
            self._names = tuple(p.name for p in self.snapshot.prior_actions)
        return self._names

    def cel_activation(self) -> dict[str, Any]:
        """Plain-data variables for CEL `when:` expressions (built once per decision)."""
        if self._cel is None:
            a, s = self.action, self.snapshot
            ident = a.identity
            context: dict[str, Any] = {
                "data_classification": sorted(s.classifications),
                "prior_actions": list(self.prior_names()),
                "action_count": s.action_count,
                "elapsed_seconds": s.elapsed_seconds,
            }
            for k, v in (
                ("max_classification", s.max_sensitivity),
                ("semantic_distance", s.semantic_distance),
                ("alignment", s.alignment),
                ("confidence", s.confidence),
            ):
                if v is not None:
                    context[k] = v
            context.update(thaw(s.values))
            original: dict[str, Any] = {}
            if s.original_request is not None:
                original["text"] = s.original_request
            if s.intent_classification is not None:
                original["intent_classification"] = s.intent_classification
            self._cel = {
                "action": {
                    "tool": a.tool,
                    "operation": a.operation,
                    "name": a.name,
                    "parameters": thaw(a.parameters),
                },
                "identity": {
                    k: v
                    for k, v in (
                        ("human", ident.human),
                        ("service", ident.service),
                        ("agent", ident.agent),
                        ("session", ident.session),
                    )
                    if v is not None
                }
                | {
                    "roles": list(ident.roles),
                    "scopes": list(ident.scopes),
                    "effective_scope": list(ident.effective_scope),
                    "delegation_depth": len(ident.delegation),
                },
                "context": context,
                "original_request": original,
                "risk_signals": thaw(s.risk_signals),
            }
        return self._cel


Resolver = Callable[[Facts], Any]

# Spellings accepted for the same field (AARM dialects and the contract's aliases).
_ALIASES = {
    "params": "parameters",
    "data_accessed": "context.data_classification",
    "context.data_accessed": "context.data_classification",
    "context.original_request": "original_request",
    "original_request.text": "original_request",
    "context.intent_classification": "original_request.intent_classification",
    "intent_classification": "original_request.intent_classification",
    "context.chain_length": "context.action_count",
    "chain_length": "context.action_count",
    "identity.role": "identity.roles",
    "identity.scope": "identity.scopes",
}

_CONTEXT_BUILTIN = {
    "data_classification",
    "max_classification",
    "prior_actions",
    "action_count",
    "elapsed_seconds",
    "semantic_distance",
    "alignment",
    "confidence",
}
_IDENTITY_FIELDS = {
    "human",
    "service",
    "agent",
    "session",
    "roles",
    "scopes",
    "effective_scope",
    "delegation_depth",
}

EXPECTED_ROOTS = (
    "tool, operation, parameters.*, identity.*, context.*, risk_signals.*, "
    "original_request, original_request.intent_classification, sink.type"
)


def canonical_path(path: str) -> str:
    """Fold aliases: `params.to` -> `parameters.to`, `data_accessed` -> `context.data_classification`."""
    for alias, canon in _ALIASES.items():
        if path == alias:
            return canon
        if path.startswith(alias + "."):
            return canon + path[len(alias) :]
    return path


def _dig(value: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if isinstance(value, FrozenMap):
            value = value._d.get(k, MISSING)  # direct dict access: this is the hot path
        elif isinstance(value, Mapping):
            value = value.get(k, MISSING)
        elif isinstance(value, tuple | list) and k.isdigit() and int(k) < len(value):
            value = value[int(k)]
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _params(keys: tuple[str, ...]) -> Resolver:
    if len(keys) == 1:
        k = keys[0]
        return lambda f: f.action.parameters._d.get(k, MISSING)
    return lambda f: _dig(f.action.parameters, keys)


def _optional(get: Callable[[ContextSnapshot], Any]) -> Resolver:
    def r(f: Facts) -> Any:
        v = get(f.snapshot)
        return UNPOPULATED if v is None else v

    return r


def _values(keys: tuple[str, ...]) -> Resolver:
    head, rest = keys[0], keys[1:]

    def r(f: Facts) -> Any:
        v = f.snapshot.values._d.get(head, UNPOPULATED)
        if v is UNPOPULATED or v is None:
            return UNPOPULATED
        return _dig(v, rest) if rest else v

    return r


def _signals(keys: tuple[str, ...]) -> Resolver:
    head, rest = keys[0], keys[1:]

    def r(f: Facts) -> Any:
        v = f.snapshot.risk_signals._d.get(head, UNPOPULATED)
        if v is UNPOPULATED or v is None:
            return UNPOPULATED
        return _dig(v, rest) if rest else v

    return r


def _identity(name: str) -> Resolver:
    if name == "effective_scope":
        return lambda f: f.action.identity.effective_scope
    if name == "delegation_depth":
        return lambda f: len(f.action.identity.delegation)
    return lambda f: getattr(f.action.identity, name)


_CONTEXT_RESOLVERS: dict[str, Resolver] = {
    "data_classification": lambda f: f.snapshot.classifications,
    "max_classification": lambda f: f.snapshot.max_sensitivity or MISSING,
    "prior_actions": lambda f: f.prior_names(),
    "action_count": lambda f: f.snapshot.action_count,
    "elapsed_seconds": lambda f: f.snapshot.elapsed_seconds,
    "semantic_distance": _optional(lambda s: s.semantic_distance),
    "alignment": _optional(lambda s: s.alignment),
    "confidence": _optional(lambda s: s.confidence),
}


def resolver_for(path: str) -> tuple[str, Resolver]:
    """Canonical path and resolver for a dotted field path.

    Raises:
        ValueError: the path names no field of the facts namespace (message lists the roots).
    """
    path = canonical_path(path)
    parts = tuple(path.split("."))
    if any(not p for p in parts):
        raise ValueError(f"field `{path}` has an empty segment")
    root, rest = parts[0], parts[1:]
    if root in ("tool", "operation") and not rest:
        return path, (lambda f: f.action.tool) if root == "tool" else (lambda f: f.action.operation)
    if root == "parameters" and rest:
        return path, _params(rest)
    if root == "identity" and len(rest) == 1 and rest[0] in _IDENTITY_FIELDS:
        return path, _identity(rest[0])
    if root == "original_request" and not rest:
        return path, _optional(lambda s: s.original_request)
    if root == "original_request" and rest == ("intent_classification",):
        return path, _optional(lambda s: s.intent_classification)
    if root == "context" and rest:
        if len(rest) == 1 and rest[0] in _CONTEXT_BUILTIN:
            return path, _CONTEXT_RESOLVERS[rest[0]]
        return path, _values(rest)
    if root == "risk_signals" and rest:
        return path, _signals(rest)
    if path == "sink.type":
        # Every action in this release is a tool call; telemetry sinks come later.
        return path, lambda f: "tool"
    raise ValueError(f"unknown field `{path}`, expected one of {EXPECTED_ROOTS}")
