"""The durable deferral service (AARM 2.6): suspended actions in the store, and the context that resolves them.

The mediator owns the loop (suspend, gather, re-evaluate with the PDP); this desk keeps the item and its
supplied context in the store, asks resolvers, and wakes the waiter when something changes:
- resolvers: Python callables registered on the guard (`guard.add_resolver`), and HTTP callbacks from
  config (POST the deferral view, answer `{"fields": {...}}`); each attempt is recorded on the item;
- people and other programs: `supply` (CLI `aarmor deferrals resolve`, HTTP, the page);
- the agent host: `Session.update_context(**fields)` writes the session context and calls `wake_session`.

Rules this module enforces:
- Supplied fields must be among the deferral's `context_needed` (with or without the `context.` prefix)
  and JSON values; anything else is `Refused("bad_field")`.
- Every status change is a compare-and-set; a resolved or expired item takes no more context.
- A timeout or a closed guard ends the item; nothing here decides ALLOW (the PDP does, in the mediator).
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from aarmor.canonical import format_ts, to_json
from aarmor.config import DeferralsConfig
from aarmor.deferrals import DeferralRequest, DeferralResolution
from aarmor.errors import InputError, NotFound, Refused
from aarmor.store import PendingRecord, Store
from aarmor.waiting import OWNER, ClockFn, Overdue, Wakeups, parse_ts, renew_lease, sleep_for

__all__ = ["DeferralDesk", "Resolver", "deferral_view"]

log = logging.getLogger("aarmor.deferrals")

#: a resolver gets the deferral view and returns context fields (or None / {} when it cannot help)
Resolver = Callable[[dict[str, Any]], Mapping[str, Any] | None]

PENDING, RESOLVED, EXPIRED, ABANDONED = "pending", "resolved", "expired", "abandoned"
_MAX_ATTEMPTS_KEPT = 50
#: seconds between rounds of asking the resolvers
RESOLVER_INTERVAL = 2.0


def _bare(name: str) -> str:
    return name.removeprefix("context.")


def deferral_view(rec: PendingRecord) -> dict[str, Any]:
    body, out = rec.body, rec.outcome or {}
    resolution = {k: out.get(k) for k in ("result", "reason", "method", "resolved_at", "resolver")} \
        if "result" in out else None
    return {
        "id": rec.item_id, "kind": "deferral", "status": rec.status, "session_id": rec.session_id,
        "action_id": rec.action_id, "created_at": rec.created_at, "deadline": rec.deadline,
        "reason": body.get("reason"), "trigger": body.get("trigger"),
        "context_needed": list(body.get("context_needed", [])), "depends_on": list(body.get("depends_on", [])),
        "cascade": body.get("cascade", 1),
        "supplied": {k: v.get("value") for k, v in body.get("supplied", {}).items()},
        "request": body.get("request", {}), "attempts": list(body.get("attempts", [])), "resolution": resolution,
    }


class DeferralDesk:
    """DEFER deferrals kept in the store. Built by `Guard`; reached as `guard.deferrals`."""

    def __init__(self, store: Store, config: DeferralsConfig, *, clock: ClockFn) -> None:
        self._store = store
        self._cfg = config
        self._clock = clock
        self._wake = Wakeups()
        self._overdue = Overdue()
        self._closing = threading.Event()
        self._resolvers: list[tuple[str, Resolver]] = [
            (f"http {r.url}", _http_resolver(r.url, r.timeout)) for r in config.resolvers]
        self._by_session: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._asked: dict[str, float] = {}
        self._pool: ThreadPoolExecutor | None = None

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def add_resolver(self, fn: Resolver, *, name: str | None = None) -> None:
        """Register a Python resolver; it is asked (in the waiting caller's thread) every few seconds."""
        if not callable(fn):
            raise InputError("a resolver must be callable")
        self._resolvers.append((name or str(getattr(fn, "__name__", "resolver")), fn))

    # --- the waiting side (driven by the mediator) ---------------------------------------------------
    def open(self, req: DeferralRequest, *, extra: Mapping[str, Any] | None = None) -> PendingRecord:
        now = self._clock()
        rec = PendingRecord(
            item_id=req.deferral_id, kind="deferral", session_id=req.action.session_id,
            action_id=req.action.action_id, status=PENDING, created_at=format_ts(req.deferred_at),
            deadline=format_ts(req.timeout_at), owner=OWNER,
            lease_until=format_ts(now + timedelta(seconds=self._cfg.lease_seconds)),
            body={"reason": req.reason, "trigger": req.trigger, "context_needed": list(req.context_needed),
                  "depends_on": list(req.depends_on), "cascade": req.cascade, "supplied": {}, "attempts": [],
                  "request": dict(req.view), "action": req.action.to_json(), "decision": req.decision.to_json(),
                  **(extra or {})},
        )
        self._store.pending_put(rec)
        self._overdue.start(rec.item_id, req.timeout)
        with self._lock:
            self._by_session.setdefault(rec.session_id, set()).add(rec.item_id)
        self._wake.register(rec.item_id)
        return rec

    def refresh(self, rec: PendingRecord) -> PendingRecord:
        """The item as stored now, after asking the resolvers if a round is due and renewing our lease."""
        fresh = self._store.pending_get(rec.item_id)
        if fresh is None:
            raise NotFound(f"deferral `{rec.item_id}` vanished from the store")
        if fresh.status == PENDING:
            fresh = self._ask_resolvers(fresh)
            fresh = renew_lease(self._store, fresh, now=self._clock(), lease=self._cfg.lease_seconds)
        return fresh

    def expired(self, rec: PendingRecord) -> bool:
        return self._closing.is_set() or self._clock() >= parse_ts(rec.deadline) or self._overdue.due(rec.item_id)

    def wait(self, rec: PendingRecord) -> None:
        ev = self._wake.register(rec.item_id)
        self._wake.wait(ev, sleep_for(parse_ts(rec.deadline), self._clock(), self._cfg.poll_interval))

    async def wait_async(self, rec: PendingRecord) -> None:
        ev = self._wake.register(rec.item_id)
        await self._wake.wait_async(ev, sleep_for(parse_ts(rec.deadline), self._clock(),
                                                  self._cfg.poll_interval))

    def finish(self, rec: PendingRecord, res: DeferralResolution) -> None:
        """Record the terminal state (resolved or expired). Retries the compare-and-set on a race."""
        status = EXPIRED if res.result == "TIMEOUT" else RESOLVED
        outcome = {"result": res.result, "reason": res.reason, "method": res.method,
                   "resolved_at": format_ts(res.resolved_at), "resolver": res.resolver}
        try:
            for _ in range(20):
                cur = self._store.pending_get(rec.item_id)
                if cur is None or cur.status != PENDING:
                    return
                if self._store.pending_update(rec.item_id, cur.version, status=status, outcome=outcome):
                    return
        finally:
            self._forget(rec)

    def _forget(self, rec: PendingRecord) -> None:
        self._wake.unregister(rec.item_id)
        self._overdue.drop(rec.item_id)
        with self._lock:
            self._by_session.get(rec.session_id, set()).discard(rec.item_id)
            self._asked.pop(rec.item_id, None)

    def wake_session(self, session_id: str) -> None:
        """Something in this session changed (new context, an action finished): re-check its deferrals."""
        with self._lock:
            ids = list(self._by_session.get(session_id, ()))
        for item_id in ids:
            self._wake.wake(item_id)

    def close(self) -> None:
        self._closing.set()
        self._wake.wake_all()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # --- resolvers ------------------------------------------------------------------------------------
    def _ask_resolvers(self, rec: PendingRecord) -> PendingRecord:
        """Start a round of resolver calls if one is due. They run on worker threads (an HTTP callback may
        take seconds; the waiting caller, perhaps an event loop, must not), supply what they find through
        the same path as people do, and wake the waiter."""
        if not self._resolvers or self._closing.is_set():
            return rec
        now_m = time.monotonic()
        with self._lock:
            last = self._asked.get(rec.item_id)
            if last is not None and now_m - last < RESOLVER_INTERVAL:
                return rec
            self._asked[rec.item_id] = now_m
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aarmor-resolver")
            pool = self._pool
        try:
            pool.submit(self._resolve_round, rec)
        except RuntimeError:  # the pool is shutting down (guard closing)
            pass
        return rec

    def _resolve_round(self, rec: PendingRecord) -> None:
        view = deferral_view(rec)
        for name, fn in self._resolvers:
            attempt: dict[str, Any] = {"resolver": name, "at": format_ts(self._clock())}
            try:
                fields = fn(view)
                fields = dict(fields or {})
                attempt["fields"] = sorted(fields)
                if fields:
                    rec = self._add_fields(rec.item_id, fields, by=name, channel="resolver", attempt=attempt)
                    continue
            except Refused as exc:  # e.g. resolved meanwhile, or a field it does not need
                attempt["error"] = f"refused: {exc}"
            except Exception as exc:  # a failing resolver is recorded; the deferral keeps waiting
                attempt["error"] = f"{type(exc).__name__}: {exc}"
                log.warning("deferral resolver %s failed for %s: %s", name, rec.item_id, exc)
            rec = self._record_attempt(rec.item_id, attempt) or rec
        self._wake.wake(rec.item_id)

    def _record_attempt(self, item_id: str, attempt: dict[str, Any]) -> PendingRecord | None:
        for _ in range(5):
            cur = self._store.pending_get(item_id)
            if cur is None:
                return None
            body = dict(cur.body)
            body["attempts"] = [*body.get("attempts", [])[-(_MAX_ATTEMPTS_KEPT - 1):], attempt]
            new = self._store.pending_update(item_id, cur.version, body=body)
            if new is not None:
                return new
        return None

    # --- the desk side ----------------------------------------------------------------------------------
    def list(self, *, status: str | None = PENDING, session_id: str | None = None) -> builtins.list[dict[str, Any]]:
        return [deferral_view(r) for r in self._store.pending_list(kind="deferral", status=status,
                                                                     session_id=session_id)]

    def get(self, deferral_id: str) -> dict[str, Any]:
        return deferral_view(self._get(deferral_id))

    def supply(self, deferral_id: str, fields: Mapping[str, Any], *, by: str, channel: str) -> dict[str, Any]:
        """Add context fields to a pending deferral; its waiter re-evaluates the action with them.

        Raises:
            InputError: no fields, an empty `by`, or a value that is not JSON.
            NotFound: no such deferral.
            Refused: `not_pending`, `expired`, `bad_field` (not among `context_needed`).
        """
        if not isinstance(by, str) or not by.strip():
            raise InputError("`by` must name who supplies the context")
        rec = self._add_fields(deferral_id, fields, by=by.strip(), channel=channel)
        return deferral_view(rec)

    def _add_fields(self, deferral_id: str, fields: Mapping[str, Any], *, by: str, channel: str,
                    attempt: dict[str, Any] | None = None) -> PendingRecord:
        if not isinstance(fields, Mapping) or not fields:
            raise InputError("give at least one context field")
        clean = {}
        for k, v in fields.items():
            if not isinstance(k, str) or not k:
                raise InputError(f"context field names must be non-empty strings, found `{k!r}`")
            clean[_bare(k)] = to_json(v, path=f"fields.{k}")
        if len(json.dumps(clean)) > 65536:
            raise InputError("supplied context is larger than 64 KiB")
        for _ in range(20):
            rec = self._get(deferral_id)
            now = self._clock()
            if rec.status != PENDING:
                raise Refused("not_pending", f"deferral `{deferral_id}` is already {rec.status}")
            if now >= parse_ts(rec.deadline):
                raise Refused("expired", f"deferral `{deferral_id}` expired at {rec.deadline}")
            needed = {_bare(n) for n in rec.body.get("context_needed", [])}
            bad = sorted(set(clean) - needed)
            if bad:
                raise Refused("bad_field", f"deferral `{deferral_id}` does not need {', '.join(bad)}; it needs "
                              f"{', '.join(sorted(needed)) or 'no context (it waits for other actions)'}")
            body = dict(rec.body)
            supplied = dict(body.get("supplied", {}))
            for k, v in clean.items():
                supplied[k] = {"value": v, "by": by, "channel": channel, "at": format_ts(now)}
            body["supplied"] = supplied
            if attempt is not None:
                body["attempts"] = [*body.get("attempts", [])[-(_MAX_ATTEMPTS_KEPT - 1):], attempt]
            new = self._store.pending_update(deferral_id, rec.version, body=body)
            if new is not None:
                self._wake.wake(deferral_id)
                return new
        raise Refused("busy", f"deferral `{deferral_id}` kept changing; try again")

    def _get(self, deferral_id: str) -> PendingRecord:
        rec = self._store.pending_get(deferral_id) if isinstance(deferral_id, str) else None
        if rec is None or rec.kind != "deferral":
            raise NotFound(f"no deferral `{deferral_id}`")
        return rec


def _http_resolver(url: str, timeout: float) -> Resolver:
    """POST the deferral view as JSON; a 2xx answer `{"fields": {...}}` supplies context."""

    def resolve(view: dict[str, Any]) -> Mapping[str, Any] | None:
        data = json.dumps({"deferral": view}).encode("utf-8")
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Idempotency-Key": str(view.get("id"))})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read(65536 + 1) or b"{}")
        fields = answer.get("fields") if isinstance(answer, dict) else None
        if fields is not None and not isinstance(fields, dict):
            raise InputError("resolver answer `fields` must be an object")
        return fields

    return resolve
