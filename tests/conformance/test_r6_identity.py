"""AARM R6: identity captured at submission, bound into every receipt; unverifiable identity is denied."""

from __future__ import annotations

from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from tests.conformance.conftest import POLICY, Tool, receipts


def test_receipts_attribute_each_principal_and_session(guard: Any) -> None:
    people = [Identity(human="alice@company.com", roles=["analyst"], scopes=["db:read"]),
              Identity(service="billing-svc", agent="billing-bot", roles=["service"], scopes=["payments:write"])]
    sessions = []
    for who in people:
        with guard.session(identity=who) as s:
            s.invoke("calendar.read", {"day": "monday"}, Tool())
        sessions.append(s.session_id)
    assert sessions[0] != sessions[1]
    for who, sid in zip(people, sessions, strict=True):
        [r] = receipts(guard, sid)
        rc = r["action"]["requester_context"]
        assert (rc["human"], rc["service"], rc["session"]) == (who.human, who.service, sid)
        assert rc["roles"] == list(who.roles) and rc["scope"] == list(who.scopes)


def test_action_without_human_or_service_identity_is_denied(guard: Any) -> None:
    tool = Tool()
    with guard.session(identity=Identity(agent="anonymous-agent")) as s:
        with pytest.raises(ActionDenied) as info:
            s.invoke("calendar.read", {"day": "monday"}, tool)
    assert tool.calls == []
    assert "identity" in info.value.decision.reason
    [r] = receipts(guard, s.session_id)
    assert r["error"]["class"] == "IdentityError"


def test_flag_mode_records_and_allows(make_guard: Any) -> None:
    guard = make_guard(policy=str(POLICY), identity_mode="flag")
    tool = Tool()
    with guard.session(identity=Identity(agent="anonymous-agent")) as s:
        s.invoke("calendar.read", {"day": "monday"}, tool)
    assert len(tool.calls) == 1
    [r] = receipts(guard, s.session_id)
    assert "no human principal or service identity" in r["enforcement"]["identity_flag"]


def test_defer_then_resolve_keeps_original_identity(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice) as s:
        s.set_context("environment_state_conflict", True, source="monitor")
        with pytest.raises(ActionDenied):
            s.invoke("credentials.rotate", {"target": "prod"}, Tool())
    deferral, resolution = receipts(guard, s.session_id)
    assert resolution["action"]["requester_context"] == deferral["action"]["requester_context"]
    assert resolution["action"]["requester_context"]["human"] == "alice@company.com"
