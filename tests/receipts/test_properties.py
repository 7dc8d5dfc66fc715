"""Properties: any single change to a stored receipt is detected; canonical JSON survives export."""

from __future__ import annotations

import copy
import json
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import rfc8785
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from aarmor.canonical import canonical_bytes, loads_strict
from aarmor.receipts import Keyring, ReceiptSigner, verify_receipts
from aarmor.receipts.sign import _signature_bytes
from aarmor.receipts.verify import jcs_numbers
from tests.receipts.helpers import STEPS, open_keyring, sign_chain

_scalars = (st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=12)


@cache
def _fixture() -> tuple[Keyring, tuple[str, ...]]:
    ring = open_keyring(Path(tempfile.mkdtemp(prefix="aarmor-prop-")) / "keys")
    chain = [r.body for r in sign_chain(ReceiptSigner(ring), STEPS)]
    return ring, tuple(json.dumps(r) for r in chain)  # frozen as text: each example starts from a clean copy


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a receipt: each container and each leaf."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_single_change_to_a_stored_receipt_is_detected(data: st.DataObject) -> None:
    ring, frozen = _fixture()
    chain = [json.loads(t) for t in frozen]
    index = data.draw(st.integers(0, len(chain) - 1), label="receipt")
    victim = chain[index]
    original = copy.deepcopy(victim)
    path = data.draw(st.sampled_from([p for p in _paths(victim) if p]), label="path")
    parent: Any = victim
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    change = data.draw(st.sampled_from(["replace", "delete", "add"]), label="change")
    if change == "replace":
        new = data.draw(_json, label="value")
        assume(canonical_bytes(new) != canonical_bytes(parent[last]))
        parent[last] = new
    elif change == "delete":
        del parent[last]
    else:
        target = parent[last]
        if isinstance(target, dict):
            key = data.draw(st.text(max_size=6), label="key")
            assume(key not in target)
            target[key] = data.draw(_json, label="value")
        elif isinstance(target, list):
            target.append(data.draw(_json, label="value"))
        else:
            parent[last] = [target]  # a leaf wrapped in a list
    assert canonical_bytes(victim) != canonical_bytes(original)
    report = verify_receipts(chain, ring.public_keys())
    assert not report.ok
    named = {f.receipt_id for f in report.failures} | {f.seq for f in report.failures}
    rid = victim.get("receipt_id")
    assert named & {original["receipt_id"], rid if isinstance(rid, str) else None, index, None}, report.failures


@given(value=_json)
def test_canonical_json_round_trips_through_text(value: Any) -> None:
    raw = canonical_bytes(value)
    assert raw == rfc8785.dumps(value)
    # a float >= 2**53 prints as an integer: read back, it is the double it denotes (RFC 8785 numbers)
    back = jcs_numbers(loads_strict(raw.decode("utf-8")))
    assert canonical_bytes(back) == raw
    # the export format (ordinary json.dumps) also round-trips to the same canonical bytes
    assert canonical_bytes(json.loads(json.dumps(back))) == raw


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.dictionaries(st.text(max_size=8), _json, max_size=4))
@example(params={"big": 1e16, "huge": -1.7976931348623157e308, "tiny": 5e-324})
def test_any_parameters_sign_export_and_verify(params: dict[str, Any]) -> None:
    ring, _ = _fixture()
    steps = [("ALLOW", params), ("DENY", params)]
    exported = [json.dumps(r.body, ensure_ascii=False) for r in sign_chain(ReceiptSigner(ring), steps,
                                                                          session="prop")]
    assert verify_receipts([loads_strict(line) for line in exported], ring.public_keys()).ok


@given(key_id=st.text(max_size=20), value=st.text(max_size=20), algorithm=st.text(max_size=10))
def test_signature_bytes_shortcut_equals_canonical_bytes(key_id: str, value: str, algorithm: str) -> None:
    sig = {"algorithm": algorithm, "key_id": key_id, "value": value}
    assert _signature_bytes(sig) == canonical_bytes(sig)
