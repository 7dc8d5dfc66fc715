"""Offline verification of receipts (AARM R5): signatures and per-session chain links.

Needs only the receipts and the public keys: no store, no private key, no network. Rules:
- every receipt is well formed (version `1.0`, a known kind, typed fields, an Ed25519 `signature`);
- its signature verifies under the public key its `key_id` names (an unknown key id is a failure);
- per session, receipts come in chain order: seq 0 first with `prev_receipt_hash == GENESIS`, then each
  seq is the previous + 1 and carries the previous receipt's `receipt_hash` (missing, extra, duplicated
  and reordered receipts all break this);
- a receipt id appears once;
- with `anchors` (session -> (seq, receipt_hash) recorded elsewhere), each anchored session ends
  exactly there: this is what detects deletion of a session's *last* receipts, which a chain alone
  cannot (the transparency log of a later issue generalises it).
Every failure is reported with the receipt id, session, seq, a machine-readable `code` and the reason;
`VerificationReport.ok` is true only when at least one receipt was checked and nothing failed.
`verify_records` adds the store's view: the index columns and stored `receipt_hash` match the body.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aarmor.canonical import canonical_bytes
from aarmor.errors import InputError, ReceiptError
from aarmor.receipts.build import RECEIPT_KINDS, RECEIPT_VERSION
from aarmor.receipts.sign import receipt_hash, signing_bytes
from aarmor.store.records import GENESIS, ReceiptRecord

__all__ = [
    "BAD_SIGNATURE",
    "CHAIN_GAP",
    "CHAIN_HASH",
    "DUPLICATE_ID",
    "MALFORMED",
    "RECORD_MISMATCH",
    "TRUNCATED",
    "UNKNOWN_KEY",
    "ReceiptFailure",
    "VerificationReport",
    "verify_receipts",
    "verify_records",
]

# Failure codes (stable: golden vectors and `--json` output use them).
MALFORMED = "malformed"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
CHAIN_GAP = "chain_gap"            # seq missing, repeated or out of order
CHAIN_HASH = "chain_hash"          # prev_receipt_hash does not name the previous receipt
DUPLICATE_ID = "duplicate_id"
TRUNCATED = "truncated"            # an anchored session does not end at its anchor
RECORD_MISMATCH = "record_mismatch"  # a store column or stored hash disagrees with the signed body

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SAFE_INT = 2**53 - 1


def jcs_numbers(value: Any) -> Any:
    """`value` with integers beyond +-(2**53 - 1) read as the IEEE doubles they denote, where exact.

    RFC 8785 numbers are doubles: a float parameter such as `1e16` is signed as `10000000000000000`, which a
    JSON parser returns as an int that `canonical_bytes` refuses. Reading it back as the double it was
    restores the signed bytes; an integer that is not the RFC 8785 form of a double stays an int (and
    fails verification as not canonical).
    """
    if isinstance(value, dict):
        return {k: jcs_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jcs_numbers(v) for v in value]
    if type(value) is int and abs(value) > _SAFE_INT:
        try:
            as_float = float(value)
        except OverflowError:
            return value
        # exact iff the double's RFC 8785 form is this very integer text
        return as_float if canonical_bytes(as_float) == str(value).encode("ascii") else value
    return value


@dataclass(frozen=True, slots=True)
class ReceiptFailure:
    """One verification failure. `receipt_id`/`session_id`/`seq` are None when unreadable."""

    receipt_id: str | None
    session_id: str | None
    seq: int | None
    reason: str
    code: str = MALFORMED

    def __str__(self) -> str:
        return f"receipt `{self.receipt_id}` (session `{self.session_id}`, seq {self.seq}): {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"receipt_id": self.receipt_id, "session_id": self.session_id, "seq": self.seq,
                "code": self.code, "reason": self.reason}


@dataclass(slots=True)
class VerificationReport:
    """The typed result of verification: never a bare bool (DESIGN.md habit 5)."""

    checked: int = 0
    sessions: int = 0
    failures: list[ReceiptFailure] = field(default_factory=list)
    #: session -> (seq, receipt_hash) of the last receipt seen: an anchor for the next verification
    #: (hash None when that receipt was malformed)
    heads: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.failures

    @property
    def failed_ids(self) -> frozenset[str]:
        return frozenset(f.receipt_id for f in self.failures if f.receipt_id is not None)

    def raise_for_failures(self) -> None:
        """Raise unless every receipt verified.

        Raises:
            ReceiptError: no receipts at all, or naming the first failure and how many there are.
        """
        if self.checked == 0:
            raise ReceiptError("no receipts to verify")
        if self.failures:
            raise ReceiptError(f"{len(self.failures)} receipt failure(s); first: {self.failures[0]}")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "sessions": self.sessions,
                "failures": [f.to_json() for f in self.failures]}


_REQUIRED: dict[str, type] = {
    "receipt_id": str, "version": str, "kind": str, "session_id": str, "seq": int,
    "prev_receipt_hash": str, "issued_at": str, "action": dict, "decision": dict, "context": dict,
    "signature": dict,
}


def _shape_error(r: dict[str, Any]) -> str | None:
    for key, typ in _REQUIRED.items():
        if key not in r:
            return f"missing field `{key}`"
        if not isinstance(r[key], typ) or (typ is int and isinstance(r[key], bool)):
            return f"field `{key}` has type {type(r[key]).__name__}, expected {typ.__name__}"
    if r["version"] != RECEIPT_VERSION:
        return f"unsupported receipt version `{r['version']}`, expected {RECEIPT_VERSION}"
    if r["kind"] not in RECEIPT_KINDS:
        return f"unknown receipt kind `{r['kind']}`, expected one of {', '.join(RECEIPT_KINDS)}"
    if r["seq"] < 0:
        return f"negative seq {r['seq']}"
    if not _DIGEST.fullmatch(r["prev_receipt_hash"]):
        return "field `prev_receipt_hash` is not a sha256: digest"
    if not isinstance(r["action"].get("requester_context"), dict):
        return "field `action.requester_context` is missing"
    if not isinstance(r["decision"].get("result"), str):
        return "field `decision.result` is missing"
    sig = r["signature"]
    if set(sig) != {"algorithm", "key_id", "value"} or sig["algorithm"] != "Ed25519" \
            or not isinstance(sig["key_id"], str) or not isinstance(sig["value"], str):
        return "malformed `signature`: expected exactly algorithm Ed25519, key_id and value"
    return None


class _Verifier:
    def __init__(self, keys: Mapping[str, Ed25519PublicKey], report: VerificationReport) -> None:
        self.keys = keys
        self.report = report
        self.seen: set[str] = set()

    def fail(self, r: Any, code: str, reason: str) -> None:
        def get(name: str, typ: type) -> Any:
            v = r.get(name) if isinstance(r, dict) else None
            return v if isinstance(v, typ) and not isinstance(v, bool) else None

        self.report.failures.append(ReceiptFailure(get("receipt_id", str), get("session_id", str),
                                                    get("seq", int), reason, code))

    def _unlinkable(self, r: dict[str, Any]) -> None:
        # A malformed receipt is already reported; its successor is checked for seq only (its link to an
        # unreadable receipt cannot be checked, and reporting it again would blame the wrong receipt).
        sid, seq = r.get("session_id"), r.get("seq")
        if isinstance(sid, str) and type(seq) is int:
            self.report.heads[sid] = (seq, None)

    def add(self, r: Any) -> str | None:
        """Check one receipt; return its receipt_hash (None if it could not be computed)."""
        self.report.checked += 1
        if not isinstance(r, dict):
            self.fail(r, MALFORMED, f"receipt is a {type(r).__name__}, expected an object")
            return None
        if (problem := _shape_error(r)) is not None:
            self.fail(r, MALFORMED, problem)
            self._unlinkable(r)
            return None
        rid, sid, seq = r["receipt_id"], r["session_id"], r["seq"]
        if rid in self.seen:
            self.fail(r, DUPLICATE_ID, "duplicate receipt id (a receipt was replayed or copied)")
        self.seen.add(rid)
        try:
            signed = signing_bytes(r)
        except InputError:
            try:  # slow path: large numbers that came back from JSON text as ints
                signed = signing_bytes(jcs_numbers(r))
            except InputError as exc:
                self.fail(r, MALFORMED, f"not canonical JSON: {exc}")
                self._unlinkable(r)
                return None
        sig = r["signature"]
        key = self.keys.get(sig["key_id"])
        if key is None:
            self.fail(r, UNKNOWN_KEY, f"unknown key id `{sig['key_id']}`")
        else:
            try:
                key.verify(base64.b64decode(sig["value"], validate=True), signed)
            except (InvalidSignature, binascii.Error, ValueError):
                self.fail(r, BAD_SIGNATURE, "bad signature: the receipt was altered or signed by another key")
        heads = self.report.heads
        want_seq, want_prev = (heads[sid][0] + 1, heads[sid][1]) if sid in heads else (0, GENESIS)
        if sid not in heads and seq != 0:
            self.fail(r, CHAIN_GAP, f"chain starts at seq {seq}: receipts 0..{seq - 1} of this session are "
                                    "missing")
        elif seq != want_seq:
            self.fail(r, CHAIN_GAP, f"chain break: expected seq {want_seq}, found {seq} (a receipt was deleted, "
                                    "inserted or reordered)")
        elif want_prev is not None and r["prev_receipt_hash"] != want_prev:
            self.fail(r, CHAIN_HASH, f"chain break: prev_receipt_hash does not match receipt seq {want_seq - 1} "
                                     "(the previous receipt was altered or replaced)")
        h = receipt_hash(r, signed=signed)
        heads[sid] = (seq, h)
        return h

    def finish(self, anchors: Mapping[str, tuple[int, str]] | None) -> VerificationReport:
        rep = self.report
        for sid, (seq, h) in sorted((anchors or {}).items()):
            head = rep.heads.get(sid)
            if head is None:
                rep.failures.append(ReceiptFailure(None, sid, seq, f"anchored session has no receipts (expected "
                                                   f"its chain to end at seq {seq})", TRUNCATED))
            elif head != (seq, h):
                rep.failures.append(ReceiptFailure(None, sid, seq, f"chain ends at seq {head[0]} but the anchor "
                                                   f"says seq {seq} with hash {h} (receipts were removed from "
                                                   "the end, or the chain was rewritten)", TRUNCATED))
        rep.sessions = len(rep.heads)
        return rep


def verify_receipts(receipts: Iterable[Any], public_keys: Mapping[str, Ed25519PublicKey], *,
                    anchors: Mapping[str, tuple[int, str]] | None = None) -> VerificationReport:
    """Verify every receipt's signature and each session's chain, in the order given (export order).

    `anchors` maps a session id to the (seq, receipt_hash) its chain must end at. Never raises for bad
    receipts: everything wrong is in the report (`report.raise_for_failures()` to raise).
    """
    v = _Verifier(public_keys, VerificationReport())
    for r in receipts:
        v.add(r)
    return v.finish(anchors)


def verify_records(records: Iterable[ReceiptRecord], public_keys: Mapping[str, Ed25519PublicKey], *,
                   anchors: Mapping[str, tuple[int, str]] | None = None) -> VerificationReport:
    """`verify_receipts` over stored records, plus: the indexed columns (session, seq, tool, decision,
    human, ...) and the stored `receipt_hash` agree with the signed body.

    ATTACK: editing the `decision` column of the receipts table makes `WHERE decision = 'DENY'` queries lie
    while every signature still verifies; this catches it.
    """
    v = _Verifier(public_keys, VerificationReport())
    for rec in records:
        h = v.add(rec.body)
        if h is None:  # malformed: already reported
            continue
        body = rec.body
        action = body["action"]
        expected = {
            "receipt_id": body["receipt_id"], "session_id": body["session_id"], "seq": body["seq"],
            "action_id": action.get("action_id"), "timestamp": action.get("timestamp"),
            "tool": action.get("tool"), "operation": action.get("operation"),
            "decision": body["decision"].get("result"),
            "policy_id": (body["decision"].get("policy") or {}).get("policy_id"),
            "human": action["requester_context"].get("human"), "receipt_hash": h,
        }
        wrong = [k for k, want in expected.items() if getattr(rec, k) != want]
        if wrong:
            v.fail(body, RECORD_MISMATCH, "stored column(s) " + ", ".join(f"`{k}`" for k in wrong)
                   + " disagree with the signed receipt")
    return v.finish(anchors)
