"""Signing and chaining receipts (AARM R5).

INVARIANT: the signature covers the RFC 8785 canonical bytes of the whole receipt except `signature`;
`receipt_hash` commits to the whole signed receipt: sha256 over the tag `aarmor.receipt.v1`, 0x00, those
signed bytes, 0x00, and the canonical bytes of the `signature` object. The session's next receipt carries
it as `prev_receipt_hash`. The receipt body is canonicalised once (signing and hashing share the bytes).
"""

from __future__ import annotations

import re
from typing import Any

from aarmor.canonical import TAG_RECEIPT, b64, canonical_bytes, digest
from aarmor.receipts.keys import Keyring
from aarmor.store.records import ReceiptRecord

__all__ = ["ReceiptSigner", "receipt_hash", "signing_bytes"]


_PLAIN = re.compile(r"[A-Za-z0-9._+/=-]*")


def _signature_bytes(sig: dict[str, Any]) -> bytes:
    """canonical_bytes(sig), built directly for the usual shape (no character needs escaping)."""
    plain = type(sig) is dict and len(sig) == 3 and all(
        type(sig.get(k)) is str and _PLAIN.fullmatch(sig[k]) for k in ("algorithm", "key_id", "value"))
    if plain:
        return (f'{{"algorithm":"{sig["algorithm"]}","key_id":"{sig["key_id"]}",'
                f'"value":"{sig["value"]}"}}').encode("ascii")
    return canonical_bytes(sig)


def signing_bytes(receipt: dict[str, Any]) -> bytes:
    """The exact bytes the signature covers: RFC 8785 canonical JSON of all fields but `signature`.

    Raises:
        InputError: the receipt holds a value JSON cannot carry exactly.
    """
    return canonical_bytes({k: v for k, v in receipt.items() if k != "signature"})


def receipt_hash(receipt: dict[str, Any], *, signed: bytes | None = None) -> str:
    """The chain hash of a signed receipt (`signed`: its `signing_bytes`, if already computed).

    Raises:
        InputError: not canonical JSON. KeyError: no `signature`.
    """
    body = signing_bytes(receipt) if signed is None else signed
    return digest(TAG_RECEIPT, raw=body + b"\x00" + _signature_bytes(receipt["signature"]))


class ReceiptSigner:
    """Signs receipt bodies with the keyring's current key (one canonicalisation per receipt)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def check(self) -> None:
        """Raise unless the signer can sign now (called before an action may run).

        Raises:
            SigningKeyError: no usable current key.
        """
        self.keyring.check()

    def sign(self, body: dict[str, Any]) -> ReceiptRecord:
        """Sign `body` in place (adds `signature`) and return the record to store.

        Raises:
            InputError: the body is not canonical JSON. SigningKeyError: the key cannot sign.
        """
        body.pop("signature", None)
        signed = signing_bytes(body)
        key_id, sig = self.keyring.sign(signed)
        body["signature"] = {"algorithm": "Ed25519", "key_id": key_id, "value": b64(sig)}
        action = body["action"]
        return ReceiptRecord(
            receipt_id=body["receipt_id"], session_id=body["session_id"], seq=body["seq"],
            action_id=action["action_id"], timestamp=action["timestamp"], tool=action["tool"],
            operation=action["operation"], decision=body["decision"]["result"],
            policy_id=body["decision"]["policy"]["policy_id"], human=action["requester_context"]["human"],
            receipt_hash=receipt_hash(body, signed=signed), body=body)
