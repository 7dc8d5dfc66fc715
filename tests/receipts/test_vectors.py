"""Golden receipt vectors (tests/vectors/receipts/*.json): a valid chain and one-change variants.

Each vector holds the receipts (as exported), the public keys (JWKS), the defect, and the failures
verification must report. Other implementations can test against the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aarmor.receipts import load_public_keys, receipt_hash, verify_receipts
from tests.receipts import make_vectors

DIR = Path(__file__).resolve().parents[1] / "vectors" / "receipts"
VECTORS = sorted(DIR.glob("*.json"))


def test_vectors_exist() -> None:
    names = {p.stem for p in VECTORS}
    assert "valid-chain" in names and len(names) >= 15


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_receipt_vector(path: Path, tmp_path: Path) -> None:
    vec: dict[str, Any] = json.loads(path.read_text())
    assert vec["name"] == path.stem and (vec["defect"] is None) == (vec["name"] == "valid-chain")
    keys_file = tmp_path / "keys.jwks"
    keys_file.write_text(json.dumps(vec["public_keys"]))
    anchors = {k: tuple(v) for k, v in (vec["anchors"] or {}).items()}
    report = verify_receipts(vec["receipts"], load_public_keys(keys_file), anchors=anchors)
    expect = vec["expect"]
    assert report.ok is expect["ok"]
    got = [(f.receipt_id, f.seq, f.code) for f in report.failures]
    assert got == [(f["receipt_id"], f["seq"], f["code"]) for f in expect["failures"]], vec["defect"]
    if not expect["ok"]:
        assert got, "a defective vector must fail"
    if "receipt_hashes" in expect:
        assert [receipt_hash(r) for r in vec["receipts"]] == expect["receipt_hashes"]


def test_vectors_are_reproducible_from_the_generator() -> None:
    """Building and signing the same inputs gives byte-identical vectors: a format change is visible here
    (regenerate with `python -m tests.receipts.make_vectors` and review the diff)."""
    fresh = make_vectors.vectors()
    assert sorted(fresh) == sorted(p.stem for p in VECTORS)
    for name, vec in fresh.items():
        stored = json.loads((DIR / f"{name}.json").read_text())
        assert json.loads(json.dumps(vec)) == stored, name
