"""PDP latency: `aarmor.policy.evaluate` with 1, 100 and 10,000 rules.

The 100 and 10,000 rule sets are the one matching rule plus rules about *other* tools, so the ratio to
the 1-rule case, measured in the same run, shows whether evaluation cost grows with rules about other
tools (it should not: rules are compiled into an index by tool and operation).
"""

from __future__ import annotations

from datetime import UTC, datetime

from _timing import Result, measure

from aarmor.model import ContextSnapshot, Identity
from aarmor.normalize import normalize_action
from aarmor.policy import evaluate, load_policy_text

TARGET_RULE = """
  - id: deny-external-after-pii
    match:
      tool: email
      operation: send
      parameters: {to: {external: true}}
      context: {data_classification: [PII, CONFIDENTIAL]}
    action: DENY
    reason: no PII to external recipients
"""


def policy_text(other_rules: int) -> str:
    rules = [TARGET_RULE]
    for i in range(other_rules):
        rules.append(f"""
  - id: other-{i}
    match: {{tool: tool{i}, operation: op{i % 7}, parameters: {{n: {{gt: {i}}}}}}}
    action: DENY
    reason: rule about another tool
""")
    return "policy: {id: bench, version: '1', default: ALLOW, internal_domains: [company.com]}\nrules:" + \
        "".join(rules)


def run(n: int = 20_000) -> list[Result]:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    ident = Identity(human="alice@company.com", roles=("analyst",))
    snap = ContextSnapshot(session_id="s", started_at=now, classifications=frozenset({"PII"}),
                           original_request="send the report")
    email = normalize_action("email.send", {"to": "x@gmail.com", "body": "hi"}, operation=None, identity=ident,
                             session_id="s", now=now)
    results = []
    for others, label in ((0, "1 rule"), (99, "100 rules"), (9_999, "10,000 rules")):
        policy = load_policy_text(policy_text(others))
        d = evaluate(email, snap, policy, now=now)
        assert d.result.value == "DENY", d
        results.append(measure(f"PDP evaluate, {label} (email.send, DENY)", lambda p=policy: evaluate(
            email, snap, p, now=now), n=n))
    return results


if __name__ == "__main__":
    from _timing import HEADER

    print(HEADER)
    for r in run():
        print(r.row())
