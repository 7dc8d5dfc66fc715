"""Merkle tree hashing, inclusion and consistency proofs (RFC 6962 section 2.1 / RFC 9162 section 2.1).

Pure functions over 32-byte SHA-256 hashes; no aarmor imports, so a verifier needs nothing else.

- leaf hash  = SHA-256(0x00 || leaf data); node hash = SHA-256(0x01 || left || right): the prefixes keep
  a leaf from ever being read as an interior node (second-preimage resistance).
- MTH of n leaves: the empty string's hash for n = 0, the leaf hash for n = 1, else the node of the
  MTH of the first k leaves and of the rest, k the largest power of two smaller than n.
- Proof generation takes the tree's *leaf hashes* (the store keeps them), so no receipt is re-read.
- Verification follows RFC 9162 2.1.3.2 (inclusion) and 2.1.4.2 (consistency) step by step: iterative,
  no recursion, and every malformed input (index out of range, wrong path length, wrong hash size)
  returns False rather than raising.
Cost: generation hashes every leaf of the tree once (O(n)); about 0.1 s per 100k leaves in CPython.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "HASH_SIZE",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_EMPTY = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already `leaf_hash`ed). Iterative: hash level by level, carrying an odd
    last node up unchanged, which yields exactly the RFC's left-balanced tree."""
    if not leaves:
        return _EMPTY
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `leaves` (RFC 6962 2.1.1 PATH), leaf-side first.

    Raises:
        ValueError: index not in [0, len(leaves)).
    """
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of size {len(leaves)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    # walk down from the root collecting the sibling subtree at each split, then reverse (leaf side first)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            path.append(tree_hash(leaves[lo + k:hi]))
            hi = lo + k
        else:
            path.append(tree_hash(leaves[lo:lo + k]))
            lo += k
    path.reverse()
    return path


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of the first `old_size` leaves is a prefix of the tree of `leaves`
    (RFC 6962 2.1.2 PROOF / SUBPROOF). Empty when old_size is 0 or equals the new size.

    Raises:
        ValueError: old_size not in [0, len(leaves)].
    """
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError(f"old tree size {old_size} is not in [0, {n}]")
    if old_size in (0, n):
        return []
    out: list[bytes] = []

    def sub(m: int, lo: int, hi: int, complete: bool) -> None:
        # SUBPROOF(m, D[lo:hi], complete): recursion depth is log2(n)
        size = hi - lo
        if m == size:
            if not complete:
                out.append(tree_hash(leaves[lo:hi]))
            return
        k = _split(size)
        if m <= k:
            sub(m, lo, lo + k, complete)
            out.append(tree_hash(leaves[lo + k:hi]))
        else:
            sub(m - k, lo + k, hi, False)
            out.append(tree_hash(leaves[lo:lo + k]))

    sub(old_size, 0, n, True)
    return out


def _ok_hashes(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root an audit path leads to (RFC 9162 2.1.3.2), or None if the path cannot belong to leaf
    `index` of a tree of `size` leaves (index out of range, wrong length, malformed hash)."""
    if not (isinstance(index, int) and isinstance(size, int) and 0 <= index < size):
        return None
    if not _ok_hashes(leaf, *path):
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None  # path longer than the tree is deep
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    """True iff `path` proves leaf hash `leaf` is leaf `index` of the tree of `size` leaves with `root`."""
    got = root_from_inclusion(index, size, leaf, path)
    return got is not None and _ok_hashes(root) and got == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True iff `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root)
    (RFC 9162 2.1.4.2). Equal sizes need an empty proof and equal roots; old size 0 is consistent with
    anything (the empty tree is a prefix of every tree) and needs an empty proof."""
    if not (isinstance(old_size, int) and isinstance(new_size, int) and 0 <= old_size <= new_size):
        return False
    if not _ok_hashes(old_root, new_root, *proof):
        return False
    if old_size == 0:
        return not proof
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
