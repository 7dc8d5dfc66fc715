"""Golden PDP vectors (tests/vectors/pdp/*.json): each is a valid case turned into a defect by one change.

Every vector names its defect and lists the expected decision, reasons and errors exactly; other
implementations can test against them, and so can we after every refactor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aarmor.policy import load_policy
from tests.policy.helpers import decide

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "pdp"
FILES = sorted(VECTORS.glob("*.json"))
POLICY = load_policy(VECTORS / "policy.yaml")


def test_there_are_vectors() -> None:
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_pdp_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    assert v["name"] == path.stem and v["defect"]
    e = v["expect"]
    d = decide(
        POLICY, v["case"]["action"], v["case"]["context"], confidence_threshold=v["confidence_threshold"]
    )
    assert d.result.value == e["decision"]
    assert d.rule_id == e["rule_id"]
    assert [d.reason] == e["reasons"]
    assert list(d.errors) == e["errors"]
    assert d.defer_trigger == e["defer_trigger"]
    assert list(d.context_needed) == e["context_needed"]
    assert d.classification.value == e["classification"]
    assert d.to_json()["modifications"] == e["modifications"]
    assert list(d.approvers) == e["approvers"]
    assert d.policy_id == "vectors" and d.policy_hash == POLICY.hash
