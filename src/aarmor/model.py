"""Frozen value types of the action model (AARM 2.1, 2.4, 2.7).

These are the only shapes that travel between layers. Doors build an `Action` through
`aarmor.normalize`; the context accumulator hands the PDP a `ContextSnapshot`; the PDP returns a
`Decision`. All are frozen and slotted; nested JSON is held as `FrozenMap` and tuples so that no
layer can mutate what another has already decided on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from aarmor.canonical import format_ts

__all__ = [
    "Action",
    "Classification",
    "ContextSnapshot",
    "Decision",
    "DecisionResult",
    "DelegationLink",
    "FrozenMap",
    "Identity",
    "PriorAction",
    "RiskLevel",
    "ToolSpec",
    "freeze",
    "thaw",
]


class DecisionResult(StrEnum):
    """The five AARM decisions (R4)."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    MODIFY = "MODIFY"
    STEP_UP = "STEP_UP"
    DEFER = "DEFER"


class RiskLevel(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class Classification(StrEnum):
    """Action classification of AARM 2.3 (the paper's two "standard" rows included)."""

    FORBIDDEN = "forbidden"
    CONTEXT_DEPENDENT_DENY = "context_dependent_deny"
    CONTEXT_DEPENDENT_ALLOW = "context_dependent_allow"
    CONTEXT_DEPENDENT_DEFER = "context_dependent_defer"
    STANDARD = "standard"


class FrozenMap(Mapping[str, Any]):
    """An immutable mapping with str keys. Values are frozen recursively by `freeze`."""

    __slots__ = ("_d", "_h")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._d: dict[str, Any] = dict(data or {})
        self._h: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._d == other._d
        if isinstance(other, Mapping):
            return self._d == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(tuple(sorted((k, _hashable(v)) for k, v in self._d.items())))
        return self._h

    def to_json(self) -> dict[str, Any]:
        return thaw(self)  # type: ignore[no-any-return]


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


# `freeze` and `thaw` run on every call's arguments. Exact-type checks come first because isinstance
# against the `Mapping` ABC is slow; each fast arm does what the general arm below it would do for that
# type (dict and FrozenMap are Mappings, list and tuple are sequences, the leaves are returned as is).


def freeze(value: Any) -> Any:
    """Deep-freeze JSON-like data: mappings to `FrozenMap`, lists to tuples."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is dict:
        return FrozenMap({k: freeze(v) for k, v in value.items()})
    if isinstance(value, Mapping):
        return FrozenMap({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of `freeze`: fresh, mutable dicts and lists (a tool may mutate its own copy)."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is FrozenMap:
        return {k: thaw(v) for k, v in value._d.items()}
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class DelegationLink:
    """One hop of a delegation chain (AARM 2.7 `delegation_chain`; docs/identity.md "Delegation").

    `token` is the signed delegation token (a JWS) the link was read from, when it came signed: like
    `Identity.token` it is a bearer credential, so it is not serialised, shown or compared. `link_id` is the
    token's `jti` (what revocation by token id names) and `signer` the key id that verified the signature;
    both are None for a claimed, unsigned link.
    """

    delegator: str
    delegatee: str
    scope: tuple[str, ...] = ()
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    link_id: str | None = None
    signer: str | None = None
    token: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "delegator": self.delegator,
            "delegatee": self.delegatee,
            "scope": list(self.scope),
            "issued_at": format_ts(self.issued_at) if self.issued_at else None,
            "expires_at": format_ts(self.expires_at) if self.expires_at else None,
            "link_id": self.link_id,
            "signer": self.signer,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DelegationLink:
        return cls(d["delegator"], d["delegatee"], tuple(d.get("scope") or ()), _ts(d.get("issued_at")),
                   _ts(d.get("expires_at")), d.get("link_id"), d.get("signer"))


@dataclass(frozen=True, slots=True, init=False)
class Identity:
    """The five identity levels of AARM R6 plus roles, scopes and the delegation chain.

    `human` is the human principal, `service` the service identity, `agent` the agent identity and
    `session` the session id (filled by the session). `verified_by` names the verifier that vouched for
    the claims ("none" for claimed-only identities, "jwt" for a verified bearer token).
    Roles, scopes and delegation accept any sequence (or None) and are stored as tuples.

    `token` is the bearer token (OIDC / JWT) a token verifier checks (identity mode `jwt`,
    docs/identity.md). It is a credential: it is not part of `to_json` (so never in a receipt, the context
    log or an approval request), not shown by `repr` and not compared; it lives only in memory.
    `token_id` is the verified token's `jti` (None without one): not a secret, it is recorded, and it is
    what revocation by token id names.
    """

    human: str | None
    service: str | None
    agent: str | None
    session: str | None
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    delegation: tuple[DelegationLink, ...]
    verified_by: str
    token_id: str | None
    token: str | None = field(default=None, repr=False, compare=False)

    def __init__(self, human: str | None = None, service: str | None = None, agent: str | None = None,
                 session: str | None = None, roles: Sequence[str] | None = (), scopes: Sequence[str] | None = (),
                 delegation: Sequence[DelegationLink] | None = (), verified_by: str = "none",
                 token: str | None = None, token_id: str | None = None) -> None:
        """Raises:
        TypeError: a level that is not a string, or roles/scopes/delegation of the wrong shape.
        """
        for name, value in (("human", human), ("service", service), ("agent", agent), ("session", session),
                            ("verified_by", verified_by), ("token", token), ("token_id", token_id)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Identity.{name} must be a string, found {type(value).__name__}")
            object.__setattr__(self, name, value)
        for name, seq, item in (("roles", roles, str), ("scopes", scopes, str),
                                ("delegation", delegation, DelegationLink)):
            if isinstance(seq, str):
                raise TypeError(f"Identity.{name} must be a sequence, got the string `{seq}`")
            values = () if seq is None else tuple(seq)
            bad = next((x for x in values if not isinstance(x, item)), None)
            if bad is not None:
                raise TypeError(f"Identity.{name} must hold {item.__name__} values, found `{bad!r}`")
            object.__setattr__(self, name, values)

    @property
    def effective_scope(self) -> tuple[str, ...]:
        """Scopes narrowed along the delegation chain: the intersection can never widen.

        An identity without scopes of its own takes the first link's scope; a link without a scope (only a
        claimed one can have none) narrows nothing.
        """
        # None: unscoped so far (an identity without scopes); a link's scope then starts the narrowing.
        # Once narrowed, an empty intersection stays empty: a later link can never widen it again.
        scope: set[str] | None = set(self.scopes) or None
        for link in self.delegation:
            if link.scope:
                scope = set(link.scope) if scope is None else scope & set(link.scope)
        return tuple(sorted(scope or ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "human": self.human,
            "service": self.service,
            "agent": self.agent,
            "session": self.session,
            "roles": list(self.roles),
            "scope": list(self.scopes),
            "effective_scope": list(self.effective_scope),
            "delegation_chain": [link.to_json() for link in self.delegation],
            "verified_by": self.verified_by,
            "token_id": self.token_id,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Identity:
        """Inverse of `to_json` (`effective_scope` is derived, not read)."""
        return cls(d.get("human"), d.get("service"), d.get("agent"), d.get("session"), d.get("roles") or (),
                   d.get("scope") or (), [DelegationLink.from_json(x) for x in d.get("delegation_chain") or ()],
                   d.get("verified_by") or "none", token_id=d.get("token_id"))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as an agent sees it: name, description, JSON-schema parameters, MCP-style annotations.

    Annotations follow MCP's hints: readOnlyHint, destructiveHint, openWorldHint, idempotentHint.
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    annotations: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", freeze(self.parameters) if self.parameters else None)
        object.__setattr__(self, "annotations", freeze(self.annotations) if self.annotations else None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": thaw(self.parameters) if self.parameters else None,
            "annotations": thaw(self.annotations) if self.annotations else None,
        }


@dataclass(frozen=True, slots=True)
class Action:
    """A normalised action (AARM 2.1). Build it with `aarmor.normalize.normalize_action`."""

    action_id: str
    timestamp: datetime
    tool: str
    operation: str
    parameters: FrozenMap
    identity: Identity
    session_id: str
    #: the spelling the caller used, kept for audit when normalisation changed it
    raw_tool: str | None = None
    #: `receipts.parameters_digest(parameters)`, computed once at normalisation ("" if not computed)
    parameters_digest: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        """`tool.operation`, the form prior-action lists and policies use."""
        return f"{self.tool}.{self.operation}" if self.operation else self.tool

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action_id": self.action_id,
            "timestamp": format_ts(self.timestamp),
            "tool": self.tool,
            "operation": self.operation,
            "parameters": thaw(self.parameters),
            "identity": self.identity.to_json(),
            "session_id": self.session_id,
        }
        if self.raw_tool is not None:
            out["raw_tool"] = self.raw_tool
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, parameters_digest: str = "") -> Action:
        """Inverse of `to_json`, for actions read back from the store (already normalised once)."""
        ts = _ts(d["timestamp"])
        assert ts is not None
        return cls(d["action_id"], ts, d["tool"], d.get("operation") or "", freeze(d.get("parameters") or {}),
                   Identity.from_json(d["identity"]), d["session_id"], d.get("raw_tool"), parameters_digest)


@dataclass(frozen=True, slots=True)
class PriorAction:
    """One earlier action of the session as the PDP sees it."""

    action_id: str
    tool: str
    operation: str
    decision: DecisionResult
    timestamp: datetime
    executed: bool = False
    success: bool | None = None
    classifications: frozenset[str] = frozenset()
    #: size of what the tool returned (0 when it returned nothing or did not run)
    output_bytes: int = 0

    @property
    def name(self) -> str:
        return f"{self.tool}.{self.operation}" if self.operation else self.tool


@dataclass(frozen=True, slots=True)
class ContextSnapshot:
    """The immutable view of a session the PDP decides on (AARM 2.2 `get_evaluation_context`).

    `values` holds context fields set explicitly for the session (environment state, memory trust,
    ticket status, ...); a field absent from `values` is *unpopulated*, which is R3 DEFER trigger (a)
    when a matching rule references it. `risk_signals` are derived signals (and any supplied by a door).
    `alignment` and `semantic_distance` come from the pluggable intent scorer; None means no signal.
    """

    session_id: str
    started_at: datetime
    original_request: str | None = None
    intent_classification: str | None = None
    prior_actions: tuple[PriorAction, ...] = ()
    classifications: frozenset[str] = frozenset()
    max_sensitivity: str | None = None
    action_count: int = 0
    elapsed_seconds: float = 0.0
    values: FrozenMap = field(default_factory=FrozenMap)
    risk_signals: FrozenMap = field(default_factory=FrozenMap)
    alignment: float | None = None
    semantic_distance: float | None = None
    #: how sure the system is that it can evaluate this action (AARM 2.2 delta); None = not implemented
    confidence: float | None = None
    chain_head: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The PDP's verdict (AARM 2.4), total: it carries its reasons and any errors.

    `errors` lists evaluation errors (a rule that could not be evaluated); an erroring rule never lets a
    weaker rule win. `defer_trigger` names the R3 trigger (`unpopulated_context`, `same_priority_conflict`,
    `low_confidence`) when the result is DEFER for one of those reasons.
    """

    result: DecisionResult
    reason: str
    policy_id: str | None = None
    policy_version: str | None = None
    policy_hash: str | None = None
    rule_id: str | None = None
    matched_rules: tuple[str, ...] = ()
    classification: Classification = Classification.STANDARD
    risk_level: RiskLevel = RiskLevel.LOW
    confidence: float | None = None
    alignment: float | None = None
    modifications: FrozenMap | None = None
    approvers: tuple[str, ...] = ()
    timeout: float | None = None
    timeout_action: DecisionResult = DecisionResult.DENY
    escalation: FrozenMap | None = None
    defer_trigger: str | None = None
    context_needed: tuple[str, ...] = ()
    #: `effect.set_context` of the deciding rule, e.g. {"data_classification": ["PII"]}: tags the output
    effects: FrozenMap | None = None
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result.value,
            "reason": self.reason,
            "policy": {"policy_id": self.policy_id, "version": self.policy_version, "hash": self.policy_hash},
            "rule_id": self.rule_id,
            "matched_rules": list(self.matched_rules),
            "classification": self.classification.value,
            "risk_level": self.risk_level.value,
            "confidence": self.confidence,
            "alignment": self.alignment,
            "modifications": thaw(self.modifications) if self.modifications is not None else None,
            "approvers": list(self.approvers),
            "timeout": self.timeout,
            "timeout_action": self.timeout_action.value,
            "escalation": thaw(self.escalation) if self.escalation is not None else None,
            "defer_trigger": self.defer_trigger,
            "context_needed": list(self.context_needed),
            "effects": thaw(self.effects) if self.effects is not None else None,
            "errors": list(self.errors),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Decision:
        """Inverse of `to_json`."""
        policy = d.get("policy") or {}

        def frozen(key: str) -> FrozenMap | None:
            return freeze(d[key]) if d.get(key) is not None else None

        return cls(
            result=DecisionResult(d["result"]), reason=d["reason"], policy_id=policy.get("policy_id"),
            policy_version=policy.get("version"), policy_hash=policy.get("hash"), rule_id=d.get("rule_id"),
            matched_rules=tuple(d.get("matched_rules") or ()),
            classification=Classification(d.get("classification") or Classification.STANDARD.value),
            risk_level=RiskLevel(d.get("risk_level") or RiskLevel.LOW.value), confidence=d.get("confidence"),
            alignment=d.get("alignment"), modifications=frozen("modifications"),
            approvers=tuple(d.get("approvers") or ()), timeout=d.get("timeout"),
            timeout_action=DecisionResult(d.get("timeout_action") or "DENY"), escalation=frozen("escalation"),
            defer_trigger=d.get("defer_trigger"), context_needed=tuple(d.get("context_needed") or ()),
            effects=frozen("effects"), errors=tuple(d.get("errors") or ()))


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
