"""What approvals and deferrals share: waiting for an item in the store that another process may change.

A waiting caller owns its item (`owner` = this process) and renews a lease on it; a decision taken in
this process wakes the waiter at once (`Wakeups`), one taken in another process (the CLI, a second
server) is seen by polling the store every `poll_interval`. An item whose lease ran out belongs to a
caller that died; `Guard.open` ends such items as DENY (see `Mediator.recover_abandoned`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from aarmor.canonical import format_ts
from aarmor.store import PendingRecord, Store

__all__ = ["OWNER", "Overdue", "Wakeups", "parse_ts", "renew_lease"]

#: this process, as the owner of the items its callers wait on
OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Overdue:
    """Each waited-for item's timeout on this process's monotonic clock, next to its stored wall-clock
    deadline: a wall clock stepped backwards must not stretch a wait beyond its timeout (a step forwards
    ends it early, as a DENY: fail closed). docs/durability.md "Clock jumps"."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, item_id: str, seconds: float) -> None:
        with self._lock:
            self._until[item_id] = time.monotonic() + max(0.0, seconds)

    def due(self, item_id: str) -> bool:
        with self._lock:
            until = self._until.get(item_id)
        return until is not None and time.monotonic() >= until

    def drop(self, item_id: str) -> None:
        with self._lock:
            self._until.pop(item_id, None)


class Wakeups:
    """One event per waited-for item id; `wake` sets it, `wait` sleeps until it is set or `seconds` pass."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def register(self, item_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(item_id, threading.Event())

    def unregister(self, item_id: str) -> None:
        with self._lock:
            self._events.pop(item_id, None)

    def wake(self, item_id: str) -> None:
        with self._lock:
            ev = self._events.get(item_id)
        if ev is not None:
            ev.set()

    def wake_all(self) -> None:
        with self._lock:
            events = list(self._events.values())
        for ev in events:
            ev.set()

    @staticmethod
    def wait(ev: threading.Event, seconds: float) -> None:
        ev.wait(max(0.0, seconds))
        ev.clear()

    @staticmethod
    async def wait_async(ev: threading.Event, seconds: float) -> None:
        # the event loop must not block: sleep in short steps and look at the event between them
        deadline = time.monotonic() + max(0.0, seconds)
        while not ev.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.02))
        ev.clear()


def renew_lease(store: Store, rec: PendingRecord, *, now: datetime, lease: float) -> PendingRecord:
    """Extend our claim when a third of the lease is used; a failed compare-and-set just re-reads."""
    if parse_ts(rec.lease_until) - now > timedelta(seconds=lease * 2 / 3):
        return rec
    new = store.pending_update(rec.item_id, rec.version, lease_until=format_ts(now + timedelta(seconds=lease)))
    if new is not None:
        return new
    fresh = store.pending_get(rec.item_id)
    return fresh if fresh is not None else rec


def sleep_for(deadline: datetime, now: datetime, poll: float) -> float:
    return max(0.0, min(poll, (deadline - now).total_seconds()))


ClockFn = Callable[[], datetime]
