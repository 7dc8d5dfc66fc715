"""Identity revocation (AARM R6 "freshness and revocation"): by token id, subject, agent and delegation, in every
identity mode, taking effect on the next decision, through STEP_UP and DEFER waits, and across processes.

Real parts: JWT tokens signed with real keys against a JWKS file, a real SQLite store shared with a second
connection and with the `aarmor` CLI in a subprocess, approvers and resolvers in other threads.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, DelegationLink, Identity
from aarmor.config import ApprovalsConfig, DeferralsConfig
from aarmor.errors import Refused
from aarmor.identity import ClaimedIdentityVerifier
from aarmor.identity.revocation import RevocationCheck, revoke, unrevoke
from aarmor.store.sqlite import SqliteStore
from tests.identity.conftest import Signer

NOW = datetime.now(UTC)

POLICY = """
policy: {id: revocation-tests, version: "1", default: ALLOW}
rules:
  - id: big-payments
    match: {tool: payment, operation: transfer, parameters: {amount: {gt: 10000}}}
    action: STEP_UP
    approvers: [finance]
    timeout: 30
    reason: transfers over 10000 need a finance approver
  - id: rotation-waits-for-window
    match: {tool: credentials, operation: rotate, context: {maintenance_window: {ne: open}}}
    action: DEFER
    context_needed: [context.maintenance_window]
    timeout: 30
    reason: rotation waits for the maintenance window status
