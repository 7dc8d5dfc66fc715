"""Every policy example of AARM.md sections 2.3, 2.4, 4.2 (gateway dialect), 5 and 7 loads and behaves as
written.

The examples live in `tests/policies/aarm/<name>.yaml`, spelled as the spec spells them (`action:` and
`decision:`, `match:` and `condition:`, `matches` and `regex`, `modifications` and `modification`, ...),
each with a `<name>.cases.yaml` of actions and the decisions AARM documents for them: every rule fires
where it should and stays silent on a nearby action where it should not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aarmor.model import Decision, DecisionResult, thaw
from aarmor.policy import PolicySet, apply_modifications, evaluate, load_policy
from aarmor.policy.cases import Case, case_action, case_snapshot, load_cases, run_cases

POLICY_DIR = Path(__file__).parents[1] / "policies" / "aarm"
POLICY_FILES = sorted(p for p in POLICY_DIR.glob("*.yaml") if not p.name.endswith(".cases.yaml"))

#: rules no case can show firing, and why (everything else must have a case asserting its rule_id).
NO_FIRING_CASE = {
    # AARM 5 T10: `sink.type: telemetry`; every action of this release is a tool call (sink.type `tool`).
    ("section_2_4_operators", "telemetry-redact-body"),
    # Same decision as the `questionnaire_review` intent boundary on the same action: the case asserts the
    # DENY without naming which of the two decided (see threats.cases.yaml).
    ("threats", "t6-secrets-during-questionnaire"),
    # Two DENY rules agreeing at one priority (not an R3 (b) conflict): either may be reported.
    ("r3_defer_triggers", "purge-logs-denied"),
    ("r3_defer_triggers", "purge-prod-denied"),
}


def _cases_path(policy_path: Path) -> Path:
    return policy_path.with_name(policy_path.stem + ".cases.yaml")


def _raw_rules(policy_path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    return list(doc.get("rules") or doc.get("policies") or [])


def _show(case: Case, d: Decision) -> str:
    return (f"result={d.result.value} rule_id={d.rule_id!r} defer_trigger={d.defer_trigger!r} "
            f"modifications={thaw(d.modifications) if d.modifications is not None else None!r} "
            f"matched={list(d.matched_rules)} reason={d.reason!r} errors={list(d.errors)}")


def test_every_example_file_has_cases() -> None:
    assert POLICY_FILES, f"no policy examples found in {POLICY_DIR}"
    missing = [p.name for p in POLICY_FILES if not _cases_path(p).exists()]
    assert not missing, f"policy examples without a .cases.yaml: {missing}"


@pytest.mark.parametrize("policy_path", POLICY_FILES, ids=lambda p: p.stem)
def test_example_loads_and_behaves_as_written(policy_path: Path) -> None:
    policy = load_policy(policy_path)  # must not raise
    assert policy.hash.startswith("sha256:")
    cases = load_cases(_cases_path(policy_path))
    report = run_cases(policy, cases)
    assert len(report.results) == len(cases)
    failures = [
        f"- case `{r.case.name}` (line {r.case.line}): expected {r.case.expect}; "
        f"actual {_show(r.case, r.decision)}; mismatches: {'; '.join(r.mismatches)}"
        for r in report.results if not r.passed
    ]
    assert not failures, (f"{policy_path.name}: {len(failures)} of {len(cases)} cases disagree with AARM:\n"
                          + "\n".join(failures))


@pytest.mark.parametrize("policy_path", POLICY_FILES, ids=lambda p: p.stem)
def test_every_rule_has_a_firing_case(policy_path: Path) -> None:
    """The cases show each rule firing with its documented decision (expect.rule_id names it)."""
    rule_ids = {r["id"] for r in _raw_rules(policy_path)}
    raw_cases = yaml.safe_load(_cases_path(policy_path).read_text(encoding="utf-8"))["cases"]
    fired = {c["expect"].get("rule_id") for c in raw_cases}
    exempt = {rid for stem, rid in NO_FIRING_CASE if stem == policy_path.stem}
    missing = sorted(rule_ids - fired - exempt)
    assert not missing, f"{policy_path.name}: no case asserts these rules firing: {missing}"


@pytest.mark.parametrize("policy_path", POLICY_FILES, ids=lambda p: p.stem)
def test_every_rule_has_a_case_where_it_stays_silent(policy_path: Path) -> None:
    """Negative cases exist: for each file, at least one case per rule's tool where that rule is not the
    decider (a nearby action the rule must not fire on)."""
    policy = load_policy(policy_path)
    cases = load_cases(_cases_path(policy_path))
    deciders = [evaluate(case_action(c), case_snapshot(c), policy, now=c.now).rule_id for c in cases]
    for rule in _raw_rules(policy_path):
        if (policy_path.stem, rule["id"]) in NO_FIRING_CASE:
            continue
        match = rule.get("match") or {}
        tools = match.get("tool")
        tools = {tools} if isinstance(tools, str) else set(tools or [])
        silent = [c.name for c, rid in zip(cases, deciders, strict=True)
                  if rid != rule["id"] and (not tools or case_action(c).tool in tools)]
        assert silent, f"{policy_path.name}: rule `{rule['id']}` has no nearby case where it does not decide"


@pytest.mark.parametrize("policy_path", POLICY_FILES, ids=lambda p: p.stem)
def test_policy_hash_is_stable_and_tracks_decisions(policy_path: Path, tmp_path: Path) -> None:
    """The policy hash is over the normalised policy: stable across reloads and re-serialisation (comments
    and layout do not count), and changed by changing one rule's decision."""
    first = load_policy(policy_path)
    again = load_policy(policy_path)
    assert first.hash == again.hash, f"{policy_path.name}: hash differs across reloads"

    doc = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    assert load_policy(same).hash == first.hash, f"{policy_path.name}: hash depends on layout or comments"

    rules = doc.get("rules") or doc.get("policies")
    # A rule whose decision can change without breaking validation (no classification, not MODIFY).
    rule = next(r for r in rules if "classification" not in r and
                str(r.get("action", r.get("decision"))).upper() != "MODIFY")
    key = "action" if "action" in rule else "decision"
    old = str(rule[key]).upper()
    rule[key] = "DENY" if old != "DENY" else "STEP_UP"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    modified = load_policy(changed)
    assert modified.hash != first.hash, (
        f"{policy_path.name}: changing rule `{rule['id']}` from {old} to {rule[key]} kept the hash")
    assert load_policy(changed).hash == modified.hash


