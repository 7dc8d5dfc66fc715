"""Building and signing: the contract's receipt shape, chaining, deferrals, redaction in the receipt."""

from __future__ import annotations

import base64
import statistics
import time
from typing import Any

import pytest

from aarmor.canonical import TAG_PARAM, TAG_RECEIPT, canonical_bytes, digest
from aarmor.receipts import (
    RECEIPT_KINDS,
    Keyring,
    ReceiptSigner,
    build_receipt,
    parameters_digest,
    receipt_hash,
    signing_bytes,
    verify_receipts,
)
from aarmor.store import GENESIS, open_store
from tests.receipts.helpers import REDACTION, T0, action, decision

TOP = {"receipt_id", "version", "kind", "session_id", "seq", "prev_receipt_hash", "issued_at", "action",
       "decision", "modification", "context", "approval", "deferral", "execution", "error"}
REQUESTER = {"human", "service", "agent", "session", "roles", "scope", "effective_scope", "delegation_chain",
             "verified_by", "token_id"}


def _body(kind: str = "decision", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"kind": kind, "action": action(), "decision": decision(), "session_seq": 0,
                            "prev_receipt_hash": GENESIS, "context_hash": "sha256:" + "1" * 64, "log_seq": 0,
                            "now": T0, "redaction": REDACTION}
    args.update(kw)
    return build_receipt(**args)


def test_receipt_has_exactly_the_contract_fields(signer: ReceiptSigner) -> None:
    body = _body()
    assert set(body) == TOP
    assert body["receipt_id"].startswith("rct_") and body["version"] == "1.0"
    assert set(body["action"]) == {"action_id", "timestamp", "tool", "operation", "parameters",
                                   "parameters_digest", "requester_context"}
    assert set(body["action"]["requester_context"]) == REQUESTER
    assert body["action"]["requester_context"]["delegation_chain"][0]["delegator"] == "orchestrator"
    assert body["decision"]["policy"] == {"policy_id": "corp", "version": "2026-02-10",
                                          "hash": "sha256:" + "ab" * 32}
    assert body["context"] == {"context_hash": "sha256:" + "1" * 64, "log_seq": 0}
    record = signer.sign(body)
    assert set(record.body) == TOP | {"signature"}
    sig = record.body["signature"]
    assert sig["algorithm"] == "Ed25519" and sig["key_id"] == signer.keyring.current_key_id
    assert len(base64.b64decode(sig["value"])) == 64


def test_record_columns_mirror_the_signed_body(signer: ReceiptSigner) -> None:
    rec = signer.sign(_body(decision=decision("DENY")))
    assert (rec.session_id, rec.seq, rec.tool, rec.operation, rec.decision, rec.policy_id, rec.human) == (
        "s-1", 0, "email", "send", "DENY", "corp", "alice@company.com")
    assert rec.prev_receipt_hash == GENESIS


def test_signature_covers_everything_but_the_signature(signer: ReceiptSigner) -> None:
    rec = signer.sign(_body())
    unsigned = {k: v for k, v in rec.body.items() if k != "signature"}
    assert signing_bytes(rec.body) == canonical_bytes(unsigned)
    pub = signer.keyring.public_keys()[rec.body["signature"]["key_id"]]
    pub.verify(base64.b64decode(rec.body["signature"]["value"]), canonical_bytes(unsigned))  # raises if not


def test_receipt_hash_commits_to_signature_too(signer: ReceiptSigner) -> None:
    rec = signer.sign(_body())
    assert rec.receipt_hash == receipt_hash(rec.body)
    expected = digest(TAG_RECEIPT, raw=signing_bytes(rec.body) + b"\x00" + canonical_bytes(rec.body["signature"]))
    assert rec.receipt_hash == expected
    other = dict(rec.body, signature=dict(rec.body["signature"], key_id="other"))
    assert receipt_hash(other) != rec.receipt_hash


def test_parameters_digest_matches_normalisation_and_binds_exact_values() -> None:
    act = action(params={"to": "bob@company.com", "n": 1})
    assert parameters_digest(act.parameters) == act.parameters_digest == digest(TAG_PARAM, act.parameters)
    assert parameters_digest({"to": "bob@company.com", "n": 2}) != act.parameters_digest


def test_secret_parameters_never_reach_the_receipt(signer: ReceiptSigner) -> None:
    """AARM threat 10: receipts are not a side channel for credentials."""
    secret = "sk-" + "A" * 40
    act = action(params={"user": "bob", "password": "hunter2hunter2", "note": f"use {secret}",
                         "nested": {"Api_Key": "abc123xyz"}})
    rec = signer.sign(_body(action=act, decision=decision("DENY"),
                            error={"class": "InputError", "message": f"bad token {secret}"},
                            modified_parameters={"password": "hunter2hunter2", "limit": 1}))
    text = canonical_bytes(rec.body).decode()
    for leaked in ("hunter2hunter2", secret, "abc123xyz"):
        assert leaked not in text
    assert rec.body["action"]["parameters"]["user"] == "bob"
    assert rec.body["action"]["parameters"]["password"]["digest"].startswith("sha256:")
    assert rec.body["action"]["parameters_digest"] == act.parameters_digest  # still bound to exact values
    assert "[redacted sha256:" in rec.body["error"]["message"]


