"""Stage 2: located YAML data -> validated, typed rule and header specs.

Rules this module enforces (DESIGN.md habits 4, 7, 10):
- Unknown keys, unknown operators, invalid or oversized regexes, wrong types (a string `priority`, an
  unknown decision) fail with `PolicyError` naming file, rule id and line.
- Empty means no: an empty rule list, allowlist, approver list or match block is an error.
- `forbidden` and `context_dependent_deny` rules must DENY; `context_dependent_defer` rules must DEFER;
  a MODIFY rule must say what it modifies; forbidden rules cannot carry a confidence `threshold`
  (AARM 2.3: context is ignored for them).
- `timeout_action: PAUSE` (re-validation) becomes DEFER (AARM 9.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NoReturn

from aarmor.errors import PolicyError
from aarmor.model import Classification, DecisionResult, FrozenMap, RiskLevel, freeze
from aarmor.policy.conditions import Block, Condition, build_block, plain
from aarmor.policy.operators import LEVELS, OpContext, OperatorArgError, _domain_list
from aarmor.policy.parse import LMap, line_of

__all__ = ["Constraint", "Header", "RuleSpec", "duration", "validate_header", "validate_rule"]

RULE_KEYS = (
    "id",
    "name",
    "description",
    "match",
    "condition",
    "trigger",
    "when",
    "action",
    "priority",
    "classification",
    "reason",
    "risk_level",
    "threshold",
    "approvers",
    "timeout",
    "timeout_action",
    "escalation",
    "modifications",
    "constraints",
    "effect",
    "re_validation",
    "context_needed",
)
HEADER_KEYS = (
    "id",
    "name",
    "version",
    "description",
    "default",
    "internal_domains",
    "alignment_threshold",
    "context_approvers",
    "confidence_threshold",
)
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Constraint:
    """`constraints:` entry; the rule fires when the constraint is VIOLATED (AARM 9.2)."""

    kind: str  # "domain_allowlist" | "rate"
    domains: tuple[str, ...] = ()
    max: int = 0
    window: float = 0.0

    def to_json(self) -> Any:
        if self.kind == "rate":
            return {"rate": {"max": self.max, "window": self.window}}
        return {"domain_allowlist": list(self.domains)}


@dataclass(frozen=True, slots=True)
class RuleSpec:
    id: str
    name: str
    description: str
    decision: DecisionResult
    priority: int
    classification: Classification
    reason: str
    risk_level: RiskLevel | None
    threshold: float | None
    approvers: tuple[str, ...]
    timeout: float | None
    timeout_action: DecisionResult
    escalation: FrozenMap | None
    modifications: FrozenMap | None
    effects: FrozenMap | None
    context_needed: tuple[str, ...]
    tools: tuple[str, ...]  # empty: every tool
    operations: tuple[str, ...]  # empty: every operation
    conditions: tuple[Condition, ...]
    constraints: tuple[Constraint, ...]
    when: str | None
    when_line: int
    re_validation: FrozenMap | None
    source: str
    line: int

    def to_json(self) -> dict[str, Any]:
        """The canonical normalised form (hashed into the policy hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "decision": self.decision.value,
            "priority": self.priority,
            "classification": self.classification.value,
            "reason": self.reason,
            "risk_level": self.risk_level.value if self.risk_level else None,
            "threshold": self.threshold,
            "approvers": list(self.approvers),
            "timeout": self.timeout,
            "timeout_action": self.timeout_action.value,
            "escalation": plain(self.escalation),
            "modifications": plain(self.modifications),
            "effects": plain(self.effects),
            "context_needed": list(self.context_needed),
            "tools": sorted(self.tools),
            "operations": sorted(self.operations),
            "conditions": sorted((c.to_json() for c in self.conditions), key=repr),
            "constraints": [c.to_json() for c in self.constraints],
            "when": self.when,
            "re_validation": plain(self.re_validation),
        }


@dataclass(frozen=True, slots=True)
class Header:
    policy_id: str
    version: str
    description: str
    default: DecisionResult
    default_given: bool
    internal_domains: tuple[str, ...]
    alignment_threshold: float
    context_approvers: tuple[str, ...]
    confidence_threshold: float


