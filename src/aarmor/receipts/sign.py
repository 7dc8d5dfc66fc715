"""Signing and chaining receipts (AARM R5).

INVARIANT: the signature covers the RFC 8785 canonical bytes of the whole receipt except `signature`;
`receipt_hash` is the domain-tagged digest of the whole signed receipt, and the session's next receipt
carries it as `prev_receipt_hash`. Each receipt is canonicalised once for signing and once for hashing.
"""

from __future__ import annotations

from typing import Any

from aarmor.canonical import TAG_RECEIPT, b64, canonical_bytes, digest
from aarmor.receipts.keys import Keyring
from aarmor.store.records import ReceiptRecord

__all__ = ["ReceiptSigner", "receipt_hash", "signing_bytes"]


def signing_bytes(receipt: dict[str, Any]) -> bytes:
    """The exact bytes the signature covers."""
    return canonical_bytes({k: v for k, v in receipt.items() if k != "signature"})


def receipt_hash(receipt: dict[str, Any]) -> str:
    return digest(TAG_RECEIPT, receipt)


class ReceiptSigner:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def sign(self, body: dict[str, Any]) -> ReceiptRecord:
        """Sign `body` in place (adds `signature`) and return the record to store.

        Raises:
            InputError: the body is not canonical JSON. SigningKeyError: the key cannot sign.
        """
        body.pop("signature", None)
        key_id, sig = self.keyring.sign(signing_bytes(body))
        body["signature"] = {"algorithm": "Ed25519", "key_id": key_id, "value": b64(sig)}
        action = body["action"]
        return ReceiptRecord(
            receipt_id=body["receipt_id"], session_id=body["session_id"], seq=body["seq"],
            action_id=action["action_id"], timestamp=action["timestamp"], tool=action["tool"],
            operation=action["operation"], decision=body["decision"]["result"],
            policy_id=body["decision"]["policy"]["policy_id"], human=action["requester_context"]["human"],
            receipt_hash=receipt_hash(body), body=body)
