"""`redact_output`: detector hits in a tool's output replaced before the caller sees them."""

from __future__ import annotations

from typing import Any

import pytest

from aarmor.context.output_redaction import OutputNotRedactable, check_output_labels, redact_output

KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1x\nQv9r2lKq\n-----END RSA PRIVATE KEY-----"


def test_selected_labels_only_and_counts_not_values() -> None:
    text = f"mail bob@example.com, key {KEY}, card 4111 1111 1111 1111"
    out, report = redact_output(text, ["CREDENTIALS"])
    assert out == "mail bob@example.com, key [REDACTED:api_key], card 4111 1111 1111 1111"
    assert report.to_json() == {"redacted": 1, "detectors": {"api_key": 1}}
    out, report = redact_output(text, ["email", "FINANCIAL"])
    assert out == f"mail [REDACTED:email], key {KEY}, card [REDACTED:payment_card]"
    assert report.total == 2 and KEY not in str(report.to_json())


def test_all_walks_json_like_values_without_mutating_them() -> None:
    result: dict[str, Any] = {"content": [{"type": "text", "text": f"token {KEY}"}],
                              "structuredContent": {"owner": "alice@company.com", "n": 3, "ok": True, "x": None},
                              "pair": ("carol@example.org", 1.5)}
    out, report = redact_output(result, ["ALL"])
    assert out["content"][0]["text"] == "token [REDACTED:api_key]"
    assert out["structuredContent"] == {"owner": "[REDACTED:email]", "n": 3, "ok": True, "x": None}
    assert out["pair"] == ("[REDACTED:email]", 1.5)
    assert result["content"][0]["text"] == f"token {KEY}"  # the input is untouched
    assert report.counts == {"api_key": 1, "email": 2}


def test_a_private_key_is_redacted_whole_not_only_its_header() -> None:
    out, _ = redact_output(f"before\n{PEM}\nafter", ["pem_private_key"])
    assert out == "before\n[REDACTED:pem_private_key]\nafter"
    truncated, _ = redact_output("x " + PEM.split("-----END")[0], ["CREDENTIALS"])
    assert truncated == "x [REDACTED:pem_private_key]"  # no END line: to the end of the text


def test_a_luhn_invalid_number_is_not_a_card_and_stays() -> None:
    out, report = redact_output("order 4111 1111 1111 1112", ["FINANCIAL"])
    assert out == "order 4111 1111 1111 1112" and report.total == 0


def test_an_object_that_cannot_be_inspected_is_refused() -> None:
    class Opaque:
        def __str__(self) -> str:
            return KEY

    with pytest.raises(OutputNotRedactable, match="Opaque"):
        redact_output({"v": Opaque()}, ["ALL"])
    with pytest.raises(OutputNotRedactable, match="bytes"):
        redact_output(KEY.encode(), ["ALL"])


def test_unknown_labels_are_named() -> None:
    with pytest.raises(ValueError, match="unknown redact_output label `emails`"):
        check_output_labels(["PII", "emails"])
    assert check_output_labels(["PII", "jwt", "ALL"]) == ("PII", "jwt", "ALL")
