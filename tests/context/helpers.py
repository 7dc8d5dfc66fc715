"""Helpers for the context tests: a fixed clock, actions, decisions, session start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aarmor.canonical import TAG_PARAM, digest
from aarmor.context import Classifier, SessionContext
from aarmor.model import Action, Decision, DecisionResult, Identity, ToolSpec
from aarmor.normalize import normalize_action
from aarmor.store import Store, open_store

T0 = datetime(2026, 2, 10, 12, 0, 0, tzinfo=UTC)
SID = "sess_abc123"
IDENT = Identity(human="alice@company.com", service="agent-svc", agent="a1", session=SID, roles=("analyst",))
ALLOW = Decision(DecisionResult.ALLOW, "allowed by rule-1", rule_id="rule-1")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_action(tool: str = "crm.query", args: dict[str, Any] | None = None, *, session_id: str = SID,
                now: datetime = T0, action_id: str | None = None) -> Action:
    return normalize_action(tool, args or {"q": "x"}, operation=None, identity=IDENT, session_id=session_id,
                            now=now, action_id=action_id)


def request(ctx: SessionContext, action: Action, decision: Decision = ALLOW, *, now: datetime = T0) -> Any:
    params = action.parameters.to_json()
    return ctx.record_requested(action, decision, parameters_view=params,
                                parameters_digest=digest(TAG_PARAM, params), now=now)


def start(store: Store, classifier: Classifier, *, session_id: str = SID, tools: Any = None,
          **kw: Any) -> SessionContext:
    return SessionContext.start(store, session_id=session_id, identity=IDENT,
                                original_request="prepare the meeting with ACME", now=T0,
                                classifier=classifier, tools=tools, **kw)


CATALOGUE = (ToolSpec("crm.query", "query the CRM"), ToolSpec("email.send", "send e-mail"))


def build_session(store: Store, classifier: Classifier, *, session_id: str = SID,
                  actions: int = 3) -> SessionContext:
    """A realistic log: start, a context value, then request + outcome per action, an event."""
    ctx = start(store, classifier, session_id=session_id)
    ctx.set_value("ticket_status", "open", source="env:jira", now=at(1))
    for i in range(actions):
        a = make_action("crm.query", {"q": f"acme {i}"}, session_id=session_id, now=at(2 + i))
        request(ctx, a, now=at(2 + i))
        ctx.record_outcome(a, executed=True, success=True, output={"contact": f"jane{i}@acme.example"},
                           error=None, now=at(2.5 + i))
    ctx.record_event("approval_decided", {"approver": "bob", "granted": True}, now=at(10))
    return ctx


def sqlite_store(path: Any) -> Store:
    return open_store(f"sqlite:///{path}")
