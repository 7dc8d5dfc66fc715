"""Offline verification: each test is an attack on stored receipts, and checks it is caught and named."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aarmor.canonical import b64
from aarmor.errors import ReceiptError
from aarmor.receipts import (
    Keyring,
    ReceiptSigner,
    receipt_hash,
    signing_bytes,
    verify_receipts,
    verify_records,
)
from aarmor.receipts.verify import (
    BAD_SIGNATURE,
    CHAIN_GAP,
    CHAIN_HASH,
    DUPLICATE_ID,
    MALFORMED,
    RECORD_MISMATCH,
    TRUNCATED,
    UNKNOWN_KEY,
)
from aarmor.store import open_store
from tests.receipts.helpers import STEPS, open_keyring, sign_chain

Chain = list[dict[str, Any]]


def _verify(chain: Chain, keyring: Keyring, **kw: Any) -> Any:
    return verify_receipts(chain, keyring.public_keys(), **kw)


def _codes(report: Any) -> list[tuple[int | None, str]]:
    return [(f.seq, f.code) for f in report.failures]


def _resign(r: dict[str, Any], key: Ed25519PrivateKey, key_id: str) -> dict[str, Any]:
    r = copy.deepcopy(r)
    r["signature"] = {"algorithm": "Ed25519", "key_id": key_id, "value": b64(key.sign(signing_bytes(r)))}
    return r


def test_genuine_chain_verifies(chain: Chain, keyring: Keyring) -> None:
    report = _verify(chain, keyring)
    assert report.ok and report.checked == 4 and report.sessions == 1 and not report.failures
    report.raise_for_failures()  # does not raise
    assert report.heads["s-1"] == (3, receipt_hash(chain[-1]))


def test_empty_input_does_not_verify(keyring: Keyring) -> None:
    """Empty means no: verifying nothing is not a pass."""
    report = _verify([], keyring)
    assert not report.ok
    with pytest.raises(ReceiptError, match="no receipts"):
        report.raise_for_failures()


@pytest.mark.parametrize("path,value", [
    (("action", "requester_context", "human"), "mallory@company.com"),
    (("action", "requester_context", "roles"), ["admin"]),
    (("action", "requester_context", "delegation_chain", 0, "scope"), ["*"]),
    (("decision", "policy", "hash"), "sha256:" + "0" * 64),
    (("decision", "policy", "version"), "1999-01-01"),
    (("decision", "result"), "ALLOW"),
    (("decision", "reason"), "looked fine"),
    (("action", "parameters", "to"), "bob@company.com"),
    (("action", "parameters_digest"), "sha256:" + "f" * 64),
    (("context", "context_hash"), "sha256:" + "e" * 64),
    (("issued_at",), "2030-01-01T00:00:00.000Z"),
])
def test_rewritten_identity_policy_or_decision_breaks_signature_and_link(chain: Chain, keyring: Keyring,
                                                                         path: tuple[Any, ...], value: Any) -> None:
    """Rewriting who asked, which policy decided, what was decided or what was done breaks the signature."""
    tampered = copy.deepcopy(chain)
    target: Any = tampered[2]
    for key in path[:-1]:
        target = target[key]
    assert target[path[-1]] != value
    target[path[-1]] = value
    report = _verify(tampered, keyring)
    assert not report.ok
    first = report.failures[0]
    assert (first.receipt_id, first.session_id, first.seq, first.code) == (chain[2]["receipt_id"], "s-1", 2,
                                                                           BAD_SIGNATURE)
    assert "bad signature" in first.reason
    # the next receipt no longer links to the altered content either
    assert _codes(report) == [(2, BAD_SIGNATURE), (3, CHAIN_HASH)]
    with pytest.raises(ReceiptError, match=chain[2]["receipt_id"]):
        report.raise_for_failures()


def test_deleted_receipt_in_the_middle_is_detected(chain: Chain, keyring: Keyring) -> None:
    report = _verify(chain[:1] + chain[2:], keyring)
    assert _codes(report) == [(2, CHAIN_GAP)]
    assert "expected seq 1, found 2" in report.failures[0].reason


def test_deleted_first_receipt_is_detected(chain: Chain, keyring: Keyring) -> None:
    report = _verify(chain[1:], keyring)
    assert _codes(report)[0] == (1, CHAIN_GAP)
    assert "receipts 0..0 of this session are missing" in report.failures[0].reason


def test_reordered_receipts_are_detected(chain: Chain, keyring: Keyring) -> None:
    report = _verify([chain[0], chain[2], chain[1], chain[3]], keyring)
    assert not report.ok
    assert report.failures[0].seq == 2 and report.failures[0].code == CHAIN_GAP


def test_replayed_receipt_is_detected(chain: Chain, keyring: Keyring) -> None:
    """ATTACK: a copy of a genuine ALLOW receipt inserted to stand in for a later action."""
    report = _verify([*chain, chain[0]], keyring)
    assert (0, DUPLICATE_ID) in _codes(report) and (0, CHAIN_GAP) in _codes(report)


def test_forged_receipt_signed_with_attacker_key_is_detected(chain: Chain, keyring: Keyring) -> None:
    """ATTACK: swap keys: re-sign an altered receipt with the attacker's own key under our key id."""
    forged = copy.deepcopy(chain)
    forged[1]["decision"]["result"] = "ALLOW"
    forged[1] = _resign(forged[1], Ed25519PrivateKey.generate(), keyring.current_key_id)
    report = _verify(forged, keyring)
    assert _codes(report)[0] == (1, BAD_SIGNATURE)


