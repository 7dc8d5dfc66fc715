"""MODIFY of results: a rule's `redact_output` is applied to what the tool returned before the caller sees
it; the receipt records what was redacted (counts, never values); an output that cannot be inspected is
withheld; the session's context still counts what the tool returned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aarmor import Identity
from aarmor.errors import OutputWithheld

POLICY = """
policy: {id: scrub, version: "1", default: ALLOW}
rules:
  - id: scrub-crm
    priority: 10
    match: {tool: crm.lookup}
    action: MODIFY
    modifications: {redact_output: [PII, CREDENTIALS]}
    reason: the agent does not need contact details or keys
"""
KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
ALICE = Identity(human="alice@company.com")


def _receipt(guard: Any, sid: str, n: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = list(guard.store.read_receipts(sid))[n].body
    return body


def test_the_caller_gets_the_redacted_output_and_the_receipt_counts_it(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY)
    row = {"name": "Bob", "email": "bob@example.com", "note": f"api key {KEY}", "visits": 3}
    with guard.session(identity=ALICE) as s:
        out = s.invoke("crm.lookup", {"id": 7}, lambda a: dict(row))
        other = s.invoke("crm.count", {}, lambda a: "bob@example.com")  # another tool: not redacted
        sid = s.session_id
    assert out == {"name": "Bob", "email": "[REDACTED:email]", "note": "api key [REDACTED:api_key]", "visits": 3}
    assert other == "bob@example.com"
    body = _receipt(guard, sid, 0)
    assert body["execution"]["success"] is True
    assert body["execution"]["output_redaction"] == {"redacted": 2, "detectors": {"api_key": 1, "email": 1}}
    assert body["enforcement"]["result"] == "MODIFY"
    assert body.get("modified_parameters") is None  # only the output changed
    assert KEY not in str(body) and "bob@example.com" not in str(body)
    # the context log classified what the tool returned, not what the agent was shown
    outcome = next(r for r in guard.store.read_log(sid) if r.kind == "action_outcome")
    assert {"PII", "CREDENTIALS"} <= set(outcome.body["classifications"])


def test_an_output_that_cannot_be_inspected_is_withheld(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY)

    class Record:  # an object the redactor cannot see inside
        def __repr__(self) -> str:
            return f"Record({KEY})"

    ran: list[Any] = []
    with guard.session(identity=ALICE) as s:
        with pytest.raises(OutputWithheld) as withheld:
            s.invoke("crm.lookup", {"id": 7}, lambda a: ran.append(a) or Record())
        sid = s.session_id
    assert ran == [{"id": 7}]  # it ran: withholding is about the output, and the receipt says so
    body = _receipt(guard, sid, 0)
    assert withheld.value.receipt_id == body["receipt_id"]
    assert body["execution"]["output_redaction"]["withheld"] is True
    assert "Record" in body["execution"]["output_redaction"]["reason"]
