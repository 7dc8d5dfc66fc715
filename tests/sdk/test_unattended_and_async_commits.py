"""Two things about how a call ends without anyone waiting on it:

- `Guard.open(unattended=True)`: nobody will approve or resolve (offline runs, benchmarks), so a STEP_UP or
  DEFER ends at once, not executed, as `ActionDenied` whose decision keeps STEP_UP or DEFER; the receipt
  says so. Without it, the same call waits (and times out as DENY).
- `session.ainvoke` commits in a worker thread while other async calls are in flight (alone, inline); a
  caller cancelled while a commit is under way still gets its call recorded to the end, and the event
  loop keeps serving other calls meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import load_config
from aarmor.errors import ConfigError
from aarmor.model import DecisionResult as D

POLICY = """
policy: {id: waits, version: "1", default: ALLOW}
rules:
  - id: transfers-need-a-human
    priority: 20
    match: {tool: transfer}
    action: STEP_UP
    approvers: [finance]
    timeout: 2
  - id: deploys-need-a-ticket
    priority: 10
    match: {tool: deploy}
    action: DEFER
    context_needed: [change_ticket]
    timeout: 2
"""

ALICE = Identity(human="alice@company.com")


def _receipt(guard: Any, receipt_id: str) -> dict[str, Any]:
    rec = guard.store.get_receipt(receipt_id)
    assert rec is not None
    body: dict[str, Any] = rec.body
    return body


@pytest.mark.parametrize(("tool", "expected"), [("transfer", D.STEP_UP), ("deploy", D.DEFER)])
def test_unattended_ends_step_up_and_defer_at_once_keeping_the_decision(
        make_guard: Callable[..., Any], tool: str, expected: D) -> None:
    guard = make_guard(POLICY.replace("timeout: 2", "timeout: 60"), unattended=True)
    ran: list[Any] = []
    with guard.session(identity=ALICE, original_request="pay the invoice") as s:
        t0 = time.monotonic()
        with pytest.raises(ActionDenied) as denied:
            s.invoke(tool, {"amount": 10}, ran.append)
        assert time.monotonic() - t0 < 30, "an unattended call must not wait for its 60 s timeout"
        assert denied.value.decision.result is expected
        assert denied.value.decision.reason.startswith(f"unattended: {expected.value} not waited for")
        body = _receipt(guard, denied.value.receipt_id)
        assert body["enforcement"]["result"] == expected.value
        assert body["enforcement"]["executed"] is False
        assert body["execution"] is None
        # nothing is left pending for an approver or resolver
        assert guard.store.pending_list(status="pending") == []
        assert s.invoke("read", {}, lambda a: "ok") == "ok"  # ALLOW still runs
    assert ran == []


def test_unattended_async_path_too(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY, unattended=True)

    async def main() -> ActionDenied:
        with guard.session(identity=ALICE) as s:
            with pytest.raises(ActionDenied) as denied:
                await s.ainvoke("transfer", {"amount": 10}, lambda a: "sent")
            return denied.value

    assert asyncio.run(main()).decision.result is D.STEP_UP


def test_attended_is_the_default_and_waits(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY.replace("timeout: 2", "timeout: 0.3"))
    with guard.session(identity=ALICE) as s, pytest.raises(ActionDenied) as denied:
        s.invoke("transfer", {"amount": 10}, lambda a: "sent")
    assert denied.value.decision.result is D.DENY  # the timeout became a DENY


def test_unattended_must_be_a_boolean(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="unattended"):
        load_config(store=f"sqlite:///{tmp_path / 'a.db'}", unattended="yes")


class _StalledCommits:
    """Hold the store's next commit until `release()`: a store slow to fsync, not a fake one (the real
    write follows)."""

    def __init__(self, store: Any) -> None:
        self.entered, self._gate = threading.Event(), threading.Event()
        real = store.append_all

        def stalled(*args: Any, **kwargs: Any) -> Any:
            if not self._gate.is_set():
                self.entered.set()
                assert self._gate.wait(5), "the test never released the commit"
            return real(*args, **kwargs)

        store.append_all = stalled

    def release(self) -> None:
        self._gate.set()


async def _held_call(s: Any) -> asyncio.Future[Any]:
    """Another async call in flight (a STEP_UP waiting for an approver), so commits go to a thread."""
    held = asyncio.ensure_future(s.ainvoke("transfer", {"amount": 1}, lambda a: "sent"))
    await asyncio.sleep(0.2)
    assert not held.done()
    return held


async def _drop(held: asyncio.Future[Any]) -> None:
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held


def test_a_caller_cancelled_during_the_commit_is_still_recorded(make_guard: Callable[..., Any]) -> None:
    """Cancel the awaiting task while its "requested" commit is held up in the store: the commit ends,
    the call is recorded as a DENY with its receipt, and the tool never runs."""
    guard = make_guard(POLICY.replace("timeout: 2", "timeout: 30"))
    ran: list[Any] = []

    async def main() -> str:
        with guard.session(identity=ALICE) as s:
            held = await _held_call(s)
            stalled = _StalledCommits(guard.store)
            task = asyncio.ensure_future(s.ainvoke("read", {"q": 1}, ran.append))
            while not stalled.entered.is_set():  # the loop is free while the commit is held up
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.sleep(0.05)
            assert not task.done(), "the cancellation must wait for the commit under way"
            stalled.release()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _drop(held)
            return s.session_id

    sid = asyncio.run(main())
    assert ran == []
    receipts = [r for r in guard.store.read_receipts(sid) if r.tool == "read"]
    assert len(receipts) == 1
    enforcement = receipts[0].body["enforcement"]
    assert (enforcement["result"], enforcement["executed"]) == ("DENY", False)
    assert "cancelled by the caller before the decision was enforced" in enforcement["reason"]


def test_commits_do_not_hold_up_other_calls(make_guard: Callable[..., Any]) -> None:
    """While one call's commit is stuck, other coroutines on the loop keep running."""
    guard = make_guard(POLICY.replace("timeout: 2", "timeout: 30"))

    async def main() -> int:
        with guard.session(identity=ALICE) as s:
            held = await _held_call(s)
            stalled = _StalledCommits(guard.store)
            task = asyncio.ensure_future(s.ainvoke("read", {}, lambda a: "done"))
            beats = 0
            for _ in range(20):
                await asyncio.sleep(0.005)
                beats += 1
            assert stalled.entered.is_set() and not task.done()
            stalled.release()
            assert await task == "done"
            await _drop(held)
            return beats

    assert asyncio.run(main()) == 20


def test_a_lone_async_call_commits_inline(make_guard: Callable[..., Any]) -> None:
    """Alone, the commit runs on the caller's thread: no hop, nobody to stall."""
    guard = make_guard(POLICY)
    threads: list[int] = []
    real = guard.store.append_all

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    async def main() -> int:
        with guard.session(identity=ALICE) as s:
            guard.store.append_all = spy
            assert await s.ainvoke("read", {}, lambda a: "done") == "done"
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[:2] == [loop_thread, loop_thread]
