"""Real receipts for the tests: real model objects, a real keyring on disk, a real store."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aarmor.config import RedactionConfig
from aarmor.model import (
    Classification,
    Decision,
    DecisionResult,
    DelegationLink,
    FrozenMap,
    Identity,
    RiskLevel,
)
from aarmor.normalize import normalize_action
from aarmor.receipts import Keyring, ReceiptSigner, build_receipt
from aarmor.store import GENESIS, ReceiptRecord

T0 = datetime(2026, 2, 10, 12, 0, 0, tzinfo=UTC)
REDACTION = RedactionConfig()
ALICE = Identity(human="alice@company.com", service="agent-svc", agent="mail-agent", session="s-1",
                 roles=("analyst",), scopes=("db:read", "email:send"),
                 delegation=(DelegationLink("orchestrator", "mail-agent", ("email:send",), T0,
                                            T0 + timedelta(hours=1)),))
POLICY = {"policy_id": "corp", "policy_version": "2026-02-10", "policy_hash": "sha256:" + "ab" * 32}


def open_keyring(path: Path) -> Keyring:
    """A fresh keyring; the first-use warning is expected (and asserted in test_keys)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Keyring.open(path)


def action(tool: str = "email.send", params: dict[str, Any] | None = None, *, session: str = "s-1",
           now: datetime = T0, identity: Identity = ALICE) -> Any:
    return normalize_action(tool, params if params is not None else {"to": "bob@company.com"}, operation=None,
                            identity=identity, session_id=session, now=now)


def decision(result: str = "ALLOW", **kw: Any) -> Decision:
    fields: dict[str, Any] = {"reason": f"rule says {result}", "rule_id": "rule-1", "matched_rules": ("rule-1",),
                              "classification": Classification.STANDARD, "risk_level": RiskLevel.LOW, **POLICY}
    fields.update(kw)
    return Decision(result=DecisionResult(result), **fields)


def sign_chain(signer: ReceiptSigner, steps: list[tuple[str, dict[str, Any]]], *, session: str = "s-1",
               prev: tuple[int, str] = (-1, GENESIS), start: datetime = T0) -> list[ReceiptRecord]:
    """Sign one receipt per (result, params) step, chained in `session`."""
    out: list[ReceiptRecord] = []
    seq, head = prev
    for i, (result, params) in enumerate(steps):
        now = start + timedelta(seconds=i)
        act = action(params=params, session=session, now=now)
        dec = decision(result, **({"modifications": FrozenMap({"parameters": FrozenMap({"limit": 100})})}
                                  if result == "MODIFY" else {}))
        body = build_receipt(
            kind="decision", action=act, decision=dec, session_seq=seq + 1, prev_receipt_hash=head,
            context_hash="sha256:" + f"{i:064x}", log_seq=2 * i, now=now, redaction=REDACTION,
            modified_parameters={**params, "limit": 100} if result == "MODIFY" else None,
            execution={"started_at": "2026-02-10T12:00:00.000Z", "completed_at": "2026-02-10T12:00:00.001Z",
                       "success": True, "output_hash": "sha256:" + "cd" * 32, "error": None}
            if result in ("ALLOW", "MODIFY") else None,
        )
        rec = signer.sign(body)
        out.append(rec)
        seq, head = rec.seq, rec.receipt_hash
    return out


STEPS: list[tuple[str, dict[str, Any]]] = [
    ("ALLOW", {"to": "bob@company.com", "subject": "agenda"}),
    ("MODIFY", {"sql": "SELECT * FROM customers", "limit": 5000}),
    ("DENY", {"to": "mallory@evil.example", "body": "customer list", "api_key": "k-123"}),
    ("ALLOW", {"path": "/tmp/report.txt"}),
]
