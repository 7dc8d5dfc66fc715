"""RFC 6962 / RFC 9162 Merkle hashing and proofs: the published test vectors (Certificate Transparency's
reference leaves, roots and proofs), an independent recursive reference, and properties over random trees."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aarmor.receipts import merkle

# The CT reference leaves (RFC 6962 test data), the roots of their first 1..8 leaves and two sets of proofs.
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# (leaf index, tree size, audit path)
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
HASHED = [merkle.leaf_hash(d) for d in LEAVES]


def _hx(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in items]


def _reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1's recursive definition, written out literally (the code under test is iterative)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(leaves[:k]) + _reference_mth(leaves[k:])).digest()


def test_roots_match_the_published_vectors() -> None:
    assert merkle.tree_hash([]).hex() == EMPTY_ROOT
    for n in range(1, 9):
        assert merkle.tree_hash(HASHED[:n]).hex() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors_are_generated_and_verified(index: int, size: int, path: list[str]) -> None:
    assert [h.hex() for h in merkle.inclusion_proof(index, HASHED[:size])] == path
    root = bytes.fromhex(ROOTS[size - 1])
    assert merkle.verify_inclusion(index, size, HASHED[index], _hx(path), root)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_vectors_are_generated_and_verified(old: int, new: int, path: list[str]) -> None:
    assert [h.hex() for h in merkle.consistency_proof(old, HASHED[:new])] == path
    o, n = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert merkle.verify_consistency(old, new, o, n, _hx(path))
    # the corruptions of the reference test suite: every one fails
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    proof = _hx(path)
    bad = [(old - 1, new, o, n, proof), (old + 1, new, o, n, proof), (old ^ 2, new, o, n, proof),
           (old, new * 2, o, n, proof), (old, new // 2, o, n, proof), (old, new, some, n, proof),
           (old, new, o, some, proof), (old, new, n, o, proof), (old, new, o, n, []),
           (old, new, o, n, [*proof, o]), (old, new, o, n, [*proof, n]), (old, new, o, n, [o, *proof]),
           (old, new, o, n, [n, *proof]), (old, new, o, n, [proof[0], *proof]), (old, new, o, n, proof[:-1]),
           (old, new, o, n, [*proof, b""]), (old, new, o, n, [b"", *proof])]
    bad += [(old, new, o, n, [h if j != i else bytes([h[0] ^ 16]) + h[1:] for j, h in enumerate(proof)])
            for i in range(len(proof))]
    assert [b for b in bad if merkle.verify_consistency(*b)] == []


def test_edge_cases_fail_closed() -> None:
    one = merkle.leaf_hash(b"data")
    assert merkle.verify_inclusion(0, 1, one, [], one)
    assert not merkle.verify_inclusion(0, 1, one, [], b"")
    assert not merkle.verify_inclusion(0, 1, b"", [], one)
    for index, size in ((0, 0), (1, 1), (1, 0), (2, 1), (-1, 3)):
        assert not merkle.verify_inclusion(index, size, one, [], one)
    empty = bytes.fromhex(EMPTY_ROOT)
    assert merkle.verify_consistency(0, 0, empty, empty, [])
    assert merkle.verify_consistency(0, 5, empty, one, [])
    assert merkle.verify_consistency(3, 3, one, one, [])
    assert not merkle.verify_consistency(3, 3, one, empty, [])
    assert not merkle.verify_consistency(0, 1, empty, one, [empty])  # a proof where none may be
    assert not merkle.verify_consistency(1, 1, one, one, [empty])
    assert not merkle.verify_consistency(2, 1, one, one, [])  # time travel
    with pytest.raises(ValueError, match="outside a tree of size 3"):
        merkle.inclusion_proof(3, HASHED[:3])
    with pytest.raises(ValueError, match="not in"):
        merkle.consistency_proof(4, HASHED[:3])


def _leaves(n: int, salt: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=140))
def test_every_leaf_of_every_tree_proves_and_nothing_else_does(n: int) -> None:
    leaves = _leaves(n)
    root = merkle.tree_hash(leaves)
    bigger = merkle.tree_hash([*leaves, merkle.leaf_hash(b"next")])
    assert root == _reference_mth(leaves)
    for i in range(n):
        path = merkle.inclusion_proof(i, leaves)
        assert merkle.verify_inclusion(i, n, leaves[i], path, root)
        # wrong index, wrong size, wrong leaf, a flipped bit anywhere in the path, a dropped or extra node
        assert not merkle.verify_inclusion(i + 1, n, leaves[i], path, root)
        # another size: the STH binds size and root together, so the other size comes with its own root
        assert not merkle.verify_inclusion(i, n + 1, leaves[i], path, bigger)
        assert not merkle.verify_inclusion(i, n, leaves[(i + 1) % n], path, root) or n == 1
        for j in range(len(path)):
            for bit in (0, 7):
                flipped = list(path)
                flipped[j] = flipped[j][:bit] + bytes([flipped[j][bit] ^ 1]) + flipped[j][bit + 1:]
                assert not merkle.verify_inclusion(i, n, leaves[i], flipped, root)
        if path:
            assert not merkle.verify_inclusion(i, n, leaves[i], path[:-1], root)
        assert not merkle.verify_inclusion(i, n, leaves[i], [*path, root], root)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_consistency_between_every_pair_and_rewrites_fail(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    roots = [merkle.tree_hash(leaves[:m]) for m in range(n + 1)]
    for m in range(n + 1):
        proof = merkle.consistency_proof(m, leaves)
        assert merkle.verify_consistency(m, n, roots[m], roots[n], proof)
    # a rewritten history: one leaf before the old size changed, or a truncation and regrowth
    m = data.draw(st.integers(min_value=1, max_value=n))
    k = data.draw(st.integers(min_value=0, max_value=m - 1))
    rewritten = list(leaves)
    rewritten[k] = merkle.leaf_hash(b"forged")
    grown = rewritten + _leaves(data.draw(st.integers(min_value=0, max_value=5)), salt=1)
    proof = merkle.consistency_proof(m, grown)
    assert not merkle.verify_consistency(m, len(grown), roots[m], merkle.tree_hash(grown), proof)
    truncated = leaves[:k] + _leaves(n - k + 1, salt=2)  # leaves from k on dropped, then new ones appended
    proof = merkle.consistency_proof(m, truncated)
    assert not merkle.verify_consistency(m, len(truncated), roots[m], merkle.tree_hash(truncated), proof)


def test_a_large_tree_agrees_with_the_reference() -> None:
    leaves = _leaves(1000)
    root = merkle.tree_hash(leaves)
    assert root == _reference_mth(leaves)
    for i in (0, 511, 512, 999):
        assert merkle.verify_inclusion(i, 1000, leaves[i], merkle.inclusion_proof(i, leaves), root)
    for m in (1, 512, 777):
        assert merkle.verify_consistency(m, 1000, merkle.tree_hash(leaves[:m]), root,
                                         merkle.consistency_proof(m, leaves))
