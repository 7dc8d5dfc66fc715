"""Observed actions: agent actions aarmor learns about after the fact and did not mediate (AARM 4.3).

The OTel ingestion pattern is observational only: a telemetry stream reports a tool call that already
happened (or was refused by the agent's own permission prompt). aarmor cannot stop it; it can only judge it
with the same policy, record it and raise an alert when the policy would not have let it run.

`Observation` is what a door that observes (e.g. `aarmor ingest otlp`) hands to `Session.observe`; the
mediator evaluates the action through the one pipeline (`Mediator.observe`) and writes the usual
`action_requested` and `action_outcome` entries and one signed receipt, each marked `enforcement: observed`.

Rules:
- Nothing observed is ever described as blocked, denied or allowed by aarmor: the receipt's
  `enforcement.result` is `OBSERVED` and `decision` is what the policy *would* have decided.
- A decision that would not have let the action run as reported (`ALERT_RESULTS`) raises an alert
  (`observed_violation` on the `action_requested` entry, `enforcement.alert` on the receipt, an
  `alert.observed` telemetry event).
- What was reported stays what was reported: `executed`/`success` None means the stream did not say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aarmor.model import DecisionResult

__all__ = ["ALERT_RESULTS", "OBSERVED", "OBSERVED_ALERT", "Observation", "ObservedRecord"]

#: the marker on log entries, receipts and telemetry events of observed actions
OBSERVED = "observed"
#: the alert signal an observed action the policy would not have let run raises
OBSERVED_ALERT = "observed_violation"
#: policy decisions that would not have let an observed action run as it did
ALERT_RESULTS = frozenset({DecisionResult.DENY, DecisionResult.STEP_UP, DecisionResult.DEFER})


@dataclass(frozen=True, slots=True)
class Observation:
    """What a telemetry stream reported about one tool call aarmor did not mediate.

    `executed`: the tool ran (True), did not run (False: the user rejected it, the agent aborted it), or
    the stream did not say (None). `success` likewise. `output` is the tool's output when the stream carried
    it (classified and digested like any output, never stored). `approval` is the agent's own permission
    prompt as reported (e.g. Claude Code's `source`), recorded, never taken as an aarmor approval.
    `source` says where the report came from (format, signal, event name, trace and span ids...).
    """

    executed: bool | None
    success: bool | None = None
    output: Any = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    approval: Mapping[str, Any] | None = None
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObservedRecord:
    """The result of recording one observed action."""

    receipt_id: str | None
    action_id: str
    tool: str
    #: the tool name as reported, when a meta-tool was resolved to the real tool
    raw_tool: str | None
    #: what the policy would have decided (nothing was enforced)
    would_decide: DecisionResult
    reason: str
    #: the policy would not have let it run as reported (`ALERT_RESULTS`)
    alert: bool


class ObservedToolError(Exception):
    """A tool failure as a telemetry stream reported it (its message is the reported error)."""
