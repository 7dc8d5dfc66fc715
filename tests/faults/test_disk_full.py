"""Disk full (issue 8, "fail closed under faults"), on a real tmpfs filled to the last byte: calls are refused
and never run unrecorded, an action that ran when the disk filled gets its record once there is space, and
service resumes by itself (same Guard, no restart). A telemetry file on a full disk never blocks decisions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.context import check_chain
from aarmor.errors import StoreError
from aarmor.receipts import verify_receipts
from tests.faults.small_disk import SmallDisk, small_disk, wait_for

ALICE = Identity(human="alice@company.com", agent="ops-agent")
POLICY = 'policy: {id: faults, version: "1", default: ALLOW}\nrules:\n  - {id: no-shell, match: {tool: shell}, ' \
         'action: DENY}\n'
PAD = "x" * 3000  # each call writes a few pages: the disk fills within a few calls


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk") as d:
        yield d


def _verified(guard: Any, sid: str) -> list[dict[str, Any]]:
    """The session's receipts, after checking that its log chain and its receipts verify."""
    assert check_chain(list(guard.store.read_log(sid)), session_id=sid).verified
    bodies = [r.body for r in guard.store.read_receipts(sid)]
    assert verify_receipts(bodies, guard.keyring.public_keys()).ok
    return bodies


def _executed(bodies: list[dict[str, Any]]) -> list[int]:
    return [b["action"]["parameters"]["n"] for b in bodies if b["enforcement"]["executed"] is True]


def test_a_full_disk_refuses_calls_and_service_resumes_when_space_returns(make_guard: Callable[..., Any],
                                                                          disk: SmallDisk) -> None:
    guard = make_guard(POLICY, store=f"sqlite:///{disk.root / 'a.db'}")
    ran: list[int] = []
    s = guard.session(identity=ALICE)
    s.invoke("email.send", {"n": 0, "pad": PAD}, lambda a: ran.append(0))
    disk.fill()
    refused: list[int] = []
    n = 1
    while len(refused) < 3:  # pages SQLite already holds may take a call or two; then every call is refused
        assert n < 60, "the full disk never refused a call"
        try:
            s.invoke("email.send", {"n": n, "pad": PAD}, lambda a, n=n: ran.append(n))
        except ActionDenied as exc:
            assert "StoreError" in exc.decision.reason and "full" in exc.decision.reason
            refused.append(n)
        n += 1
    assert not set(refused) & set(ran)  # a refused call never reached its tool
    assert guard.store.inflight_list() == []  # and nothing is half-recorded
    disk.free()
    s.invoke("email.send", {"n": 100, "pad": PAD}, lambda a: ran.append(100))  # same Guard, no restart
    bodies = _verified(guard, s.session_id)
    assert _executed(bodies) == ran  # everything that ran is recorded, in order; nothing else ran
    assert ran[-1] == 100 and guard.store.inflight_list() == []


def test_an_action_that_ran_as_the_disk_filled_is_recorded_once_space_returns(make_guard: Callable[..., Any],
                                                                              disk: SmallDisk) -> None:
    guard = make_guard(POLICY, store=f"sqlite:///{disk.root / 'a.db'}")
    s = guard.session(identity=ALICE)
    s.invoke("email.send", {"n": 0}, lambda a: "first")

    def fills_the_disk(args: dict[str, Any]) -> str:  # the disk fills while the tool runs
        disk.fill()
        return "sent " + PAD * 20  # an output the full disk cannot take

    with pytest.raises(StoreError, match="full"):  # it ran; the caller learns its record failed
        s.invoke("email.send", {"n": 1}, fills_the_disk)
    (left,) = guard.store.inflight_list()  # its action_requested entry is durable, its outcome not yet
    ran: list[int] = []
    with pytest.raises(ActionDenied) as info:  # nothing new runs while an executed action is unrecorded
        s.invoke("email.send", {"n": 2}, lambda a: ran.append(2))
    assert "could not be recorded yet" in info.value.decision.reason and ran == []
    disk.free()
    s.invoke("email.send", {"n": 3}, lambda a: ran.append(3))  # service resumes by itself
    assert ran == [3] and guard.store.inflight_list() == []
    bodies = _verified(guard, s.session_id)
    late = [b for b in bodies if b["action"]["action_id"] == left.action_id]
    assert len(late) == 1 and late[0]["enforcement"]["executed"] is True  # its one receipt: ran, succeeded
    assert late[0]["execution"]["success"] is True and late[0]["execution"]["output_hash"]
    assert _executed(bodies) == [0, 1, 3]


