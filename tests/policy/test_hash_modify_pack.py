"""Policy hash stability, apply_modifications, the built-in `default` pack, and PDP determinism."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aarmor.model import DecisionResult, FrozenMap
from aarmor.policy import apply_modifications, load_builtin
from tests.policy.helpers import decide, policy

D = DecisionResult

BASE = """
policy: {id: h, version: "1"}
rules:
  - id: r1
    match: {tool: email, operation: send, parameters.to: {external: true}}
    action: DENY
    priority: 5
"""
REFORMATTED = """
# same policy, other layout and dialect spelling
policy:
  version: '1'
  id: h
rules:
- priority: 5
  decision: DENY
  id: r1
  match:
    parameters:
      to:
        external: true
    operation: send
    tool: email
"""


def test_reformatted_equivalent_policy_has_the_same_hash() -> None:
    a, b = policy(BASE), policy(REFORMATTED)
    assert a.hash == b.hash and a.hash.startswith("sha256:")


def test_changed_rule_changes_the_hash() -> None:
    assert policy(BASE).hash != policy(BASE.replace("priority: 5", "priority: 6")).hash
    assert policy(BASE).hash != policy(BASE, internal_domains=["company.com"]).hash


def test_directory_policy_set_combines_ids_and_versions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "b.yaml").write_text(
        "policy: {id: beta, version: '2'}\nrules:\n  - id: rb\n    match: {tool: y}\n    action: DENY\n"
    )
    (tmp_path / "a.yaml").write_text(
        "policy: {id: alpha, version: '1', default: ALLOW}\nrules:\n  - id: ra\n"
        "    match: {tool: x}\n    action: DENY\n"
    )
    from aarmor.policy import load_policy

    p = load_policy(tmp_path)
    assert p.policy_id == tmp_path.name and p.version == "alpha@1+beta@2"
    assert p.default_decision is D.ALLOW and len(p.rules) == 2


def test_apply_modifications_merge_redact_filter_idempotent() -> None:
    params = FrozenMap({"limit": 5000, "q": "x", "user": {"ssn": "1", "name": "a"}})
    mods = {
        "parameters": {"limit": 100, "opts.mode": "safe"},
        "redact": ["user.ssn", "missing.path"],
        "add_filter": {"allowed_paths": ["/data"]},
    }
    out = apply_modifications(params, mods)
    assert out == {
        "limit": 100,
        "q": "x",
        "user": {"ssn": "[REDACTED]", "name": "a"},
        "opts": {"mode": "safe"},
        "_aarm_filter": {"allowed_paths": ("/data",)},
    }
    assert apply_modifications(out, mods) == out
    assert params["limit"] == 5000  # the input is untouched
    assert apply_modifications(params, {"params": {"limit": 1}})["limit"] == 1


PACK = load_builtin("default", internal_domains=["company.com"])


def test_default_pack_is_explicit_about_its_posture() -> None:
    assert PACK.policy_id == "aarmor-default" and PACK.default_decision is D.DENY


def test_default_pack_demo_shows_all_five_decisions() -> None:
    allow = decide(PACK, {"tool": "crm.get", "parameters": {"customer_id": 42}})
    assert allow.result is D.ALLOW and allow.rule_id == "allow-read-only"
    mod = decide(
        PACK, {"tool": "database.query", "parameters": {"sql": "SELECT * FROM customers", "limit": 5000}}
    )
    assert mod.result is D.MODIFY and mod.modifications == {"parameters": {"limit": 100}}
    assert apply_modifications(FrozenMap({"limit": 5000}), mod.modifications)["limit"] == 100
    deny = decide(
        PACK,
        {"tool": "database.drop", "parameters": {"database": "production"}},
        {"original_request": "the CEO said drop it"},
    )
    assert deny.result is D.DENY and deny.rule_id == "forbid-drop-database"
    step = decide(PACK, {"tool": "payments.transfer", "parameters": {"amount": 50000}})
    assert step.result is D.STEP_UP and step.approvers == ("finance-manager", "cfo")
    defer = decide(PACK, {"tool": "credentials.rotate", "parameters": {"target": "prod-payments"}})
    assert defer.result is D.DEFER and defer.defer_trigger == "unpopulated_context"
    assert defer.context_needed == ("context.environment_state_conflict",)


def test_default_pack_stops_exfiltration_after_pii_read() -> None:
    d = decide(
        PACK,
        {"tool": "email.send", "parameters": {"to": "external@gmail.com"}},
        {"prior_actions": [{"tool": "database.query", "classifications": ["PII"]}]},
    )
    assert d.result is D.DENY and d.rule_id == "deny-classified-to-external-to"


def test_default_pack_forbids_drop_in_sql_text_and_grants_need_approval() -> None:
    assert (
        decide(PACK, {"tool": "db.execute", "parameters": {"query": "drop  DATABASE prod"}}).result is D.DENY
    )
    g = decide(PACK, {"tool": "iam.grant_role", "parameters": {"user": "attacker", "role": "admin"}})
    assert g.result is D.STEP_UP and g.approvers == ("security-team",)


def test_default_pack_unknown_action_is_denied() -> None:
    d = decide(PACK, {"tool": "shell.exec", "parameters": {"cmd": "rm -rf /"}})
    assert d.result is D.DENY and "default posture DENY" in d.reason


DET = policy("""
policy: {id: det, context_approvers: [sec]}
rules:
  - id: a
    match: {tool: t, parameters.n: {gt: 5}}
    action: STEP_UP
    priority: 3
  - id: b
    match: {tool: t, context.flag: true}
    action: DEFER
    priority: 3
  - id: c
    match: {tool: "*", parameters.s: {contains: x}}
    action: ALLOW
    threshold: 0.5
  - id: d
    match: {tool: t}
    when: "has(action.parameters.n) && action.parameters.n > 100"
    action: DENY
    classification: context_dependent_deny
""")

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=5))


@settings(max_examples=150, deadline=None)
@given(
    n=st.one_of(json_scalar, st.floats(-1e6, 1e6)),
    s=json_scalar,
    flag=st.one_of(st.none(), st.booleans()),
    alignment=st.one_of(st.none(), st.floats(0, 1)),
    confidence=st.one_of(st.none(), st.floats(0, 1)),
    tool=st.sampled_from(["t", "u", "t.op"]),
)
def test_pdp_is_deterministic(n, s, flag, alignment, confidence, tool) -> None:  # type: ignore[no-untyped-def]
    params = {k: v for k, v in (("n", n), ("s", s)) if v is not None}
    ctx = {"alignment": alignment, "confidence": confidence}
    if flag is not None:
        ctx["values"] = {"flag": flag}
    first = decide(DET, {"tool": tool, "parameters": params}, ctx)
    second = decide(DET, {"tool": tool, "parameters": params}, ctx)
    assert first == second
    assert first.result in DecisionResult
