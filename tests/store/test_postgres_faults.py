"""PostgreSQL stopped and started again mid-run (issue 8, "fail closed under faults"), on a private server
(tests/pg_support.PrivateCluster) so the shared one is never touched: calls are refused and never executed
while it is down, and service resumes by itself when it is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from tests.pg_support import PrivateCluster

ALICE = Identity(human="alice@company.com", agent="ops-agent")
POLICY = 'policy: {id: faults, version: "1", default: ALLOW}\nrules:\n  - id: no-shell\n    match: {tool: shell}\n' \
         '    action: DENY\n'


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    c = PrivateCluster()
    yield c
    c.close()


def test_a_stopped_server_refuses_calls_and_service_resumes_when_it_is_back(make_guard: Callable[..., Any],
                                                                            cluster: PrivateCluster) -> None:
    from aarmor.context import check_chain

    guard = make_guard(POLICY, store=cluster.url)
    ran: list[int] = []
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"n": 1}, lambda a: ran.append(1))
        cluster.stop()
        for n in (2, 3):  # the first finds the connection dead, the next cannot reconnect
            with pytest.raises(ActionDenied) as info:
                s.invoke("email.send", {"n": n}, lambda a, n=n: ran.append(n))
            assert "StoreError" in info.value.decision.reason
        cluster.start()
        s.invoke("email.send", {"n": 4}, lambda a: ran.append(4))
    assert ran == [1, 4]  # nothing ran while the store could not record it
    receipts = [r.body for r in guard.store.read_receipts(s.session_id)]
    assert receipts[0]["enforcement"]["result"] == "ALLOW" and receipts[-1]["enforcement"]["executed"]
    assert check_chain(list(guard.store.read_log(s.session_id)), session_id=s.session_id).verified


def test_a_paused_server_makes_calls_fail_within_the_timeout_not_hang(make_guard: Callable[..., Any],
                                                                      cluster: PrivateCluster) -> None:
    """SIGSTOP on every server process: the kernel still acknowledges TCP, so only aarmor's watchdog can end
    the wait (store URL option `aarmor_timeout`). The call is refused; after SIGCONT service resumes."""
    import os
    import signal

    guard = make_guard(POLICY, store=cluster.url + "?aarmor_timeout=1.5")
    ran: list[int] = []
    with guard.session(identity=ALICE) as s:
        s.invoke("email.send", {"n": 1}, lambda a: ran.append(1))
        pids = cluster.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(ActionDenied) as info:
                s.invoke("email.send", {"n": 2}, lambda a: ran.append(2))
            assert "StoreError" in info.value.decision.reason
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        s.invoke("email.send", {"n": 3}, lambda a: ran.append(3))
    assert ran == [1, 3]