def test_modification_records_both_digests(signer: ReceiptSigner) -> None:
    from aarmor.model import FrozenMap

    act = action("database.query", {"sql": "SELECT 1", "limit": 5000})
    dec = decision("MODIFY", modifications=FrozenMap({"parameters": FrozenMap({"limit": 100})}))
    body = _body(action=act, decision=dec, modified_parameters={"sql": "SELECT 1", "limit": 100})
    mod = body["modification"]
    assert mod["original_parameters_digest"] == act.parameters_digest
    assert mod["modified_parameters"] == {"sql": "SELECT 1", "limit": 100}
    assert mod["modified_parameters_digest"] == parameters_digest({"sql": "SELECT 1", "limit": 100})
    assert mod["modifications"] == {"parameters": {"limit": 100}}
    assert body["action"]["parameters"]["limit"] == 5000


def test_defer_produces_a_deferral_and_a_resolution_receipt(signer: ReceiptSigner) -> None:
    dec = decision("DEFER", defer_trigger="unpopulated_context", context_needed=("maintenance_window",))
    block = {"reason": "need window", "trigger": "unpopulated_context", "context_needed": ["maintenance_window"],
             "deferred_at": "2026-02-10T12:00:00.000Z", "timeout_at": "2026-02-10T12:10:00.000Z",
             "resolution_method": None, "resolved_at": None, "result": None}
    first = signer.sign(_body("deferral", decision=dec, deferral=block))
    resolved = dict(block, resolution_method="context_provided", resolved_at="2026-02-10T12:01:00.000Z",
                    result="ALLOW")
    second = signer.sign(_body("resolution", decision=dec, deferral=resolved, session_seq=1,
                               prev_receipt_hash=first.receipt_hash))
    assert first.body["kind"] == "deferral" and second.body["kind"] == "resolution"
    assert second.body["deferral"]["resolution_method"] == "context_provided"
    assert second.body["deferral"]["resolved_at"] == "2026-02-10T12:01:00.000Z"
    assert second.body["action"]["requester_context"] == first.body["action"]["requester_context"]  # R6
    assert verify_receipts([first.body, second.body], signer.keyring.public_keys()).ok


def test_resolution_without_method_is_recorded_as_error_not_blank() -> None:
    """AARM R5: a deferral that ended because waiting failed still says how and when it ended."""
    body = _body("resolution", decision=decision("DEFER"),
                 deferral={"reason": "r", "resolution_method": None, "resolved_at": None})
    assert body["deferral"]["resolution_method"] == "error"
    assert body["deferral"]["resolved_at"] == body["issued_at"]


@pytest.mark.parametrize("kw,message", [
    ({"kind": "approval"}, "is not one of"),
    ({"kind": "deferral"}, "needs the deferral block"),
    ({"kind": "resolution"}, "needs the deferral block"),
    ({"session_seq": -1}, "non-negative"),
    ({"prev_receipt_hash": "0" * 64}, "not a sha256"),
])
def test_builder_misuse_is_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _body(**kw)


def test_receipt_kinds_are_the_three_of_the_contract() -> None:
    assert RECEIPT_KINDS == ("decision", "deferral", "resolution")


def test_signed_records_append_to_the_store_chain(signer: ReceiptSigner) -> None:
    store = open_store("memory://")
    first = signer.sign(_body())
    second = signer.sign(_body(session_seq=1, prev_receipt_hash=first.receipt_hash))
    store.append_all(receipts=(first, second))
    assert store.receipt_head("s-1") == (1, second.receipt_hash)
    bodies = [r.body for r in store.read_receipts("s-1")]
    assert verify_receipts(bodies, signer.keyring.public_keys()).ok


def test_build_and_sign_is_fast(keyring: Keyring) -> None:
    """The receipt is on the hot path: build + sign well under a millisecond (target p50 <= 200 us)."""
    signer = ReceiptSigner(keyring)
    act, dec = action(), decision()
    samples = []
    for i in range(300):
        t = time.perf_counter()
        signer.sign(build_receipt(kind="decision", action=act, decision=dec, session_seq=i, prev_receipt_hash=GENESIS,
                                  context_hash=GENESIS, log_seq=i, now=T0, redaction=REDACTION))
        samples.append(time.perf_counter() - t)
    assert statistics.median(samples) < 1e-3  # generous bound for shared CI machines
