"""OCSF output: every sample event (every type, every decision result) validates strictly against the OCSF
1.7.0 schema pydantic-ocsf bundles, maps to the documented class and outcome, and leaks no parameter value
that `telemetry.export_parameters` did not allow."""

from __future__ import annotations

import copy
import json

import pydantic
import pytest

from aarmor.telemetry.events import TelemetryEvent
from aarmor.telemetry.formats import FORMATS, format_event
from aarmor.telemetry.formats.ocsf import OCSF_VERSION, to_ocsf
from tests.telemetry.ocsf_schema import OCSFError, validate
from tests.telemetry.sample_events import sample_events

EVENTS = sample_events()


def _id(e: TelemetryEvent) -> str:
    return f"{e.type}:{(e.decision or {}).get('result') or ''}:{e.event_id[-6:]}"


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_every_event_is_valid_ocsf(event: TelemetryEvent) -> None:
    obj = to_ocsf(event)
    validate(obj)
    assert obj["metadata"]["uid"] == event.event_id
    assert obj["metadata"]["version"] == OCSF_VERSION
    assert obj["metadata"]["product"]["name"] == "aarmor"
    line = format_event(event, "ocsf")
    assert "\n" not in line and "\r" not in line and json.loads(line) == obj


def _one(type_: str, result: str | None = None) -> dict:
    e = next(e for e in EVENTS if e.type == type_ and (result is None or (e.decision or {}).get("result") == result))
    return to_ocsf(e)


@pytest.mark.parametrize(("result", "class_uid", "action_id", "disposition_id", "disposition", "status_id"), [
    ("ALLOW", 6003, 1, 1, "Allowed", 1),
    ("DENY", 2004, 2, 2, "Blocked", 1),  # a finding: status New
    ("MODIFY", 6003, 1, 99, "MODIFY", 1),
    ("STEP_UP", 6003, 0, 99, "STEP_UP", 99),
    ("DEFER", 6003, 0, 14, "Delayed", 99),
])
def test_decision_mapping(result: str, class_uid: int, action_id: int, disposition_id: int, disposition: str,
                          status_id: int) -> None:
    obj = _one("action.decided", result)
    assert (obj["class_uid"], obj["action_id"], obj["disposition_id"], obj["disposition"], obj["status_id"]) == \
        (class_uid, action_id, disposition_id, disposition, status_id)
    assert obj["type_uid"] == class_uid * 100 + obj["activity_id"]
    assert obj["unmapped"]["aarmor"]["decision"]["result"] == result


def test_denial_is_a_detection_finding_with_the_call_as_evidence() -> None:
    obj = _one("action.decided", "DENY")
    assert obj["finding_info"]["analytic"]["uid"] == "rule-deny"
    assert obj["finding_info"]["desc"] == "external recipient with pii"
    assert obj["evidences"][0]["api"] == {"operation": "send", "service": {"name": "email"},
                                          "request": {"uid": "act_deny", "data": {"parameters":
                                                                                  {"to": "bob@example.com"}}}}
    assert obj["evidences"][0]["actor"]["user"]["name"] == "alice@example.com"
    assert obj["severity_id"] == 4 and obj["is_alert"] is True


def test_other_classes() -> None:
    assert {t: _one(t)["class_uid"] for t in ("alert.drift", "alert.injection", "verification.failed",
                                             "policy.loaded", "policy.rejected", "telemetry.degraded",
                                             "telemetry.dropped", "approval.decided", "deferral.created",
                                             "action.executed", "action.failed")} == {
        "alert.drift": 2004, "alert.injection": 2004, "verification.failed": 2004, "policy.loaded": 6002,
        "policy.rejected": 6002, "telemetry.degraded": 6008, "telemetry.dropped": 6008,
        "approval.decided": 6003, "deferral.created": 6003, "action.executed": 6003, "action.failed": 6003}
    failed = _one("action.failed")
    assert (failed["status_id"], failed["status_detail"], failed["api"]["response"]) == \
        (2, "TimeoutError", {"error": "TimeoutError"})
    rejected = _one("policy.rejected")
    assert rejected["status_id"] == 2 and rejected["status_detail"].startswith("rules[2].when")
    approvals = [to_ocsf(e) for e in EVENTS if e.type == "approval.decided"]
    assert [(a["disposition"], a["actor"]["user"]["name"]) for a in approvals] == \
        [("Approved", "manager@example.com"), ("Rejected", "manager@example.com")]
    assert _one("deferral.timed_out")["disposition"] == "Blocked"


def test_no_parameter_value_outside_the_allowlist() -> None:
    for event in EVENTS:
        line = format_event(event, "ocsf")
        assert "secret body text" not in line, event.type
    for event in sample_events(export_parameters=frozenset()):
        assert "bob@example.com" not in format_event(event, "ocsf")


def test_the_output_is_deterministic() -> None:
    assert [format_event(e, "ocsf") for e in EVENTS] == [format_event(e, "ocsf") for e in sample_events()]


# --- the validator itself rejects what is not OCSF (else the tests above would prove nothing) ---

_GOOD = to_ocsf(next(e for e in EVENTS if e.type == "action.executed"))


def _broken(change) -> dict:  # type: ignore[no-untyped-def]
    obj = copy.deepcopy(_GOOD)
    change(obj)
    return obj


@pytest.mark.parametrize("change", [
    lambda o: o.update(surprise=1),                                  # unknown top-level attribute
    lambda o: o["api"].update(verb="send"),                          # unknown nested attribute
    lambda o: o["api"].pop("operation"),                             # required in an object
    lambda o: o.pop("actor"),                                        # required in the class
    lambda o: o.update(disposition_id=42),                           # not an enum value
    lambda o: o.update(disposition="Blocked"),                       # caption does not match its id
    lambda o: o.update(time="2026-11-29T10:00:00Z"),                 # wrong type
    lambda o: o.update(type_uid=600301),                             # type_uid not class*100+activity
    lambda o: o.update(src_endpoint={}),                             # at_least_one constraint
    lambda o: o["metadata"].update(profiles=[]),                     # profile attribute, profile not declared
    lambda o: o.update(class_uid=6099),                              # no such class
    lambda o: o["metadata"]["product"].update(name=7),               # wrong nested type
], ids=lambda f: "")
def test_validator_rejects(change) -> None:  # type: ignore[no-untyped-def]
    validate(copy.deepcopy(_GOOD))
    with pytest.raises((OCSFError, pydantic.ValidationError)):
        validate(_broken(change))


def test_formats() -> None:
    event = EVENTS[0]
    assert FORMATS == ("jsonl", "ocsf", "cef")
    assert json.loads(format_event(event, "jsonl")) == event.to_json()
    with pytest.raises(ValueError, match="unknown telemetry format `xml`: expected one of jsonl, ocsf, cef"):
        format_event(event, "xml")


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no OCSF mapping for event type `other\.thing`"):
        to_ocsf(TelemetryEvent("evt_x", "other.thing", "2026-11-29T10:00:00Z"))
