"""Crash recovery for actions (docs/durability.md): nothing mediated goes missing when a process dies.

Every action whose `action_requested` entry commits gets an in-flight row in the same transaction, naming
its owner (the Guard that mediates it); the transaction that records its outcome removes the row
(`Store.append_all`). Each Guard keeps an owner lease alive in the store from a background thread
(`OwnerLease`). A row whose owner's lease ran out belongs to a process that died: `recover_actions`
claims it by compare-and-set (one process wins) and writes the action's outcome entry and receipt with
outcome "unknown: process ended". A live process's in-flight actions are never touched, and an action a
process still waits on for a human or more context (a pending approval or deferral) is left to
`Guard.recover_abandoned`, which knows it did not run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from aarmor.errors import ChainError, StoreError
from aarmor.mediator import Mediator, SessionState
from aarmor.model import Identity
from aarmor.store import LogRecord, Store

__all__ = ["OwnerLease", "new_owner", "recover_actions"]

log = logging.getLogger("aarmor.recovery")

#: attempts to append a recovered outcome when a live writer keeps moving the session's chain
_ATTEMPTS = 5


def new_owner() -> str:
    """A Guard's owner id: host, process id and a random part (a restarted pid is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class OwnerLease:
    """Keeps `owner` alive in the store: renewed every third of `seconds` by a daemon thread.

    A renewal that fails is logged and retried at the next tick; if the store stays unreachable for a
    whole lease, other processes may take this process for dead and end its in-flight actions, and the
    outcomes this process writes afterwards are refused (`StoreError`), never written twice.
    """

    def __init__(self, store: Store, owner: str, seconds: float,
                 on_tick: Callable[[], object] | None = None) -> None:
        self._store = store
        self.owner = owner
        self._seconds = seconds
        #: run after each renewal (the Guard writes the records the store refused earlier)
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the lease (raises StoreError if the store cannot), then keep renewing it."""
        self.renew()
        self._thread = threading.Thread(target=self._run, name="aarmor-owner-lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        # the store's lease clock, not ours: a wall clock that steps must not make us look dead (or alive)
        self._store.owner_renew(self.owner, self._seconds)

    def _run(self) -> None:
        # `Event.wait` measures on the monotonic clock: a wall-clock step neither delays nor hurries renewals
        while not self._stop.wait(self._seconds / 3):
            try:
                self.renew()
            except Exception:
                log.exception("could not renew the owner lease of %s", self.owner)
            if self._on_tick is not None:
                try:
                    self._on_tick()
                except Exception:
                    log.exception("owner lease tick of %s failed", self.owner)

    def close(self) -> None:
        """Stop renewing and give the lease up: what is left in flight is recoverable at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self._store.owner_release(self.owner)
        except Exception:  # the lease then simply runs out
            log.exception("could not release the owner lease of %s", self.owner)


def recover_actions(store: Store, mediator: Mediator, owner: str,
                    state: Callable[[str, Identity], SessionState]) -> list[str]:
    """End every action left in flight by a dead process with an "unknown: process ended" receipt.

    Safe from several processes at once and while other processes mediate (see the module docstring).
    Returns the receipt ids written; an action that cannot be recovered now is logged and left for the
    next run.
    """
    alive = store.owners_alive()  # judged by the store's lease clock (docs/durability.md "Clock jumps")
    waiting = {(p.session_id, p.action_id) for status in ("pending", "approved")
               for p in store.pending_list(status=status)}
    done: list[str] = []
    for row in store.inflight_list():
        if row.owner == owner or row.owner in alive:
            continue  # ours, or its process is alive (renewed its lease moments ago)
        if (row.session_id, row.action_id) in waiting:
            continue  # waits for a human or context: `recover_abandoned` ends it once its lease runs out
        if not store.inflight_claim(row.session_id, row.action_id, row.owner):
            continue  # another process recovers it
        try:
            done.append(_close(store, mediator, owner, state, row.session_id, row.action_id, row.log_seq,
                               row.owner))
        except Exception:
            log.exception("could not record the end of action %s of session %s (owner %s)", row.action_id,
                          row.session_id, row.owner)
    return done


def _close(store: Store, mediator: Mediator, owner: str, state: Callable[[str, Identity], SessionState],
           sid: str, action_id: str, log_seq: int, dead: str) -> str:
    """Append the recovered outcome and receipt to the session's chains, from a fresh head each attempt
    (a live process may be appending to the same session: the store refuses a stale head)."""
    for attempt in range(_ATTEMPTS):
        requested = _requested(store, sid, action_id, log_seq)
        st = state(sid, Identity.from_json(requested.body["action"]["identity"]))
        try:
            return mediator.close_interrupted(st, requested, owner=dead, recovered_by=owner)
        except ChainError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _requested(store: Store, sid: str, action_id: str, log_seq: int) -> LogRecord:
    rec = next((r for r in store.read_log(sid) if r.seq == log_seq), None)
    if rec is None or rec.kind != "action_requested" or rec.body["action"].get("action_id") != action_id:
        raise StoreError(f"session `{sid}` has no action_requested entry of action `{action_id}` at seq "
                         f"{log_seq}, where its in-flight row points")
    return rec