class _V:
    """Error helper bound to one file and (optionally) one rule."""

    def __init__(self, source: str, rule_id: str | None) -> None:
        self.source, self.rule_id = source, rule_id

    def fail(self, msg: str, line: int) -> NoReturn:
        raise PolicyError(msg, file=self.source, rule_id=self.rule_id, line=line or None)

    def strings(self, v: Any, what: str, line: int) -> tuple[str, ...]:
        items = list(v) if isinstance(v, list) else [v]
        if not items:
            self.fail(f"`{what}` is an empty list (empty means no)", line)
        if not all(isinstance(i, str) and i.strip() for i in items):
            self.fail(f"`{what}` expects a string or a list of strings, found `{plain(v)!r}`", line)
        return tuple(items)

    def number(self, v: Any, what: str, line: int, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.fail(f"`{what}` expects a number, found `{v!r}`", line)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(f"`{what}` must be between {lo} and {hi}, found {v}", line)
        return float(v)

    def enum(self, v: Any, cls: Any, what: str, line: int, extra: dict[str, Any] | None = None) -> Any:
        key = v.upper() if isinstance(v, str) and cls is not Classification else v
        if extra and key in extra:
            return extra[key]
        try:
            return cls(key)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            self.fail(f"unknown {what} `{v}`, expected one of {choices}", line)

    def duration(self, v: Any, what: str, line: int) -> float:
        try:
            return duration(v)
        except ValueError as exc:
            self.fail(f"`{what}`: {exc}", line)

    def keys(self, m: Any, allowed: tuple[str, ...], what: str, line: int) -> LMap:
        if not isinstance(m, LMap):
            self.fail(f"`{what}` must be a mapping, found `{plain(m)!r}`", line_of(m, line))
        for k in m:
            if k not in allowed:
                self.fail(f"unknown key `{k}` in {what}, expected one of {', '.join(allowed)}", m.key_line(k))
        return m


def duration(v: Any) -> float:
    """Seconds from a number or a string like `300`, `300s`, `30m`, `1h`, `2d`.

    Raises:
        ValueError: not a non-negative duration.
    """
    if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0:
        return float(v)
    if isinstance(v, str) and (m := _DURATION.fullmatch(v)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration (seconds, or `30s`, `5m`, `1h`), found `{v!r}`")


def validate_header(doc: LMap, *, source: str, stem: str, internal_domains: tuple[str, ...]) -> Header:
    """Validate the `policy:` header (keys may also sit at the top level).

    Raises:
        PolicyError: unknown or mistyped header keys.
    """
    v = _V(source, None)
    head = doc.get("policy", LMap())
    if "policy" in doc:
        v.keys(head, HEADER_KEYS, "the `policy:` header", doc.key_line("policy"))
    merged: dict[str, tuple[Any, int]] = {k: (head[k], head.key_line(k)) for k in head}
    for k in HEADER_KEYS:
        if k in doc:
            if k in merged:
                v.fail(f"`{k}` given both at the top level and in `policy:`", doc.key_line(k))
            merged[k] = (doc[k], doc.key_line(k))

    def get(k: str, default: Any) -> tuple[Any, int]:
        return merged.get(k, (default, 0))

    pid, line = get("id", None)
    if pid is None:
        pid, line = get("name", stem)
    if not isinstance(pid, str) or not pid.strip():
        v.fail(f"policy `id` must be a non-empty string, found `{pid!r}`", line)
    ver, line = get("version", "0")
    if not isinstance(ver, str | int | float) or isinstance(ver, bool):
        v.fail(f"policy `version` must be a string, found `{ver!r}`", line)
    desc, line = get("description", "")
    if not isinstance(desc, str):
        v.fail("policy `description` must be a string", line)
    dflt, line = get("default", None)
    default = DecisionResult.DENY
    if dflt is not None:
        default = v.enum(dflt, DecisionResult, "default posture", line)
        if default not in (DecisionResult.ALLOW, DecisionResult.DENY, DecisionResult.STEP_UP):
            v.fail(f"default posture must be ALLOW, DENY or STEP_UP, found `{dflt}`", line)
    doms: tuple[str, ...] = tuple(internal_domains)
    raw, line = get("internal_domains", None)
    if raw is not None:
        try:
            doms = tuple(sorted(set(doms) | set(_domain_list(raw, "internal_domains"))))
        except OperatorArgError as exc:
            v.fail(str(exc), line)
    tau, line = get("alignment_threshold", 0.7)
    tau = v.number(tau, "alignment_threshold", line, 0.0, 1.0)
    conf, line = get("confidence_threshold", 0.0)
    conf = v.number(conf, "confidence_threshold", line, 0.0, 1.0)
    appr, line = get("context_approvers", None)
    approvers = v.strings(appr, "context_approvers", line) if appr is not None else ()
    return Header(pid.strip(), str(ver), desc, default, dflt is not None, doms, tau, approvers, conf)


_CLASS_DECISIONS = {
    Classification.FORBIDDEN: (DecisionResult.DENY,),
    Classification.CONTEXT_DEPENDENT_DENY: (DecisionResult.DENY,),
    Classification.CONTEXT_DEPENDENT_DEFER: (DecisionResult.DEFER,),
    Classification.CONTEXT_DEPENDENT_ALLOW: (
        DecisionResult.ALLOW,
        DecisionResult.STEP_UP,
        DecisionResult.MODIFY,
    ),
}


def _modifications(v: _V, m: Any, line: int) -> FrozenMap:
    m = v.keys(m, ("parameters", "redact", "add_filter"), "`modifications`", line)
    if not m:
        v.fail("`modifications` is empty (empty means no)", line)
    out: dict[str, Any] = {}
    for k, val in m.items():
        kl = m.key_line(k)
        if k == "redact":
            out[k] = list(v.strings(val, "redact", kl))
        elif not isinstance(val, LMap) or not val:
            v.fail(f"`modifications.{k}` must be a non-empty mapping", kl)
        else:
            out[k] = plain(val)
    return freeze(out)  # type: ignore[no-any-return]


def re_validation(v: _V, m: Any, line: int) -> FrozenMap:
    """`re_validation: {interval: 10_actions, method, timeout, timeout_action}` -> normalised map."""
    m = v.keys(m, ("interval", "method", "timeout", "timeout_action", "approvers"), "`re_validation`", line)
    iv = m.get("interval")
    n = None
    if isinstance(iv, int) and not isinstance(iv, bool):
        n = iv
    elif isinstance(iv, str) and re.fullmatch(r"\d+_?actions?", iv.strip()):
        n = int(re.match(r"\d+", iv.strip()).group())  # type: ignore[union-attr]
    if n is None or n < 1:
        v.fail(
            f"`re_validation.interval` must be `N_actions` with N >= 1, found `{iv!r}`",
            m.key_line("interval"),
        )
    out: dict[str, Any] = {"interval_actions": n, "method": str(m.get("method", "user_confirmation"))}
    if "timeout" in m:
        out["timeout"] = v.duration(m["timeout"], "re_validation.timeout", m.key_line("timeout"))
    ta = m.get("timeout_action", "DENY")
    out["timeout_action"] = v.enum(
        ta, DecisionResult, "timeout_action", m.key_line("timeout_action"), {"PAUSE": DecisionResult.DEFER}
    ).value
    if "approvers" in m:
        out["approvers"] = list(v.strings(m["approvers"], "approvers", m.key_line("approvers")))
    return freeze(out)  # type: ignore[no-any-return]


def _constraints(v: _V, m: Any, line: int) -> tuple[Constraint, ...]:
    m = v.keys(m, ("domain_allowlist", "rate"), "`constraints`", line)
    if not m:
        v.fail("`constraints` is empty (empty means no)", line)
    out = []
    for k, val in m.items():
        kl = m.key_line(k)
        if k == "domain_allowlist":
            try:
                out.append(Constraint("domain_allowlist", domains=_domain_list(val, "domain_allowlist")))
            except OperatorArgError as exc:
                v.fail(str(exc), kl)
        else:
            r = v.keys(val, ("max", "window"), "`constraints.rate`", kl)
            mx = r.get("max")
            if not isinstance(mx, int) or isinstance(mx, bool) or mx < 1:
                v.fail(f"`rate.max` must be an integer >= 1, found `{mx!r}`", kl)
            if "window" not in r:
                v.fail("`rate` needs a `window` (seconds)", kl)
            win = v.duration(r["window"], "rate.window", r.key_line("window"))
            if win <= 0:
                v.fail("`rate.window` must be positive", r.key_line("window"))
            out.append(Constraint("rate", max=mx, window=win))
    return tuple(out)


def validate_rule(r: Any, *, source: str, ctx: OpContext, index: int) -> RuleSpec:
    """Validate one rule mapping into a `RuleSpec`.

    Raises:
        PolicyError: naming file, rule id and line for every defect.
    """
    if not isinstance(r, LMap):
        raise PolicyError(f"rule #{index + 1} must be a mapping", file=source, line=line_of(r) or None)
    rid = r.get("id")
    v = _V(source, rid if isinstance(rid, str) else None)
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        v.fail(
            f"rule #{index + 1} needs an `id` of letters, digits and `_.:-`, found `{rid!r}`",
            r.key_line("id"),
        )
    for k in r:
        if k not in RULE_KEYS:
            v.fail(f"unknown rule key `{k}`, expected one of {', '.join(RULE_KEYS)}", r.key_line(k))
    kl = r.key_line
    if "action" not in r:
        v.fail(
            "rule has no `action` (or `decision`): expected one of ALLOW, DENY, MODIFY, STEP_UP, DEFER",
            r.line,
        )
    decision = v.enum(r["action"], DecisionResult, "decision", kl("action"))
    prio = r.get("priority", 0)
    if not isinstance(prio, int) or isinstance(prio, bool):
        v.fail(f"`priority` must be an integer, found `{prio!r}`", kl("priority"))
    if "classification" in r:
        cls = v.enum(r["classification"], Classification, "classification", kl("classification"))
        allowed = _CLASS_DECISIONS.get(cls)
        if allowed and decision not in allowed:
            v.fail(
                f"classification `{cls.value}` requires decision {' or '.join(a.value for a in allowed)}, "
                f"found {decision.value}",
                kl("classification"),
            )
    else:
        cls = (
            Classification.CONTEXT_DEPENDENT_DEFER
            if decision is DecisionResult.DEFER
            else Classification.STANDARD
        )
    text: dict[str, str] = {}
    for k in ("name", "description", "reason"):
        val = r.get(k, "")
        if not isinstance(val, str):
            v.fail(f"`{k}` must be a string, found `{val!r}`", kl(k))
        text[k] = val
    risk = v.enum(r["risk_level"], RiskLevel, "risk_level", kl("risk_level")) if "risk_level" in r else None
    threshold = v.number(r["threshold"], "threshold", kl("threshold"), 0.0, 1.0) if "threshold" in r else None
    if threshold is not None and cls is Classification.FORBIDDEN:
        v.fail("forbidden rules ignore context (AARM 2.3); remove `threshold`", kl("threshold"))
    approvers = v.strings(r["approvers"], "approvers", kl("approvers")) if "approvers" in r else ()
    timeout = v.duration(r["timeout"], "timeout", kl("timeout")) if "timeout" in r else None
    t_action = DecisionResult.DENY
    if "timeout_action" in r:
        # AARM 9.3: PAUSE is not one of the five decisions; it means "suspend", i.e. DEFER.
        t_action = v.enum(
            r["timeout_action"],
            DecisionResult,
            "timeout_action",
            kl("timeout_action"),
            {"PAUSE": DecisionResult.DEFER},
        )
    escalation = None
    if "escalation" in r:
        e = v.keys(r["escalation"], ("after", "to"), "`escalation`", kl("escalation"))
        if "to" not in e:
            v.fail("`escalation` needs `to` (who to escalate to)", kl("escalation"))
        escalation = freeze(
            {
                "after": v.duration(e.get("after", 0), "escalation.after", e.key_line("after")),
                "to": list(v.strings(e["to"], "escalation.to", e.key_line("to"))),
            }
        )
    mods = _modifications(v, r["modifications"], kl("modifications")) if "modifications" in r else None
    if decision is DecisionResult.MODIFY and mods is None:
        v.fail("a MODIFY rule needs `modifications` (parameters, redact or add_filter)", kl("action"))
    effects = None
    if "effect" in r:
        e = v.keys(r["effect"], ("set_context",), "`effect`", kl("effect"))
        sc = e.get("set_context")
        if not isinstance(sc, LMap) or not sc:
            v.fail("`effect.set_context` must be a non-empty mapping", kl("effect"))
        effects = freeze(plain(sc))
    needed = (
        v.strings(r["context_needed"], "context_needed", kl("context_needed"))
        if "context_needed" in r
        else ()
    )
    block = Block([], [], [])
    for k in ("match", "condition", "trigger"):
        if k in r:
            build_block(r[k], k, ctx, v.fail, block)
    cons = _constraints(v, r["constraints"], kl("constraints")) if "constraints" in r else ()
    when = r.get("when")
    if when is not None:
        if not isinstance(when, str) or not when.strip():
            v.fail("`when` must be a non-empty CEL expression string", kl("when"))
        if len(when) > ctx.limits.max_cel_length:
            v.fail(
                f"CEL expression of {len(when)} characters exceeds limit `max_cel_length` "
                f"({ctx.limits.max_cel_length})",
                kl("when"),
            )
    if not (block.tools or block.operations or block.conditions or cons or when):
        v.fail('rule has no conditions; write `match: {tool: "*"}` to apply it to every action', r.line)
    rv = re_validation(v, r["re_validation"], kl("re_validation")) if "re_validation" in r else None
    return RuleSpec(
        id=rid,
        name=text["name"],
        description=text["description"],
        decision=decision,
        priority=prio,
        classification=cls,
        reason=text["reason"],
        risk_level=risk,
        threshold=threshold,
        approvers=approvers,
        timeout=timeout,
        timeout_action=t_action,
        escalation=escalation,
        modifications=mods,
        effects=effects,
        context_needed=needed,
        tools=tuple(block.tools),
        operations=tuple(block.operations),
        conditions=tuple(block.conditions),
        constraints=cons,
        when=when,
        when_line=kl("when") if when else 0,
        re_validation=rv,
        source=source,
        line=r.line,
    )


def validate_boundaries(doc: LMap, *, source: str) -> dict[str, dict[str, Any]]:
    """`intent_boundaries: {<intent>: {allowed_tools, max_data_classification, max_chain_length, ...}}`.

    Raises:
        PolicyError: unknown keys, empty allowlists, unknown levels.
    """
    v = _V(source, None)
    raw = doc.get("intent_boundaries")
    if raw is None:
        return {}
    if not isinstance(raw, LMap) or not raw:
        v.fail(
            "`intent_boundaries` must be a non-empty mapping of intent -> boundary",
            doc.key_line("intent_boundaries"),
        )
    out: dict[str, dict[str, Any]] = {}
    keys = (
        "allowed_tools",
        "max_data_classification",
        "max_chain_length",
        "scope",
        "max_privilege",
        "re_validation",
    )
    for intent, b in raw.items():
        bl = raw.key_line(intent)
        b = v.keys(b, keys, f"intent boundary `{intent}`", bl)
        if not b:
            v.fail(f"intent boundary `{intent}` is empty (empty means no)", bl)
        ent: dict[str, Any] = {}
        if "allowed_tools" in b:
            ent["allowed_tools"] = sorted(
                t.casefold()
                for t in v.strings(b["allowed_tools"], "allowed_tools", b.key_line("allowed_tools"))
            )
        if "max_data_classification" in b:
            lv = b["max_data_classification"]
            if not isinstance(lv, str) or lv.upper() not in LEVELS:
                v.fail(
                    f"`max_data_classification` expects one of {', '.join(LEVELS)}, found `{lv!r}`",
                    b.key_line("max_data_classification"),
                )
            ent["max_data_classification"] = lv.upper()
        if "max_chain_length" in b:
            n = b["max_chain_length"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                v.fail(
                    f"`max_chain_length` must be an integer >= 1, found `{n!r}`",
                    b.key_line("max_chain_length"),
                )
            ent["max_chain_length"] = n
        for k in ("scope", "max_privilege"):
            if k in b:  # recorded and hashed, not enforced (documented in docs/policy-language.md)
                ent[k] = list(v.strings(b[k], k, b.key_line(k)))
        if "re_validation" in b:
            ent["re_validation"] = plain(re_validation(v, b["re_validation"], b.key_line("re_validation")))
        out[str(intent).casefold()] = ent
    return out
