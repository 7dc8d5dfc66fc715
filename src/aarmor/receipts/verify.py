"""Offline verification of receipts (AARM R5): signatures and per-session chain links.

Needs only the receipts and the public keys: no store, no private key, no network. Every failure is
reported with the receipt id, session, seq and the reason; `VerificationReport.ok` is true only when
every signature verifies and every session's receipts form an unbroken chain from seq 0 (`GENESIS`).
Undetectable without an external anchor: removal of a session's *last* receipts (the transparency log
of a later issue closes this).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aarmor.errors import InputError, ReceiptError
from aarmor.receipts.sign import receipt_hash, signing_bytes
from aarmor.store.records import GENESIS

__all__ = ["ReceiptFailure", "VerificationReport", "verify_receipts"]


@dataclass(frozen=True, slots=True)
class ReceiptFailure:
    receipt_id: str | None
    session_id: str | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        return f"receipt `{self.receipt_id}` (session `{self.session_id}`, seq {self.seq}): {self.reason}"


@dataclass(slots=True)
class VerificationReport:
    checked: int = 0
    sessions: int = 0
    failures: list[ReceiptFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.failures

    def raise_for_failures(self) -> None:
        """Raises:
        ReceiptError: naming the first failure and how many there are.
        """
        if self.checked == 0:
            raise ReceiptError("no receipts to verify")
        if self.failures:
            raise ReceiptError(f"{len(self.failures)} receipt failure(s); first: {self.failures[0]}")


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "receipt_id": str, "version": str, "kind": str, "session_id": str, "seq": int,
    "prev_receipt_hash": str, "issued_at": str, "action": dict, "decision": dict, "context": dict,
    "signature": dict,
}


def _shape_error(r: Any) -> str | None:
    if not isinstance(r, dict):
        return f"receipt is a {type(r).__name__}, expected an object"
    for key, typ in _REQUIRED.items():
        if key not in r:
            return f"missing field `{key}`"
        if not isinstance(r[key], typ) or (typ is int and isinstance(r[key], bool)):
            return f"field `{key}` has type {type(r[key]).__name__}"
    sig = r["signature"]
    if sig.get("algorithm") != "Ed25519" or not isinstance(sig.get("key_id"), str) \
            or not isinstance(sig.get("value"), str):
        return "malformed `signature`: expected algorithm Ed25519, key_id and value"
    return None


def _check_signature(r: dict[str, Any], signed: bytes, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    sig = r["signature"]
    key = keys.get(sig["key_id"])
    if key is None:
        return f"unknown key id `{sig['key_id']}`"
    try:
        key.verify(base64.b64decode(sig["value"], validate=True), signed)
    except (InvalidSignature, binascii.Error, ValueError):
        return "bad signature: the receipt was altered or signed by another key"
    return None


def verify_receipts(receipts: Iterable[Any], public_keys: Mapping[str, Ed25519PublicKey]) -> VerificationReport:
    """Verify every receipt's signature and each session's chain, in the order given (export order)."""
    report = VerificationReport()
    seen: set[str] = set()
    heads: dict[str, tuple[int, str]] = {}
    for r in receipts:
        report.checked += 1
        problem = _shape_error(r)
        if problem:
            rid = r.get("receipt_id") if isinstance(r, dict) else None
            report.failures.append(ReceiptFailure(rid if isinstance(rid, str) else None, None, None, problem))
            continue
        rid, sid, seq = r["receipt_id"], r["session_id"], r["seq"]

        def fail(reason: str, rid: str = rid, sid: str = sid, seq: int = seq) -> None:
            report.failures.append(ReceiptFailure(rid, sid, seq, reason))

        if rid in seen:
            fail("duplicate receipt id")
        seen.add(rid)
        try:
            signed = signing_bytes(r)
        except InputError as exc:
            fail(f"not canonical JSON: {exc}")
            continue
        if (why := _check_signature(r, signed, public_keys)) is not None:
            fail(why)
        want_seq, want_prev = (heads[sid][0] + 1, heads[sid][1]) if sid in heads else (0, GENESIS)
        if sid not in heads and seq != 0:
            fail(f"chain starts at seq {seq}: receipts 0..{seq - 1} of this session are missing")
        elif seq != want_seq:
            fail(f"chain break: expected seq {want_seq}, found {seq} (a receipt was deleted, inserted or "
                 "reordered)")
        elif r["prev_receipt_hash"] != want_prev:
            fail(f"chain break: prev_receipt_hash does not match receipt seq {want_seq - 1} (the previous "
                 "receipt was altered or replaced)")
        heads[sid] = (seq, receipt_hash(r, signed=signed))
    report.sessions = len(heads)
    return report
