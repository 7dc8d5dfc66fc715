"""Redaction: receipts and logs must not become a side channel for secrets (AARM threat 10)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aarmor.canonical import canonical_bytes, digest
from aarmor.config import DEFAULT_REDACT_FIELDS, RedactionConfig
from aarmor.receipts import looks_like_credential, redact_parameters, redact_text
from aarmor.receipts.redact import TAG_PARAM_VALUE, value_digest

CLEAR = RedactionConfig()
PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGZha2UgZmFrZSBmYWtlIGZha2UgZmFrZSBmYWtl\n"
       "-----END PRIVATE KEY-----")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
CREDENTIALS = [PEM, JWT, "AKIAIOSFODNN7EXAMPLE", "sk-" + "a1B2" * 8, "ghp_" + "x" * 36,
               "github_pat_" + "A" * 40, "xoxb-1234567890-abcdefghij"]


def test_default_fields_are_the_documented_list() -> None:
    assert set(DEFAULT_REDACT_FIELDS) >= {"password", "passwd", "secret", "token", "api_key", "apikey",
                                          "authorization", "access_token", "refresh_token", "private_key",
                                          "client_secret", "cookie", "ssn", "card_number"}


def test_named_secret_fields_are_digested_at_any_depth_case_insensitively() -> None:
    params = {"user": "bob", "PASSWORD": "hunter2", "headers": {"Authorization": "Bearer abc"},
              "items": [{"card_number": "4111111111111111", "qty": 1}], "Api-Key": "k1"}
    out = redact_parameters(params, CLEAR)
    assert out["user"] == "bob" and out["items"][0]["qty"] == 1
    assert out["PASSWORD"] == value_digest("hunter2")
    assert out["headers"]["Authorization"] == value_digest("Bearer abc")
    assert out["items"][0]["card_number"] == value_digest("4111111111111111")
    assert out["Api-Key"] == value_digest("k1")


def test_a_whole_object_under_a_secret_key_is_one_digest() -> None:
    out = redact_parameters({"secret": {"a": 1, "b": [2, 3]}}, CLEAR)
    assert out == {"secret": value_digest({"a": 1, "b": [2, 3]})}


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_credential_shaped_strings_are_digested_under_any_key(credential: str) -> None:
    """ATTACK: a token pasted into an innocuous field (`note`) still never reaches the receipt."""
    out = redact_parameters({"note": f"here: {credential} thanks", "list": [credential]}, CLEAR)
    text = canonical_bytes(out).decode()
    assert credential not in text
    assert out["note"]["digest"].startswith("sha256:") and out["list"][0]["digest"].startswith("sha256:")


def test_ordinary_text_is_not_mistaken_for_a_credential() -> None:
    for text in ("ask-me-anything", "risk-assessment-2026", "SELECT * FROM t", "bob@company.com", "sk-short"):
        assert not looks_like_credential(text)


def test_digest_mode_digests_every_leaf_except_allowed_keys() -> None:
    cfg = RedactionConfig(mode="digest", allow=("to", "limit"))
    params = {"to": "bob@company.com", "limit": 5, "body": "quarterly numbers", "meta": {"n": 3, "to": "x"},
              "tags": ["a", 1, None], "password": "pw"}
    out = redact_parameters(params, cfg)
    assert out["to"] == "bob@company.com" and out["limit"] == 5 and out["meta"]["to"] == "x"
    assert out["body"] == value_digest("quarterly numbers") and out["meta"]["n"] == value_digest(3)
    assert out["tags"] == [value_digest("a"), value_digest(1), value_digest(None)]
    assert out["password"] == value_digest("pw")


def test_digest_mode_allowed_key_still_hides_credentials_and_named_fields() -> None:
    cfg = RedactionConfig(mode="digest", allow=("note", "password"))
    out = redact_parameters({"note": JWT, "password": "pw"}, cfg)
    assert out["note"] == value_digest(JWT) and out["password"] == value_digest("pw")


def test_unknown_mode_is_refused_not_treated_as_clear() -> None:
    with pytest.raises(ValueError, match="redaction mode `none`"):
        redact_parameters({"a": 1}, RedactionConfig(mode="none"))  # type: ignore[arg-type]


def test_value_digest_is_domain_tagged_and_deterministic() -> None:
    assert value_digest("x") == {"digest": digest(TAG_PARAM_VALUE, "x")}
    assert value_digest({"b": 1, "a": 2}) == value_digest({"a": 2, "b": 1})


def test_redact_text_replaces_only_the_credential() -> None:
    out = redact_text(f"401 from upstream with token {JWT} for bob")
    assert JWT not in out and out.startswith("401 from upstream with token [redacted sha256:")
    assert out.endswith(" for bob")
    assert redact_text("nothing secret") == "nothing secret"


def test_redaction_does_not_mutate_the_input() -> None:
    params: dict[str, Any] = {"password": "pw", "nested": {"token": "t"}}
    redact_parameters(params, CLEAR)
    assert params == {"password": "pw", "nested": {"token": "t"}}


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)


@given(params=st.dictionaries(st.text(max_size=8), _json, max_size=5), secret=st.text(min_size=12, max_size=30),
       field=st.sampled_from(DEFAULT_REDACT_FIELDS), where=st.integers(0, 2))
def test_a_secret_under_a_named_field_never_appears(params: dict[str, Any], secret: str, field: str,
                                                    where: int) -> None:
    secret = "S3cr3t!" + secret
    holder: dict[str, Any] = {field.upper() if where == 1 else field: secret}
    doc = {**params, "wrap": [holder]} if where == 2 else {**params, **holder}
    out = canonical_bytes(redact_parameters(doc, CLEAR)).decode()
    if secret not in canonical_bytes(params).decode():
        assert secret not in out


@given(params=st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_digest_mode_leaves_no_string_leaf(params: dict[str, Any]) -> None:
    def leaves(v: Any) -> list[Any]:
        if isinstance(v, dict):
            if set(v) == {"digest"}:
                return []
            return [x for c in v.values() for x in leaves(c)]
        if isinstance(v, list):
            return [x for c in v for x in leaves(c)]
        return [v]

    assert leaves(redact_parameters(params, RedactionConfig(mode="digest", fields=(), allow=()))) == []
