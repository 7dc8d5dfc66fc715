"""The session risk score (AARM 2.4 step 2, compositional risk): one number for "this session plus this
action", from the risk signals, for the PDP to compare with a policy's `risk_threshold`.

Rules this module enforces:
- Not a sum of per-action scores: each factor is a fact about the session and the action being decided
  (an injected output was read; this argument came from it; sensitive data is leaving), and the factors
  combine as a noisy-OR, `1 - prod(1 - w)`: any strong factor alone is enough, weak ones reinforce each
  other, and the score never exceeds 1 however long the session.
- The weights are fixed and documented (`FACTORS`): the score is explainable, the PDP reports which
  factors were present, and a deployment tunes the threshold, not the arithmetic.
- Pure: a function of the signals dict; deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FACTORS", "session_risk"]

#: factor -> (weight, what makes it present)
FACTORS: dict[str, tuple[float, str]] = {
    "argument_from_injected_output": (
        0.9, "an argument holds a value first seen in a tool output that carried injection indicators"),
    "sensitive_data_to_external_sink": (
        0.8, "a sensitive value seen in a tool output goes to an external destination"),
    "tool_definition_changed": (0.5, "a tool changed its definition during the session (rug pull)"),
    "untrusted_destination": (
        0.4, "a destination argument (e-mail, URL, domain, phone, IBAN, account) came from a tool output"),
    "injection_seen": (0.35, "a tool output of the session carried injection indicators"),
    "classified_read_then_external": (
        0.3, "the session read CONFIDENTIAL or higher data and the action names an external destination"),
    "semantic_drift": (0.5, "the session has drifted from the user's request (drift signal set)"),
}
_DESTINATIONS = frozenset({"email", "domain", "url", "phone", "iban", "account"})


def session_risk(signals: Mapping[str, Any]) -> tuple[float, tuple[str, ...]]:
    """(score in [0, 1], the factors present, sorted)."""
    present: list[str] = []
    if signals.get("untrusted_source_injected") is True:
        present.append("argument_from_injected_output")
    if signals.get("sensitive_data_to_external_sink") is True:
        present.append("sensitive_data_to_external_sink")
    if signals.get("tool_definition_changed") is True:
        present.append("tool_definition_changed")
    kinds = signals.get("untrusted_value_kinds") or ()
    if signals.get("argument_from_untrusted_source") is True and _DESTINATIONS.intersection(kinds):
        present.append("untrusted_destination")
    if signals.get("injection_suspected") is True:
        present.append("injection_seen")
    if signals.get("sensitive_read") is True and signals.get("external_destination") is True:
        present.append("classified_read_then_external")
    if signals.get("drift_detected") is True:
        present.append("semantic_drift")
    keep = 1.0
    for name in present:
        keep *= 1.0 - FACTORS[name][0]
    return round(1.0 - keep, 6), tuple(sorted(present))