def test_the_lease_timer_records_a_refused_outcome_without_any_new_call(make_guard: Callable[..., Any],
                                                                        disk: SmallDisk) -> None:
    guard = make_guard(POLICY, store=f"sqlite:///{disk.root / 'a.db'}", recovery_lease=0.3)
    s = guard.session(identity=ALICE)
    with pytest.raises(StoreError):
        s.invoke("email.send", {"n": 1}, lambda a: (disk.fill(), "sent " + PAD * 20)[1])
    (left,) = guard.store.inflight_list()
    disk.free()
    # no call: the owner lease's timer (every third of recovery_lease) writes the record
    wait_for(lambda: guard.store.inflight_list() == [])
    (body,) = [b for b in _verified(guard, s.session_id) if b["action"]["action_id"] == left.action_id]
    assert body["enforcement"]["executed"] is True and body["execution"]["success"] is True


def test_a_telemetry_file_on_a_full_disk_never_blocks_decisions_and_catches_up(make_guard: Callable[..., Any],
                                                                               disk: SmallDisk) -> None:
    out = disk.root / "events.jsonl"
    guard = make_guard(POLICY, telemetry={"sinks": [{"name": "siem", "type": "file", "options": {"path": str(out)}}],
                                          "poll_interval": 0.05})
    s = guard.session(identity=ALICE)
    s.invoke("email.send", {"n": 0}, lambda a: "ok")
    wait_for(lambda: out.exists() and out.stat().st_size > 0)
    disk.fill()
    ran: list[int] = []
    for n in range(1, 6):  # the sink cannot write a byte: decisions go on (the store is elsewhere)
        s.invoke("email.send", {"n": n, "pad": PAD}, lambda a, n=n: ran.append(n))
    with pytest.raises(ActionDenied):
        s.invoke("shell", {"cmd": "id"}, lambda a: ran.append(-1))
    assert ran == [1, 2, 3, 4, 5]
    status = guard.telemetry.status["siem"]
    # the exporter retries (woken here rather than after its backoff) and reports the sink degraded
    wait_for(lambda: guard.telemetry.wake() or status.degraded)
    assert "No space left" in str(status.last_error)
    disk.free()
    guard.telemetry.wake()

    def caught_up() -> bool:
        _n, _low, top = guard.store.telemetry_span()
        return guard.store.telemetry_cursor("siem") == top

    wait_for(caught_up)
    events = [json.loads(line) for line in out.read_text().splitlines()]  # no line split by the full disk
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))  # none written twice by the retries
    assert len(ids) == guard.store.telemetry_span()[2]  # every spooled event, exactly once
    decided = [e for e in events if e["type"] == "action.executed"]
    assert len(decided) == 6  # n = 0..5, all delivered after the disk had room again
    assert any(e["type"] == "telemetry.degraded" for e in events)  # the SIEM learns of the gap too
    assert not status.degraded and status.failures_in_a_row == 0


def test_a_session_closed_after_space_returns_records_the_outcome_before_its_end(
        make_guard: Callable[..., Any], disk: SmallDisk) -> None:
    guard = make_guard(POLICY, store=f"sqlite:///{disk.root / 'a.db'}")
    s = guard.session(identity=ALICE)
    with pytest.raises(StoreError):
        s.invoke("email.send", {"n": 1}, lambda a: (disk.fill(), "sent " + PAD * 20)[1])
    disk.free()
    s.close()
    kinds = [r.kind for r in guard.store.read_log(s.session_id)]
    assert kinds[-3:] == ["action_requested", "action_outcome", "session_end"]
    (body,) = _verified(guard, s.session_id)
    assert body["enforcement"]["executed"] is True and guard.store.inflight_list() == []
