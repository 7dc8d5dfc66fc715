"""Nothing lost (issue 8): actions of a process killed with SIGKILL end with exactly one receipt.

Real processes (`crash_worker.py`) mediate calls on one SQLite file and are killed at random moments; a
Guard opened afterwards recovers what they left in flight. Every chain verifies, every requested action
has exactly one receipt (the recovered ones say "unknown: process ended"), and a live process's in-flight
actions are never ended by another process's recovery.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor import Guard
from aarmor.context import check_chain, unresolved_actions
from aarmor.receipts import verify_receipts
from aarmor.telemetry.events import project
from tests.durability import crash_worker
from tests.pg_support import fresh_database

WORKER = str(Path(__file__).with_name("crash_worker.py"))


@pytest.fixture(params=["sqlite", "postgresql"])
def home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The workers' home; with `postgresql`, their store is a fresh database on the real server (the workers
    inherit AARMOR_CRASH_STORE)."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            monkeypatch.setenv("AARMOR_CRASH_STORE", stack.enter_context(fresh_database()))
        (tmp_path / "policy.yaml").write_text(crash_worker.POLICY)
        crash_worker.open_guard(tmp_path).close()  # the key and the store exist before any worker starts
        yield tmp_path


def _start(home: Path, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, WORKER, str(home), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _expect(proc, "ready")
    return proc


def _expect(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()
        raise AssertionError(f"worker said `{got}`, expected `{line}`: {proc.communicate()[1]}")


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _after_lease() -> None:
    time.sleep(crash_worker.LEASE + 0.3)  # the dead owner's lease runs out


def _check_nothing_lost(guard: Guard, sid: str) -> list[dict[str, Any]]:
    """Every check of the issue on one session; returns the recovered receipts."""
    log = list(guard.store.read_log(sid))
    assert not check_chain(log, session_id=sid).failures
    assert unresolved_actions(log) == ()
    requested = Counter(r.body["action"]["action_id"] for r in log if r.kind == "action_requested")
    outcomes = Counter(r.body["action_id"] for r in log if r.kind == "action_outcome")
    assert set(requested.values()) == {1} and outcomes == requested  # one outcome each, none twice
    bodies = [r.body for r in guard.store.read_receipts(sid)]
    report = verify_receipts(bodies, guard.keyring.public_keys())
    assert report.ok, report.failures
    per_action = Counter(b["action"]["action_id"] for b in bodies)
    assert per_action == requested  # exactly one final receipt per requested action, no duplicate
    assert len({b["receipt_id"] for b in bodies}) == len(bodies)
    recovered = [b for b in bodies if b["enforcement"]["executed"] == "unknown"]
    recovered_log = {r.body["action_id"]: r.body for r in log
                     if r.kind == "action_outcome" and r.body.get("recovered")}
    for b in recovered:
        assert b["error"] == {"class": "ProcessEnded", "message": "unknown: process ended"}
        assert b["execution"]["success"] is None and b["execution"]["executed"] == "unknown"
        assert b["enforcement"]["result"] == b["decision"]["result"]  # the decision that was enforced
        who = b["enforcement"]["recovered"]
        assert who["owner"] != who["recovered_by"]  # a process never recovers its own live actions
        body = recovered_log[b["action"]["action_id"]]
        assert body["executed"] is None and body["success"] is None
    assert len(recovered_log) == len(recovered)
    return recovered


def test_kill_9_during_thousands_of_calls_loses_nothing(home: Path) -> None:
    rng = random.Random(8)
    for _ in range(5):
        proc = _start(home, "churn")
        time.sleep(rng.uniform(0.8, 1.6))
        _kill(proc)
    _after_lease()
    guard = crash_worker.open_guard(home)  # its start-up recovery ends what the last worker left
    try:
        assert guard.store.inflight_list() == []
        recovered, total = [], 0
        for sid in crash_worker.SESSIONS:
            recovered += _check_nothing_lost(guard, sid)
            total += sum(1 for r in guard.store.read_log(sid) if r.kind == "action_requested")
        assert total >= 1000, f"only {total} calls were mediated"
        assert recovered, "no kill landed while an action was in flight"
        results = {b["decision"]["result"] for b in guard.store.read_receipts() for b in [b.body]}
        assert {"ALLOW", "DENY", "MODIFY"} <= results
        assert guard.recover_actions() == []  # recovered once, never twice
    finally:
        guard.close()


def test_recovery_leaves_a_live_process_s_action_alone_and_ends_a_dead_one_s(home: Path) -> None:
    proc = _start(home, "block")
    try:
        _expect(proc, "running")  # the tool runs: its action is in flight in a live process
        other = crash_worker.open_guard(home)
        try:
            _after_lease()  # longer than a lease: the live process keeps renewing its own
            assert other.recover_actions() == []
            (row,) = other.store.inflight_list()
            assert row.session_id == "sess_block" and row.owner != other.owner
            assert list(other.store.read_receipts("sess_block")) == []
            _kill(proc)  # now it dies with the tool running
            _after_lease()
            (rid,) = other.recover_actions()
            assert other.recover_actions() == []
            (rct,) = other.store.read_receipts("sess_block")
            assert rct.receipt_id == rid and rct.body["enforcement"]["recovered"]["owner"] == row.owner
            assert rct.body["enforcement"]["recovered"]["recovered_by"] == other.owner
            assert _check_nothing_lost(other, "sess_block") == [rct.body]
            outcome = list(other.store.read_log("sess_block"))[-1]
            (event,) = project([outcome], [rct])  # telemetry: a failed action whose execution is unknown
            assert event.type == "action.failed" and event.severity == "medium"
            assert event.execution is not None and event.execution["executed"] is None
            assert event.execution["error"] == "aarmor.errors.ProcessEnded"
        finally:
            other.close()
    finally:
        if proc.poll() is None:
            _kill(proc)


def test_a_live_process_finishes_its_action_while_others_recover(home: Path) -> None:
    proc = _start(home, "block")
    try:
        _expect(proc, "running")
        with crash_worker.open_guard(home) as other:  # start-up recovery while the action is in flight
            _after_lease()
            assert other.recover_actions() == []
        (home / "release").write_text("go")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    finally:
        if proc.poll() is None:
            _kill(proc)
    with crash_worker.open_guard(home) as guard:
        (rct,) = guard.store.read_receipts("sess_block")
        assert rct.body["enforcement"] == {**rct.body["enforcement"], "executed": True, "result": "ALLOW"}
        assert "recovered" not in rct.body["enforcement"]
        _check_nothing_lost(guard, "sess_block")
        assert guard.store.inflight_list() == []
