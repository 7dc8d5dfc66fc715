"""The context accumulator (AARM 2.2, R2): per-session hash-chained log, classification, risk signals.

Public API:

- `SessionContext.start(store, session_id=..., identity=..., original_request=..., now=..., classifier=...)`
  and `SessionContext.resume(store, session_id, classifier=...)`; then `snapshot(now, action=...)`,
  `record_requested`, `record_outcome`, `record_event`, `record_signal`, `set_value`, `end`, `head`, and
  `atomic()` for writing log entries together with receipts in one durable commit.
- `Classifier` (declared labels + pattern detectors + rule effects; AARM R2 default-to-highest).
- `verify_chain` (raises `ChainError`) and `check_chain` (typed `ChainReport` listing every failure);
  `entry_hash`, `Anchor`.
- `SignalConfig` and `derive_signals` (the derived risk signals), `DERIVED_SIGNAL_NAMES`.
- `scan_injection` (prompt-injection indicators in tool output; `Indicator`, `INJECTION_KINDS`).

See docs/context.md for what is logged, the hash format and the classification rules.
"""

from .accumulator import SessionContext, Transaction, unresolved_actions
from .chain import Anchor, ChainFailure, ChainReport, check_chain, entry_hash, make_record, verify_chain
from .classify import DEFAULT_CATEGORY_LEVELS, DEFAULT_LEVELS, Classifier, OutputClass, output_text
from .detectors import DEFAULT_DETECTORS, Detector
from .entries import (
    ACTION_OUTCOME,
    ACTION_REQUESTED,
    BUILTIN_KINDS,
    CONTEXT_VALUE,
    RESERVED_VALUE_NAMES,
    SESSION_END,
    SESSION_START,
    SIGNAL,
)
from .injection import INJECTION_KINDS, Indicator, scan_injection
from .signals import DEFAULT_SIGNALS, DERIVED_SIGNAL_NAMES, SignalConfig, derive_signals

__all__ = [
    "ACTION_OUTCOME",
    "ACTION_REQUESTED",
    "BUILTIN_KINDS",
    "CONTEXT_VALUE",
    "DEFAULT_CATEGORY_LEVELS",
    "DEFAULT_DETECTORS",
    "DEFAULT_LEVELS",
    "DEFAULT_SIGNALS",
    "DERIVED_SIGNAL_NAMES",
    "INJECTION_KINDS",
    "RESERVED_VALUE_NAMES",
    "SESSION_END",
    "SESSION_START",
    "SIGNAL",
    "Anchor",
    "ChainFailure",
    "ChainReport",
    "Classifier",
    "Detector",
    "Indicator",
    "OutputClass",
    "SessionContext",
    "SignalConfig",
    "Transaction",
    "check_chain",
    "derive_signals",
    "entry_hash",
    "make_record",
    "output_text",
    "scan_injection",
    "unresolved_actions",
    "verify_chain",
]
