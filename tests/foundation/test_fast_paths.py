"""The hot-path shortcuts in normalisation and the model equal their reference paths.

- `normalize_name` memoises successful results: a hit equals recomputing, refusals are never stored,
  and the length limit still applies to a memoised spelling.
- `freeze`/`thaw` test exact types before the `Mapping` ABC: same results as the general arms.
- `_check_depth` returns early on leaves: the depth limit is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aarmor.normalize as N
from aarmor.errors import InputError, LimitExceeded
from aarmor.limits import DEFAULT_LIMITS, Limits
from aarmor.model import FrozenMap, freeze, thaw
from aarmor.normalize import normalize_arguments, normalize_name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20) | st.sampled_from(["Email", "еmail", "e\u200bmail", "ＥＭＡＩＬ", " db.Query ", ""]))
def test_memoised_name_equals_fresh_normalisation(name: str) -> None:
    N._NAME_MEMO.clear()
    try:
        fresh = N._normalize_name_text(name, "tool name")
    except InputError as exc:
        for _ in range(2):  # a refusal is never memoised: it raises again, with the same message
            with pytest.raises(InputError) as again:
                normalize_name(name)
            assert str(again.value) == str(exc)
        assert name not in N._NAME_MEMO
        return
    assert normalize_name(name) == fresh  # miss
    assert normalize_name(name) == fresh  # hit
    assert N._NAME_MEMO[name] == fresh


def test_memoised_name_still_obeys_the_length_limit() -> None:
    normalize_name("a" * 10)
    with pytest.raises(LimitExceeded, match="max_name_length"):
        normalize_name("a" * 10, limits=Limits(max_name_length=5))


def test_confusable_name_refused_even_after_its_ascii_twin_is_memoised() -> None:
    assert normalize_name("email") == "email"
    with pytest.raises(InputError, match="U\\+0435"):
        normalize_name("\u0435mail")  # Cyrillic `е`


def _freeze_ref(value: Any) -> Any:  # the general arms of `freeze`, without the fast paths
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return FrozenMap({k: _freeze_ref(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze_ref(v) for v in value)
    return value


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids)
                     | st.dictionaries(st.text(max_size=3), kids, max_size=3)
                     | st.dictionaries(st.text(max_size=3), kids, max_size=3).map(OrderedDict),
                     max_leaves=15)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_freeze_and_thaw_equal_the_general_path(value: Any) -> None:
    frozen = freeze(value)
    assert frozen == _freeze_ref(value) and type(frozen) is type(_freeze_ref(value))
    thawed = thaw(frozen)
    assert thawed == thaw(_freeze_ref(value))
    if isinstance(frozen, FrozenMap):
        assert type(thawed) is dict


def test_depth_limit_unchanged_by_leaf_shortcut() -> None:
    limit = DEFAULT_LIMITS.max_argument_depth
    nested: Any = "leaf"
    for _ in range(limit):
        nested = {"k": nested}
    normalize_arguments(nested)  # the leaf sits exactly at the limit
    with pytest.raises(LimitExceeded, match="max_argument_depth"):
        normalize_arguments({"k": nested})
