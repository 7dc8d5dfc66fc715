"""The receipt transparency log: signed tree heads, inclusion and consistency proofs (docs/transparency.md).

Every stored receipt is a leaf of one append-only RFC 6962 Merkle tree (the store adds it in the same
transaction; leaf hash `aarmor.store.base.receipt_leaf`: SHA-256(0x00 || the receipt's `receipt_hash` text),
which commits to the whole signed receipt). A signed tree head (STH) commits to the first `tree_size`
leaves. With only public keys and an STH kept from earlier, an auditor can check that
- a receipt is in the log (inclusion proof: the audit path from its leaf to the STH's root), and
- the log only grew since (consistency proof between the old and a new STH): deleting, reordering or
  rewriting any receipt logged before the old STH makes that proof impossible.

Rules:
- STH signature: Ed25519 by the receipt keyring over `tree_head_signing_bytes` = `aarmor.tree-head.v1`,
  0x00, then the RFC 8785 canonical JSON of {root_hash, timestamp, tree_size}: the tag keeps an STH
  signature from ever being valid as a receipt or delegation signature, and the reverse.
- Hashes travel as lowercase hex. Every document carries its `type` (versioned).
- The prover (`TransparencyLog`) refuses to prove from a store whose stored leaves no longer reproduce a
  head it published, or whose receipt no longer matches its leaf: it never signs over a rewritten history.
- Verification functions never trust the store: they raise `ProofError` naming what failed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aarmor.canonical import b64, canonical_bytes, format_ts
from aarmor.errors import InputError, ReceiptError
from aarmor.receipts import merkle
from aarmor.receipts.sign import receipt_hash
from aarmor.store.base import Store, receipt_leaf
from aarmor.store.records import TreeHead

__all__ = [
    "CONSISTENCY_PROOF_TYPE",
    "INCLUSION_PROOF_TYPE",
    "TREE_HEAD_TYPE",
    "ProofError",
    "TransparencyLog",
    "TreeHeadPublisher",
    "tree_head_from_json",
    "tree_head_json",
    "tree_head_signing_bytes",
    "verify_consistency_proof",
    "verify_inclusion_proof",
    "verify_tree_head",
]

log = logging.getLogger("aarmor.transparency")

TREE_HEAD_TYPE = "aarmor.tree-head.v1"
INCLUSION_PROOF_TYPE = "aarmor.inclusion-proof.v1"
CONSISTENCY_PROOF_TYPE = "aarmor.consistency-proof.v1"
_HEX = re.compile(r"[0-9a-f]{64}")
_SAFE_INT = 2**53 - 1


class ProofError(ReceiptError):
    """A tree head, inclusion or consistency proof does not verify, or cannot be produced honestly."""


class _Signer(Protocol):
    def sign(self, data: bytes) -> tuple[str, bytes]: ...


# --- tree heads ----------------------------------------------------------------------------------------

def tree_head_signing_bytes(tree_size: int, root_hash: str, timestamp: str) -> bytes:
    """The exact bytes an STH signature covers."""
    body = canonical_bytes({"root_hash": root_hash, "timestamp": timestamp, "tree_size": tree_size})
    return TREE_HEAD_TYPE.encode("ascii") + b"\x00" + body


def tree_head_json(head: TreeHead) -> dict[str, Any]:
    """The published form of an STH."""
    return {"type": TREE_HEAD_TYPE, "tree_size": head.tree_size, "root_hash": head.root_hash,
            "timestamp": head.timestamp,
            "signature": {"algorithm": "Ed25519", "key_id": head.key_id, "value": head.signature}}


def tree_head_from_json(doc: Any) -> TreeHead:
    """Parse a published STH (shape only; `verify_tree_head` checks the signature).

    Raises:
        ProofError: naming the field that is missing or of the wrong shape.
    """
    if not isinstance(doc, dict):
        raise ProofError(f"a tree head is a JSON object, got {type(doc).__name__}")
    if doc.get("type") != TREE_HEAD_TYPE:
        raise ProofError(f"tree head `type` is {doc.get('type')!r}, expected `{TREE_HEAD_TYPE}`")
    size, root, ts, sig = doc.get("tree_size"), doc.get("root_hash"), doc.get("timestamp"), doc.get("signature")
    if type(size) is not int or not 0 <= size <= _SAFE_INT:
        raise ProofError(f"tree head `tree_size` must be a non-negative integer, got {size!r}")
    if not isinstance(root, str) or not _HEX.fullmatch(root):
        raise ProofError("tree head `root_hash` must be 64 lowercase hex digits")
    if not isinstance(ts, str):
        raise ProofError("tree head `timestamp` must be a string")
    if not (isinstance(sig, dict) and sig.get("algorithm") == "Ed25519" and isinstance(sig.get("key_id"), str)
            and isinstance(sig.get("value"), str)):
        raise ProofError("tree head `signature` must be {algorithm: Ed25519, key_id, value}")
    return TreeHead(size, root, ts, sig["key_id"], sig["value"])


def verify_tree_head(doc: Any, public_keys: Mapping[str, Ed25519PublicKey]) -> TreeHead:
    """Parse an STH and check its signature with public keys only.

    Raises:
        ProofError: malformed, unknown key id, or a signature that does not verify.
    """
    head = tree_head_from_json(doc)
    key = public_keys.get(head.key_id)
    if key is None:
        raise ProofError(f"tree head of size {head.tree_size} is signed by unknown key id `{head.key_id}`")
    try:
        key.verify(base64.b64decode(head.signature, validate=True),
                   tree_head_signing_bytes(head.tree_size, head.root_hash, head.timestamp))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise ProofError(f"tree head of size {head.tree_size}: bad signature (altered, or signed by another "
                         "key)") from exc
    return head


def sign_tree_head(signer: _Signer, tree_size: int, root: bytes, now: datetime) -> TreeHead:
    ts = format_ts(now)
    kid, sig = signer.sign(tree_head_signing_bytes(tree_size, root.hex(), ts))
    return TreeHead(tree_size, root.hex(), ts, kid, b64(sig))


# --- the prover, over a store --------------------------------------------------------------------------

class TransparencyLog:
    """Publishes tree heads and produces proofs from a store's leaves (the operator's side)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _leaves(self, size: int) -> list[bytes]:
        leaves = self.store.tree_leaves(size)
        if len(leaves) != size:
            raise ProofError(f"the store holds {len(leaves)} leaves, a tree of size {size} was asked for (the log "
                             "was truncated)")
        return leaves

    def publish(self, signer: _Signer, now: datetime) -> TreeHead:
        """Sign and record the head of the whole log as it is now.

        Raises:
            ProofError: the current leaves do not extend the last published head (history rewritten).
            SigningKeyError, StoreError.
        """
        size = self.store.tree_size()
        leaves = self._leaves(size)
        last = self.store.tree_head_latest()
        if last is not None:  # never sign a tree the last published head is not a prefix of
            self._check(last, leaves)
        head = sign_tree_head(signer, size, merkle.tree_hash(leaves), now)
        self.store.tree_head_append(head)
        return head

    def _check(self, head: TreeHead, leaves: list[bytes]) -> None:
        if len(leaves) < head.tree_size:
            raise ProofError(f"the log holds {len(leaves)} leaves but tree head of size {head.tree_size} "
                             f"({head.timestamp}) was published: receipts were removed")
        if merkle.tree_hash(leaves[:head.tree_size]).hex() != head.root_hash:
            raise ProofError(f"the first {head.tree_size} leaves no longer hash to the root of the tree head "
                             f"published at {head.timestamp}: the logged history was rewritten")

    def head(self, tree_size: int | None = None) -> TreeHead:
        """The latest published head (of `tree_size` when given).

        Raises:
            ProofError: no such head was published.
        """
        if tree_size is None:
            head = self.store.tree_head_latest()
            if head is None:
                raise ProofError("no tree head was published yet; run `aarmor receipts tree-head`")
            return head
        heads = self.store.tree_heads(tree_size=tree_size)
        if not heads:
            raise ProofError(f"no tree head of size {tree_size} was published")
        return heads[-1]

    def inclusion(self, receipt_id: str, head: TreeHead) -> dict[str, Any]:
        """The inclusion proof of a receipt against `head`, with the receipt itself.

        Raises:
            ProofError: the receipt or its leaf is missing, it is not in `head`'s tree, it no longer matches
                its leaf, or the stored leaves no longer reproduce `head`.
        """
        found = self.store.tree_leaf_index(receipt_id)
        if found is None:
            raise ProofError(f"receipt `{receipt_id}` has no leaf in the transparency log")
        index, leaf = found
        if index >= head.tree_size:
            raise ProofError(f"receipt `{receipt_id}` is leaf {index}, after tree head of size {head.tree_size}; "
                             "publish a newer tree head")
        rec = self.store.get_receipt(receipt_id)
        if rec is None:
            raise ProofError(f"receipt `{receipt_id}` (leaf {index}) is missing from the store: it was deleted")
        try:
            actual = receipt_hash(rec.body)
        except (InputError, KeyError, TypeError) as exc:
            raise ProofError(f"receipt `{receipt_id}` is unreadable: {exc}") from exc
        if receipt_leaf(actual) != leaf:
            raise ProofError(f"receipt `{receipt_id}` no longer matches leaf {index}: it was altered after it "
                             "was logged")
        leaves = self._leaves(head.tree_size)
        self._check(head, leaves)
        return {"type": INCLUSION_PROOF_TYPE, "receipt_id": receipt_id, "leaf_index": index, "leaf_hash": leaf.hex(),
                "audit_path": [h.hex() for h in merkle.inclusion_proof(index, leaves)],
                "tree_head": tree_head_json(head), "receipt": rec.body}

    def consistency(self, old_size: int, new: TreeHead) -> dict[str, Any]:
        """The proof that the tree of `old_size` leaves is a prefix of `new`'s tree.

        Raises:
            ProofError: old_size > new size, or the stored leaves no longer reproduce `new`.
        """
        if not 0 <= old_size <= new.tree_size:
            raise ProofError(f"old tree size {old_size} is not between 0 and the new size {new.tree_size}")
        leaves = self._leaves(new.tree_size)
        self._check(new, leaves)
        return {"type": CONSISTENCY_PROOF_TYPE, "old_size": old_size, "new_size": new.tree_size,
                "proof": [h.hex() for h in merkle.consistency_proof(old_size, leaves)]}


