"""AARM R2: per-session context reaches the PDP; the log is hash-chained and tamper-evident."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from aarmor.config import ToolConfig
from aarmor.intent import AlignmentSignal
from aarmor.model import Action, ContextSnapshot
from tests.conformance.conftest import POLICY, Tool


class RecordingScorer:
    """A real `AlignmentScorer` that reports no signal and keeps every snapshot the pipeline built,
    so the test can inspect exactly what the PDP received at step N."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[ContextSnapshot] = []

    def score(self, action: Action, snapshot: ContextSnapshot) -> AlignmentSignal | None:
        self.seen.append(snapshot)
        return None


def test_pdp_receives_all_prior_actions_and_classifications(make_guard: Any, alice: Any) -> None:
    scorer = RecordingScorer()
    guard = make_guard(policy=str(POLICY), scorer=scorer, tools={"crm.lookup": ToolConfig(returns=("PII",))})
    with guard.session(identity=alice, original_request="prepare my meeting with ACME") as s:
        s.invoke("crm.lookup", {"company": "ACME"}, Tool({"contact": "Jane Roe"}))
        s.invoke("calendar.read", {"day": "monday"}, Tool("10:00 ACME"))
        s.invoke("docs.read", {"id": 7}, Tool("card 4111 1111 1111 1111"))
        s.invoke("notes.write", {"text": "prep done"}, Tool("saved"))
    step4 = scorer.seen[3]
    assert [p.name for p in step4.prior_actions] == ["crm.lookup", "calendar.read", "docs.read"]
    assert step4.original_request == "prepare my meeting with ACME"
    assert "PII" in step4.classifications              # declared for crm.lookup
    assert "FINANCIAL" in step4.classifications        # detected (Luhn-valid card) in docs.read output
    assert step4.action_count == 3


def test_context_entry_tampering_detected(guard: Any, alice: Any, tmp_path: Path, cli: Any) -> None:
    with guard.session(identity=alice, original_request="send the agenda") as s:
        s.invoke("email.send", {"to": "bob@company.com", "body": "agenda"}, Tool())
        s.invoke("calendar.read", {"day": "monday"}, Tool())
    db = guard.store.path
    guard.close()
    store_arg = ["--store", f"sqlite:///{db}"]
    ok = cli("log", "verify", *store_arg)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with sqlite3.connect(db) as conn:  # an attacker edits an earlier entry's body
        conn.execute("UPDATE log_entries SET body = replace(body, 'bob@company.com', 'eve@evil.example') "
                     "WHERE session_id = ? AND seq = 1", (s.session_id,))
    bad = cli("log", "verify", *store_arg)
    assert bad.returncode == 1
    assert s.session_id in bad.stdout + bad.stderr
    assert "seq 1" in bad.stdout + bad.stderr
