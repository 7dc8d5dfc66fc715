"""AARM R4 / 2.5: STEP_UP is a real human approval, routed, single-use, recorded in the signed receipt.

The approvers here are threads (or another process) calling the same desk the CLI, the HTTP API and the
page call; the waiting caller is a real `session.invoke` on a real SQLite store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.approvals.service import ApprovalDesk
from aarmor.config import ApprovalsConfig
from aarmor.errors import NotFound, Refused
from tests.conformance.conftest import Tool, receipts

POLICY = """
policy: {id: approvals-test, version: "1", default: ALLOW}
rules:
  - id: big-payment
    match: {tool: payment, operation: transfer, parameters: {amount: {gt: 10000}}}
    action: STEP_UP
    approvers: [finance-manager]
    timeout: 20
    risk_level: HIGH
    reason: transfers over 10000 need a finance approver
  - id: quick-timeout
    match: {tool: payment, operation: refund}
    action: STEP_UP
    approvers: [finance-manager]
    timeout: 0.3
    reason: refunds need a finance approver
  - id: escalating
    match: {tool: vendor, operation: onboard}
    action: STEP_UP
    approvers: [finance-manager]
    timeout: 20
    escalation: {after: 0.3, to: [cfo]}
    reason: new vendors need finance, then the CFO
  - id: capped-export
    match: {tool: export, operation: run}
    action: STEP_UP
    approvers: [security-team]
    modifications: {parameters: {limit: 10}}
    timeout: 20
    reason: exports need security and are capped