# --- decision attributes the CASES format does not carry --------------------------------------------

def _case(policy_path: Path, name: str) -> tuple[PolicySet, Case]:
    policy = load_policy(policy_path)
    for c in load_cases(_cases_path(policy_path)):
        if c.name == name:
            return policy, c
    raise AssertionError(f"{policy_path.name}: no case named `{name}`")


def _decide(stem: str, name: str) -> tuple[Case, Decision]:
    policy, case = _case(POLICY_DIR / f"{stem}.yaml", name)
    d = evaluate(case_action(case), case_snapshot(case), policy, now=case.now)
    assert not d.errors, f"{stem}: case `{name}`: {_show(case, d)}"
    return case, d


ATTRIBUTES = [
    # AARM 7 First policy STEP_UP example: approvers, timeout 3600, timeout_action DENY.
    ("first_policy", "database delete needs approval",
     {"approvers": ("database-owner", "security-team"), "timeout": 3600,
      "timeout_action": DecisionResult.DENY}),
    ("first_policy", "a 50,000 payment needs finance approval",
     {"approvers": ("finance-manager", "cfo"), "timeout": 3600, "timeout_action": DecisionResult.DENY}),
    # AARM 2.4 / 4.5: escalation {after: 1800, to: [cfo]}.
    ("section_2_4_shape", "a 25,000 transfer needs finance approval",
     {"approvers": ("finance-manager", "cfo"), "timeout": 3600, "timeout_action": DecisionResult.DENY,
      "escalation": {"after": 1800, "to": ["cfo"]}}),
    ("section_2_4_shape", "rotation while environment signals conflict is deferred by the rule",
     {"timeout": 300}),
    # AARM 4.2: defer-ambiguous-credential-rotation, timeout 300.
    ("gateway_dialect", "a rotation while the user asked for a board deck is deferred", {"timeout": 300}),
    ("gateway_dialect", "an UPDATE ... WHERE touching 4200 rows needs approval",
     {"approvers": ("database-owner",), "timeout": 3600, "timeout_action": DecisionResult.DENY}),
    # AARM 5 T3: STEP_UP (timeout 3600, DENY on timeout).
    ("threats", "T3 admin grant instructed by a ticket needs approval",
     {"approvers": ("security-team",), "timeout": 3600, "timeout_action": DecisionResult.DENY}),
    ("threats", "T11 rotation while the ticket and the monitor disagree is deferred",
     {"timeout": 300, "timeout_action": DecisionResult.DENY}),
    # AARM 2.4 step 6: baseline DENY + alignment >= tau -> STEP_UP with P.context_approvers.
    ("canonical_2_3", "deleting the user's own test records with a confirming request is STEP_UP",
     {"approvers": ("data-owner",)}),
    ("canonical_2_3", "rotation while the ticket says approved and the monitor says frozen is DEFER",
     {"timeout": 600, "context_needed": ("production_state",)}),
]


