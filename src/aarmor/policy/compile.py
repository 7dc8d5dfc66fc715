"""Stage 3: validated specs -> compiled rules, an index by tool and operation, and the `PolicySet`.

Rules this module enforces:
- CEL `when:` programs are compiled once here (a syntax error is a `PolicyError` with the line).
- Rules are indexed by exact tool name (and `tool.operation` name); glob and tool-less rules sit in a
  separate small list. The candidate list for one (tool, operation) is computed once and cached, so the
  cost of a decision does not grow with rules about other tools.
- Candidates are ordered by priority (highest first), then id: evaluation order is deterministic.
- The policy hash is `digest(TAG_POLICY, normalised form)`: reformatting or respelling a policy keeps
  the hash; changing a rule changes it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from aarmor.canonical import TAG_POLICY, digest
from aarmor.errors import InputError, PolicyError
from aarmor.model import Classification, DecisionResult, FrozenMap
from aarmor.normalize import normalize_name
from aarmor.policy.conditions import FALSE, UNKNOWN
from aarmor.policy.facts import Facts
from aarmor.policy.operators import EvalError, extract_hosts, host_in
from aarmor.policy.validate import Constraint, Header, RuleSpec

__all__ = ["Boundary", "CompiledRule", "Outcome", "Part", "PolicySet", "TargetMatcher", "compile_policy"]

_CACHE_MAX = 8192


class Outcome:
    MATCH = "match"
    NOMATCH = "no_match"
    UNKNOWN = "unpopulated"
    ERROR = "error"
    LOW_CONFIDENCE = "low_confidence"


class TargetMatcher:
    """Tool and operation patterns of a rule: exact names or globs (`*`, `?`, `[...]`)."""

    __slots__ = ("exact_tools", "glob_tools", "ops_any", "ops_exact", "ops_glob", "tools_any")

    def __init__(self, tools: tuple[str, ...], ops: tuple[str, ...]) -> None:
        self.tools_any = not tools or "*" in tools
        self.exact_tools = frozenset(t for t in tools if not _is_glob(t))
        self.glob_tools = tuple(re.compile(fnmatch.translate(t)) for t in tools if _is_glob(t) and t != "*")
        self.ops_any = not ops or "*" in ops
        self.ops_exact = frozenset(o for o in ops if not _is_glob(o))
        self.ops_glob = tuple(re.compile(fnmatch.translate(o)) for o in ops if _is_glob(o) and o != "*")

    @property
    def indexable(self) -> bool:
        return not self.tools_any and not self.glob_tools

    def matches(self, tool: str, op: str) -> bool:
        name = f"{tool}.{op}" if op else tool
        if not self.tools_any and not (
            tool in self.exact_tools
            or name in self.exact_tools
            or any(g.fullmatch(tool) or g.fullmatch(name) for g in self.glob_tools)
        ):
            return False
        if self.ops_any:
            return True
        if name in self.exact_tools and op not in self.ops_exact:  # `email.send` already named the op
            return True
        return op in self.ops_exact or any(g.fullmatch(op) for g in self.ops_glob)


def _is_glob(p: str) -> bool:
    return any(c in p for c in "*?[")


def _norm_pattern(p: str, what: str, spec: RuleSpec) -> str:
    if _is_glob(p):
        return p.strip().casefold()
    try:
        return normalize_name(p, what=what)
    except InputError as exc:
        raise PolicyError(str(exc), file=spec.source, rule_id=spec.id, line=spec.line) from exc


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    spec: RuleSpec
    target: TargetMatcher
    program: Any  # cel.Program | None
    after: TargetMatcher | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    def evaluate(self, facts: Facts) -> tuple[str, Any]:
        """(outcome, detail): detail is the unpopulated paths, or the error message."""
        s = self.spec
        unknown: tuple[str, ...] = ()
        try:
            for c in s.conditions:
                r = c.eval(facts)
                if r == FALSE:
                    return Outcome.NOMATCH, None
                if r == UNKNOWN:
                    unknown += (c.path,)
            if s.after is not None and not self.followed(facts):
                return Outcome.NOMATCH, None
            if s.constraints and not any(self.violated(k, facts) for k in s.constraints):
                return Outcome.NOMATCH, None
            if self.program is not None:
                out = self.program.execute(facts.cel_activation())
                if not isinstance(out, bool):
                    raise EvalError(f"`when` must give true or false, found {type(out).__name__}")
                if not out:
                    return Outcome.NOMATCH, None
        except EvalError as exc:
            return Outcome.ERROR, f"rule `{s.id}`: {exc}"
        except Exception as exc:  # CEL runtime errors (KeyError, TypeError, ValueError...): fail closed
            return Outcome.ERROR, f"rule `{s.id}`: `when` failed: {type(exc).__name__}: {exc}"
        if unknown:
            return Outcome.UNKNOWN, unknown
        conf = facts.snapshot.confidence
        if s.threshold is not None and conf is not None and conf < s.threshold:
            return Outcome.LOW_CONFIDENCE, s.threshold
        return Outcome.MATCH, None

    def followed(self, facts: Facts) -> bool:
        """`after:` holds: one of the last `within` prior actions executed and matches it (a sequence)."""
        seq = self.spec.after
        assert seq is not None and self.after is not None
        recent = facts.snapshot.prior_actions[-seq.within:]
        for p in reversed(recent):
            if not p.executed:
                continue
            if seq.window is not None and not 0 <= (facts.now - p.timestamp).total_seconds() <= seq.window:
                continue
            if (seq.tools or seq.operations) and not self.after.matches(p.tool, p.operation):
                continue
            if seq.labels and not p.classifications & set(seq.labels):
                continue
            return True
        return False

    def violated(self, c: Constraint, facts: Facts) -> bool:
        """True when constraint `c` is violated (AARM 9.2: the rule fires on violation)."""
        if c.kind == "domain_allowlist":
            return any(not host_in(h, c.domains) for h in extract_hosts(facts.action.parameters))
        # rate: prior actions of this rule's tool/operation allowed within `window` seconds before now;
        # volume: the bytes those that ran returned.
        now, count = facts.now, 0
        for p in facts.snapshot.prior_actions:
            if p.decision in (DecisionResult.ALLOW, DecisionResult.MODIFY) and self.target.matches(
                p.tool, p.operation
            ):
                age = (now - p.timestamp).total_seconds()
                if 0 <= age <= c.window:
                    count += p.output_bytes if c.kind == "volume" else 1
        return count >= c.max


@dataclass(frozen=True, slots=True)
class Boundary:
    intent: str
    allowed: TargetMatcher | None
    max_level: str | None
    max_chain: int | None
    re_validation: FrozenMap | None


@dataclass(frozen=True, slots=True, eq=False)
class PolicySet:
    """A loaded, compiled policy set (one file, or every `*.yaml` of a directory)."""

    policy_id: str
    version: str
    hash: str
    description: str
    default_decision: DecisionResult
    internal_domains: tuple[str, ...]
    alignment_threshold: float | None
    context_approvers: tuple[str, ...]
    confidence_threshold: float
    risk_threshold: float | None
    rules: tuple[CompiledRule, ...]
    boundaries: FrozenMap  # intent -> Boundary
    re_validation: FrozenMap | None
    sources: tuple[str, ...]
    normal: FrozenMap
    _by_tool: dict[str, list[CompiledRule]] = field(repr=False, default_factory=dict)
    _wild: tuple[CompiledRule, ...] = field(repr=False, default=())
    _cache: dict[tuple[str, str], tuple[CompiledRule, ...]] = field(repr=False, default_factory=dict)
    #: immutable Decisions of the common arms, keyed by everything they depend on (see engine._cached)
    _decisions: dict[tuple[Any, ...], Any] = field(repr=False, default_factory=dict)

    def candidates(self, tool: str, op: str) -> tuple[CompiledRule, ...]:
        """Rules whose tool/operation patterns cover (tool, op), highest priority first."""
        key = (tool, op)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        name = f"{tool}.{op}" if op else tool
        found = {id(r): r for r in self._by_tool.get(tool, ())}
        if name != tool:
            found.update((id(r), r) for r in self._by_tool.get(name, ()))
        found.update((id(r), r) for r in self._wild)
        out = tuple(
            sorted(
                (r for r in found.values() if r.target.matches(tool, op)),
                key=lambda r: (-r.spec.priority, r.spec.id),
            )
        )
        if len(self._cache) < _CACHE_MAX:
            self._cache[key] = out
        return out

    def forbids_outright(self, tool: str, op: str = "") -> bool:
        """True when an unconditional FORBIDDEN rule covers (tool, op): no argument or context can make
        the call anything but DENY (AARM 2.4 step 1 comes before every override). Used to hide tools."""
        return any(r.spec.classification is Classification.FORBIDDEN and not r.spec.conditions
                   and not r.spec.constraints and r.spec.when is None for r in self.candidates(tool, op))


@dataclass(frozen=True, slots=True)
class Part:
    """One validated policy file."""

    header: Header
    rules: tuple[RuleSpec, ...]
    boundaries: dict[str, dict[str, Any]]
    re_validation: FrozenMap | None
    source: str


def _compile_rule(spec: RuleSpec) -> CompiledRule:
    tools = tuple(_norm_pattern(t, "tool name", spec) for t in spec.tools)
    ops = tuple(_norm_pattern(o, "operation", spec) for o in spec.operations)
    program = None
    if spec.when is not None:
        import cel  # lazily: the `cel` package imports prompt_toolkit (~0.2 s); most policies have no `when:`

        try:
            program = cel.compile(spec.when)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PolicyError(
                f"invalid CEL in `when`: {first}", file=spec.source, rule_id=spec.id, line=spec.when_line
            ) from exc
    after = None
    if spec.after is not None:
        after = TargetMatcher(tuple(_norm_pattern(t, "tool name", spec) for t in spec.after.tools),
                              tuple(_norm_pattern(o, "operation", spec) for o in spec.after.operations))
    return CompiledRule(spec, TargetMatcher(tools, ops), program, after)


def _merge_headers(parts: list[Part]) -> Header:
    first = parts[0].header
    if len(parts) == 1:
        return first
    for k in ("alignment_threshold", "confidence_threshold", "risk_threshold"):
        vals = {getattr(p.header, k) for p in parts}
        if len(vals) > 1:
            raise PolicyError(
                f"files of one policy set disagree on `{k}`: {sorted(vals)}", file=parts[0].source
            )
    defaults = {p.header.default for p in parts if p.header.default_given}
    if len(defaults) > 1:
        raise PolicyError(
            f"files of one policy set disagree on the default posture: {sorted(d.value for d in defaults)}",
            file=parts[0].source,
        )
    return Header(
        policy_id=first.policy_id,
        version=first.version,
        description=first.description,
        default=defaults.pop() if defaults else DecisionResult.DENY,
        default_given=True,
        internal_domains=tuple(sorted({d for p in parts for d in p.header.internal_domains})),
        alignment_threshold=first.alignment_threshold,
        context_approvers=tuple(dict.fromkeys(a for p in parts for a in p.header.context_approvers)),
        confidence_threshold=first.confidence_threshold,
        risk_threshold=first.risk_threshold,
    )


def compile_policy(parts: list[Part], *, set_id: str | None = None) -> PolicySet:
    """Combine validated parts into one `PolicySet`.

    A single file keeps its id and version. A directory gets `set_id` (the directory name) as id and
    `id@version` of each file joined with `+` (sorted by id) as version.

    Raises:
        PolicyError: duplicate rule ids or intents across files, conflicting headers, invalid CEL.
    """
    if not parts:
        raise PolicyError("no policy files found (empty means no)")
    head = _merge_headers(parts)
    seen: dict[str, RuleSpec] = {}
    for p in parts:
        for r in p.rules:
            if r.id in seen:
                o = seen[r.id]
                raise PolicyError(
                    f"duplicate rule id (first defined at {o.source}:{o.line})",
                    file=r.source,
                    rule_id=r.id,
                    line=r.line,
                )
            seen[r.id] = r
    compiled = tuple(_compile_rule(spec) for spec in seen.values())
    bounds: dict[str, Any] = {}
    for p in parts:
        for intent, b in p.boundaries.items():
            if intent in bounds:
                raise PolicyError(f"intent boundary `{intent}` defined in two files", file=p.source)
            allowed = b.get("allowed_tools")
            bounds[intent] = Boundary(
                intent,
                TargetMatcher(tuple(allowed), ()) if allowed else None,
                b.get("max_data_classification"),
                b.get("max_chain_length"),
                FrozenMap(b["re_validation"]) if "re_validation" in b else None,
            )
    revals = [p.re_validation for p in parts if p.re_validation is not None]
    if len(revals) > 1:
        raise PolicyError(
            "`re_validation` given in more than one file of the policy set", file=parts[0].source
        )
    if len(parts) == 1:
        pid, version = head.policy_id, head.version
    else:
        pid = set_id or head.policy_id
        version = "+".join(
            f"{p.header.policy_id}@{p.header.version}"
            for p in sorted(parts, key=lambda p: p.header.policy_id)
        )
    normal = {
        "policy": {
            "id": pid,
            "version": version,
            "default": head.default.value,
            "internal_domains": list(head.internal_domains),
            "alignment_threshold": head.alignment_threshold,
            "context_approvers": list(head.context_approvers),
            "confidence_threshold": head.confidence_threshold,
            # only when set, so existing policies keep their hash
            **({"risk_threshold": head.risk_threshold} if head.risk_threshold is not None else {}),
        },
        "rules": [c.spec.to_json() for c in sorted(compiled, key=lambda c: c.spec.id)],
        "intent_boundaries": {i: b for p in parts for i, b in p.boundaries.items()},
        "re_validation": dict(revals[0]) if revals else None,
    }
    by_tool: dict[str, list[CompiledRule]] = {}
    wild: list[CompiledRule] = []
    for c in compiled:
        if c.target.indexable:
            for t in c.target.exact_tools:
                by_tool.setdefault(t, []).append(c)
        else:
            wild.append(c)
    return PolicySet(
        policy_id=pid,
        version=version,
        hash=digest(TAG_POLICY, normal),
        description=head.description,
        default_decision=head.default,
        internal_domains=head.internal_domains,
        alignment_threshold=head.alignment_threshold,
        context_approvers=head.context_approvers,
        confidence_threshold=head.confidence_threshold,
        risk_threshold=head.risk_threshold,
        rules=compiled,
        boundaries=FrozenMap(bounds),
        re_validation=revals[0] if revals else None,
        sources=tuple(p.source for p in parts),
        normal=FrozenMap(normal),
        _by_tool=by_tool,
        _wild=tuple(wild),
    )
