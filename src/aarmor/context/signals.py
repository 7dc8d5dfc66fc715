"""Derived risk signals (AARM 2.2 `risk_signals`): pure functions of the session aggregates.

Every signal below is always populated (so a rule that references it never DEFERs on an unpopulated
field), except `scope_expansion` (only when the session declared a tool catalogue) and the two
`*_exceeded`/`*_anomaly` flags (only when their limit is configured):

- `classification_escalation` (bool): the highest level read so far is above
  `expected_classification` (PUBLIC).
- `max_classification_level` (int): index of that level in the ladder (PUBLIC=0 ... RESTRICTED=3);
  -1 when nothing has been read.
- `sensitive_read` (bool): a level at or above `sensitive_level` (CONFIDENTIAL) has been read.
- `chain_length` (int): actions requested in the session so far (all of them, not the window).
- `chain_length_exceeded` (bool): `chain_length` > `chain_length_limit` (only when a limit is set).
- `velocity` (int): actions requested in the last `velocity_window_seconds` (60) up to `now`.
- `velocity_anomaly` (bool): `velocity` >= `velocity_limit` (only when set): the next action would
  exceed it.
- `scope_expansion` (bool): the action being evaluated, or an earlier one, names a tool outside the
  session's tool catalogue (only when a catalogue was given).
- `out_of_scope_actions` (int): earlier actions outside the catalogue (with `scope_expansion`).
- `injection_suspected` (bool): some tool output of the session carried a prompt-injection indicator
  (`aarmor.context.injection`); false when none did.
- `injection_indicators` (sorted list of str): the indicator kinds seen in the session's tool outputs.
- `injection_sources` (sorted list of str): the tools (`tool.operation`) whose outputs carried them.
- Provenance of the action's arguments (`aarmor.context.provenance`; all false or empty for a snapshot
  taken without an action): `argument_from_untrusted_source` (bool), `untrusted_arguments` (argument
  paths), `untrusted_value_kinds` (email, domain, url, iban, account, phone, amount, path, secret),
  `untrusted_sources` (the `tool.operation` whose output first held them), `untrusted_source_injected`
  (one of those outputs carried injection indicators), `external_destination` (an argument names an
  e-mail address, URL or domain outside `internal_domains`), `sensitive_data_to_external_sink` (that,
  and an argument carries a sensitive value seen in a tool output and not in the user's request),
  `sensitive_arguments`, `provenance_complete` (false once a session's tracking limit was reached), and
  `provenance_findings` (a list of {argument, kind, source_action, source_tool[, sensitive]}, recorded
  in receipts).

- `tool_category` (sorted list of str, only for a snapshot taken with an action): the risk classes of the
  action's tool (`aarmor.context.tool_risk`: read_only or write, plus destructive, financial,
  external_communication, credential_or_permission_change, open_world), from the session's catalogue
  entry, or the name alone for a tool outside it; `tool_classes` in the configuration overrides them.
  `match: {category: ...}` reads it.
- `session_risk` (float in [0, 1]) and `session_risk_factors` (sorted list): the compositional risk of
  the session plus the action (`aarmor.context.risk`: a noisy-OR of documented factors, not a sum).

Doors may add their own signals (`SessionContext.record_signal`); those names may not be any of the
derived names above (`DERIVED_SIGNAL_NAMES`), so a door can never mask or forge a derived signal.

Rules: the current action is never counted in `chain_length` or `velocity` (it has not been requested
yet when the PDP sees the snapshot); levels not in the ladder count as the highest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_SIGNALS", "DERIVED_SIGNAL_NAMES", "SignalConfig", "derive_signals"]

#: names `derive_signals` may produce: reserved, a door-supplied signal cannot use them
DERIVED_SIGNAL_NAMES = frozenset({
    "classification_escalation", "max_classification_level", "sensitive_read", "chain_length",
    "chain_length_exceeded", "velocity", "velocity_anomaly", "scope_expansion", "out_of_scope_actions",
    "injection_suspected", "injection_indicators", "injection_sources",
    # aarmor.context.provenance
    "argument_from_untrusted_source", "untrusted_arguments", "untrusted_value_kinds", "untrusted_sources",
    "untrusted_source_injected", "external_destination", "sensitive_data_to_external_sink",
    "sensitive_arguments", "provenance_complete", "provenance_findings",
    # aarmor.context.risk
    "session_risk", "session_risk_factors",
    # aarmor.context.tool_risk
    "tool_category",
    # aarmor.intent.scorer (cumulative drift, computed by the scorer in the pipeline)
    "semantic_drift", "semantic_drift_max", "drift_detected", "semantic_drift_actions", "intent_scorer",
    "intent_profile",
})


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """Thresholds of the derived signals (see the module docstring)."""

    expected_classification: str = "PUBLIC"
    sensitive_level: str = "CONFIDENTIAL"
    velocity_window_seconds: float = 60.0
    velocity_limit: int | None = None
    chain_length_limit: int | None = None
    #: domains (and their subdomains) that are not an external destination for provenance
    internal_domains: tuple[str, ...] = ()
    #: operator-declared risk classes per tool (`tools: {name: {classes: [...]}}`), replacing computed ones
    tool_classes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.velocity_window_seconds > 0:
            raise ValueError(f"velocity_window_seconds must be > 0, found {self.velocity_window_seconds}")
        for name in ("velocity_limit", "chain_length_limit"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, found {v}")


DEFAULT_SIGNALS = SignalConfig()


def derive_signals(*, max_rank: int, expected_rank: int, sensitive_rank: int, action_count: int,
                   velocity: int, out_of_scope: int | None, current_out_of_scope: bool,
                   config: SignalConfig = DEFAULT_SIGNALS, injection_kinds: tuple[str, ...] = (),
                   injection_sources: tuple[str, ...] = ()) -> dict[str, Any]:
    """The risk signals of one snapshot.

    `out_of_scope` is None when the session has no tool catalogue (then `scope_expansion` is absent);
    `current_out_of_scope` says whether the action being evaluated is outside it. `injection_kinds` and
    `injection_sources` are sorted tuples (kept as tuples: the snapshot is immutable).
    """
    signals: dict[str, Any] = {
        "classification_escalation": max_rank > expected_rank,
        "max_classification_level": max_rank,
        "sensitive_read": max_rank >= sensitive_rank,
        "chain_length": action_count,
        "velocity": velocity,
        # AARM threat 1: the session has read content that tries to instruct the model
        "injection_suspected": bool(injection_kinds),
        "injection_indicators": injection_kinds,
        "injection_sources": injection_sources,
    }
    if config.chain_length_limit is not None:
        signals["chain_length_exceeded"] = action_count > config.chain_length_limit
    if config.velocity_limit is not None:
        signals["velocity_anomaly"] = velocity >= config.velocity_limit
    if out_of_scope is not None:
        signals["scope_expansion"] = out_of_scope > 0 or current_out_of_scope
        signals["out_of_scope_actions"] = out_of_scope
    return signals
