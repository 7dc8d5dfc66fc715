"""The in-memory state of one session: a bounded window of prior actions plus running aggregates.

Rules this module enforces:
- INVARIANT (replay equals live): the state changes only through `SessionState.apply(record)`, fed the
  same verified log entries whether they were just written or read back by `SessionContext.resume`, so a
  resumed session yields the same snapshot as the live one.
- Memory stays bounded in long sessions: the last `window` prior actions (AARM 2.2
  `MAX_ACTION_HISTORY = 100`) and request times within the velocity window; the label set, the maximum
  level and the action count are running aggregates over the whole session. The full history stays in
  the store.
- Structure: seq 0 is `session_start`; nothing follows `session_end`. A log that breaks this (even with
  valid hashes) raises `ChainError`.
- Snapshots are immutable and O(1) amortised: the prior-action tuple, the label set and the values map
  are cached until an entry changes them.
- Injection indicators (the `injection` kinds of outcome entries) and the tools they came from are
  session aggregates like the labels; door-supplied signals (`signal` entries) keep their latest value,
  and None removes one. Both are rebuilt by replay, so they survive `SessionContext.resume`.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from datetime import datetime
from typing import Any

from aarmor.canonical import parse_ts
from aarmor.errors import ChainError, InputError
from aarmor.model import Action, ContextSnapshot, DecisionResult, FrozenMap, PriorAction, freeze
from aarmor.normalize import normalize_name
from aarmor.store.records import LogRecord

from . import entries as E
from .classify import Classifier
from .provenance import ProvenanceIndex
from .risk import session_risk
from .signals import SignalConfig, derive_signals
from .tool_risk import ToolRiskIndex

__all__ = ["SessionState"]

_MAX_TIMES = 100_000  # request times kept for velocity, whatever the rate
_MAX_SOURCES = 256  # tool names kept in `injection_sources` (the kinds are always kept)


class SessionState:
    """Aggregates of one session's log (not thread-safe: `SessionContext` holds the lock)."""

    def __init__(self, session_id: str, *, classifier: Classifier, window: int,
                 signals: SignalConfig) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, found `{window!r}`")
        self.session_id = session_id
        self.classifier = classifier
        self.window = window
        self.signals = signals
        self.head: tuple[int, str] | None = None
        self.started_at: datetime | None = None
        self.ended = False
        self.original_request: str | None = None
        self.intent_classification: str | None = None
        self.catalogue: frozenset[str] | None = None
        self.action_count = 0
        self.out_of_scope = 0
        self.max_rank = -1
        self._prior: OrderedDict[str, PriorAction] = OrderedDict()
        self._labels: set[str] = set()
        self._values: dict[str, Any] = {}
        self._times: list[float] = []
        self._times_lo = 0
        self._injection: set[str] = set()
        self._injection_sources: set[str] = set()
        self._c_injection: tuple[tuple[str, ...], tuple[str, ...]] | None = ((), ())
        self._door: dict[str, Any] = {}
        self.provenance = ProvenanceIndex()
        self.tool_risk = ToolRiskIndex(dict(signals.tool_classes))
        self._c_prior: tuple[PriorAction, ...] | None = ()
        self._c_labels: frozenset[str] | None = frozenset()
        self._c_values: FrozenMap | None = FrozenMap()
        self._expected_rank = classifier.rank(signals.expected_classification)
        self._sensitive_rank = classifier.rank(signals.sensitive_level)

    # --- applying entries ---------------------------------------------------------------------
    def apply(self, rec: LogRecord) -> None:
        """Fold one (verified) entry into the state.

        Raises:
            ChainError: the entry breaks the log's structure (see the module docstring).
        """
        def bad(msg: str) -> ChainError:
            return ChainError(f"session `{self.session_id}` seq {rec.seq}: {msg}", session_id=self.session_id,
                              seq=rec.seq)

        if (rec.seq == 0) != (rec.kind == E.SESSION_START):
            raise bad(f"entry of kind `{rec.kind}` where {'session_start' if rec.seq == 0 else 'any other'} "
                      "was expected")
        if self.ended:
            raise bad(f"entry of kind `{rec.kind}` after session_end")
        body = rec.body
        try:
            if rec.kind == E.SESSION_START:
                self._start(rec, body)
            elif rec.kind == E.ACTION_REQUESTED:
                self._requested(rec, body)
            elif rec.kind == E.ACTION_OUTCOME:
                self._outcome(body)
            elif rec.kind == E.CONTEXT_VALUE:
                self._values[str(body["name"])] = freeze(body["value"])
                self._c_values = None
                self.provenance.trust_text(json.dumps(body["value"], ensure_ascii=False))
            elif rec.kind == E.SIGNAL:
                self._signal(body)
            elif rec.kind == E.SESSION_END:
                self.ended = True
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as exc:
            raise bad(f"malformed `{rec.kind}` body: {type(exc).__name__}: {exc}") from exc
        self.head = (rec.seq, rec.entry_hash)

    def _start(self, rec: LogRecord, body: dict[str, Any]) -> None:
        self.started_at = parse_ts(rec.recorded_at)
        self.original_request = body.get("original_request")
        if isinstance(self.original_request, str):
            self.provenance.trust_text(self.original_request)
        self.intent_classification = body.get("intent_classification")
        tools = body.get("tools")
        if tools:  # None or empty: no catalogue was given, so no scope_expansion signal
            self.catalogue = frozenset(normalize_name(t["name"], what="catalogue tool name") for t in tools)
            self.tool_risk.add_catalogue(tools)

    def _requested(self, rec: LogRecord, body: dict[str, Any]) -> None:
        act, dec = body["action"], body["decision"]
        aid = str(act["action_id"])
        old = self._prior.get(aid)
        prior = PriorAction(
            action_id=aid, tool=str(act["tool"]), operation=str(act["operation"]),
            decision=DecisionResult(dec["result"]), timestamp=parse_ts(act["timestamp"]),
            executed=old.executed if old else False, success=old.success if old else None,
            classifications=old.classifications if old else frozenset(),
        )
        self._prior[aid] = prior  # a re-decided action keeps its place
        if len(self._prior) > self.window:
            self._prior.popitem(last=False)
        self._c_prior = None
        # INVARIANT: every request counts, even a repeated action id, so counts cannot be hidden.
        self.action_count += 1
        if self.catalogue is not None and not self._in_scope(prior.tool, prior.name):
            self.out_of_scope += 1
        t = parse_ts(rec.recorded_at).timestamp()
        if self._times and t < self._times[-1]:
            bisect.insort(self._times, t, lo=self._times_lo)
        else:
            self._times.append(t)
        horizon = self._times[-1] - self.signals.velocity_window_seconds
        lo = bisect.bisect_left(self._times, horizon, lo=self._times_lo)
        lo = max(lo, len(self._times) - _MAX_TIMES)
        if lo > 4096 and lo > len(self._times) // 2:
            del self._times[:lo]
            lo = 0
        self._times_lo = lo

    def _outcome(self, body: dict[str, Any]) -> None:
        labels = frozenset(str(x) for x in body["classifications"])
        if labels - self._labels:
            self._labels |= labels
            self._c_labels = None
        self.max_rank = max(self.max_rank, self.classifier.rank(body.get("level")))
        kinds = body.get("injection")
        if kinds:
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                raise ValueError(f"`injection` must be a list of strings, found `{kinds!r}`")
            tool, op = str(body["tool"]), str(body.get("operation") or "")
            source = f"{tool}.{op}" if op else tool
            new_source = source not in self._injection_sources and len(self._injection_sources) < _MAX_SOURCES
            if new_source or not set(kinds) <= self._injection:
                self._injection.update(kinds)
                if new_source:
                    self._injection_sources.add(source)
                self._c_injection = None
        aid = str(body["action_id"])
        prov = body.get("provenance")
        if prov:
            if not isinstance(prov, dict):
                raise ValueError(f"`provenance` must be an object, found `{prov!r}`")
            tool, op = str(body["tool"]), str(body.get("operation") or "")
            self.provenance.add_output(aid, f"{tool}.{op}" if op else tool, prov, injected=bool(kinds))
        old = self._prior.get(aid)
        if old is not None:
            self._prior[aid] = PriorAction(
                action_id=aid, tool=old.tool, operation=old.operation, decision=old.decision,
                timestamp=old.timestamp, executed=body["executed"] is not False,  # null (recovered): it may have run
                success=body.get("success"),
                classifications=old.classifications | labels, output_bytes=int(body.get("output_bytes") or 0))
            self._c_prior = None

    def _signal(self, body: dict[str, Any]) -> None:
        name = str(body["name"])
        value = E.signal_value(name, body["value"])  # replay checks what the write checked
        if value is None:
            self._door.pop(name, None)
        else:
            self._door[name] = freeze(value)

    def _in_scope(self, tool: str, name: str) -> bool:
        assert self.catalogue is not None
        return name in self.catalogue or tool in self.catalogue

    # --- reading --------------------------------------------------------------------------------
    def has_prior(self, action_id: str) -> bool:
        return action_id in self._prior

    def velocity(self, now: datetime) -> int:
        horizon = now.timestamp() - self.signals.velocity_window_seconds
        lo = bisect.bisect_left(self._times, horizon, lo=self._times_lo)  # inclusive: [now - w, now]
        hi = bisect.bisect_right(self._times, now.timestamp(), lo=lo)
        return hi - lo

    def snapshot(self, now: datetime, action: Action | None = None) -> ContextSnapshot:
        """The immutable view the PDP decides on (`action`, if given, feeds `scope_expansion`)."""
        if self.started_at is None:
            raise RuntimeError(f"session `{self.session_id}` has not started")
        if self._c_prior is None:
            self._c_prior = tuple(self._prior.values())
        if self._c_labels is None:
            self._c_labels = frozenset(self._labels)
        if self._c_values is None:
            self._c_values = FrozenMap(self._values)
        if self._c_injection is None:
            self._c_injection = (tuple(sorted(self._injection)), tuple(sorted(self._injection_sources)))
        current_oos = False
        if self.catalogue is not None and action is not None:
            current_oos = not self._in_scope(action.tool, action.name)
        signals = derive_signals(
            max_rank=self.max_rank, expected_rank=self._expected_rank, sensitive_rank=self._sensitive_rank,
            action_count=self.action_count, velocity=self.velocity(now),
            out_of_scope=self.out_of_scope if self.catalogue is not None else None,
            current_out_of_scope=current_oos, config=self.signals, injection_kinds=self._c_injection[0],
            injection_sources=self._c_injection[1])
        signals.update(self.provenance.signals(action.parameters if action is not None else None,
                                               self.signals.internal_domains))
        if self._door:
            signals = {**self._door, **signals}  # derived names are refused for door signals; never shadowed
        if action is not None:
            signals["tool_category"] = self.tool_risk.classes_for(action.tool, action.name)
        signals["session_risk"], signals["session_risk_factors"] = session_risk(signals)
        levels = self.classifier.levels
        return ContextSnapshot(
            session_id=self.session_id,
            started_at=self.started_at,
            original_request=self.original_request,
            intent_classification=self.intent_classification,
            prior_actions=self._c_prior,
            classifications=self._c_labels,
            max_sensitivity=levels[min(self.max_rank, len(levels) - 1)] if self.max_rank >= 0 else None,
            action_count=self.action_count,
            elapsed_seconds=max(0.0, (now - self.started_at).total_seconds()),
            values=self._c_values,
            risk_signals=FrozenMap(signals),
            chain_head=self.head[1] if self.head else None,
        )
