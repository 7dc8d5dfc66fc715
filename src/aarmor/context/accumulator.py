"""The context accumulator (AARM 2.2, R2): one `SessionContext` per session, over the append-only log.

Rules this module enforces:
- Every write is a hash-chained entry (`aarmor.context.chain`) appended through the store, whose
  append checks the chain invariant inside its transaction; the in-memory state moves only after the
  durable commit returned (a failed write leaves head and aggregates unchanged).
- Appends of one session are serialised by a per-session lock, so several threads may share one
  `SessionContext`; two `SessionContext`s (or processes) on one session cannot fork the chain: the
  store rejects the second writer with `ChainError`.
- `Transaction` (from `atomic()`) stages several entries chained on one another and commits them
  together with receipts in ONE durable store commit (`store.append_all`), so an outcome entry and its
  receipt are written together or not at all.
- `resume` verifies the stored chain before trusting it (DESIGN habit 2: persist and use only what
  verified) and rebuilds the aggregates through the same `SessionState.apply` the live path uses.
- After `session_end`, writes raise `RuntimeError("... already ended")` (caller misuse); bad input raises
  `InputError`/`LimitExceeded`.
- Every executed action's output (and the message of the error it raised) is scanned for prompt-injection
  indicators alongside classification (`aarmor.context.injection`, AARM threats 1-2); the kinds found go
  into the outcome entry, from which `SessionState` derives `risk_signals.injection_*` live and on resume.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aarmor.canonical import format_ts
from aarmor.errors import ChainError, InputError
from aarmor.limits import DEFAULT_LIMITS, Limits
from aarmor.model import Action, ContextSnapshot, Decision, Identity, ToolSpec
from aarmor.normalize import normalize_name
from aarmor.observed import OBSERVED
from aarmor.store.base import Store
from aarmor.store.records import GENESIS, LogRecord, ReceiptRecord

from . import entries as E
from .chain import entry_hash, make_record, verify_chain
from .classify import Classifier, OutputText
from .injection import scan_injection
from .provenance import MAX_TRACKED_PER_OUTPUT, scan_text
from .signals import DEFAULT_SIGNALS, SignalConfig
from .window import SessionState

__all__ = ["SessionContext", "Transaction", "unresolved_actions"]

#: attempts at a commit another process's appends to the same session keep refusing (with a growing random
#: pause between them, so two busy writers stop colliding in step)
_CHAIN_RETRIES = 20

_SESSION_ID = re.compile(r"[^\x00-\x20\x7f]{1,256}")


class Transaction:
    """Entries staged under the session lock, written by `commit` in one durable store commit.

    Obtain one from `SessionContext.atomic()`. Each staging method returns the record it will write
    (its `entry_hash` and `seq` are final, e.g. for a receipt's `context.context_hash`/`log_seq`).
    """

    __slots__ = ("_ctx", "_head", "_open", "_staged", "committed")

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._staged: list[LogRecord] = []
        self._head = ctx._state.head
        self._open = True
        #: the entries as committed (re-based when another process had appended meanwhile)
        self.committed: tuple[LogRecord, ...] = ()

    @property
    def records(self) -> tuple[LogRecord, ...]:
        """Entries staged and not yet committed."""
        return tuple(self._staged)

    @property
    def head(self) -> tuple[int, str] | None:
        """The chain head (seq, hash) as it will be once the staged entries are committed."""
        return self._head

    def _stage(self, kind: str, body: Any, now: datetime) -> LogRecord:
        if not self._open:
            raise RuntimeError("transaction already finished")
        st = self._ctx._state
        if st.ended or any(r.kind == E.SESSION_END for r in self._staged):
            raise RuntimeError(f"session `{st.session_id}` already ended")
        seq, prev = (0, GENESIS) if self._head is None else (self._head[0] + 1, self._head[1])
        rec = make_record(session_id=st.session_id, seq=seq, kind=kind, recorded_at=format_ts(now),
                          prev_hash=prev, body=body)
        self._staged.append(rec)
        self._head = (rec.seq, rec.entry_hash)
        return rec

    def requested(self, action: Action, decision: Decision, *, parameters_view: Mapping[str, Any],
                  parameters_digest: str, now: datetime, alerts: Sequence[str] = (),
                  observed: bool = False) -> LogRecord:
        """Stage `action_requested`: the action as decided, with redacted parameters and their digest, and the
        alert signals (`drift_detected`, `injection_suspected`) that held when it was decided. `observed`:
        an action seen after the fact (aarmor.observed), marked `enforcement: observed`.

        Raises:
            InputError: the action belongs to another session, or a malformed decision or digest.
        """
        body = E.requested_body(action, decision, self._ctx._identity_json(action), parameters_view,
                                parameters_digest, alerts)
        if observed:  # INVARIANT: absent on mediated actions, so their entries keep their hash and meaning
            body["enforcement"] = OBSERVED
        return self._stage(E.ACTION_REQUESTED, body, now)

    def outcome(self, action: Action, *, executed: bool, success: bool | None, output: Any,
                error: BaseException | None, now: datetime,
                effects: Mapping[str, Any] | None = None) -> tuple[LogRecord, frozenset[str]]:
        """Stage `action_outcome`, classifying `output` (never stored; only its digest and labels).

        Returns the record and the labels the output carries.

        Raises:
            InputError: the action belongs to another session, or a malformed effects label.
        """
        body, labels = self._ctx._outcome_body(action, executed, success, output, error, effects)
        return self._stage(E.ACTION_OUTCOME, body, now), labels

    def recovered_outcome(self, action: Action, *, error: BaseException, recovered: Mapping[str, Any],
                          now: datetime) -> LogRecord:
        """Stage the `action_outcome` crash recovery writes for an action whose process ended before its
        outcome was recorded: `executed` and `success` are null (unknown: the tool may have run), `error`
        says why and `recovered` says whose action it was and who recovered it (docs/durability.md).
        """
        body, _ = self._ctx._outcome_body(action, False, None, None, error, None)
        body.update(executed=None, recovered=dict(recovered))
        return self._stage(E.ACTION_OUTCOME, body, now)

    def observed_outcome(self, action: Action, *, executed: bool | None, success: bool | None, output: Any,
                         error: BaseException | None, now: datetime) -> LogRecord:
        """Stage the `action_outcome` of an observed action (aarmor.observed): as the stream reported it,
        `executed` None when it did not say (then `success` is null too), marked `enforcement: observed`.
        A reported output is classified and digested like any output (never stored).
        """
        ran = executed is True
        body, _ = self._ctx._outcome_body(action, ran, success if ran else None, output if ran else None,
                                          error, None)
        if executed is None:
            body["executed"] = None
        body["enforcement"] = OBSERVED
        return self._stage(E.ACTION_OUTCOME, body, now)

    def signal(self, name: str, value: Any, *, detail: Any = None, now: datetime) -> LogRecord:
        """Stage `signal`: sets `risk_signals.<name>` to `value` once committed (latest wins; None clears it).

        Raises:
            InputError: a malformed or derived name, or a value that is not a JSON scalar or a list of
                strings, or a detail that is not JSON.
            LimitExceeded: name, value and detail exceed `max_argument_bytes`.
        """
        return self._stage(E.SIGNAL, E.signal_body(name, value, detail, self._ctx.limits), now)

    def event(self, kind: str, body: Mapping[str, Any], *, now: datetime) -> LogRecord:
        """Stage an opaque event (`approval`, `deferral`, ...).

        Raises:
            InputError: a built-in or malformed kind, or a body that is not a JSON object.
        """
        return self._stage(kind, E.check_event(kind, body), now)

    def value(self, name: str, value: Any, *, source: str, now: datetime) -> LogRecord:
        """Stage `context_value`: sets `context.<name>` for the PDP once committed.

        Raises:
            InputError: a malformed or reserved name, a missing source, or a non-JSON value.
            LimitExceeded: the value exceeds `max_argument_bytes`.
        """
        return self._stage(E.CONTEXT_VALUE, E.value_body(name, value, source, self._ctx.limits), now)

    def end(self, *, now: datetime) -> LogRecord:
        """Stage `session_end` with the session's final aggregates."""
        st = self._ctx._state
        snap = st.snapshot(now)
        return self._stage(E.SESSION_END, {"action_count": snap.action_count,
                                           "classifications": sorted(snap.classifications),
                                           "max_sensitivity": snap.max_sensitivity}, now)

    def commit(self, *, receipts: Sequence[ReceiptRecord] = ()) -> None:
        """Write the staged entries and `receipts` in one durable commit, then advance the state.

        Raises:
            ChainError: another writer moved the session's chain (nothing is written or changed).
            StoreError: the store could not write durably (nothing is changed in memory).
        """
        if not self._open:
            raise RuntimeError("transaction already finished")
        if not self._staged and not receipts:
            return
        store = self._ctx._store
        try:
            store.append_all(logs=tuple(self._staged), receipts=tuple(receipts))
        except ChainError:
            # Another process appended to this session since our head (several processes serving one
            # session; the store serialises appends per session and refused ours). Entries alone can be
            # re-based on the new head, holding the store's lock on the session so no one appends meanwhile;
            # a commit with receipts cannot (a receipt names the context hash it was decided on): its caller
            # retries it whole (Mediator._commit).
            if receipts:
                raise
            self._retry(store)
        st = self._ctx._state
        for rec in self._staged:
            st.apply(rec)
        self.committed = tuple(self._staged)
        self._staged.clear()

    def _retry(self, store: Store) -> None:
        sid = self._ctx._state.session_id
        for attempt in range(_CHAIN_RETRIES):
            with store.session_lock(sid):
                if self._ctx.catch_up():
                    self._rebase()
                try:
                    store.append_all(logs=tuple(self._staged))
                    return
                except ChainError:
                    if attempt + 1 == _CHAIN_RETRIES:
                        raise
            time.sleep(random.uniform(0, 0.001 * (attempt + 1)))

    def _rebase(self) -> None:
        """Re-stage the same entries (kind, body, time) on the caught-up head."""
        staged, self._staged = self._staged, []
        self._head = self._ctx._state.head
        for rec in staged:
            st = self._ctx._state
            seq, prev = (0, GENESIS) if self._head is None else (self._head[0] + 1, self._head[1])
            new = make_record(session_id=st.session_id, seq=seq, kind=rec.kind, recorded_at=rec.recorded_at,
                              prev_hash=prev, body=rec.body)
            self._staged.append(new)
            self._head = (new.seq, new.entry_hash)

    def _close(self) -> None:
        self._open = False
        self._staged.clear()


class _Atomic:
    __slots__ = ("_ctx", "_tx")

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._tx: Transaction | None = None

    def __enter__(self) -> Transaction:
        self._ctx._lock.acquire()
        if self._ctx._tx_owner is not None:
            self._ctx._lock.release()
            raise RuntimeError("a transaction is already open on this session in this thread")
        self._ctx._tx_owner = self
        self._tx = Transaction(self._ctx)
        return self._tx

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._tx is not None
        pending = len(self._tx._staged)
        self._tx._close()
        self._ctx._tx_owner = None
        self._ctx._lock.release()
        if exc_type is None and pending:
            raise RuntimeError(f"transaction ended with {pending} uncommitted log entries; call commit()")


class SessionContext:
    """The accumulator of one session: the log writer plus the aggregates the PDP's snapshot reads."""

    __slots__ = ("_ident", "_lock", "_state", "_store", "_tx_owner", "classifier", "limits")

    def __init__(self, store: Store, state: SessionState, *, classifier: Classifier, limits: Limits) -> None:
        self._store = store
        self._state = state
        self.classifier = classifier
        self.limits = limits
        self._lock = threading.RLock()
        self._tx_owner: _Atomic | None = None
        self._ident: tuple[Identity, Any] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def start(cls, store: Store, *, session_id: str, identity: Identity, original_request: str | None,
              now: datetime, classifier: Classifier, intent_classification: str | None = None,
              tools: Iterable[ToolSpec] | None = None, window: int | None = None,
              limits: Limits = DEFAULT_LIMITS, signals: SignalConfig = DEFAULT_SIGNALS) -> SessionContext:
        """Start a session: write `session_start` (seq 0) durably and return its context.

        `tools` is the session's tool catalogue (recorded in `session_start`); when it is non-empty,
        `risk_signals.scope_expansion` reports tools outside it. None or empty: no such signal.

        Raises:
            InputError: malformed session id, identity, request or catalogue; or the session already
                has a log (resume it instead).
            LimitExceeded: the original request exceeds `max_request_chars`.
            ChainError, StoreError: the store refused or failed the write.
        """
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            raise InputError(f"session id `{session_id!r}` must be 1-256 characters without whitespace or "
                             "control characters")
        tool_list = None if tools is None else tuple(tools)
        body = E.start_body(identity, original_request, intent_classification, tool_list, limits)
        for t in tool_list or ():
            normalize_name(t.name, what="catalogue tool name", limits=limits)
        if store.log_head(session_id) is not None:
            raise InputError(f"session `{session_id}` already has a context log; resume it instead")
        state = SessionState(session_id, classifier=classifier, window=window or limits.max_window,
                             signals=signals)
        ctx = cls(store, state, classifier=classifier, limits=limits)
        with ctx.atomic() as tx:
            tx._stage(E.SESSION_START, body, now)
            tx.commit()
        return ctx

    @classmethod
    def resume(cls, store: Store, session_id: str, *, classifier: Classifier, window: int | None = None,
               limits: Limits = DEFAULT_LIMITS, signals: SignalConfig = DEFAULT_SIGNALS) -> SessionContext:
        """Rebuild a session's context from its stored log, after verifying the chain.

        Raises:
            InputError: the session has no log.
            ChainError: the stored chain does not verify or breaks the log structure.
        """
        records = list(store.read_log(session_id))
        if not records:
            raise InputError(f"session `{session_id}` has no context log")
        verify_chain(records, session_id=session_id)
        state = SessionState(session_id, classifier=classifier, window=window or limits.max_window,
                             signals=signals)
        for rec in records:
            state.apply(rec)
        return cls(store, state, classifier=classifier, limits=limits)

    def catch_up(self) -> int:
        """Fold in the entries another process appended to this session since our head (several processes
        serving one session: a commit refused with ChainError is retried after this). Returns how many.

        Raises:
            ChainError: the new entries do not extend our head or do not verify.
        """
        with self._lock:
            st = self._state
            head = st.head
            start = -1 if head is None else head[0]
            new = list(self._store.read_log(st.session_id, after=None if head is None else start))
            prev_seq, prev_hash = (start, head[1]) if head is not None else (-1, None)
            for rec in new:
                if rec.seq != prev_seq + 1 or (prev_hash is not None and rec.prev_hash != prev_hash) \
                        or entry_hash(rec) != rec.entry_hash:
                    raise ChainError(f"session `{st.session_id}`: stored entry seq {rec.seq} does not extend the "
                                     f"in-memory head {head}", session_id=st.session_id, seq=rec.seq)
                st.apply(rec)
                prev_seq, prev_hash = rec.seq, rec.entry_hash
            return len(new)

    def prepare_outcome(self, action: Action, *, executed: bool, success: bool | None, output: Any,
                        error: BaseException | None, now: datetime,
                        effects: Mapping[str, Any] | None = None) -> LogRecord:
        """Compute, without writing, the `action_outcome` entry that extends the current head.

        For writing it together with a receipt in one commit: `store.append_all(logs=(rec,),
        receipts=(...))`, then `commit((rec,))`. The labels are `rec.body["classifications"]`, the
        output digest `rec.body["output_digest"]`. If another entry is appended in between, the store
        rejects the stale record with `ChainError` (nothing is written); `atomic()` avoids that race.

        Raises:
            InputError: as `Transaction.outcome`.
            RuntimeError: the session has ended.
        """
        body, _ = self._outcome_body(action, executed, success, output, error, effects)
        with self._lock:
            st = self._state
            if st.ended:
                raise RuntimeError(f"session `{st.session_id}` already ended")
            assert st.head is not None
            return make_record(session_id=st.session_id, seq=st.head[0] + 1, kind=E.ACTION_OUTCOME,
                               recorded_at=format_ts(now), prev_hash=st.head[1], body=body)

    def commit(self, records: Sequence[LogRecord]) -> None:
        """Advance the in-memory state over `records` the caller has durably written (see
        `prepare_outcome`). Call it only after the store write returned.

        Raises:
            ChainError: a record does not extend the in-memory head (the state is then unchanged
                from that record on; resume the session to resynchronise).
        """
        with self._lock:
            st = self._state
            for rec in records:
                head = st.head
                if head is None or rec.session_id != st.session_id or rec.seq != head[0] + 1 \
                        or rec.prev_hash != head[1]:
                    raise ChainError(f"session `{st.session_id}`: record seq {rec.seq} does not extend the "
                                     f"in-memory head {head}", session_id=st.session_id, seq=rec.seq)
                st.apply(rec)

    def atomic(self) -> _Atomic:
        """`with ctx.atomic() as tx:` stage entries, then `tx.commit(receipts=...)` once.

        Holds the session lock for the block. Leaving the block after an exception discards what was
        staged; leaving it normally with uncommitted entries raises `RuntimeError`.
        """
        return _Atomic(self)

    # --- reads ----------------------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self._state.session_id

    @property
    def original_request(self) -> str | None:
        """The user's original request, as the session's start entry recorded it."""
        return self._state.original_request

    @property
    def head(self) -> tuple[int, str]:
        """(seq, entry_hash) of the last committed entry: a receipt's `context.log_seq`/`context_hash`."""
        with self._lock:
            head = self._state.head
        assert head is not None
        return head

    @property
    def ended(self) -> bool:
        return self._state.ended

    def snapshot(self, now: datetime, *, action: Action | None = None) -> ContextSnapshot:
        """The immutable context the PDP decides on; `action` (the one being decided) feeds
        `risk_signals.scope_expansion`. Cost is O(1) amortised (cached aggregates, no store reads)."""
        with self._lock:
            return self._state.snapshot(now, action)

    # --- single-entry writes (each one durable commit) ----------------------------------------------
    def record_requested(self, action: Action, decision: Decision, *, parameters_view: Mapping[str, Any],
                         parameters_digest: str, now: datetime, alerts: Sequence[str] = ()) -> LogRecord:
        """Write `action_requested` durably (before the action may execute). See `Transaction.requested`."""
        with self.atomic() as tx:
            tx.requested(action, decision, parameters_view=parameters_view,
                         parameters_digest=parameters_digest, now=now, alerts=alerts)
            tx.commit()
        return tx.committed[-1]

    def record_outcome(self, action: Action, *, executed: bool, success: bool | None, output: Any,
                       error: BaseException | None, now: datetime,
                       effects: Mapping[str, Any] | None = None) -> tuple[LogRecord, frozenset[str]]:
        """Write `action_outcome` durably. See `Transaction.outcome`."""
        # classify outside the lock: scanning a large output must not stall the session's other threads
        body, labels = self._outcome_body(action, executed, success, output, error, effects)
        with self.atomic() as tx:
            tx._stage(E.ACTION_OUTCOME, body, now)
            tx.commit()
        return tx.committed[-1], labels

    def record_event(self, kind: str, body: Mapping[str, Any], *, now: datetime) -> LogRecord:
        """Write an opaque event entry durably. See `Transaction.event`."""
        with self.atomic() as tx:
            tx.event(kind, body, now=now)
            tx.commit()
        return tx.committed[-1]

    def record_signal(self, name: str, value: Any, *, detail: Any = None, now: datetime) -> LogRecord:
        """Write a door-supplied risk signal (e.g. the MCP gateway's `tool_definition_changed`) durably.
        See `Transaction.signal`."""
        with self.atomic() as tx:
            tx.signal(name, value, detail=detail, now=now)
            tx.commit()
        return tx.committed[-1]

    def set_value(self, name: str, value: Any, *, source: str, now: datetime) -> LogRecord:
        """Set `context.<name>` (environment state, ticket status, ...). See `Transaction.value`."""
        with self.atomic() as tx:
            tx.value(name, value, source=source, now=now)
            tx.commit()
        return tx.committed[-1]

    def end(self, now: datetime) -> LogRecord:
        """Write `session_end`; later writes raise `RuntimeError`."""
        with self.atomic() as tx:
            tx.end(now=now)
            tx.commit()
        return tx.committed[-1]

    # --- helpers --------------------------------------------------------------------------------
    def _check_action(self, action: Action) -> None:
        if not isinstance(action, Action):
            raise InputError(f"expected an Action, found {type(action).__name__}")
        if action.session_id != self._state.session_id:
            raise InputError(f"action `{action.action_id}` belongs to session `{action.session_id}`, "
                             f"not `{self._state.session_id}`")

    def _identity_json(self, action: Action) -> Any:
        self._check_action(action)
        cached = self._ident
        if cached is not None and cached[0] is action.identity:
            return cached[1]
        js = action.identity.to_json()
        self._ident = (action.identity, js)
        return js

    def _outcome_body(self, action: Action, executed: bool, success: bool | None, output: Any,
                      error: BaseException | None, effects: Any) -> tuple[dict[str, Any], frozenset[str]]:
        self._check_action(action)
        oc = self.classifier.classify(action, output, executed=executed, effects=effects)
        return E.outcome_body(action, executed, success, oc, error, self._injection(oc.output, executed, error),
                              self._provenance(action, oc.output, executed, error)), oc.labels

    def _provenance(self, action: Action, view: OutputText | None, executed: bool,
                    error: BaseException | None) -> dict[str, Any] | None:
        """Fingerprints of the values a tool's output (or error message) brought into the session."""
        if not executed:
            return None
        found = scan_text(view.text, max_chars=self.limits.max_scan_bytes) if view is not None and view.text \
            else []
        if error is not None:
            with contextlib.suppress(Exception):
                found += scan_text(str(error), max_chars=self.limits.max_scan_bytes)
        if not found:
            return None
        values = sorted({v.fp for v in found})
        sensitive = sorted({v.fp for v in found if v.sensitive})
        body: dict[str, Any] = {"trusted": self.classifier.is_trusted(action),
                                "values": values[:MAX_TRACKED_PER_OUTPUT],
                                "sensitive": sensitive[:MAX_TRACKED_PER_OUTPUT]}
        if len(values) > MAX_TRACKED_PER_OUTPUT:
            body["truncated"] = True  # the rest is not tracked: the window reports provenance incomplete
        return body

    def _injection(self, view: OutputText | None, executed: bool, error: BaseException | None) -> set[str]:
        """Indicator kinds in what the tool returned: its output text and, if it raised, its error message
        (AARM threat 3: an injected error message)."""
        kinds: set[str] = set()
        if not executed:
            return kinds
        if view is not None and view.text:
            kinds.update(i.kind for i in scan_injection(view.text, max_chars=self.limits.max_scan_bytes))
        if error is not None:
            try:
                message = str(error)
            except Exception:
                message = ""
            if message:
                kinds.update(i.kind for i in scan_injection(message, max_chars=self.limits.max_scan_bytes))
        return kinds


def unresolved_actions(records: Iterable[LogRecord]) -> tuple[tuple[str, int], ...]:
    """(action_id, seq of its `action_requested`) for requests with no `action_outcome` after them,
    in log order: what crash recovery must turn into receipts with outcome "unknown"."""
    open_: dict[str, int] = {}
    for rec in records:
        if rec.kind == E.ACTION_REQUESTED:
            open_[str(rec.body["action"]["action_id"])] = rec.seq
        elif rec.kind == E.ACTION_OUTCOME:
            open_.pop(str(rec.body["action_id"]), None)
    return tuple(open_.items())
