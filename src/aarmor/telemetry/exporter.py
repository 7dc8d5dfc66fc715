"""The exporter: from the store's spool to each sink, in order, without loss, never in a decision's way.

Decisions only write the spool (in their own commit, `Store.telemetry_projector`). Here one thread per sink:

    loop: read up to `batch_size` events after the sink's cursor -> keep those its filter passes
          -> sink.send(batch) -> the cursor moves past the batch (durably, in the store)
    a failed send: the cursor stays; retried with exponential backoff (0.5 s doubling to 30 s); after
          `DEGRADED_AFTER` failures in a row one `telemetry.degraded` alert is spooled (high severity;
          the other sinks deliver it), and delivery resumes in order when the sink is back

Between passes the spool is trimmed below the slowest sink's cursor, and bounded: above `max_events` the
oldest events are dropped (every sink's cursor moves past them) and one `telemetry.dropped` alert says how
many and which sequence numbers. Nothing leaves the spool unaccounted for: an event is either delivered to
a sink, filtered out by its configuration, or counted in a `telemetry.dropped` alert.

Cursors are per sink name: a sink renamed in the configuration starts from the oldest spooled event.
Several processes that export the same sink from one store each deliver; receivers drop the duplicates by
`event_id` (the cluster issue adds a lease).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aarmor.canonical import format_ts
from aarmor.telemetry import Sink, SinkRejected
from aarmor.telemetry.events import TelemetryEvent, severity_at_least, system_event

__all__ = ["DEGRADED_AFTER", "EventFilter", "Exporter", "SinkStatus"]

log = logging.getLogger("aarmor.telemetry")

DEGRADED_AFTER = 3
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a sink gets. Empty tuples: no restriction. `identities` matches the human, service or
    agent; `decisions` the decision result (DEFER included); events without a decision or tool pass a
    `decisions`/`tools` filter only when it is empty."""

    types: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()
    decisions: frozenset[str] = frozenset()
    identities: frozenset[str] = frozenset()
    min_severity: str = "info"

    def __call__(self, ev: TelemetryEvent) -> bool:
        if self.types and ev.type not in self.types:
            return False
        if not severity_at_least(ev.severity, self.min_severity):
            return False
        if self.tools and (ev.action or {}).get("tool") not in self.tools:
            return False
        if self.decisions and (ev.decision or {}).get("result") not in self.decisions:
            return False
        if self.identities:
            ident = ev.identity or {}
            if not {ident.get("human"), ident.get("service"), ident.get("agent")} & self.identities:
                return False
        return True


@dataclass
class SinkStatus:
    name: str
    delivered: int = 0
    filtered: int = 0
    failures_in_a_row: int = 0
    #: events the sink refused for good (set aside, each counted in a `telemetry.dropped` alert)
    rejected: int = 0
    last_error: str | None = None
    degraded: bool = False


