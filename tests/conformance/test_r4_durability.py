"""Pending approvals and deferrals survive the process: across processes, and after `kill -9`.

The waiting caller is a real separate Python process on the same SQLite store; it is killed with SIGKILL
while it waits. A later `Guard.open` ends its item as DENY with a receipt (never executed, never twice).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from aarmor import Guard
from aarmor.config import ApprovalsConfig, DeferralsConfig, load_config
from aarmor.context import check_chain
from aarmor.errors import Refused
from aarmor.receipts import verify_receipts
from aarmor.store.sqlite import SqliteStore

POLICY = """
policy: {id: durability-test, version: "1", default: ALLOW}
rules:
  - id: big-payment
    match: {tool: payment, operation: transfer}
    action: STEP_UP
    approvers: [finance-manager]
    timeout: 120
    reason: payments need finance
  - id: defer-rotation
    match: {tool: credentials, operation: rotate, context: {window: {ne: open}}}
    action: DEFER
    context_needed: [window]
    timeout: 120
    reason: waits for the window
"""

WAITER = textwrap.dedent("""
    import sys, warnings
    from aarmor import Guard, Identity
    from aarmor.config import ApprovalsConfig, DeferralsConfig, load_config
    home, tool, marker = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = load_config(policy=f"{home}/policy.yaml", store=f"sqlite:///{home}/a.db", keys=f"{home}/keys",
                      recovery_lease=1.0,  # its process is judged dead by its owner lease (docs/durability.md)
                      approvals=ApprovalsConfig(groups=(("finance-manager", ("carol@company.com",)),),
                                                poll_interval=0.05, lease_seconds=1.0),
                      deferrals=DeferralsConfig(poll_interval=0.05, lease_seconds=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard(cfg)
    def run(arguments):
        open(marker, "a").write("executed\\n")
        return "done"
    with guard.session(identity=Identity(human="alice@company.com", agent="agent-1")) as s:
        if tool == "payment":
            s.set_context("window", "closed", source="test")
        print(s.invoke(tool + (".transfer" if tool == "payment" else ".rotate"), {"amount": 5}, run), flush=True)
""")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _guard(tmp_path).close()  # create the key and the store before the waiter starts
    return tmp_path


def _guard(home: Path, **kw: Any) -> Guard:
    cfg = load_config(policy=str(home / "policy.yaml"), store=f"sqlite:///{home}/a.db", keys=str(home / "keys"),
                      approvals=ApprovalsConfig(groups=(("finance-manager", ("carol@company.com",)),),
                                                poll_interval=0.05, lease_seconds=1.0),
                      deferrals=DeferralsConfig(poll_interval=0.05, lease_seconds=1.0))
    return Guard(cfg, **kw)


def _waiter(home: Path, tool: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WAITER, str(home), tool, str(home / "marker")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL


def _pending(home: Path, kind: str, timeout: float = 30.0) -> dict[str, Any]:
    store = SqliteStore(home / "a.db")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = store.pending_list(kind=kind, status="pending")
            if items:
                return {"id": items[0].item_id, "session_id": items[0].session_id}
            time.sleep(0.05)
    finally:
        store.close()
    raise AssertionError(f"no pending {kind} appeared")


def _receipts(guard: Guard, sid: str) -> list[dict[str, Any]]:
    return [r.body for r in guard.store.read_receipts(sid)]


def _check_all_verifies(guard: Guard, sid: str) -> None:
    report = verify_receipts(_receipts(guard, sid), guard.keyring.public_keys())
    assert report.ok, report.failures
    assert not check_chain(list(guard.store.read_log(sid)), session_id=sid).failures


@pytest.mark.parametrize("tool,kind", [("payment", "approval"), ("credentials", "deferral")])
def test_killed_waiter_ends_as_deny_once(home: Path, tool: str, kind: str) -> None:
    proc = _waiter(home, tool)
    item = _pending(home, kind)
    _kill(proc)
    time.sleep(1.2)  # its lease runs out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = _guard(home)
    try:
        last = _receipts(guard, item["session_id"])[-1]
        assert last["enforcement"]["result"] == "DENY" and last["enforcement"]["executed"] is False
        assert "waiting caller ended" in last["enforcement"]["reason"]
        assert last["kind"] == "resolution" if kind == "deferral" else last["approval"]["granted"] is False
        assert guard.store.pending_get(item["id"]).status == "abandoned"  # type: ignore[union-attr]
        _check_all_verifies(guard, item["session_id"])
        desk = guard.approvals if kind == "approval" else guard.deferrals
        with pytest.raises(Refused) as late:
            if kind == "approval":
                desk.decide(item["id"], approver="carol@company.com", granted=True, reason="late", channel="t")
            else:
                desk.supply(item["id"], {"window": "open"}, by="ops", channel="t")
        assert late.value.code == "not_pending"
        count = len(_receipts(guard, item["session_id"]))
    finally:
        guard.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = _guard(home)
    try:
        assert again.recover_abandoned() == []
        assert len(_receipts(again, item["session_id"])) == count  # recovered once, never twice
    finally:
        again.close()
    assert not (home / "marker").exists()  # the tool never ran


def test_grant_after_the_caller_died_is_not_executed_after_restart(home: Path) -> None:
    proc = _waiter(home, "payment")
    item = _pending(home, "approval")
    _kill(proc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        approver = _guard(home, recover=False)
    approver.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="t")
    approver.close()
    time.sleep(1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = _guard(home)
    try:
        assert guard.store.pending_get(item["id"]).status == "abandoned"  # type: ignore[union-attr]
        assert _receipts(guard, item["session_id"])[-1]["enforcement"]["result"] == "DENY"
    finally:
        guard.close()
    assert not (home / "marker").exists()


def test_approval_from_another_process_releases_a_live_waiter(home: Path) -> None:
    proc = _waiter(home, "payment")
    try:
        item = _pending(home, "approval")
        time.sleep(1.5)  # longer than a lease: the live waiter keeps renewing it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = _guard(home)  # its start-up recovery must leave the live item alone
        try:
            assert other.store.pending_get(item["id"]).status == "pending"  # type: ignore[union-attr]
            other.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok",
                                   channel="other-process")
        finally:
            other.close()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            _kill(proc)
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    assert (home / "marker").read_text() == "executed\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = _guard(home)
    try:
        last = _receipts(guard, item["session_id"])[-1]
        assert last["approval"]["approver"] == "carol@company.com"
        assert last["enforcement"]["result"] == "ALLOW"
        _check_all_verifies(guard, item["session_id"])
        assert json.dumps(last)  # plain JSON
    finally:
        guard.close()
