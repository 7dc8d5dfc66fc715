"""Operators and every AARM dialect spelling (2.4, 4.2 gateway, 7 guides)."""

from __future__ import annotations

import pytest

from aarmor.model import DecisionResult
from tests.policy.helpers import decide, policy

D = DecisionResult


def one(cond: str, action: dict, context: dict | None = None, header: str = "") -> DecisionResult:  # type: ignore[type-arg]
    p = policy(
        f"policy: {{id: t, default: ALLOW{header}}}\nrules:\n  - id: r\n    match:\n      tool: x\n{cond}"
        "    action: DENY\n"
    )
    return decide(p, {"tool": "x", "operation": "op", **action}, context).result


@pytest.mark.parametrize(
    ("cond", "params", "hit"),
    [
        ("      parameters.n: {eq: 3}\n", {"n": 3}, True),
        ("      parameters.n: {ne: 3}\n", {"n": 4}, True),
        ("      parameters.n: {gt: 3}\n", {"n": 3}, False),
        ("      parameters.n: {gte: 3}\n", {"n": 3}, True),
        ("      parameters.n: {lt: 3}\n", {"n": 2.5}, True),
        ("      parameters.n: {lte: 3}\n", {"n": 4}, False),
        ("      parameters.n: {less_than: 3}\n", {"n": 1}, True),
        ("      parameters.s: {in: [a, b]}\n", {"s": "b"}, True),
        ("      parameters.s: {not_in: [a, b]}\n", {"s": "b"}, False),
        ("      parameters.s: {contains: drop}\n", {"s": "please DROP it"}, True),
        ("      parameters.s: {not_contains: [rotate, security]}\n", {"s": "Rotate now"}, False),
        ("      parameters.s: {matches: '^a+$'}\n", {"s": "aaa"}, True),
        ("      parameters.s: {exists: false}\n", {}, True),
        ("      parameters.s: {exists: true}\n", {}, False),
        ("      parameters.s: {type: string}\n", {"s": 1}, False),
        ("      parameters.s: {type: integer}\n", {"s": 1}, True),
        ("      parameters.s: {length: {gt: 2}}\n", {"s": [1, 2, 3]}, True),
        ("      parameters.u: {domain_in: [evil.com]}\n", {"u": "https://cdn.evil.com/x"}, True),
        (
            "      parameters.u: {domain_not_in: [company.com]}\n",
            {"u": ["a@company.com", "b@gmail.com"]},
            True,
        ),
        ("      parameters.u: {domain_allowlist: [company.com]}\n", {"u": "a@company.com"}, False),
        ("      parameters.u: {domain_in: [EXAMPLE.com.]}\n", {"u": "x@Example.COM"}, True),
        ("      parameters.s: {not: {eq: a}}\n", {"s": "b"}, True),
        ("      parameters.s: [a, b]\n", {"s": "a"}, True),
        ("      parameters.s: a\n", {"s": "b"}, False),
        ("      parameters.a.0.b: 1\n", {"a": [{"b": 1}]}, True),
        ("      params.s: a\n", {"s": "a"}, True),
    ],
)
def test_operator(cond: str, params: dict, hit: bool) -> None:  # type: ignore[type-arg]
    assert one(cond, {"parameters": params}) is (D.DENY if hit else D.ALLOW)


def test_external_is_relative_to_internal_domains() -> None:
    c = "      parameters.to: {external: true}\n"
    h = ", internal_domains: [company.com]"
    assert one(c, {"parameters": {"to": "a@mail.company.com"}}, header=h) is D.ALLOW
    assert one(c, {"parameters": {"to": "a@company.com.evil.io"}}, header=h) is D.DENY
    assert one(c, {"parameters": {"to": "a@company.com"}}) is D.DENY  # nothing is internal by default


def test_internal_domains_passed_by_config() -> None:
    p = policy(
        "policy: {id: t, default: ALLOW}\nrules:\n  - id: r\n    match: {parameters.to: {external: true}}\n"
        "    action: DENY\n",
        internal_domains=["Company.COM"],
    )
    assert decide(p, {"tool": "email.send", "parameters": {"to": "x@company.com"}}).result is D.ALLOW


