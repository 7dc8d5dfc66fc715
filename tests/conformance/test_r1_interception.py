"""AARM R1: intercept before execution; denied and deferred actions cause no effects; no fail-open."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from aarmor import ActionDenied, DecisionResult
from aarmor.errors import StoreError
from tests.conformance.conftest import Tool, receipts


def test_denied_action_never_executes_and_gets_denial_receipt(guard: Any, alice: Any, tool: Tool) -> None:
    with guard.session(identity=alice, original_request="list files") as s:
        with pytest.raises(ActionDenied) as info:
            s.invoke("shell.run", {"cmd": "rm -rf /"}, tool)
    assert tool.calls == []
    assert info.value.decision.result is DecisionResult.DENY
    assert info.value.decision.rule_id == "deny-shell"
    [r] = receipts(guard, s.session_id)
    assert r["receipt_id"] == info.value.receipt_id
    assert r["decision"]["result"] == "DENY"
    assert r["decision"]["rule_id"] == "deny-shell"
    assert r["decision"]["policy"]["policy_id"] == "conformance"
    assert r["decision"]["reason"] == "agents may not run shell commands"
    assert r["execution"] is None


def test_deferred_action_is_suspended_without_effects_and_receipted(guard: Any, alice: Any, tool: Tool) -> None:
    with guard.session(identity=alice, original_request="rotate the payment credentials") as s:
        s.set_context("environment_state_conflict", True, source="monitor")
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                s.invoke("credentials.rotate", {"target": "prod-payments"}, tool)
            except ActionDenied as exc:
                box["denied"] = exc

        t = threading.Thread(target=call)
        t.start()
        # While suspended: the deferral receipt exists, and the tool has not run.
        deadline = time.monotonic() + 5
        while not receipts(guard, s.session_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        suspended = receipts(guard, s.session_id)
        assert [r["kind"] for r in suspended] == ["deferral"]
        assert suspended[0]["decision"]["result"] == "DEFER"
        assert suspended[0]["deferral"]["reason"]
        assert tool.calls == []
        t.join(10)
    assert tool.calls == []
    assert box["denied"].decision.result is DecisionResult.DENY


def test_store_unavailable_means_action_fails_closed(guard: Any, alice: Any, tool: Tool) -> None:
    s = guard.session(identity=alice, original_request="send the agenda")
    # The store stops accepting writes under the running session (SQLite refuses them for real).
    guard.store._db.execute("PRAGMA query_only=1")
    with pytest.raises(ActionDenied) as info:
        s.invoke("email.send", {"to": "bob@company.com"}, tool)
    with pytest.raises(StoreError):
        s.close()  # ending the session cannot be recorded either, and says so
    assert tool.calls == []
    assert info.value.decision.result is DecisionResult.DENY
    assert "fail closed" in info.value.decision.reason
    assert info.value.receipt_id is None  # nothing could be written, and nothing ran


def test_policy_evaluation_error_fails_closed_with_error_recorded(make_guard: Any, alice: Any, tool: Tool) -> None:
    guard = make_guard("""
policy: {id: broken-at-runtime, version: "1", default: ALLOW}
rules:
  - id: amount-check
    match: {tool: payment}
    when: "action.parameters.amount > 10"
    action: STEP_UP
    reason: check amounts
""")
    with guard.session(identity=alice) as s:
        with pytest.raises(ActionDenied) as info:
            s.invoke("payment.transfer", {"amount": "ten thousand"}, tool)  # type confusion at runtime
    assert tool.calls == []
    assert info.value.decision.result is DecisionResult.DENY
    assert info.value.decision.errors, "the evaluation error must be recorded"
    [r] = receipts(guard, s.session_id)
    assert r["decision"]["errors"] == list(info.value.decision.errors)


def test_no_policy_loaded_denies_everything(make_guard: Any, alice: Any, tool: Tool) -> None:
    from datetime import UTC, datetime

    from aarmor.model import ContextSnapshot
    from aarmor.normalize import normalize_action
    from aarmor.policy import evaluate

    now = datetime(2026, 1, 1, tzinfo=UTC)
    action = normalize_action("email.send", {"to": "bob@company.com"}, operation=None, identity=alice,
                              session_id="s", now=now)
    d = evaluate(action, ContextSnapshot(session_id="s", started_at=now), None, now=now)
    assert d.result is DecisionResult.DENY
    assert "no policy" in d.reason


def test_signer_unavailable_means_action_does_not_run(guard: Any, alice: Any, tool: Tool) -> None:
    with guard.session(identity=alice, original_request="send the agenda") as s:
        guard.keyring.close()  # the signing key is gone (an HSM outage, in production)
        with pytest.raises(ActionDenied) as info:
            s.invoke("email.send", {"to": "bob@company.com"}, tool)
    assert tool.calls == []
    assert "SigningKeyError" in info.value.decision.reason
    assert info.value.receipt_id is None  # nothing could be signed, and nothing ran
    # the attempt is still in the hash-chained context log
    kinds = [e.kind for e in guard.store.read_log(s.session_id)]
    assert "action_requested" in kinds and "action_outcome" in kinds