@pytest.mark.parametrize(("stem", "name", "want"), ATTRIBUTES, ids=[f"{s}:{n}" for s, n, _ in ATTRIBUTES])
def test_decision_carries_the_rule_attributes(stem: str, name: str, want: dict[str, Any]) -> None:
    case, d = _decide(stem, name)
    for attr, expected in want.items():
        got = getattr(d, attr)
        if attr == "escalation":
            got = thaw(got) if got is not None else None
        assert got == expected, (
            f"{stem}: case `{name}`: {attr} expected {expected!r}, got {got!r}; {_show(case, d)}")


UNPOPULATED = [
    # AARM 4.5: the maintenance-window example names `maintenance_window_status` as the context needed.
    ("r3_defer_triggers", "a release before the maintenance window status is known defers (R3 a)",
     "maintenance_window_status"),
    ("threats", "T8 external send with memory trust unpopulated defers (R3 a)", "memory_source_trust"),
    ("gateway_dialect", "an UPDATE ... WHERE with no row estimate yet defers (R3 a)",
     "affected_rows_estimate"),
    ("first_policy", "risk signals never populated in the session defer the action (R3 a)",
     "injection_score"),
]


@pytest.mark.parametrize(("stem", "name", "field"), UNPOPULATED, ids=[f"{s}:{f}" for s, _, f in UNPOPULATED])
def test_unpopulated_defer_names_the_context_needed(stem: str, name: str, field: str) -> None:
    """AARM R3: the trigger is documented and auditable; the deferral asks a narrow question (AARM 2.6)."""
    case, d = _decide(stem, name)
    assert d.result is DecisionResult.DEFER and d.defer_trigger == "unpopulated_context", _show(case, d)
    assert any(field in c for c in d.context_needed), (
        f"{stem}: case `{name}`: context_needed {list(d.context_needed)} does not name `{field}`")


def test_effect_set_context_is_reported() -> None:
    """AARM 2.4 `effect: {set_context: {data_classification: PII}}`: the decision carries the tag."""
    case, d = _decide("section_2_4_shape", "reading the customers table is allowed by the tagging rule")
    assert d.effects is not None, _show(case, d)
    tag = thaw(d.effects).get("data_classification")
    assert tag in ("PII", ["PII"]), f"effects {thaw(d.effects)!r}"


MODIFIED = [
    # AARM 7 / 5 T5: limit capped to 100; other parameters untouched.
    ("first_policy", "a 5000-row query is capped to 100 rows",
     {"query": "SELECT * FROM orders", "limit": 100}),
    # AARM 2.4 `{params: {...}}`, AARM 4.2: shallow merge.
    ("section_2_4_shape", "web search is rewritten to strict safe search",
     {"q": "quarterly report template", "safe_search": "strict"}),
    # AARM 2.4 `{redact: [...]}`, AARM 4.2: the named keys become "[REDACTED]".
    ("section_2_4_shape", "CRM update carrying card data is redacted",
     {"contact_id": "c-17", "card_number": "[REDACTED]", "cvv": "[REDACTED]", "notes": "renewal"}),
    # AARM 2.4 `{add_filter: {...}}`, AARM 4.2: params["_aarm_filter"].
    ("section_2_4_shape", "a contractor's analytics query gets the tenant filter",
     {"metric": "revenue", "_aarm_filter": {"tenant_id": "acme"}}),
    ("gateway_dialect", "an analyst's file read gets the allowed-paths filter",
     {"path": "/data/analytics/q1.csv",
      "_aarm_filter": {"allowed_paths": ["/data/analytics/*", "/reports/*"]}}),
    ("gateway_dialect", "a query carrying an SSN parameter is redacted",
     {"query": "SELECT name FROM people WHERE ssn = :ssn", "ssn": "[REDACTED]"}),
    ("threats", "T5 db.query(limit=5000) is modified to 100",
     {"query": "SELECT * FROM customers", "limit": 100}),
]


@pytest.mark.parametrize(("stem", "name", "want"), MODIFIED, ids=[f"{s}:{n}" for s, n, _ in MODIFIED])
def test_modifications_apply_as_written(stem: str, name: str, want: dict[str, Any]) -> None:
    case, d = _decide(stem, name)
    assert d.result is DecisionResult.MODIFY, _show(case, d)
    action = case_action(case)
    got = thaw(apply_modifications(action.parameters, d.modifications))
    assert got == want, f"{stem}: case `{name}`: parameters after MODIFY {got!r}, expected {want!r}"
