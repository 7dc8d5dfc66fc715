"""AARM R4: the five decisions are enforced; STEP_UP and DEFER time out to DENY."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aarmor import ActionDenied, DecisionResult
from tests.conformance.conftest import Tool, receipts

D = DecisionResult


def test_each_decision_is_enforced(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice, original_request="weekly finance tasks") as s:
        allowed = Tool("sent")
        assert s.invoke("email.send", {"to": "bob@company.com"}, allowed) == "sent"
        assert allowed.calls == [{"to": "bob@company.com"}]

        blocked = Tool()
        with pytest.raises(ActionDenied):
            s.invoke("shell.run", {"cmd": "id"}, blocked)
        assert blocked.calls == []

        query = Tool([])
        s.invoke("database.query", {"sql": "SELECT 1", "limit": 5000}, query)
        assert query.calls == [{"sql": "SELECT 1", "limit": 100}]  # MODIFY transformed the call

        paid = Tool()
        t0 = time.monotonic()
        with pytest.raises(ActionDenied) as step_up:
            s.invoke("payment.transfer", {"amount": 20_000, "to": "ACME"}, paid)
        assert time.monotonic() - t0 >= 0.45  # it paused for the approval timeout
        assert paid.calls == []
        assert step_up.value.decision.result is D.DENY and "STEP_UP not granted" in step_up.value.decision.reason

        s.set_context("environment_state_conflict", True, source="monitor")
        rotated = Tool()
        with pytest.raises(ActionDenied) as deferred:
            s.invoke("credentials.rotate", {"target": "prod"}, rotated)
        assert rotated.calls == []
        assert "DEFER not resolved" in deferred.value.decision.reason
    decisions = [(r["kind"], r["decision"]["result"], r["enforcement"]["result"])
                 for r in receipts(guard, s.session_id)]
    assert decisions == [
        ("decision", "ALLOW", "ALLOW"),
        ("decision", "DENY", "DENY"),
        ("decision", "MODIFY", "MODIFY"),
        ("decision", "STEP_UP", "DENY"),
        ("deferral", "DEFER", "DEFER"),
        ("resolution", "DEFER", "DENY"),
    ]


def test_step_up_without_reply_denied_after_timeout(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice) as s:
        with pytest.raises(ActionDenied) as info:
            s.invoke("payment.transfer", {"amount": 10_001}, Tool())
    [r] = receipts(guard, s.session_id)
    assert r["approval"]["granted"] is False
    assert r["approval"]["approvers"] == ["finance-manager"]
    assert "timeout" in r["approval"]["reason"]
    assert info.value.receipt_id == r["receipt_id"]


def test_defer_without_resolution_denied_after_timeout(guard: Any, alice: Any) -> None:
    with guard.session(identity=alice) as s:
        s.set_context("environment_state_conflict", True, source="monitor")
        with pytest.raises(ActionDenied):
            s.invoke("credentials.rotate", {"target": "prod"}, Tool())
    _deferral, second = receipts(guard, s.session_id)
    assert second["deferral"]["result"] == "TIMEOUT"
    assert second["deferral"]["resolution_method"] == "timeout"
    assert second["enforcement"]["result"] == "DENY"


def test_async_step_up_wait_does_not_block_the_event_loop(guard: Any, alice: Any) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    ended: list[float] = []

    async def main() -> None:
        with guard.session(identity=alice) as s:
            async def pay(arguments: dict[str, Any]) -> str:
                return "paid"

            async def call() -> None:
                try:
                    await s.ainvoke("payment.transfer", {"amount": 99_999}, pay)
                finally:
                    ended.append(time.monotonic())

            results = await asyncio.gather(call(), ticker(), return_exceptions=True)
            assert isinstance(results[0], ActionDenied)

    asyncio.run(main())
    # A blocking wait would have starved the ticker until the call ended.
    assert len(ticks) == 5 and all(t < ended[0] for t in ticks)
