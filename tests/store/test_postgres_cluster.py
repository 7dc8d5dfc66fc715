"""Several processes on one PostgreSQL store (issue 8): the real server, real OS processes.

- A Guard on PostgreSQL runs the pipeline end to end; its receipts verify offline and its logs verify.
- Two processes appending to the SAME session at once keep one linear chain (advisory lock per session):
  every entry's seq is unique and consecutive, the chain verifies, every action has exactly one receipt.
- An approval granted by one process releases the call waiting in another (the desk polls the store).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import ApprovalsConfig
from tests.pg_support import fresh_database

POLICY = """
policy: {id: pg-cluster, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: no shell
  - id: big-payment
    match: {tool: payment, parameters: {amount: {gt: 1000}}}
    action: STEP_UP
    approvers: [carol@company.com]
    timeout: 30
    reason: big payments need carol
"""
ALICE = Identity(human="alice@company.com", agent="billing-agent")


@pytest.fixture
def pg() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_the_pipeline_on_postgresql_verifies(make_guard: Callable[..., Any], pg: str, tmp_path: Path) -> None:
    from aarmor.context import check_chain
    from aarmor.receipts import verify_receipts

    guard = make_guard(POLICY, store=pg)
    with guard.session(identity=ALICE, original_request="pay the invoice") as s:
        assert s.invoke("email.send", {"to": "bob@company.com"}, lambda a: "sent") == "sent"
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: "root")
    receipts = [r.body for r in guard.store.read_receipts(s.session_id)]
    assert [r["enforcement"]["result"] for r in receipts] == ["ALLOW", "DENY"]
    assert verify_receipts(receipts, guard.keyring.public_keys()).ok
    assert check_chain(list(guard.store.read_log(s.session_id)), session_id=s.session_id).verified


WORKER = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore")
    from aarmor import Guard, Identity
    from aarmor.config import load_config
    store, keys, policy, sid, n, tag = sys.argv[1:7]
    guard = Guard(load_config(store=store, keys=keys, policy=policy))
    s = guard.session(identity=Identity(human="alice@company.com", agent="w" + tag), session_id=sid)
    for i in range(int(n)):
        s.invoke("email.send", {"n": i, "worker": tag}, lambda a: "ok")
    guard.close()
    print("done", tag)
""")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_processes_appending_to_one_session_keep_one_linear_chain(make_guard: Callable[..., Any], pg: str,
                                                                      tmp_path: Path, backend: str) -> None:
    """Both commit to the same session: the store refuses a commit on a stale head, the loser catches up under
    the session's lock and commits on top; nothing is lost, forked or denied."""
    from aarmor.context import check_chain

    if backend == "sqlite":
        pg = f"sqlite:///{tmp_path / 'shared.db'}"

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    keys = tmp_path / "keys"
    guard = make_guard(POLICY, store=pg, keys=str(keys))
    sid = guard.session(identity=ALICE, original_request="send the notes").session_id  # left open: resumed below
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(worker), pg, str(keys), str(policy), sid, "60", tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    records = list(guard.store.read_log(sid))
    assert [r.seq for r in records] == list(range(len(records)))
    assert check_chain(records, session_id=sid).verified
    requested = [r.body["action"]["action_id"] for r in records if r.kind == "action_requested"]
    assert len(requested) == 120 and len(set(requested)) == 120
    receipts = list(guard.store.read_receipts(sid))
    assert sorted(r.action_id for r in receipts) == sorted(requested)  # exactly one receipt per action
    assert [r.seq for r in receipts] == list(range(len(receipts)))     # and one linear receipt chain


WAITER = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("ignore")
    from aarmor import Guard, Identity
    from aarmor.config import ApprovalsConfig, load_config
    store, keys, policy = sys.argv[1:4]
    guard = Guard(load_config(store=store, keys=keys, policy=policy,
                              approvals=ApprovalsConfig(poll_interval=0.05)))
    with guard.session(identity=Identity(human="alice@company.com")) as s:
        print(s.invoke("payment", {"to": "acme", "amount": 5000}, lambda a: "paid"), flush=True)
    guard.close()
""")


def test_an_approval_in_one_process_releases_the_call_waiting_in_another(make_guard: Callable[..., Any],
                                                                          pg: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    keys = tmp_path / "keys"
    guard = make_guard(POLICY, store=pg, keys=str(keys), approvals=ApprovalsConfig(poll_interval=0.05))
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER)
    proc = subprocess.Popen([sys.executable, str(waiter), pg, str(keys), str(policy)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not guard.approvals.list() and time.monotonic() < deadline:
            time.sleep(0.05)
        [item] = guard.approvals.list()
        guard.approvals.decide(item["id"], approver="carol@company.com", granted=True, reason="ok", channel="test")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.strip() == "paid", err[-3000:]
    [receipt] = [r.body for r in guard.store.read_receipts() if r.tool == "payment"]
    assert receipt["approval"]["granted"] is True and receipt["approval"]["approver"] == "carol@company.com"





def test_a_dropped_connection_refuses_the_call_and_service_resumes_by_itself(make_guard: Callable[..., Any],
                                                                               pg: str) -> None:
    """The server drops aarmor's connection (as on a restart): the call in flight is refused, never executed
    unrecorded; the next one finds a fresh connection."""
    import psycopg

    guard = make_guard(POLICY, store=pg)
    calls: list[int] = []
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"n": 1}, lambda a: calls.append(1))
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            # every connection of the store's pool (its database is this test's own)
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (pg.rsplit("/", 1)[1],))
        with pytest.raises(ActionDenied) as info:
            s.invoke("email.send", {"n": 2}, lambda a: calls.append(2))
        assert "StoreError" in info.value.decision.reason
        s.invoke("email.send", {"n": 3}, lambda a: calls.append(3))
    assert calls == [1, 3]  # the refused call never ran
    results = [r.body["enforcement"]["result"] for r in guard.store.read_receipts(s.session_id)]
    assert results[0] == "ALLOW" and results[-1] == "ALLOW"
