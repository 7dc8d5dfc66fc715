"""Forensic timeline: every receipt verified on the way, failures flagged, nothing hidden."""

from __future__ import annotations

import copy
from typing import Any

from aarmor.receipts import Keyring, build_timeline
from aarmor.store import open_store


def test_timeline_rows_read_timestamp_action_result(chain: list[dict[str, Any]], keyring: Keyring) -> None:
    tl = build_timeline(chain, keyring.public_keys())
    assert tl.ok
    assert [str(e) for e in tl.events] == [
        "2026-02-10T12:00:00.000Z email.send -> ALLOW",
        "2026-02-10T12:00:01.000Z email.send -> MODIFY",
        "2026-02-10T12:00:02.000Z email.send -> DENY",
        "2026-02-10T12:00:03.000Z email.send -> ALLOW",
    ]
    first = tl.events[0]
    assert first.human == "alice@company.com" and first.agent == "mail-agent" and first.rule == "rule-1"
    assert first.executed and first.success is True and not tl.events[2].executed


def test_enforced_result_is_shown_and_the_verdict_kept(chain: list[dict[str, Any]], keyring: Keyring) -> None:
    from aarmor.receipts import ReceiptSigner
    from tests.receipts.helpers import STEPS, sign_chain

    signer = ReceiptSigner(keyring)
    recs = sign_chain(signer, STEPS[:1], session="s-x")
    body = {k: v for k, v in recs[0].body.items() if k != "signature"}
    body["decision"] = dict(body["decision"], result="STEP_UP")
    body["enforcement"] = {"result": "ALLOW", "executed": True, "reason": "approved", "identity_flag": None}
    rec = signer.sign(body)
    (e,) = build_timeline([rec.body], keyring.public_keys()).events
    assert (e.decision, e.result) == ("STEP_UP", "ALLOW")


def test_tampered_and_malformed_receipts_are_flagged_not_dropped(chain: list[dict[str, Any]],
                                                                 keyring: Keyring) -> None:
    evidence: list[Any] = copy.deepcopy(chain)
    evidence[1]["action"]["requester_context"]["human"] = "mallory@company.com"
    evidence.append({"garbage": True})
    tl = build_timeline(evidence, keyring.public_keys())
    assert not tl.ok and len(tl.events) == 5
    assert [e.verified for e in tl.events] == [True, False, False, True, False]
    assert "FAILED VERIFICATION: bad signature" in str(tl.events[1])
    assert tl.events[4].action == "?" and tl.events[4].receipt_id == "?"


def test_timeline_from_store_records_checks_columns(chain: list[dict[str, Any]], keyring: Keyring,
                                                    signer: Any) -> None:
    from tests.receipts.helpers import STEPS, sign_chain

    store = open_store("memory://")
    store.append_all(receipts=tuple(sign_chain(signer, STEPS, session="s-r")))
    tl = build_timeline(list(store.read_receipts("s-r")), keyring.public_keys())
    assert tl.ok and len(tl.events) == 4 and tl.to_json()["verification"]["checked"] == 4
