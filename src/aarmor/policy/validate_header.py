"""The policy-level sections: the `policy:` header and `intent_boundaries`.

Rules this module enforces (DESIGN.md habits 4, 7):
- Header keys may sit under `policy:` or at the top level, never both; unknown keys are errors.
- The policy id is a non-empty string (the file stem when neither `id` nor `name` is given); the default
  posture is DENY unless given, and only ALLOW, DENY or STEP_UP may be given.
- Thresholds lie between 0 and 1; `internal_domains` are normalised and unioned with the loader's.
- An intent boundary is non-empty; `max_data_classification` is a known level; `max_chain_length` >= 1;
  `scope` and `max_privilege` are recorded and hashed, not enforced.
"""

from __future__ import annotations

from typing import Any

from aarmor.model import DecisionResult
from aarmor.policy.conditions import plain
from aarmor.policy.domains import domain_list
from aarmor.policy.operators import LEVELS, OperatorArgError
from aarmor.policy.parse import LMap
from aarmor.policy.specs import Header
from aarmor.policy.validate_fields import Checker, re_validation

__all__ = ["HEADER_KEYS", "validate_boundaries", "validate_header"]

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
    "risk_threshold",
)


def validate_header(doc: LMap, *, source: str, stem: str, internal_domains: tuple[str, ...]) -> Header:
    """Validate the `policy:` header (keys may also sit at the top level).

    Raises:
        PolicyError: unknown or mistyped header keys.
    """
    v = Checker(source, None)
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
            doms = tuple(sorted(set(doms) | set(domain_list(raw, "internal_domains"))))
        except OperatorArgError as exc:
            v.fail(str(exc), line)
    tau, line = get("alignment_threshold", 0.7)
    # null turns AARM steps 5/6 off (alignment is then used only by rules that name it)
    tau = None if tau is None and line else v.number(tau, "alignment_threshold", line, 0.0, 1.0)
    conf, line = get("confidence_threshold", 0.0)
    conf = v.number(conf, "confidence_threshold", line, 0.0, 1.0)
    appr, line = get("context_approvers", None)
    approvers = v.strings(appr, "context_approvers", line) if appr is not None else ()
    rho, line = get("risk_threshold", None)
    rho = v.number(rho, "risk_threshold", line, 0.0, 1.0) if rho is not None else None
    return Header(pid.strip(), str(ver), desc, default, dflt is not None, doms, tau, approvers, conf, rho)


def validate_boundaries(doc: LMap, *, source: str) -> dict[str, dict[str, Any]]:
    """`intent_boundaries: {<intent>: {allowed_tools, max_data_classification, max_chain_length, ...}}`.

    Raises:
        PolicyError: unknown keys, empty allowlists, unknown levels.
    """
    v = Checker(source, None)
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
