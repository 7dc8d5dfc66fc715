"""Bad input: each gets a clear error or a DENY; nothing executes; a receipt records it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import ToolConfig
from aarmor.errors import ConfigError, PolicyError

POLICY = """
policy: {id: bad-input, version: "1", default: ALLOW, internal_domains: [company.com]}
rules:
  - id: deny-email-tool
    match: {tool: email, operation: delete}
    action: DENY
    reason: mailbox deletion is not allowed
  - id: no-pii-out
    match:
      tool: email
      operation: send
      parameters: {to: {external: true}}
      context: {data_classification: [PII]}
    action: DENY
    reason: no PII to external recipients
"""
ALICE = Identity(human="alice@company.com")


class Spy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, arguments: dict[str, Any]) -> str:
        self.calls += 1
        return "ran"


def _denied(guard: Any, tool: str, arguments: Any) -> tuple[ActionDenied, dict[str, Any], Spy]:
    spy = Spy()
    with guard.session(identity=ALICE) as s:
        with pytest.raises(ActionDenied) as info:
            s.invoke(tool, arguments, spy)
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    assert spy.calls == 0
    assert r["decision"]["result"] == "DENY" and r["receipt_id"] == info.value.receipt_id
    return info.value, r, spy


def test_non_json_arguments_denied_with_path(make_guard: Any) -> None:
    exc, r, _ = _denied(make_guard(POLICY), "email.send", {"to": "bob@company.com", "attachment": object()})
    assert "arguments.attachment" in exc.decision.reason
    assert r["error"]["class"] == "InputError"


def test_integer_beyond_json_safe_range_denied(make_guard: Any) -> None:
    exc, _, _ = _denied(make_guard(POLICY), "payment.send", {"amount": 2**60})
    assert "JSON-safe range" in exc.decision.reason


def test_oversized_arguments_denied_naming_the_limit(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    exc, r, _ = _denied(guard, "docs.write", {"body": "x" * (guard.config.limits.max_argument_bytes + 1)})
    assert "max_argument_bytes" in exc.decision.reason
    assert r["error"]["class"] == "LimitExceeded"


def test_deeply_nested_arguments_denied_naming_the_limit(make_guard: Any) -> None:
    nested: dict[str, Any] = {}
    cur = nested
    for _ in range(100):
        cur["x"] = {}
        cur = cur["x"]
    exc, _, _ = _denied(make_guard(POLICY), "docs.write", nested)
    assert "max_argument_depth" in exc.decision.reason


def test_confusable_tool_name_cannot_dodge_a_rule(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    # Cyrillic "е" in "еmail": refused outright rather than treated as a different, unruled tool
    exc, r, _ = _denied(guard, "\u0435mail.delete", {"folder": "inbox"})
    assert "U+0435" in exc.decision.reason
    assert r["action"]["raw_tool"] == "\u0435mail.delete"
    # full-width and zero-width spellings normalise to the ruled name and hit the rule
    exc2, _, _ = _denied(guard, "ＥＭＡＩＬ\u200b.Delete", {"folder": "inbox"})
    assert exc2.decision.rule_id == "deny-email-tool"


def test_homograph_recipient_domain_counts_as_external(make_guard: Any) -> None:
    guard = make_guard(POLICY, tools={"crm.get": ToolConfig(returns=("PII",))})
    spy = Spy()
    with guard.session(identity=ALICE) as s:
        s.invoke("crm.get", {"id": 1}, lambda a: {"name": "Jane"})
        assert s.evaluate("email.send", {"to": "bob@company.com"}).result.value == "ALLOW"
        with pytest.raises(ActionDenied) as info:
            s.invoke("email.send", {"to": "bob@c\u043empany.com"}, spy)  # Cyrillic "о"
        assert info.value.decision.rule_id == "no-pii-out"
        # upper case and a trailing dot are the same internal domain
        assert s.evaluate("email.send", {"to": "bob@COMPANY.com."}).result.value == "ALLOW"
    assert spy.calls == 0


def test_arguments_that_are_not_an_object_are_denied(make_guard: Any) -> None:
    exc, _, _ = _denied(make_guard(POLICY), "email.send", ["bob@company.com"])
    assert "JSON object" in exc.decision.reason


def test_malformed_policy_fails_to_open_with_file_rule_and_line(make_guard: Any) -> None:
    with pytest.raises(PolicyError) as info:
        make_guard("""
policy: {id: broken, version: "1"}
rules:
  - id: deny-shell
    match: {tool: shell, parameters: {cmd: {regexp: "rm"}}}
    action: DENY
""")
    msg = str(info.value)
    assert "deny-shell" in msg and "policy-0.yaml:5" in msg and "regexp" in msg


def test_policy_reload_failure_keeps_last_good_policy(make_guard: Any, tmp_path: Path) -> None:
    guard = make_guard(POLICY)
    path = Path(guard.config.policy)
    good_hash = guard.policy.hash
    path.write_text(POLICY.replace("rules:", "rules:\n  - id: bad\n    match: {tool: x}\n    action: NOPE\n"))
    status = guard.reload_policy()
    assert status.last_error and "NOPE" in status.last_error
    assert guard.policy.hash == good_hash
    path.write_text(POLICY.replace('version: "1"', 'version: "2"'))
    status = guard.reload_policy()
    assert status.last_error is None and guard.policy.version == "2" and guard.policy.hash != good_hash


def test_duplicate_keys_in_action_json_rejected(tmp_path: Path, cli: Any) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    action = tmp_path / "action.json"
    action.write_text('{"action": {"tool": "email", "operation": "send", "parameters": '
                      '{"to": "bob@company.com", "to": "eve@evil.example"}, "identity": {"human": "a"}}}')
    res = cli("policy", "explain", str(policy), str(action))
    assert res.returncode == 2
    assert "duplicate key `to`" in res.stdout + res.stderr


def test_unknown_config_key_rejected(tmp_path: Path) -> None:
    from aarmor.config import load_config

    cfg = tmp_path / "aarmor.yaml"
    cfg.write_text("store: sqlite:///x.db\nidentity: {mode: enforce, fail_open: true}\n")
    with pytest.raises(ConfigError, match=r"`identity.fail_open`: unknown key"):
        load_config(cfg)


def test_unknown_override_rejected() -> None:
    from aarmor import Guard

    with pytest.raises(ConfigError, match="fail_open"):
        Guard.open(fail_open=True)


def test_bad_identity_type_is_refused(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    with pytest.raises(Exception, match=r"aarmor\.Identity"):
        guard.session(identity={"human": "alice"})  # type: ignore[arg-type]