"""

GROUPS = (("finance-manager", ("carol@company.com", "dan@company.com")), ("security-team", ("sec@company.com",)),
          ("cfo", ("cfo@company.com",)))


@pytest.fixture
def guard(make_guard: Callable[..., Any]) -> Any:
    return make_guard(POLICY, approvals=ApprovalsConfig(groups=GROUPS, poll_interval=0.02))


ALICE = Identity(human="alice@company.com", service="agent-svc", agent="pay-agent", roles=["analyst"])


def _when_pending(desk: ApprovalDesk, n: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = desk.list()
        if len(items) >= n:
            return items
        time.sleep(0.01)
    raise AssertionError("no approval request appeared")


def _approver(desk: ApprovalDesk, *, who: str = "carol@company.com", granted: bool = True,
              reason: str = "checked the invoice") -> threading.Thread:
    def run() -> None:
        [item] = _when_pending(desk)
        desk.decide(item["id"], approver=who, granted=granted, reason=reason, channel="test")

    t = threading.Thread(target=run)
    t.start()
    return t


def test_approved_step_up_runs_and_the_receipt_names_the_approver(guard: Any) -> None:
    paid = Tool("paid")
    with guard.session(identity=ALICE, original_request="pay the ACME invoice") as s:
        t = _approver(guard.approvals)
        assert s.invoke("payment.transfer", {"amount": 25_000, "to": "ACME"}, paid) == "paid"
        t.join()
    assert paid.calls == [{"amount": 25_000, "to": "ACME"}]
    [r] = receipts(guard, s.session_id)
    assert r["decision"]["result"] == "STEP_UP" and r["enforcement"]["result"] == "ALLOW"
    assert r["enforcement"]["executed"] is True
    a = r["approval"]
    assert a["approver"] == "carol@company.com" and a["granted"] is True
    assert a["reason"] == "checked the invoice" and a["decided_at"] and a["identity_verified"] is True
    assert a["source"] == "step_up" and a["approvers"] == ["finance-manager"]
    [item] = guard.approvals.list(status="consumed")
    assert item["used"]["action_id"] == r["action"]["action_id"]


def test_approver_sees_the_full_context(guard: Any) -> None:
    seen: list[dict[str, Any]] = []

    def approver() -> None:
        [item] = _when_pending(guard.approvals)
        seen.append(item)
        guard.approvals.decide(item["id"], approver="dan@company.com", granted=False, reason="no", channel="t")

    with guard.session(identity=ALICE, original_request="pay the ACME invoice") as s:
        s.invoke("crm.get", {"id": 1}, Tool({"email": "jane@example.org"}))
        t = threading.Thread(target=approver)
        t.start()
        with pytest.raises(ActionDenied):
            s.invoke("payment.transfer", {"amount": 25_000, "to": "ACME"}, Tool())
        t.join()
    req = seen[0]["request"]
    assert req["original_request"] == "pay the ACME invoice"
    assert (req["tool"], req["operation"], req["parameters"]) == ("payment", "transfer",
                                                                   {"amount": 25_000, "to": "ACME"})
    assert [(p["tool"], p["operation"], p["decision"]) for p in req["prior_actions"]] == [("crm", "get", "ALLOW")]
    assert "PII" in req["classifications"]
    assert req["risk_level"] == "HIGH" and req["rule_id"] == "big-payment"
    assert req["policy"]["policy_id"] == "approvals-test" and req["policy"]["hash"].startswith("sha256:")
    assert req["reason"] == "transfers over 10000 need a finance approver"
    assert req["identity"]["human"] == "alice@company.com" and req["identity"]["agent"] == "pay-agent"
    assert "semantic_distance" in req and "confidence" in req
    assert seen[0]["source"] == "step_up" and seen[0]["approvers"] == ["finance-manager"]


def test_denied_step_up_does_not_run(guard: Any) -> None:
    paid = Tool()
    with guard.session(identity=ALICE) as s:
        t = _approver(guard.approvals, granted=False, reason="not this vendor")
        with pytest.raises(ActionDenied) as info:
            s.invoke("payment.transfer", {"amount": 25_000}, paid)
        t.join()
    assert paid.calls == []
    assert "not this vendor" in info.value.decision.reason
    [r] = receipts(guard, s.session_id)
    assert r["approval"]["granted"] is False and r["approval"]["approver"] == "carol@company.com"
    assert r["enforcement"] == {"result": "DENY", "executed": False, "reason": info.value.decision.reason,
                                "identity_flag": None}


def test_no_reply_times_out_to_deny_and_late_decisions_are_refused(guard: Any) -> None:
    with guard.session(identity=ALICE) as s, pytest.raises(ActionDenied) as info:
        s.invoke("payment.refund", {"amount": 5}, Tool())
    assert "timeout" in info.value.decision.reason
    [item] = guard.approvals.list(status="expired")
    with pytest.raises(Refused) as late:
        guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="late", channel="t")
    assert late.value.code == "not_pending"


def test_self_approval_and_outsiders_are_refused_and_recorded(guard: Any) -> None:
    outcome: dict[str, Any] = {}

    def people() -> None:
        [item] = _when_pending(guard.approvals)
        for who in ("alice@company.com", "ALICE@company.com ", "pay-agent", "mallory@evil.example",
                    "sec@company.com"):
            try:
                guard.approvals.decide(item["id"], approver=who, granted=True, reason="me", channel="test")
            except Refused as exc:
                outcome[who] = exc.code
            else:
                outcome[who] = "ACCEPTED"
        outcome["refusals"] = guard.approvals.get(item["id"])["refusals"]
        guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")

    alice_is_also_in_finance = Identity(human="alice@company.com", agent="pay-agent")
    with guard.session(identity=alice_is_also_in_finance) as s:
        t = threading.Thread(target=people)
        t.start()
        assert s.invoke("payment.transfer", {"amount": 25_000}, Tool("paid")) == "paid"
        t.join()
    assert outcome["alice@company.com"] == "self_approval"
    assert outcome["ALICE@company.com "] == "self_approval"  # case and spacing do not dodge the rule
    assert outcome["pay-agent"] == "self_approval"
    assert outcome["mallory@evil.example"] == "not_an_approver"
    assert outcome["sec@company.com"] == "not_an_approver"  # an approver, but not for this rule
    assert [r["code"] for r in outcome["refusals"]] == ["self_approval", "self_approval", "self_approval",
                                                        "not_an_approver", "not_an_approver"]


def test_concurrent_approvals_exactly_one_wins(guard: Any) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def approve(who: str, barrier: threading.Barrier, item_id: str) -> None:
        barrier.wait()
        try:
            guard.approvals.decide(item_id, approver=who, granted=who.startswith("carol"), reason=who,
                                   channel="test")
            out = "won:" + who
        except Refused as exc:
            out = exc.code
        with lock:
            results.append(out)

    def race() -> None:
        [item] = _when_pending(guard.approvals)
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=approve, args=(("carol@company.com", "dan@company.com")[i % 2],
                                                          barrier, item["id"])) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    with guard.session(identity=ALICE) as s:
        t = threading.Thread(target=race)
        t.start()
        try:
            s.invoke("payment.transfer", {"amount": 25_000}, Tool("paid"))
            ran = True
        except ActionDenied:
            ran = False
        t.join()
    winners = [r for r in results if r.startswith("won:")]
    assert len(winners) == 1 and results.count("not_pending") == 7
    assert ran is winners[0].startswith("won:carol")  # the winner's decision is the one enforced


def test_a_grant_is_used_once_and_only_for_its_action(guard: Any) -> None:
    with guard.session(identity=ALICE) as s:
        t = _approver(guard.approvals)
        s.invoke("payment.transfer", {"amount": 25_000}, Tool("paid"))
        t.join()
    [item] = guard.approvals.list(status="consumed")
    binding = guard.store.pending_get(item["id"]).body["action_digest"]
    with pytest.raises(Refused) as again:
        guard.approvals.consume(item["id"], binding, action_id="act_replay")
    assert again.value.code == "already_used"
    assert guard.approvals.get(item["id"])["refusals"][-1]["code"] == "already_used"
    with pytest.raises(NotFound):
        guard.approvals.consume("apr_nope", binding, action_id="act_x")


def test_a_grant_for_one_action_does_not_release_another(guard: Any) -> None:
    """Approve, then present the grant for a different action: refused before use, and recorded."""
    desk: ApprovalDesk = guard.approvals
    with guard.session(identity=ALICE) as s:
        def approve_then_misuse() -> None:
            [item] = _when_pending(desk)
            desk.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")
            try:
                desk.consume(item["id"], "sha256:" + "1" * 64, action_id="act_other")
            except Refused as exc:
                codes.append(exc.code)

        codes: list[str] = []
        t = threading.Thread(target=approve_then_misuse)
        t.start()
        s.invoke("payment.transfer", {"amount": 25_000}, Tool("paid"))
        t.join()
    [item] = desk.list(status="consumed")
    refused = [r["code"] for r in item["refusals"]]
    # depending on who came first: the misuse was refused as the wrong action, or the grant was already used
    assert codes and codes[0] in ("wrong_action", "already_used") and codes[0] in refused


def test_escalation_adds_the_backup_approver_when_it_fires(guard: Any) -> None:
    log: list[str] = []

    def people() -> None:
        [item] = _when_pending(guard.approvals)
        try:
            guard.approvals.decide(item["id"], approver="cfo@company.com", granted=True, reason="early", channel="t")
        except Refused as exc:
            log.append(exc.code)
        deadline = time.monotonic() + 10
        while not guard.approvals.get(item["id"])["escalated"] and time.monotonic() < deadline:
            time.sleep(0.02)
        guard.approvals.decide(item["id"], approver="cfo@company.com", granted=True, reason="cfo ok", channel="t")
        log.append("cfo approved")

    with guard.session(identity=ALICE) as s:
        t = threading.Thread(target=people)
        t.start()
        assert s.invoke("vendor.onboard", {"name": "ACME"}, Tool("on")) == "on"
        t.join()
    assert log == ["not_an_approver", "cfo approved"]
    [item] = guard.approvals.list(status="consumed")
    assert item["approvers"] == ["finance-manager", "cfo"] and item["escalated"] is True


def test_step_up_with_modifications_runs_the_modified_call(guard: Any) -> None:
    export = Tool("done")
    with guard.session(identity=ALICE) as s:
        t = _approver(guard.approvals, who="sec@company.com")
        s.invoke("export.run", {"limit": 5000}, export)
        t.join()
    assert export.calls == [{"limit": 10}]
    [r] = receipts(guard, s.session_id)
    assert r["enforcement"]["result"] == "MODIFY"


def test_identity_is_revalidated_before_an_approved_action_runs(make_guard: Callable[..., Any]) -> None:
    class Revoking:
        """Accepts the identity at submission; it is revoked while the approval is pending."""

        def __init__(self) -> None:
            self.calls = 0

        def verify(self, identity: Identity, *, now: Any) -> tuple[Identity, None]:
            self.calls += 1
            if self.calls > 1:
                raise PermissionError("token revoked while the approval was pending")
            return identity, None

    guard = make_guard(POLICY, approvals=ApprovalsConfig(groups=GROUPS, poll_interval=0.02), verifier=Revoking())
    paid = Tool()
    with guard.session(identity=ALICE) as s:
        t = _approver(guard.approvals)
        with pytest.raises(ActionDenied) as info:
            s.invoke("payment.transfer", {"amount": 25_000}, paid)
        t.join()
    assert paid.calls == []
    assert "revoked while the approval was pending" in info.value.decision.reason


def test_async_waiter_is_released_by_an_approval(guard: Any) -> None:
    ticks: list[float] = []

    async def main() -> Any:
        async def ticker() -> None:
            for _ in range(10):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        async def pay(arguments: dict[str, Any]) -> str:
            return "paid"

        with guard.session(identity=ALICE) as s:
            t = _approver(guard.approvals)
            result, _ = await asyncio.gather(s.ainvoke("payment.transfer", {"amount": 25_000}, pay), ticker())
            await asyncio.to_thread(t.join)
            return result

    assert asyncio.run(main()) == "paid"
    assert len(ticks) == 10  # the loop kept running while the approval was pending


def test_decide_needs_a_reason_and_a_name(guard: Any) -> None:
    from aarmor.errors import InputError

    with pytest.raises(NotFound):
        guard.approvals.get("apr_missing")
    with pytest.raises(InputError, match="reason"):
        guard.approvals.decide("apr_missing", approver="carol@company.com", granted=True, reason=" ", channel="t")
    with pytest.raises(InputError, match="approver"):
        guard.approvals.decide("apr_missing", approver="", granted=True, reason="x", channel="t")