def test_receipt_signed_by_an_unknown_key_is_detected(chain: Chain, keyring: Keyring) -> None:
    forged = copy.deepcopy(chain)
    forged[3] = _resign(forged[3], Ed25519PrivateKey.generate(), "attacker-key")
    report = _verify(forged, keyring)
    assert _codes(report) == [(3, UNKNOWN_KEY)]
    assert "unknown key id `attacker-key`" in report.failures[0].reason


def test_signature_moved_to_another_known_key_id_is_detected(tmp_path: Path) -> None:
    """ATTACK: relabel a signature with another key id we trust (key confusion)."""
    ring = open_keyring(tmp_path / "keys")
    old = ring.current_key_id
    ring.rotate()
    chain = [r.body for r in sign_chain(ReceiptSigner(ring), STEPS[:2])]
    chain = copy.deepcopy(chain)
    chain[0]["signature"]["key_id"] = old
    assert _codes(verify_receipts(chain, ring.public_keys())) == [(0, BAD_SIGNATURE), (1, CHAIN_HASH)]


def test_appended_forgery_with_a_correct_chain_link_is_detected(chain: Chain, keyring: Keyring) -> None:
    """ATTACK: extend the chain with a well-linked receipt the attacker signed."""
    fake = copy.deepcopy(chain[-1])
    fake.update(receipt_id="rct_" + "f" * 32, seq=4, prev_receipt_hash=receipt_hash(chain[-1]))
    fake = _resign(fake, Ed25519PrivateKey.generate(), keyring.current_key_id)
    assert _codes(_verify([*chain, fake], keyring)) == [(4, BAD_SIGNATURE)]


def test_tail_truncation_is_detected_with_an_anchor(chain: Chain, keyring: Keyring) -> None:
    """A chain alone cannot show its last receipts were deleted; an anchor kept elsewhere can."""
    anchor = _verify(chain, keyring).heads
    assert _verify(chain[:2], keyring).ok  # the limit of a bare chain, stated honestly
    report = _verify(chain[:2], keyring, anchors=anchor)
    assert _codes(report) == [(3, TRUNCATED)]
    assert "chain ends at seq 1" in report.failures[0].reason
    assert _verify(chain, keyring, anchors=anchor).ok


def test_signature_with_extra_fields_is_malformed(chain: Chain, keyring: Keyring) -> None:
    tampered = copy.deepcopy(chain)
    tampered[0]["signature"]["note"] = "unsigned text riding along"
    assert _codes(_verify(tampered, keyring))[0] == (0, MALFORMED)


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("decision"), "missing field `decision`"),
    (lambda r: r.update(seq="1"), "field `seq` has type str"),
    (lambda r: r.update(seq=True), "field `seq` has type bool"),
    (lambda r: r.update(version="2.0"), "unsupported receipt version `2.0`"),
    (lambda r: r.update(kind="approval"), "unknown receipt kind `approval`"),
    (lambda r: r.update(prev_receipt_hash="abc"), "not a sha256: digest"),
    (lambda r: r["signature"].update(algorithm="RS256"), "malformed `signature`"),
    (lambda r: r["action"].pop("requester_context"), "requester_context"),
])
def test_malformed_receipt_is_named(chain: Chain, keyring: Keyring, mutate: Any, message: str) -> None:
    tampered = copy.deepcopy(chain)
    mutate(tampered[1])
    report = _verify(tampered, keyring)
    assert report.failures[0].code == MALFORMED and message in report.failures[0].reason
    assert report.failures[0].receipt_id == chain[1]["receipt_id"]


def test_non_object_receipt_is_named(keyring: Keyring) -> None:
    report = _verify(["not a receipt"], keyring)
    assert report.failures[0].reason == "receipt is a str, expected an object"


def test_bad_base64_signature_is_a_bad_signature(chain: Chain, keyring: Keyring) -> None:
    tampered = copy.deepcopy(chain)
    tampered[0]["signature"]["value"] = "***"
    assert _codes(_verify(tampered, keyring))[0] == (0, BAD_SIGNATURE)


def test_sessions_are_verified_independently(signer: ReceiptSigner, keyring: Keyring) -> None:
    a = [r.body for r in sign_chain(signer, STEPS, session="s-a")]
    b = [r.body for r in sign_chain(signer, STEPS, session="s-b")]
    interleaved = [x for pair in zip(a, b, strict=True) for x in pair]
    report = _verify(interleaved, keyring)
    assert report.ok and report.sessions == 2
    # a receipt moved from one session into another does not fit there
    moved = copy.deepcopy(a[1])
    moved["session_id"] = "s-b"
    assert not _verify([b[0], moved], keyring).ok


def test_store_column_tampering_is_detected(tmp_path: Path, signer: ReceiptSigner, keyring: Keyring) -> None:
    """ATTACK: edit the indexed `decision` column so `WHERE decision='DENY'` hides a denial."""
    db = tmp_path / "r.db"
    store = open_store(f"sqlite:///{db}")
    store.append_all(receipts=tuple(sign_chain(signer, STEPS)))
    store.close()
    con = sqlite3.connect(db)
    con.execute("UPDATE receipts SET decision='ALLOW' WHERE seq=2")
    con.commit()
    con.close()
    store = open_store(f"sqlite:///{db}")
    records = list(store.read_receipts("s-1"))
    store.close()
    assert verify_receipts([r.body for r in records], keyring.public_keys()).ok  # bodies are intact
    report = verify_records(records, keyring.public_keys())
    assert _codes(report) == [(2, RECORD_MISMATCH)]
    assert "`decision`" in report.failures[0].reason
