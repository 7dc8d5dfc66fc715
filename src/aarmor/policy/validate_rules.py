"""One rule mapping -> `RuleSpec`: keys, decision, classification, match/condition blocks, constraints.

Rules this module enforces (DESIGN.md habits 4, 7, 10):
- Unknown keys, unknown operators, invalid or oversized regexes, wrong types (a string `priority`, an
  unknown decision) fail with `PolicyError` naming file, rule id and line.
- Empty means no: an empty approver list, match block, `modifications` or `constraints` is an error, and a
  rule with no conditions at all is refused (write `match: {tool: "*"}` to mean every action).
- `forbidden` and `context_dependent_deny` rules must DENY; `context_dependent_defer` rules must DEFER;
  a MODIFY rule must say what it modifies; forbidden rules cannot carry a confidence `threshold`
  (AARM 2.3: context is ignored for them).
- A `when:` CEL expression stays within `Limits.max_cel_length`.
"""

from __future__ import annotations

import re
from typing import Any

from aarmor.context.output_redaction import check_output_labels
from aarmor.errors import PolicyError
from aarmor.model import Classification, DecisionResult, FrozenMap, RiskLevel, freeze
from aarmor.policy.conditions import Block, build_block, plain
from aarmor.policy.domains import domain_list
from aarmor.policy.operators import OpContext, OperatorArgError
from aarmor.policy.parse import LMap, line_of
from aarmor.policy.specs import Constraint, RuleSpec, Sequence
from aarmor.policy.validate_fields import Checker, re_validation

__all__ = ["RULE_KEYS", "validate_rule"]

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
    "after",
)
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

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


def _modifications(v: Checker, m: Any, line: int) -> FrozenMap:
    m = v.keys(m, ("parameters", "redact", "add_filter", "redact_output"), "`modifications`", line)
    if not m:
        v.fail("`modifications` is empty (empty means no)", line)
    out: dict[str, Any] = {}
    for k, val in m.items():
        kl = m.key_line(k)
        if k == "redact":
            out[k] = list(v.strings(val, "redact", kl))
        elif k == "redact_output":
            try:
                out[k] = list(check_output_labels(v.strings(val, "redact_output", kl)))
            except ValueError as exc:
                v.fail(str(exc), kl)
        elif not isinstance(val, LMap) or not val:
            v.fail(f"`modifications.{k}` must be a non-empty mapping", kl)
        else:
            out[k] = plain(val)
    return freeze(out)  # type: ignore[no-any-return]


def _constraints(v: Checker, m: Any, line: int) -> tuple[Constraint, ...]:
    m = v.keys(m, ("domain_allowlist", "rate", "volume"), "`constraints`", line)
    if not m:
        v.fail("`constraints` is empty (empty means no)", line)
    out = []
    for k, val in m.items():
        kl = m.key_line(k)
        if k == "domain_allowlist":
            try:
                out.append(Constraint("domain_allowlist", domains=domain_list(val, "domain_allowlist")))
            except OperatorArgError as exc:
                v.fail(str(exc), kl)
        else:  # rate (actions allowed) or volume (bytes returned), over a window
            cap = "max" if k == "rate" else "max_bytes"
            r = v.keys(val, (cap, "window"), f"`constraints.{k}`", kl)
            mx = r.get(cap)
            if not isinstance(mx, int) or isinstance(mx, bool) or mx < 1:
                v.fail(f"`{k}.{cap}` must be an integer >= 1, found `{mx!r}`", kl)
            if "window" not in r:
                v.fail(f"`{k}` needs a `window` (seconds)", kl)
            win = v.duration(r["window"], f"{k}.window", r.key_line("window"))
            if win <= 0:
                v.fail(f"`{k}.window` must be positive", r.key_line("window"))
            out.append(Constraint(k, max=mx, window=win))
    return tuple(out)


_LABEL = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def _after(v: Checker, a: Any, line: int) -> Sequence:
    a = v.keys(a, ("tool", "operation", "data_classification", "within", "window"), "`after`", line)
    tools = v.strings(a["tool"], "after.tool", a.key_line("tool")) if "tool" in a else ()
    ops = v.strings(a["operation"], "after.operation", a.key_line("operation")) if "operation" in a else ()
    labels = (v.strings(a["data_classification"], "after.data_classification", a.key_line("data_classification"))
              if "data_classification" in a else ())
    for lab in labels:
        if not _LABEL.fullmatch(lab):
            v.fail(f"`after.data_classification` label `{lab}` must be upper-case, like PII or CREDENTIALS",
                   a.key_line("data_classification"))
    if not (tools or ops or labels):
        v.fail("`after` needs `tool`, `operation` or `data_classification` (what the earlier action was)", line)
    within = a.get("within", 10)
    if not isinstance(within, int) or isinstance(within, bool) or not 1 <= within <= 100:
        v.fail(f"`after.within` must be an integer from 1 to 100 (actions back), found `{within!r}`",
               a.key_line("within"))
    window = v.duration(a["window"], "after.window", a.key_line("window")) if "window" in a else None
    if window is not None and window <= 0:
        v.fail("`after.window` must be positive", a.key_line("window"))
    return Sequence(tuple(tools), tuple(ops), tuple(labels), within, window)


def validate_rule(r: Any, *, source: str, ctx: OpContext, index: int) -> RuleSpec:
    """Validate one rule mapping into a `RuleSpec`.

    Raises:
        PolicyError: naming file, rule id and line for every defect.
    """
    if not isinstance(r, LMap):
        raise PolicyError(f"rule #{index + 1} must be a mapping", file=source, line=line_of(r) or None)
    rid = r.get("id")
    v = Checker(source, rid if isinstance(rid, str) else None)
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
        v.fail("a MODIFY rule needs `modifications` (parameters, redact, add_filter or redact_output)", kl("action"))
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
    after = _after(v, r["after"], kl("after")) if "after" in r else None
    if not (block.tools or block.operations or block.conditions or cons or when or after):
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
        after=after,
    )
