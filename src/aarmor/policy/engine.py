"""The PDP: `evaluate(action, snapshot, policy, *, now) -> Decision`, a pure, total function.

It implements the AARM 2.4 reference procedure in its normative order (the combining table, one arm
per step, is in docs/adr/0001-pdp-combining.md):

0. an erroring candidate rule -> DENY with the error (fail closed; a weaker rule never wins)
1. forbidden -> DENY                      2. compositional risk (context_dependent_deny rules, the session
                                             risk above `risk_threshold`, intent boundaries) -> DENY
3. static resolution (highest priority, else the default posture) -> baseline
4. uncertainty -> DEFER (a matched DEFER rule; R3 triggers unpopulated_context, same_priority_conflict,
   low_confidence)
5/6. alignment overrides (ALLOW/MODIFY below tau -> DENY; DENY at or above tau -> STEP_UP)
7. the baseline (raised to STEP_UP by intent-boundary escalation or re-validation)

No I/O, no YAML, no regex compilation, no clock: `now` is passed in. `evaluate` never raises.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from aarmor.model import (
    Action,
    Classification,
    ContextSnapshot,
    Decision,
    DecisionResult,
    FrozenMap,
    RiskLevel,
    freeze,
    thaw,
)
from aarmor.policy.compile import Boundary, CompiledRule, Outcome, PolicySet
from aarmor.policy.facts import Facts
from aarmor.policy.operators import LEVELS

__all__ = ["DEFER_TRIGGERS", "evaluate"]

DEFER_TRIGGERS = ("unpopulated_context", "same_priority_conflict", "low_confidence")

ALLOW, DENY, MODIFY, STEP_UP, DEFER = (
    DecisionResult.ALLOW,
    DecisionResult.DENY,
    DecisionResult.MODIFY,
    DecisionResult.STEP_UP,
    DecisionResult.DEFER,
)
FORBIDDEN, CD_DENY = Classification.FORBIDDEN, Classification.CONTEXT_DEPENDENT_DENY
_DEFAULT_RISK = {
    ALLOW: RiskLevel.LOW,
    MODIFY: RiskLevel.MEDIUM,
    DEFER: RiskLevel.MEDIUM,
    STEP_UP: RiskLevel.HIGH,
    DENY: RiskLevel.HIGH,
}


def evaluate(
    action: Action,
    snapshot: ContextSnapshot,
    policy: PolicySet | None,
    *,
    now: datetime,
    confidence_threshold: float = 0.0,
) -> Decision:
    """Decide one action. Deterministic: the same inputs give the same `Decision`.

    `confidence_threshold` is the deployment's R3 (c) threshold; the policy header's
    `confidence_threshold` applies too (the higher wins).

    Raises:
        Nothing: any internal error becomes a DENY carrying the error (fail closed).
    """
    try:
        if policy is None:
            return Decision(DENY, "no policy loaded", risk_level=RiskLevel.HIGH)
        return _evaluate(action, snapshot, policy, now, confidence_threshold)
    except Exception as exc:  # INVARIANT: the PDP is total and fails closed; never ALLOW on error
        return Decision(
            DENY,
            "internal error while evaluating policy; failing closed",
            policy_id=getattr(policy, "policy_id", None),
            policy_version=getattr(policy, "version", None),
            policy_hash=getattr(policy, "hash", None),
            risk_level=RiskLevel.HIGH,
            errors=(f"internal: {type(exc).__name__}: {exc}",),
        )


class _Ctx:
    """What every arm needs to build its Decision (built lazily: a cached Decision needs none of it)."""

    __slots__ = ("matched", "policy", "snapshot")

    def __init__(self, policy: PolicySet, snapshot: ContextSnapshot, matched: list[CompiledRule]) -> None:
        self.policy = policy
        self.snapshot = snapshot
        self.matched = matched

    @property
    def base(self) -> dict[str, Any]:
        effects: dict[str, Any] = {}
        for r in self.matched:  # effects of every matched rule (tag-on-read must not be lost to a winner)
            if r.spec.effects is not None:
                for k, v in r.spec.effects.items():
                    effects[k] = _union(effects.get(k), v)
        p, s = self.policy, self.snapshot
        return {
            "policy_id": p.policy_id,
            "policy_version": p.version,
            "policy_hash": p.hash,
            "matched_rules": tuple(r.spec.id for r in self.matched),
            "confidence": s.confidence,
            "alignment": s.alignment,
            "effects": freeze(effects) if effects else None,
        }

    def make(self, result: DecisionResult, reason: str, **kw: Any) -> Decision:
        kw.setdefault("risk_level", _DEFAULT_RISK[result])
        return Decision(result, reason, **self.base, **kw)

    def from_rules(
        self, rules: list[CompiledRule], result: DecisionResult | None = None, **kw: Any
    ) -> Decision:
        r = rules[0].spec
        res = result or r.decision
        kw.setdefault("classification", r.classification)
        kw.setdefault(
            "risk_level",
            r.risk_level or (RiskLevel.CRITICAL if r.classification is FORBIDDEN else _DEFAULT_RISK[res]),
        )
        kw.setdefault("approvers", tuple(dict.fromkeys(a for x in rules for a in x.spec.approvers)))
        kw.setdefault("modifications", _merge_mods(rules))
        return Decision(
            res,
            kw.pop("reason", None) or r.reason or f"rule `{r.id}` matched",
            **self.base,
            rule_id=r.id,
            timeout=r.timeout,
            timeout_action=r.timeout_action,
            escalation=r.escalation,
            **kw,
        )


def _union(a: Any, b: Any) -> Any:
    if a is None:
        return b
    la = list(a) if isinstance(a, tuple | list) else [a]
    lb = list(b) if isinstance(b, tuple | list) else [b]
    return tuple(dict.fromkeys(la + lb))


def _merge_mods(rules: list[CompiledRule]) -> FrozenMap | None:
    mods = [r.spec.modifications for r in rules if r.spec.modifications is not None]
    if not mods:
        return None
    if len(mods) == 1:
        return mods[0]
    out: dict[str, Any] = {}
    for m in reversed(mods):  # the first (highest priority, then id) wins on a clash
        for k, v in thaw(m).items():
            out[k] = sorted(set(out.get(k, [])) | set(v)) if k == "redact" else {**out.get(k, {}), **v}
    return freeze(out)  # type: ignore[no-any-return]


def _max_level(snapshot: ContextSnapshot) -> int:
    levels = [LEVELS.get(c.upper(), -1) for c in snapshot.classifications]
    if snapshot.max_sensitivity:
        levels.append(LEVELS.get(snapshot.max_sensitivity.upper(), -1))
    return max(levels, default=-1)


def _relevant(r: CompiledRule, baseline: DecisionResult, top: int | None) -> bool:
    """Could this rule, were its condition known/confident, change the outcome? (R3 (a) and (c))"""
    s = r.spec
    if s.classification in (FORBIDDEN, CD_DENY):
        return baseline is not DENY  # it would DENY at step 1/2 regardless of priority
    if top is not None and s.priority < top:
        return False  # a higher-priority rule already decides
    return s.decision is not baseline


_MATCH, _NOMATCH, _UNKNOWN, _LOWCONF = Outcome.MATCH, Outcome.NOMATCH, Outcome.UNKNOWN, Outcome.LOW_CONFIDENCE
_CACHE_MAX = 4096


def _cached(policy: PolicySet, key: tuple[Any, ...], build: Any) -> Decision:
    """Decisions are immutable values: the arms whose output depends only on `key` reuse them."""
    hit = policy._decisions.get(key)
    if hit is None:
        hit = build()
        if len(policy._decisions) < _CACHE_MAX:
            policy._decisions[key] = hit
    return hit  # type: ignore[no-any-return]


def _evaluate(
    action: Action, snapshot: ContextSnapshot, policy: PolicySet, now: datetime, threshold: float
) -> Decision:
    facts = Facts(action, snapshot, now)
    matched: list[CompiledRule] = []
    unknown: list[tuple[CompiledRule, tuple[str, ...]]] = []
    lowconf: list[CompiledRule] = []
    errors: list[tuple[CompiledRule, str]] = []
    for r in policy.candidates(action.tool, action.operation):
        outcome, detail = r.evaluate(facts)
        if outcome is _NOMATCH:
            continue
        if outcome is _MATCH:
            matched.append(r)
        elif outcome is _UNKNOWN:
            unknown.append((r, detail))
        elif outcome is _LOWCONF:
            lowconf.append(r)
        else:
            errors.append((r, detail))
    ctx = _Ctx(policy, snapshot, matched)
    sig = (tuple(r.spec.id for r in matched), snapshot.confidence, snapshot.alignment)

    # INVARIANT: an erroring rule never lets a weaker rule win: any evaluation error -> DENY.
    if errors:
        return ctx.make(
            DENY,
            f"rule `{errors[0][0].spec.id}` could not be evaluated; failing closed",
            rule_id=errors[0][0].spec.id,
            errors=tuple(e for _, e in errors),
        )

    forbidden = cd_deny = None
    static: list[CompiledRule] = []
    defers: list[CompiledRule] = []
    for r in matched:  # already ordered by priority, then id
        cls = r.spec.classification
        if cls is FORBIDDEN:
            forbidden = forbidden or r
        elif cls is CD_DENY:
            cd_deny = cd_deny or r
        elif r.spec.decision is DEFER:
            defers.append(r)
        else:
            static.append(r)

    # AARM 2.4 step 1 (R3 forbidden -> immediate DENY): no contextual override, whatever follows.
    if forbidden is not None:
        return _cached(policy, ("forbidden", *sig), lambda: ctx.from_rules([forbidden]))

    # AARM 2.4 step 2: compositional risk -> DENY (context_dependent_deny rules, intent boundaries).
    if cd_deny is not None:
        return _cached(policy, ("cd_deny", *sig), lambda: ctx.from_rules([cd_deny]))
    rho, risk = policy.risk_threshold, snapshot.risk_signals.get("session_risk")
    if rho is not None and isinstance(risk, int | float) and not isinstance(risk, bool) and risk > rho:
        factors = snapshot.risk_signals.get("session_risk_factors") or ()
        return ctx.make(
            DENY,
            f"compositional risk {risk:.2f} is above the policy's risk_threshold {rho:g} "
            f"({', '.join(factors) or 'no factor named'})",
            rule_id="compositional_risk",
            classification=CD_DENY,
        )
    intent = snapshot.intent_classification
    bound: Boundary | None = policy.boundaries.get(intent.casefold()) if intent else None
    if (
        bound is not None
        and bound.allowed is not None
        and not bound.allowed.matches(action.tool, action.operation)
    ):
        return ctx.make(
            DENY,
            f"tool `{action.name}` is outside the allowed tools of intent `{intent}`",
            rule_id=f"intent_boundaries.{bound.intent}",
            classification=CD_DENY,
        )

    # AARM 2.4 step 3: static resolution; highest priority wins, else the documented default posture.
    top = static[0].spec.priority if static else None
    winners = [r for r in static if r.spec.priority == top] if static else []
    baseline = winners[0].spec.decision if winners else policy.default_decision

    # AARM 2.4 step 4 / R3: uncertainty -> DEFER, checked before alignment.
    triggers: list[str] = []
    why: list[str] = []
    needed: list[str] = []
    trigger_rule: CompiledRule | None = None
    for r, paths in unknown:  # R3 (a) unpopulated context a matching rule depends on
        if _relevant(r, baseline, top):
            if not triggers:
                triggers.append("unpopulated_context")
                trigger_rule = r
            needed.extend(paths)
            why.append(f"rule `{r.spec.id}` needs unpopulated {', '.join(paths)}")
    at_top = [r for r in matched if r.spec.priority == top] if top is not None else []
    if len({r.spec.decision for r in at_top}) > 1:  # R3 (b) conflict at the same priority
        triggers.append("same_priority_conflict")
        why.append(
            f"rules at priority {top} disagree: "
            + ", ".join(f"`{r.spec.id}`={r.spec.decision.value}" for r in at_top)
        )
    conf = snapshot.confidence
    floor = max(threshold, policy.confidence_threshold)
    weak = [r for r in lowconf if _relevant(r, baseline, top)]
    if conf is not None and (conf < floor or weak):  # R3 (c) confidence below threshold
        triggers.append("low_confidence")
        limit = max([floor, *(r.spec.threshold or 0.0 for r in weak)])
        why.append(f"confidence {conf:g} below threshold {limit:g}")
        trigger_rule = trigger_rule or (weak[0] if weak else None)
    defer_rules = [r for r in defers if top is None or r.spec.priority >= top]
    if defer_rules:
        why.append(defer_rules[0].spec.reason or f"rule `{defer_rules[0].spec.id}` defers")
        needed.extend(defer_rules[0].spec.context_needed)
    if triggers or defer_rules:
        kw: dict[str, Any] = {
            "defer_trigger": triggers[0] if triggers else None,
            "context_needed": tuple(dict.fromkeys(needed)),
            "classification": Classification.CONTEXT_DEPENDENT_DEFER,
            "reason": "deferred: " + "; ".join(why),
        }
        if defer_rules:
            return ctx.from_rules(defer_rules[:1], DEFER, **kw)
        return ctx.make(DEFER, kw.pop("reason"), rule_id=trigger_rule.spec.id if trigger_rule else None, **kw)

    # AARM 2.4 steps 5/6: alignment overrides (no signal, or `alignment_threshold: null`: skip).
    tau, al = policy.alignment_threshold, snapshot.alignment
    if al is not None and tau is not None:
        if baseline in (ALLOW, MODIFY) and al < tau:
            return ctx.make(
                DENY,
                f"alignment {al:g} is below threshold {tau:g}: the action does not fit the session's intent",
                rule_id=winners[0].spec.id if winners else None,
                classification=CD_DENY,
            )
        if baseline is DENY and al >= tau:
            # Not a silent ALLOW: confirming context turns the DENY into a human decision.
            first = winners[0].spec.id if winners else "default posture"
            return ctx.make(
                STEP_UP,
                f"baseline DENY ({first}) but alignment {al:g} >= {tau:g} confirms "
                "intent; human approval required",
                rule_id=winners[0].spec.id if winners else None,
                classification=Classification.CONTEXT_DEPENDENT_ALLOW,
                approvers=policy.context_approvers,
            )

    # Intent-boundary escalation and periodic re-validation raise an ALLOW/MODIFY to STEP_UP.
    if baseline in (ALLOW, MODIFY):
        escalate = _escalation(action, snapshot, policy, bound)
        if escalate is not None:
            reason, rv = escalate
            d = ctx.from_rules(winners, STEP_UP, reason=reason) if winners else ctx.make(STEP_UP, reason)
            if rv is not None:
                return _with(
                    d,
                    approvers=tuple(rv.get("approvers", ())) or policy.context_approvers,
                    timeout=rv.get("timeout"),
                    timeout_action=DecisionResult(rv["timeout_action"]),
                )
            return _with(d, approvers=d.approvers or policy.context_approvers)

    # AARM 2.4 step 7: the baseline.
    if winners:
        return _cached(policy, ("static", *sig), lambda: ctx.from_rules(winners))
    return _cached(
        policy,
        ("default", *sig),
        lambda: ctx.make(baseline, f"no rule matched; default posture {baseline.value}"),
    )


def _escalation(
    action: Action, snapshot: ContextSnapshot, policy: PolicySet, bound: Boundary | None
) -> tuple[str, FrozenMap | None] | None:
    if bound is not None:
        if bound.max_level is not None and _max_level(snapshot) > LEVELS[bound.max_level]:
            return (
                f"data accessed is above {bound.max_level}, the maximum for intent `{bound.intent}`",
                None,
            )
        if bound.max_chain is not None and snapshot.action_count + 1 > bound.max_chain:
            return (
                f"action {snapshot.action_count + 1} exceeds the chain length {bound.max_chain} "
                f"of intent `{bound.intent}`",
                None,
            )
    rv = (
        bound.re_validation if bound is not None and bound.re_validation is not None else policy.re_validation
    )
    if rv is not None and (snapshot.action_count + 1) % rv["interval_actions"] == 0:
        return (f"periodic re-validation every {rv['interval_actions']} actions ({rv['method']})", rv)
    return None


def _with(d: Decision, **changes: Any) -> Decision:
    return replace(d, **changes)