def test_classification_operators() -> None:
    assert (
        one(
            "      context.data_classification: {higher_than: INTERNAL}\n",
            {},
            {"data_classification": ["CONFIDENTIAL"]},
        )
        is D.DENY
    )
    assert (
        one(
            "      context.data_classification: {higher_than: CONFIDENTIAL}\n",
            {},
            {"data_classification": ["CONFIDENTIAL"]},
        )
        is D.ALLOW
    )
    assert (
        one(
            "      data_accessed: {contains_classification: [PII, FINANCIAL]}\n",
            {},
            {"data_classification": ["FINANCIAL"]},
        )
        is D.DENY
    )
    assert (
        one("      context.data_classification: PII\n", {}, {"data_classification": ["PII", "INTERNAL"]})
        is D.DENY
    )


def test_category_reads_tool_category_signal_and_absent_is_unpopulated() -> None:
    assert (
        one("      category: destructive\n", {}, {"risk_signals": {"tool_category": "destructive"}}) is D.DENY
    )
    assert one("      category: destructive\n", {}, {"risk_signals": {"tool_category": "read"}}) is D.ALLOW
    assert one("      category: destructive\n", {}, {}) is D.DEFER


def test_unknown_or_conflicting() -> None:
    c = "      context.env: {unknown_or_conflicting: true}\n"
    assert one(c, {}, {}) is D.DENY
    assert one(c, {}, {"values": {"env": "conflicting"}}) is D.DENY
    assert one(c, {}, {"values": {"env": ["open", "frozen"]}}) is D.DENY
    assert one(c, {}, {"values": {"env": "open"}}) is D.ALLOW


def test_identity_and_prior_actions_and_sink() -> None:
    assert (
        one("      identity.effective_scope: {contains: admin}\n", {"identity": {"scopes": ["admin"]}})
        is D.DENY
    )
    assert one("      identity.role: analyst\n", {"identity": {"roles": ["analyst"]}}) is D.DENY
    assert (
        one("      context.prior_actions: {contains: db.query}\n", {}, {"prior_actions": ["db.query"]})
        is D.DENY
    )
    assert one("      sink.type: tool\n", {}) is D.DENY
    assert (
        one("      original_request.intent_classification: prep\n", {}, {"intent_classification": "prep"})
        is D.DENY
    )


GATEWAY = r"""
version: "1.0"
policies:
  - id: block-destructive-sql
    match: {tool: database}
    condition:
      query: {regex: "(?i)(DROP|TRUNCATE|DELETE FROM)\\s+(DATABASE|TABLE|\\*)"}
    decision: DENY
  - id: block-known-malicious-domains
    match: {tool: http}
    condition:
      parameters:
        url: {domain_in: [evil.com, malware.net]}
    decision: DENY
  - id: deny-email-after-sensitive-read
    match: {tool: email, operation: send}
    condition:
      to: {external: true}
      data_accessed: {contains_classification: [PII, CONFIDENTIAL, FINANCIAL]}
    decision: DENY
  - id: stepup-bulk-operations
    match: {tool: database}
    condition:
      query: {regex: "(?i)(UPDATE|DELETE).*WHERE"}
      affected_rows_estimate: {greater_than: 100}
    decision: STEP_UP
    approvers: [dba]
  - id: defer-ambiguous-credential-rotation
    match: {tool: credentials, operation: rotate}
    condition:
      context:
        original_request: {not_contains: [rotate, credentials, security]}
    decision: DEFER
    timeout: 300
  - id: scope-file-access
    match: {tool: files, operation: read}
    condition:
      identity: {role: analyst}
    decision: MODIFY
    modification:
      add_filter: {allowed_paths: [/data/analytics]}
  - id: redact-ssn-in-queries
    match: {tool: crm, operation: lookup}
    decision: MODIFY
    modification:
      redact: [ssn]
  - id: drift
    trigger:
      semantic_distance: {gt: 0.7}
      chain_length: {gt: 10}
    decision: STEP_UP
"""


