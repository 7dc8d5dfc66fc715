"""Classification of tool outputs: detectors, declared labels, rule effects and the AARM R2 default."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from aarmor.canonical import TAG_OUTPUT, digest
from aarmor.context import Classifier, output_text
from aarmor.context.detectors import iban_valid, luhn_valid, run_detectors
from aarmor.errors import ConfigError, InputError
from aarmor.limits import Limits
from tests.context.helpers import make_action


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


JWT = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({'sub': '42'})}.c2lnbmF0dXJlX2J5dGVz"

POSITIVE = {
    "email": "contact: jane.roe@acme.example, thanks",
    "phone_e164": "call +14155552671 today",
    "phone_nanp": "office (415) 555-2671",
    "phone_uk": "ring 020 7946 0958 please",
    "payment_card": "card 4111 1111 1111 1111 exp 12/29",
    "iban": "pay to DE89 3704 0044 0532 0130 00",
    "us_ssn": "ssn 123-45-6788",
    "uk_nino": "NI number AB123456C",
    "aws_access_key": "key=AKIAIOSFODNN7EXAMPLE",
    "aws_secret_key": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "github_token": "token ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3",
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "api_key": "OPENAI_API_KEY=sk-proj-" + "Ab1" * 10,
    "pem_private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "jwt": f"Authorization: Bearer {JWT}.",
}


@pytest.mark.parametrize("name", sorted(POSITIVE))
def test_detector_fires_on_its_pattern(name: str) -> None:
    assert name in [d.name for d in run_detectors(POSITIVE[name])]


NEGATIVE = [
    "2024-01-15", "2024-01-15T10:30:00.000Z", "15/01/2024 10:30", "order 1234567890 shipped", "12345",
    "v1.2.3", "pi is 3.14159265358979", "card 4111 1111 1111 1112",        # Luhn fails
    "DE89 3704 0044 0532 0130 01",                                           # mod-97 fails
    "666-12-3456", "000-12-3456", "912-34-5678", "123-00-4567", "123-45-0000",  # never-issued SSNs
    "GB123456A", "QQ123456C",                                                # invalid NINO prefixes
    "call 555-123-4567",                                                     # exchange cannot start with 1
    "sk-learn is a library; sk-this-is-not-a-key-at-all-really",
    "-----BEGIN PUBLIC KEY-----", f"{_b64({'not': 'jwt'})}.{_b64({'x': 1})}.abc",
    "timestamp 1707566400000", "id 0000000000000000", "ratio 1/2/3",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_benign_numbers_dates_and_lookalikes_do_not_fire(text: str) -> None:
    assert [d.name for d in run_detectors(text)] == []


def test_checksums() -> None:
    assert luhn_valid("378282246310005") and not luhn_valid("378282246310006")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("DE89370400440532013")  # wrong length for DE


def test_detectors_are_linear_on_adversarial_input() -> None:
    evil = ("+1" + "2" * 40 + " ") * 5000 + ("a" * 70 + "@") * 2000 + "1 " * 100_000 \
        + ("ey" + "A" * 30 + ".") * 3000 + "a." * 50_000
    t0 = time.perf_counter()
    run_detectors(evil)
    assert time.perf_counter() - t0 < 3.0


# --- the R2 rules ------------------------------------------------------------------------------

@pytest.fixture
def cl() -> Classifier:
    return Classifier(declared={"crm.query": ["PII"], "calc": [], "docs.read": ["PUBLIC"], "hr": ["HR"],
                                "payroll": ["HR", "INTERNAL"]})


def test_undeclared_tool_output_counts_at_highest_sensitivity(cl: Classifier) -> None:
    oc = cl.classify(make_action("web.fetch"), "<html>hello</html>")
    assert oc.labels == {"RESTRICTED"} and oc.level == "RESTRICTED" and oc.unclassified and not oc.declared


def test_injected_email_does_not_downgrade_undeclared_output(cl: Classifier) -> None:
    # an attacker plants an address in a web page to make the fetch look merely CONFIDENTIAL
    oc = cl.classify(make_action("web.fetch"), "contact eve@evil.example")
    assert oc.level == "RESTRICTED" and {"PII", "RESTRICTED"} <= oc.labels and oc.detectors == ("email",)


def test_unclassified_level_is_configurable() -> None:
    oc = Classifier(unclassified="CONFIDENTIAL").classify(make_action("web.fetch"), "x")
    assert oc.labels == {"CONFIDENTIAL"}


def test_declared_public_tool_is_public_when_no_detector_fires(cl: Classifier) -> None:
    assert cl.classify(make_action("calc.add"), {"sum": 3}).labels == {"PUBLIC"}
    assert cl.classify(make_action("docs.read"), "hello").labels == {"PUBLIC"}


def test_detector_raises_declared_public_output(cl: Classifier) -> None:
    oc = cl.classify(make_action("docs.read"), "card 4111 1111 1111 1111")
    assert oc.labels == {"PUBLIC", "FINANCIAL", "CONFIDENTIAL"} and oc.level == "CONFIDENTIAL"


def test_declared_labels_apply_and_tool_key_covers_operations(cl: Classifier) -> None:
    assert cl.classify(make_action("crm.query"), {"name": "Jane"}).labels == {"PII", "CONFIDENTIAL"}
    assert Classifier(declared={"crm": ["PII"]}).classify(make_action("crm.lookup"), "x").labels == {
        "PII", "CONFIDENTIAL"}


def test_credentials_are_restricted(cl: Classifier) -> None:
    oc = cl.classify(make_action("calc.add"), POSITIVE["aws_access_key"])
    assert oc.labels == {"CREDENTIALS", "RESTRICTED"}


def test_unmapped_category_counts_at_unclassified_level_unless_a_level_is_declared(cl: Classifier) -> None:
    assert cl.classify(make_action("hr.list"), "x").level == "RESTRICTED"
    assert cl.classify(make_action("payroll.list"), "x").level == "INTERNAL"


def test_no_output_or_not_executed_has_no_classification(cl: Classifier) -> None:
    assert cl.classify(make_action("web.fetch"), None).labels == frozenset()
    assert cl.classify(make_action("web.fetch"), "secret", executed=False).labels == frozenset()


def test_rule_effects_add_labels(cl: Classifier) -> None:
    oc = cl.classify(make_action("calc.add"), 3, effects={"data_classification": ["phi"]})
    assert oc.labels == {"PHI", "RESTRICTED"}
    assert cl.classify(make_action("calc.add"), None, effects={"data_classification": "PII"}).labels == {
        "PII", "CONFIDENTIAL"}


def test_malformed_effect_label_is_refused(cl: Classifier) -> None:
    with pytest.raises(InputError, match="label `not a label`"):
        cl.classify(make_action("calc.add"), 3, effects={"data_classification": ["not a label"]})


def test_scan_stops_at_max_scan_bytes_and_counts_the_rest() -> None:
    cl = Classifier(declared={"docs.read": ["PUBLIC"]}, limits=Limits(max_scan_bytes=100))
    out = "x" * 200 + " card 4111 1111 1111 1111"
    oc = cl.classify(make_action("docs.read"), out)
    assert oc.labels == {"PUBLIC"}  # the card lies beyond the scanned prefix
    assert oc.output is not None and oc.output.scanned_bytes == 100 and oc.output.total_bytes == len(out)
    assert oc.output.digest == digest(TAG_OUTPUT, out)


def test_output_forms_and_digests() -> None:
    assert output_text({"a": 1}, max_scan_bytes=10).form == "json"
    b = output_text(b"jane@acme.example", max_scan_bytes=100)
    assert b.form == "bytes" and b.digest == digest(TAG_OUTPUT, raw=b"jane@acme.example")

    class Obj:
        def __repr__(self) -> str:
            return "Obj(jane@acme.example)"

    r = output_text(Obj(), max_scan_bytes=100)
    assert r.form == "repr" and "jane@acme.example" in r.text


def test_unprintable_output_counts_at_highest_even_for_declared_tool(cl: Classifier) -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    oc = cl.classify(make_action("calc.add"), Bad())
    assert oc.level == "RESTRICTED" and oc.unclassified


@pytest.mark.parametrize("kwargs,msg", [
    ({"levels": []}, "non-empty"),
    ({"levels": ["LOW", "LOW"]}, "distinct"),
    ({"unclassified": "TOP"}, "not one of"),
    ({"declared": {"crm": ["bad label"]}}, "label `bad label`"),
    ({"declared": {"сrm": ["PII"]}}, r"U\+0441"),
    ({"category_levels": {"PII": "SECRET"}}, "maps to level `SECRET`"),
])
def test_bad_classifier_config_is_refused(kwargs: dict[str, Any], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        Classifier(**kwargs)


def test_from_config() -> None:
    from aarmor.config import ClassificationConfig, ToolConfig

    class Cfg:
        def __init__(self) -> None:
            self.tools = {"crm.query": ToolConfig(returns=("PII",))}
            self.classification = ClassificationConfig(("PUBLIC", "SECRET"), "SECRET")

    cl = Classifier.from_config(Cfg())
    assert cl.levels == ("PUBLIC", "SECRET")
    assert cl.classify(make_action("crm.query"), "x").labels == {"PII", "SECRET"}
    assert cl.classify(make_action("web.fetch"), "x").labels == {"SECRET"}
