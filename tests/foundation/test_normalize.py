"""Normalisation (AARM 2.1): idempotent, confusable-proof names and domains, bounded arguments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aarmor.errors import InputError, LimitExceeded
from aarmor.limits import Limits
from aarmor.model import Identity
from aarmor.normalize import normalize_action, normalize_domain, normalize_name

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ALICE = Identity(human="alice@company.com")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_same_call_gives_the_same_action(arguments: dict[str, Any]) -> None:
    a = normalize_action("Email.Send", arguments, operation=None, identity=ALICE, session_id="s", now=NOW,
                         action_id="act_1")
    b = normalize_action("Email.Send", arguments, operation=None, identity=ALICE, session_id="s", now=NOW,
                         action_id="act_1")
    assert a == b and a.parameters_digest == b.parameters_digest
    # normalising the normalised call changes nothing (idempotence)
    c = normalize_action(a.tool, a.parameters, operation=a.operation, identity=ALICE, session_id="s", now=NOW,
                         action_id="act_1")
    assert (c.tool, c.operation, c.parameters, c.parameters_digest) == (a.tool, a.operation, a.parameters,
                                                                        a.parameters_digest)


@given(st.text(alphabet=st.sampled_from("abcXYZ09_.-:/ \u200b\uff41\u00ad"), min_size=1, max_size=20))
def test_name_normalisation_is_idempotent(name: str) -> None:
    try:
        once = normalize_name(name)
    except InputError:
        return
    assert normalize_name(once) == once


@pytest.mark.parametrize("spelling", ["email", "EMAIL", "ｅｍａｉｌ", "e\u200bmail", "em\u00adail", " email "])
def test_confusable_spellings_of_a_tool_name_collapse(spelling: str) -> None:
    assert normalize_name(spelling) == "email"


@pytest.mark.parametrize("spelling", ["\u0435mail", "emai\u04cf", "e mail", "email\u202e", "ema\u0131l"])
def test_lookalike_tool_names_are_refused_not_treated_as_other_tools(spelling: str) -> None:
    if spelling == "email\u202e":  # a bidi control is stripped, so this one collapses to `email`
        assert normalize_name(spelling) == "email"
        return
    with pytest.raises(InputError):
        normalize_name(spelling)


def test_domains_compare_after_case_fold_trailing_dot_and_idna() -> None:
    assert normalize_domain("EXAMPLE.com.") == "example.com"
    assert normalize_domain("ｅｘａｍｐｌｅ.com") == "example.com"
    assert normalize_domain("bücher.example") == "xn--bcher-kva.example"
    assert normalize_domain("c\u043empany.com").startswith("xn--")  # Cyrillic o: a different domain


def test_operation_split_and_explicit_operation() -> None:
    a = normalize_action("db.customers.query", {}, operation=None, identity=ALICE, session_id="s", now=NOW)
    assert (a.tool, a.operation, a.name) == ("db.customers", "query", "db.customers.query")
    b = normalize_action("read_file", {}, operation=None, identity=ALICE, session_id="s", now=NOW)
    assert (b.tool, b.operation, b.name) == ("read_file", "", "read_file")
    c = normalize_action("crm", {}, operation="Get", identity=ALICE, session_id="s", now=NOW)
    assert (c.tool, c.operation) == ("crm", "get")


def test_limits_are_named() -> None:
    small = Limits(max_argument_bytes=64, max_argument_depth=3, max_name_length=10)
    with pytest.raises(LimitExceeded, match="max_argument_bytes"):
        normalize_action("t", {"x": "y" * 100}, operation=None, identity=ALICE, session_id="s", now=NOW,
                         limits=small)
    with pytest.raises(LimitExceeded, match="max_argument_depth"):
        normalize_action("t", {"a": {"b": {"c": {"d": 1}}}}, operation=None, identity=ALICE, session_id="s",
                         now=NOW, limits=small)
    with pytest.raises(LimitExceeded, match="max_name_length"):
        normalize_action("t" * 11, {}, operation=None, identity=ALICE, session_id="s", now=NOW, limits=small)