"""


class Tool:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, arguments: dict[str, Any]) -> str:
        self.calls.append(arguments)
        return "ok"


def attempt(session: Any, tool: Tool, name: str = "calendar.read",
            args: dict[str, Any] | None = None) -> ActionDenied | None:
    try:
        session.invoke(name, args or {"day": "monday"}, tool)
    except ActionDenied as exc:
        return exc
    return None


def last_receipt(guard: Any, session_id: str) -> dict[str, Any]:
    return [r.body for r in guard.store.read_receipts(session_id)][-1]


@pytest.fixture
def claimed(make_guard: Callable[..., Any]) -> Callable[..., Any]:
    """A Guard in a claimed-identity mode (enforce by default) on the test policy, approvers and resolvers
    polling fast."""

    def open_(**overrides: Any) -> Any:
        overrides.setdefault("approvals", ApprovalsConfig(groups=(("finance", ("carol@company.com",)),),
                                                          poll_interval=0.02))
        overrides.setdefault("deferrals", DeferralsConfig(poll_interval=0.02))
        return make_guard(POLICY, **overrides)

    return open_


# --- mode jwt: real tokens ---------------------------------------------------------------------------------
def test_a_token_revoked_mid_session_denies_the_next_action(open_guard: Any, jwks_file: Path,
                                                            signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file))
    tool = Tool()
    with guard.session(identity=Identity(agent="mail-agent", token=signers["ES256"].token(jti="jti-laptop"))) as s:
        assert attempt(s, tool) is None
        r = last_receipt(guard, s.session_id)
        assert r["enforcement"]["result"] == "ALLOW" and r["action"]["requester_context"]["token_id"] == "jti-laptop"
        revoke(guard.store, "token", "jti-laptop", reason="laptop stolen", by="alice@company.com", now=NOW)
        denied = attempt(s, tool)
    assert denied is not None and len(tool.calls) == 1
    r = last_receipt(guard, s.session_id)
    assert r["enforcement"]["result"] == "DENY" and r["enforcement"]["executed"] is False
    reason = r["enforcement"]["reason"]
    assert "identity revoked: token id `jti-laptop` (the identity's token; reason: laptop stolen, revoked" in reason
    assert "by alice@company.com" in reason and r["error"]["class"] == "IdentityRevoked"
    # another token of the same person is not touched by a token-id revocation
    with guard.session(identity=Identity(agent="mail-agent", token=signers["ES256"].token(jti="jti-phone"))) as s:
        assert attempt(s, tool) is None


def test_a_revoked_subject_is_denied_whatever_its_token(open_guard: Any, jwks_file: Path,
                                                        signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file))
    revoke(guard.store, "subject", "alice@company.com", reason="left the company", by="hr", now=NOW)
    tool = Tool()
    for alg in ("RS256", "EdDSA"):
        with guard.session(identity=Identity(token=signers[alg].token())) as s:  # sub: alice@company.com
            denied = attempt(s, tool)
        assert denied is not None
        assert "identity revoked: subject `alice@company.com` (the human principal; reason: left the company" \
            in last_receipt(guard, s.session_id)["enforcement"]["reason"]
    with guard.session(identity=Identity(token=signers["RS256"].token(sub="bob@company.com"))) as s:
        assert attempt(s, tool) is None
    assert len(tool.calls) == 1


def test_a_token_that_fails_verification_is_denied_for_that_before_revocation_is_looked_up(
        open_guard: Any, jwks_file: Path, signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file))
    revoke(guard.store, "token", "jti-x", reason="r", by="ops", now=NOW)
    with guard.session(identity=Identity(token=signers["other"].token(jti="jti-x"))) as s:
        assert attempt(s, Tool()) is not None
    # a forged token cannot even name its jti: the signature is what is refused
    assert "identity token bad signature" in last_receipt(guard, s.session_id)["enforcement"]["reason"]


# --- claimed modes, delegation ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["enforce", "flag"])
def test_a_revoked_agent_is_denied_in_the_claimed_modes(claimed: Callable[..., Any], mode: str) -> None:
    guard = claimed(identity_mode=mode)
    tool = Tool()
    with guard.session(identity=Identity(human="alice@company.com", agent="mail-agent")) as s:
        assert attempt(s, tool) is None
        revoke(guard.store, "agent", "mail-agent", reason="prompt-injected", by="secops", now=NOW)
        assert attempt(s, tool) is not None
    assert len(tool.calls) == 1
    assert "identity revoked: agent `mail-agent` (the agent; reason: prompt-injected" in \
        last_receipt(guard, s.session_id)["enforcement"]["reason"]


def test_a_revoked_service_identity_is_denied_as_a_subject(claimed: Callable[..., Any]) -> None:
    guard = claimed()
    revoke(guard.store, "subject", "billing-svc", reason="credentials leaked", by="secops", now=NOW)
    with guard.session(identity=Identity(service="billing-svc")) as s:
        assert attempt(s, Tool()) is not None
    assert "subject `billing-svc` (the service identity;" in last_receipt(guard, s.session_id)["enforcement"]["reason"]


CHAIN = (DelegationLink("alice@company.com", "planner-agent", link_id="dlg-1"),
         DelegationLink("planner-agent", "mail-agent", link_id="dlg-2"))


@pytest.mark.parametrize(("kind", "value", "where"), [
    ("token", "dlg-2", "token id `dlg-2` (delegation link 2;"),
    ("agent", "planner-agent", "agent `planner-agent` (delegatee of delegation link 1;"),
    ("subject", "alice@company.com", "subject `alice@company.com` (delegator of delegation link 1;"),
])
def test_revocations_reach_along_the_delegation_chain(claimed: Callable[..., Any], kind: str, value: str,
                                                      where: str) -> None:
    guard = claimed()
    identity = Identity(service="mail-svc", agent="mail-agent", delegation=CHAIN)
    tool = Tool()
    with guard.session(identity=identity) as s:
        assert attempt(s, tool) is None
        revoke(guard.store, kind, value, reason="chain broken", by="secops", now=NOW)
        assert attempt(s, tool) is not None
    assert len(tool.calls) == 1
    reason = last_receipt(guard, s.session_id)["enforcement"]["reason"]
    assert f"identity revoked: {where} reason: chain broken" in reason


def test_a_verifier_passed_in_is_wrapped_too(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY, verifier=ClaimedIdentityVerifier("enforce"))
    assert isinstance(guard.verifier, RevocationCheck) and guard.verifier.store is guard.store
    revoke(guard.store, "agent", "bot", reason="r", by="ops", now=NOW)
    with guard.session(identity=Identity(human="alice@company.com", agent="bot")) as s:
        assert attempt(s, Tool()) is not None
    # a RevocationCheck on another store is wrapped again, around this store
    other = make_guard(POLICY, verifier=RevocationCheck(ClaimedIdentityVerifier(), guard.store),
                       store="memory://")
    assert isinstance(other.verifier, RevocationCheck) and other.verifier.store is other.store


# --- lifting, expiry, the store failing ---------------------------------------------------------------------
def test_unrevoke_allows_again_and_the_history_keeps_both(claimed: Callable[..., Any]) -> None:
    guard = claimed()
    tool = Tool()
    with guard.session(identity=Identity(human="alice@company.com", agent="bot")) as s:
        revoke(guard.store, "agent", "bot", reason="suspected", by="secops", now=NOW)
        assert attempt(s, tool) is not None
        unrevoke(guard.store, "agent", "bot", reason="false alarm", by="secops-lead", now=NOW)
        assert attempt(s, tool) is None
    assert [(e.event, e.actor, e.reason) for e in guard.store.revocation_history()] == [
        ("revoke", "secops", "suspected"), ("unrevoke", "secops-lead", "false alarm")]


def test_a_revocation_ends_at_its_until(claimed: Callable[..., Any]) -> None:
    clock = [NOW]
    guard = claimed(clock=lambda: clock[0])
    revoke(guard.store, "agent", "bot", reason="until the token expires", by="ops", now=NOW,
           until=NOW + timedelta(hours=1))
    tool = Tool()
    with guard.session(identity=Identity(human="alice@company.com", agent="bot")) as s:
        assert attempt(s, tool) is not None
        clock[0] = NOW + timedelta(hours=1)  # `until` itself: no longer in force
        assert attempt(s, tool) is None
    assert len(tool.calls) == 1


def test_revocations_that_cannot_be_read_deny(claimed: Callable[..., Any], tmp_path: Path) -> None:
    guard = claimed()
    other = sqlite3.connect(tmp_path / "aarmor.db")
    other.execute("DROP TABLE revocations")
    other.commit()
    other.close()
    tool = Tool()
    with guard.session(identity=Identity(human="alice@company.com")) as s:
        assert attempt(s, tool) is not None
    assert tool.calls == []
    r = last_receipt(guard, s.session_id)
    assert r["error"]["class"] == "StoreError" and "no such table: revocations" in r["enforcement"]["reason"]


# --- through a wait -----------------------------------------------------------------------------------------
def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


def _wait_for(pred: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"{what} not reached")


def test_revoked_while_an_approval_is_pending_the_granted_action_is_denied(
        open_guard: Any, jwks_file: Path, signers: dict[str, Signer]) -> None:
    guard = open_guard(jwks_file=str(jwks_file))

    def revoke_then_approve() -> None:
        [item] = _wait_for(guard.approvals.list, "a pending approval")
        revoke(guard.store, "token", "jti-pay", reason="session hijacked", by="secops", now=datetime.now(UTC))
        guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")

    t, errors = _in_thread(revoke_then_approve)
    tool = Tool()
    with guard.session(identity=Identity(token=signers["RS256"].token(jti="jti-pay"))) as s:
        denied = attempt(s, tool, "payment.transfer", {"amount": 25_000, "to": "ACME"})
    t.join()
    assert errors == [] and denied is not None and tool.calls == []
    r = last_receipt(guard, s.session_id)
    assert r["decision"]["result"] == "STEP_UP" and r["enforcement"]["result"] == "DENY"
    assert r["approval"]["granted"] is True and r["approval"]["identity_verified"] is False
    assert "identity revoked: token id `jti-pay`" in r["enforcement"]["reason"]
    assert r["error"]["class"] == "IdentityRevoked"


def test_revoked_while_deferred_the_resolved_action_is_denied(claimed: Callable[..., Any]) -> None:
    guard = claimed()

    def revoke_then_supply() -> None:
        [item] = _wait_for(guard.deferrals.list, "a pending deferral")
        revoke(guard.store, "agent", "ops-agent", reason="compromised", by="secops", now=datetime.now(UTC))
        try:
            guard.deferrals.supply(item["id"], {"maintenance_window": "open"}, by="ops@company.com", channel="t")
        except Refused as exc:  # the periodic re-evaluation may have ended it first: DENY either way
            assert exc.code == "not_pending"

    t, errors = _in_thread(revoke_then_supply)
    tool = Tool()
    with guard.session(identity=Identity(human="ops@company.com", agent="ops-agent")) as s:
        denied = attempt(s, tool, "credentials.rotate", {"key": "db-primary"})
    t.join()
    assert errors == [] and denied is not None and tool.calls == []
    r = last_receipt(guard, s.session_id)
    assert r["decision"]["result"] == "DEFER" and r["enforcement"]["result"] == "DENY"
    assert "identity revoked: agent `ops-agent` (the agent; reason: compromised" in r["enforcement"]["reason"]
    assert r["deferral"]["result"] == "DENY"


# --- another process --------------------------------------------------------------------------------------
def test_a_revocation_written_through_another_connection_takes_effect_on_the_next_decision(
        claimed: Callable[..., Any], tmp_path: Path) -> None:
    guard = claimed()
    tool = Tool()
    with guard.session(identity=Identity(human="alice@company.com", agent="bot")) as s:
        assert attempt(s, tool) is None
        with SqliteStore(tmp_path / "aarmor.db") as elsewhere:
            revoke(elsewhere, "subject", "alice@company.com", reason="offboarded", by="hr", now=NOW)
        assert attempt(s, tool) is not None
    assert len(tool.calls) == 1


def test_a_revocation_by_the_cli_takes_effect_in_a_running_guard(cli: Any, make_guard: Callable[..., Any],
                                                                  tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    guard = make_guard(POLICY, store=store)
    config = tmp_path / "aarmor.yaml"
    config.write_text(f"store: {store}\nkeys: {tmp_path / 'keys'}\n")
    tool = Tool()
    with guard.session(identity=Identity(human="alice@company.com", agent="report-agent")) as s:
        assert attempt(s, tool) is None
        done = cli("identity", "revoke", "--agent", "report-agent", "--reason", "exfiltration", "--by", "secops",
                   "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert attempt(s, tool) is not None
        assert "by secops" in last_receipt(guard, s.session_id)["enforcement"]["reason"]
        lifted = cli("identity", "unrevoke", "--agent", "report-agent", "--reason", "cleaned up", "--config",
                     str(config))
        assert lifted.returncode == 0, lifted.stderr
        assert attempt(s, tool) is None
    assert len(tool.calls) == 2