def test_gateway_dialect_loads_and_behaves() -> None:
    p = policy(GATEWAY)
    assert p.version == "1.0"
    assert (
        decide(p, {"tool": "database.execute", "parameters": {"query": "drop table users"}}).rule_id
        == "block-destructive-sql"
    )
    assert decide(p, {"tool": "http.get", "parameters": {"url": "https://a.evil.com"}}).result is D.DENY
    d = decide(
        p, {"tool": "email.send", "parameters": {"to": "x@gmail.com"}}, {"data_classification": ["FINANCIAL"]}
    )
    assert d.rule_id == "deny-email-after-sensitive-read"
    d = decide(
        p,
        {
            "tool": "database.execute",
            "parameters": {"query": "UPDATE t SET a=1 WHERE b", "affected_rows_estimate": 500},
        },
    )
    assert d.result is D.STEP_UP and d.approvers == ("dba",)
    d = decide(p, {"tool": "credentials.rotate"}, {"original_request": "update my profile picture"})
    assert d.result is D.DEFER and d.timeout == 300
    d = decide(p, {"tool": "files.read", "identity": {"roles": ["analyst"]}})
    assert d.result is D.MODIFY and d.modifications == {"add_filter": {"allowed_paths": ("/data/analytics",)}}
    d = decide(p, {"tool": "crm.lookup", "parameters": {"ssn": "123"}})
    assert d.result is D.MODIFY and d.modifications == {"redact": ("ssn",)}
    prior = [{"tool": "crm", "operation": "get"}] * 11
    assert (
        decide(p, {"tool": "docs.read"}, {"semantic_distance": 0.8, "prior_actions": prior}).result
        is D.STEP_UP
    )


def test_quickstart_policy_with_dotted_keys_and_action() -> None:
    p = policy(
        """
policy: {id: block-pii-external, version: "1.0"}
rules:
  - id: rule-001
    match:
      tool: email
      operation: send
      parameters.to: {external: true}
      context.data_classification: [PII, CONFIDENTIAL]
    action: DENY
    reason: PII cannot be sent to external recipients
""",
        internal_domains=["company.com"],
    )
    d = decide(
        p, {"tool": "email.send", "parameters": {"to": "x@gmail.com"}}, {"data_classification": ["PII"]}
    )
    assert d.result is D.DENY and d.reason == "PII cannot be sent to external recipients"
    assert d.policy_id == "block-pii-external"


def test_match_and_condition_blocks_are_anded() -> None:
    p = policy(
        "policy: {id: t, default: ALLOW}\nrules:\n  - id: r\n    match: {tool: a}\n"
        "    condition: {x: 1}\n    decision: DENY\n"
    )
    assert decide(p, {"tool": "a.b", "parameters": {"x": 1}}).result is D.DENY
    assert decide(p, {"tool": "a.b", "parameters": {"x": 2}}).result is D.ALLOW


def test_tool_globs_lists_and_dotted_names() -> None:
    p = policy(
        "policy: {id: t, default: ALLOW}\nrules:\n"
        "  - id: g\n    match: {tool: 'db_*', operation: [drop, 'trunc*']}\n    action: DENY\n"
        "  - id: n\n    match: {tool: email.send}\n    action: DENY\n"
    )
    assert decide(p, {"tool": "db_main.truncate_all"}).rule_id == "g"
    assert decide(p, {"tool": "db_main.select"}).result is D.ALLOW
    assert decide(p, {"tool": "email", "operation": "send"}).rule_id == "n"
    assert decide(p, {"tool": "EMAIL.Send"}).rule_id == "n"


@pytest.mark.parametrize("url", ["evil.com/payload", "//evil.com/x", "evil.com:8080", "https://cdn.evil.com"])
def test_exfiltration_to_a_host_written_without_a_scheme_is_still_external(url: str) -> None:
    c = "      parameters.url: {external: true}\n"
    assert one(c, {"parameters": {"url": url}}, header=", internal_domains: [company.com]") is D.DENY


def test_numbers_are_not_hosts_but_ip_addresses_are() -> None:
    c = "      parameters.v: {external: true}\n"
    assert one(c, {"parameters": {"v": "1.5"}}) is D.ALLOW
    assert one(c, {"parameters": {"v": "10.0.0.1"}}) is D.DENY