class Exporter:
    """Runs the sinks' threads over one store. `start()`, then `close()` (a last delivery pass)."""

    def __init__(self, store: Any, sinks: Sequence[tuple[Sink, EventFilter]], *, batch_size: int = 500,
                 poll_interval: float = 0.2, max_events: int = 100_000, clock: Callable[[], Any] | None = None,
                 on_depth: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_events = max_events
        self._clock = clock
        self._on_depth = on_depth
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._maintenance_lock = threading.Lock()
        self.status = {sink.name: SinkStatus(sink.name) for sink, _ in self.sinks}
        #: events dropped because the spool was full, since start
        self.dropped = 0

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        for sink, flt in self.sinks:
            t = threading.Thread(target=self._run, args=(sink, flt), name=f"aarmor-telemetry-{sink.name}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """New events were spooled: look now rather than at the next poll."""
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads after one last pass each (bounded by `timeout`), then close the sinks."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for sink, _ in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing telemetry sink %s", sink.name)

    # --- one sink's loop --------------------------------------------------------------------------------
    def _run(self, sink: Sink, flt: EventFilter) -> None:
        backoff = 0.0
        while True:
            stopping = self._stop.is_set()
            try:
                moved = self.deliver_once(sink, flt)
                backoff = 0.0
            except Exception as exc:  # the sink failed: keep the cursor, retry later
                moved = False
                backoff = min(_BACKOFF_MAX, backoff * 2 or _BACKOFF_FIRST)
                self._failed(sink, exc)
            if stopping:
                return
            if moved:
                continue  # more may be waiting: no sleep between full batches
            self._maintain()
            self._wake.wait(backoff or self.poll_interval)
            self._wake.clear()

    def deliver_once(self, sink: Sink, flt: EventFilter) -> bool:
        """One batch for `sink`. Returns whether its cursor moved. Raises what the sink raised."""
        cursor = self.store.telemetry_cursor(sink.name)
        events = self.store.telemetry_read(cursor, self.batch_size)
        if not events:
            return False
        batch = [e for e in events if flt(e)]
        set_aside = 0
        if batch:
            try:
                sink.send(batch)
            except SinkRejected as exc:
                set_aside = self._one_by_one(sink, batch, exc)
        st = self.status[sink.name]
        st.delivered += len(batch) - set_aside
        st.filtered += len(events) - len(batch)
        if st.failures_in_a_row:
            log.info("telemetry sink %s delivers again after %d failures", sink.name, st.failures_in_a_row)
        st.failures_in_a_row, st.last_error, st.degraded = 0, None, False
        self.store.telemetry_set_cursor(sink.name, events[-1].seq or cursor)
        return True

    def _one_by_one(self, sink: Sink, batch: Sequence[TelemetryEvent], exc: SinkRejected) -> int:
        """A refused batch: each event alone; one refused alone is set aside (counted), the others delivered.
        A transport failure meanwhile raises: the cursor then stays before the event not yet delivered.
        Returns how many were set aside."""
        set_aside = 0
        for ev in batch:
            try:
                if len(batch) == 1:
                    raise exc  # the batch was this one event: it has been refused already
                sink.send([ev])
            except SinkRejected as refused:
                set_aside += 1
                self.status[sink.name].rejected += 1
                log.error("telemetry sink %s refused event %s: %s", sink.name, ev.event_id, refused)
                self._spool_alert("telemetry.dropped", "high", {
                    "kind": "rejected", "message": f"telemetry sink `{sink.name}` refused event {ev.event_id} "
                                                   f"({ev.type}) for good: {refused}",
                    "detail": {"sink": sink.name, "event_id": ev.event_id, "seq": ev.seq, "dropped": 1}})
            self.store.telemetry_set_cursor(sink.name, ev.seq or 0)
        return set_aside

    def _failed(self, sink: Sink, exc: Exception) -> None:
        st = self.status[sink.name]
        st.failures_in_a_row += 1
        st.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("telemetry sink %s failed (%d in a row): %s", sink.name, st.failures_in_a_row, st.last_error)
        if st.failures_in_a_row == DEGRADED_AFTER and not st.degraded:
            st.degraded = True
            self._spool_alert("telemetry.degraded", "high", {
                "kind": "sink_degraded", "message": f"telemetry sink `{sink.name}` failed {DEGRADED_AFTER} times in "
                                                    f"a row; its events wait in the spool: {st.last_error}",
                "detail": {"sink": sink.name, "failures": st.failures_in_a_row}})

    # --- the spool: trim below the slowest cursor, bound its size ---------------------------------------
    def _maintain(self) -> None:
        if not self._maintenance_lock.acquire(blocking=False):
            return
        try:
            cursors = [self.store.telemetry_cursor(sink.name) for sink, _ in self.sinks]
            if cursors:
                self.store.telemetry_trim(min(cursors))
            count, low, _top = self.store.telemetry_span()
            if self._on_depth is not None:
                self._on_depth(count)
            if count > self.max_events:
                self._drop(count - self.max_events, low)
        except Exception:
            log.exception("telemetry spool maintenance failed")
        finally:
            self._maintenance_lock.release()

    def _drop(self, n: int, low: int) -> None:
        """Drop the `n` oldest events: every cursor moves past them, and one alert counts them."""
        victims = self.store.telemetry_read(low - 1, n)
        if not victims:
            return
        upto = victims[-1].seq or low
        for sink, _ in self.sinks:
            if self.store.telemetry_cursor(sink.name) < upto:
                self.store.telemetry_set_cursor(sink.name, upto)
        self.store.telemetry_trim(upto)
        self.dropped += len(victims)
        first = victims[0].seq
        log.error("telemetry spool full: dropped %d events (seq %s-%s)", len(victims), first, upto)
        self._spool_alert("telemetry.dropped", "high", {
            "kind": "spool_full", "message": f"the telemetry spool exceeded {self.max_events} events: the "
                                             f"{len(victims)} oldest were dropped undelivered",
            "detail": {"dropped": len(victims), "first_seq": first, "last_seq": upto,
                       "dropped_since_start": self.dropped}})

    def _spool_alert(self, type_: str, severity: str, alert: dict[str, Any]) -> None:
        now = format_ts(self._clock()) if self._clock else time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        try:
            self.store.telemetry_append([system_event(type_, time=now, severity=severity,
                                                      source=f"{alert['kind']}|{now}|{alert['detail']}", alert=alert)])
        except Exception:
            log.exception("could not spool the %s alert", type_)
