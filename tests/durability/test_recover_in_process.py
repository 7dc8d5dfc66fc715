"""Recovery corner cases, in one process: an action left by a dead owner in a session that has since
ended (by another process) still gets its one receipt; a dead owner's actions are recovered once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aarmor import Identity
from aarmor.context import SessionContext, check_chain
from aarmor.model import Action, Decision, DecisionResult, FrozenMap
from aarmor.receipts import verify_receipts

POLICY = """
policy: {id: recover-test, version: "1", default: ALLOW}
rules:
  - {id: no-shell, match: {tool: shell}, action: DENY, reason: no shell here}
"""
DEAD = "gone-host:4242:deadbeef"


def _orphan(guard: Any, sid: str, aid: str) -> SessionContext:
    """What a process that died mid-action leaves: an `action_requested` entry, in flight, owned by DEAD."""
    ctx = SessionContext.resume(guard.store, sid, classifier=guard.classifier)
    ident = Identity(human="alice@company.com", agent="agent-1", session=sid)
    now = datetime.now(UTC)
    guard.store.owner = DEAD
    try:
        ctx.record_requested(Action(aid, now, "files", "read", FrozenMap({"path": "/x"}), ident, sid),
                             Decision(result=DecisionResult.ALLOW, reason="default"), parameters_view={"path": "/x"},
                             parameters_digest="sha256:" + "3" * 64, now=now)
    finally:
        guard.store.owner = guard.owner
    return ctx


def test_an_action_of_a_dead_owner_in_an_ended_session_gets_its_receipt(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY)
    s = guard.session(identity=Identity(human="alice@company.com", agent="agent-1"))
    s.invoke("files.read", {"path": "/a"}, lambda a: "ok")
    # another process ends the session (session_end) while the orphan is still in flight
    _orphan(guard, s.session_id, "act_orphan").end(datetime.now(UTC))
    assert guard.store.owner_leases().get(DEAD) is None  # never renewed: dead
    (rid,) = guard.recover_actions()
    assert guard.recover_actions() == [] and guard.store.inflight_list() == []
    log = list(guard.store.read_log(s.session_id))
    assert log[-1].kind == "session_end"  # nothing appended after the end: the receipt alone says it
    assert not check_chain(log, session_id=s.session_id).failures
    bodies = [r.body for r in guard.store.read_receipts(s.session_id)]
    assert verify_receipts(bodies, guard.keyring.public_keys()).ok
    last = bodies[-1]
    assert last["receipt_id"] == rid and last["action"]["action_id"] == "act_orphan"
    assert last["enforcement"]["executed"] == "unknown" and last["enforcement"]["result"] == "ALLOW"
    assert last["enforcement"]["recovered"]["owner"] == DEAD
    assert last["context"]["log_seq"] == 3  # anchored on the orphan's action_requested entry


def test_a_live_session_continues_after_its_orphan_was_recovered(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY)
    s = guard.session(identity=Identity(human="alice@company.com", agent="agent-1"))
    _orphan(guard, s.session_id, "act_orphan")
    other = make_guard(POLICY)  # its start-up recovery appends to the session's chains
    assert [r.body["action"]["action_id"] for r in other.store.read_receipts(s.session_id)] == ["act_orphan"]
    resumed = other.session(identity=Identity(human="alice@company.com", agent="agent-1"),
                            session_id=s.session_id)
    assert resumed.invoke("files.read", {"path": "/b"}, lambda a: "fine") == "fine"
    log = list(other.store.read_log(s.session_id))
    assert not check_chain(log, session_id=s.session_id).failures
    assert [r.kind for r in log][-3:] == ["action_outcome", "action_requested", "action_outcome"]
