"""The hot-path serializer produces exactly the bytes of the reference RFC 8785 serializer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aarmor.canonical import SAFE_INT, canonical_bytes, to_json
from aarmor.context._canon import plain_and_bytes
from aarmor.errors import InputError
from aarmor.model import Decision, DecisionResult, FrozenMap, Identity

_scalars = (
    st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.5, 1e-4, 9.99e15, 1e16, 1e21, 1e-7, -0.0, 300.0, 1.5e-5, 123.456, 2.0**53])
    | st.text() | st.sampled_from(["\u2028", "\x7f", "\x00\x1f", "\ue000", "\U0001f600", '"\\'])
)
_keys = st.text(max_size=6) | st.sampled_from(["\ue000", "\U0001f600", "a", "\uffff", "\u00e9"])
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(_keys, kids, max_size=4), max_leaves=25)


@settings(max_examples=600, deadline=None)
@given(_json)
def test_fast_canonical_bytes_equal_rfc8785(value: Any) -> None:
    try:
        want = canonical_bytes(value)
    except InputError:
        with pytest.raises(InputError):
            plain_and_bytes(value)
        return
    plain, got = plain_and_bytes(value)
    assert got == want
    assert plain == to_json(value)


def test_model_objects_canonicalise_like_the_reference() -> None:
    value = {"d": Decision(DecisionResult.STEP_UP, "why", timeout=300.0, confidence=0.93),
             "i": Identity(human="a"), "m": FrozenMap({"k": (1, 2)}), "t": datetime(2026, 1, 1, tzinfo=UTC),
             "e": DecisionResult.DENY}
    assert plain_and_bytes(value)[1] == canonical_bytes(value)


@pytest.mark.parametrize("bad", [{"n": 2**60}, {"f": float("nan")}, {1: "x"}, {"b": b"x"}, {"s": {1}},
                                 "\ud800"])
def test_values_json_cannot_carry_are_refused(bad: Any) -> None:
    with pytest.raises(InputError):
        plain_and_bytes(bad)