# --- offline verification --------------------------------------------------------------------------------

def _hashes(doc: dict[str, Any], key: str) -> list[bytes]:
    items = doc.get(key)
    if not isinstance(items, list) or not all(isinstance(h, str) and _HEX.fullmatch(h) for h in items):
        raise ProofError(f"`{key}` must be a list of 64-digit lowercase hex hashes")
    return [bytes.fromhex(h) for h in items]


def _typed(doc: Any, kind: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("type") != kind:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise ProofError(f"expected a `{kind}` document, got {got!r}")
    return doc


def _check_receipt(receipt: Any, public_keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The receipt's own signature (chain links need the whole session: `aarmor receipts verify`)."""
    from aarmor.receipts.verify import CHAIN_GAP, CHAIN_HASH, verify_receipts

    report = verify_receipts([receipt], public_keys)
    own = [f for f in report.failures if f.code not in (CHAIN_GAP, CHAIN_HASH)]
    if own:
        raise ProofError(f"the receipt does not verify: [{own[0].code}] {own[0]}")
    return receipt_hash(receipt)


def verify_inclusion_proof(doc: Any, public_keys: Mapping[str, Ed25519PublicKey], *,
                           receipt: Any = None) -> TreeHead:
    """Check an inclusion proof offline: the STH signature, the receipt's signature, that the receipt
    hashes to the proof's leaf, and that the audit path leads from that leaf to the STH's root.

    `receipt` (when given) must be the receipt the proof is about; otherwise the proof's embedded copy
    is the one checked. Returns the verified tree head.

    Raises:
        ProofError: naming the first thing that does not verify.
    """
    proof = _typed(doc, INCLUSION_PROOF_TYPE)
    head = verify_tree_head(proof.get("tree_head"), public_keys)
    index, rid, leaf_hex = proof.get("leaf_index"), proof.get("receipt_id"), proof.get("leaf_hash")
    if type(index) is not int or not isinstance(rid, str) or not isinstance(leaf_hex, str) \
            or not _HEX.fullmatch(leaf_hex):
        raise ProofError("an inclusion proof needs integer `leaf_index`, string `receipt_id` and hex `leaf_hash`")
    path = _hashes(proof, "audit_path")
    body = receipt if receipt is not None else proof.get("receipt")
    if body is None:
        raise ProofError("no receipt to check: the proof embeds none and none was given")
    if not isinstance(body, dict) or body.get("receipt_id") != rid:
        raise ProofError(f"the receipt is not `{rid}`, the receipt the proof is about")
    leaf = receipt_leaf(_check_receipt(body, public_keys))
    if leaf.hex() != leaf_hex:
        raise ProofError(f"receipt `{rid}` does not hash to the proof's leaf (the receipt or the proof was altered)")
    if not merkle.verify_inclusion(index, head.tree_size, leaf, path, bytes.fromhex(head.root_hash)):
        raise ProofError(f"the audit path does not lead from leaf {index} to the root of the tree head of size "
                         f"{head.tree_size}: receipt `{rid}` is not in that tree")
    return head


def verify_consistency_proof(old_doc: Any, new_doc: Any, doc: Any,
                             public_keys: Mapping[str, Ed25519PublicKey]) -> tuple[TreeHead, TreeHead]:
    """Check offline that the log of `old_doc` (an STH kept from earlier) is a prefix of the log of
    `new_doc`: both signatures, the sizes the proof names, then the RFC 9162 consistency check.

    Raises:
        ProofError: naming the first thing that does not verify.
    """
    old = verify_tree_head(old_doc, public_keys)
    new = verify_tree_head(new_doc, public_keys)
    proof = _typed(doc, CONSISTENCY_PROOF_TYPE)
    if (proof.get("old_size"), proof.get("new_size")) != (old.tree_size, new.tree_size):
        raise ProofError(f"the proof is between sizes {proof.get('old_size')} and {proof.get('new_size')}, the "
                         f"tree heads have sizes {old.tree_size} and {new.tree_size}")
    if old.tree_size > new.tree_size:
        raise ProofError(f"the old tree head (size {old.tree_size}) is larger than the new one (size "
                         f"{new.tree_size}): the log was truncated")
    if not merkle.verify_consistency(old.tree_size, new.tree_size, bytes.fromhex(old.root_hash),
                                     bytes.fromhex(new.root_hash), _hashes(proof, "proof")):
        raise ProofError(f"the tree of size {new.tree_size} ({new.timestamp}) does not extend the tree of size "
                         f"{old.tree_size} ({old.timestamp}): the logged history was rewritten or truncated")
    return old, new


# --- periodic publication ------------------------------------------------------------------------------------

class TreeHeadPublisher:
    """Publishes a tree head every `interval` seconds from a daemon thread, when the log grew since the
    last head this process saw (an unchanged log needs no new head). A failed publication is logged and
    retried at the next tick: it is not on any action's path, so it cannot fail one."""

    def __init__(self, store: Store, signer: _Signer, interval: float, clock: Callable[[], datetime]) -> None:
        self._log = TransparencyLog(store)
        self._signer = signer
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self.last: TreeHead | None = None
        self._thread = threading.Thread(target=self._run, name="aarmor-sth", daemon=True)
        self._thread.start()

    def publish_if_grown(self) -> TreeHead | None:
        latest = self._log.store.tree_head_latest()
        if latest is not None and latest.tree_size == self._log.store.tree_size():
            return None
        self.last = self._log.publish(self._signer, self._clock())
        return self.last

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.publish_if_grown()
            except Exception:
                log.exception("publishing a tree head failed")

    def close(self) -> None:
        """Stop the thread (before the keyring and the store close)."""
        self._stop.set()
        self._thread.join()
