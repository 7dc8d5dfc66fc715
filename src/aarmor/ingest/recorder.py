"""Recording observed tool events once each, through the one pipeline (`Session.observe`).

Rules:
- Session mapping: the event's session id is the aarmor session (started on first sight, resumed when the
  store already has it); its identity is the first event's (human, `service.name`, agent), claimed, never
  verified (telemetry carries no credential). A `user_prompt` for a session not seen before starts it
  with the prompt as its original request; a session whose first event is a tool call has none.
- Idempotency: an event's action id is derived from its key (`act_obs_<digest>`), and an action id the
  session already has a receipt for is a duplicate: skipped, counted, never recorded twice. The ids a
  session holds are read from the store when this process first touches it, so a restart keeps dedupe.
- One lock serialises recording (check, record, remember), so two deliveries of one event racing each other
  still give one receipt.
- An event whose session has ended is rejected (named); a store failure propagates (the caller answers a
  retryable error; what was already committed dedupes on the retry).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aarmor.errors import InputError
from aarmor.ingest.tool_events import Parsed, Prompt, ToolEvent
from aarmor.model import Identity
from aarmor.observed import ObservedRecord

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.sdk import Session
    from aarmor.guard import Guard

__all__ = ["IngestResult", "Recorder", "action_id_for"]

log = logging.getLogger("aarmor.ingest")

#: sessions kept open in memory (least recently used beyond it are forgotten; they resume from the store)
_MAX_SESSIONS = 4096


def action_id_for(key: str) -> str:
    """The stable action id of an event key (what makes a redelivered event a duplicate)."""
    return "act_obs_" + hashlib.sha256(key.encode()).hexdigest()[:40]


@dataclass(slots=True)
class IngestResult:
    recorded: list[ObservedRecord] = field(default_factory=list)
    duplicates: int = 0
    #: one reason per event that was read but could not be recorded
    rejected: list[str] = field(default_factory=list)


class Recorder:
    """Records parsed tool events into a `Guard`'s sessions, each once."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[Session, set[str]]] = {}

    def record(self, parsed: Parsed) -> IngestResult:
        """Record every event of `parsed` not recorded before.

        Raises:
            StoreError, ChainError: the store could not take a record (those before it are committed).
        """
        out = IngestResult()
        with self._lock:
            for p in parsed.prompts.values():  # a prompt before any tool call starts its session
                if p.session_id not in self._sessions and self._guard.store.log_head(p.session_id) is None:
                    self._session(p, p.text)
            for ev in parsed.events:
                aid = action_id_for(ev.key)
                try:
                    session, seen = self._session(ev, None)
                except InputError as exc:  # e.g. the session has ended
                    out.rejected.append(f"event {ev.key}: {exc}")
                    continue
                if aid in seen:
                    out.duplicates += 1
                    continue
                rec = session.observe(ev.tool, dict(ev.arguments), ev.observation, action_id=aid)
                seen.add(aid)
                out.recorded.append(rec)
                if rec.alert:
                    log.warning("observed action %s `%s` in session %s: the policy would have decided %s (%s); "
                                "observe-only, it was not blocked (receipt %s)", rec.action_id, rec.tool,
                                ev.session_id, rec.would_decide.value, rec.reason, rec.receipt_id)
        return out

    def _session(self, ev: ToolEvent | Prompt, prompt: str | None) -> tuple[Session, set[str]]:
        held = self._sessions.pop(ev.session_id, None)
        if held is None:
            guard = self._guard
            identity = Identity(human=ev.human, service=ev.service, agent=ev.agent)
            resumed = guard.store.log_head(ev.session_id) is not None
            session = guard.session(identity=identity, session_id=ev.session_id,
                                    original_request=None if resumed else _bounded(prompt, guard))
            seen = {r.action_id for r in guard.store.read_receipts(ev.session_id)} if resumed else set()
            held = (session, seen)
            if len(self._sessions) >= _MAX_SESSIONS:  # forget the least recently used (dict order)
                self._sessions.pop(next(iter(self._sessions)))
        self._sessions[ev.session_id] = held  # most recently used last
        return held


def _bounded(prompt: str | None, guard: Any) -> str | None:
    """The prompt as the original request, cut to the configured limit (a long prompt is still context)."""
    if prompt is None:
        return None
    limit = guard.config.limits.max_request_chars
    return prompt if len(prompt) <= limit else prompt[:limit]
