"""Derived risk signals: escalation, sensitive reads, chain length, velocity, scope expansion."""

from __future__ import annotations

import pytest

from aarmor.context import Classifier, SignalConfig, derive_signals
from aarmor.store import Store
from tests.context.helpers import CATALOGUE, T0, at, make_action, request, start


def test_signals_of_a_fresh_session_are_populated(store: Store, classifier: Classifier) -> None:
    sig = start(store, classifier).snapshot(T0).risk_signals
    assert dict(sig) == {"classification_escalation": False, "max_classification_level": -1,
                         "sensitive_read": False, "chain_length": 0, "velocity": 0,
                         "injection_suspected": False, "injection_indicators": (), "injection_sources": (),
                         "argument_from_untrusted_source": False, "untrusted_arguments": (),
                         "untrusted_value_kinds": (), "untrusted_sources": (), "untrusted_source_injected": False,
                         "external_destination": False, "sensitive_data_to_external_sink": False,
                         "sensitive_arguments": (), "provenance_complete": True, "provenance_findings": (),
                         "session_risk": 0.0, "session_risk_factors": ()}


def test_sensitive_read_escalates_classification(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action("calc.add")
    request(ctx, a)
    ctx.record_outcome(a, executed=True, success=True, output=1, error=None, now=T0)
    sig = ctx.snapshot(T0).risk_signals
    assert (sig["classification_escalation"], sig["max_classification_level"], sig["sensitive_read"]) == (
        False, 0, False)
    b = make_action("crm.query")
    request(ctx, b)
    ctx.record_outcome(b, executed=True, success=True, output={"n": "Jane"}, error=None, now=T0)
    sig = ctx.snapshot(T0).risk_signals
    assert (sig["classification_escalation"], sig["max_classification_level"], sig["sensitive_read"]) == (
        True, 2, True)


def test_velocity_counts_requests_in_the_last_minute(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    for t in (0, 10, 50, 65, 70):
        request(ctx, make_action(now=at(t)), now=at(t))
    assert ctx.snapshot(at(70)).risk_signals["velocity"] == 4   # 10, 50, 65, 70 (0 is 70 s old)
    assert ctx.snapshot(at(200)).risk_signals["velocity"] == 0
    assert ctx.snapshot(at(200)).risk_signals["chain_length"] == 5  # all of them, not windowed


def test_velocity_and_chain_length_limits_flag_anomalies(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier, signals=SignalConfig(velocity_limit=3, chain_length_limit=2))
    for t in range(3):
        request(ctx, make_action(now=at(t)), now=at(t))
    sig = ctx.snapshot(at(3)).risk_signals
    assert sig["velocity_anomaly"] is True and sig["chain_length_exceeded"] is True


def test_scope_expansion_against_the_session_catalogue(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier, tools=CATALOGUE)
    in_scope, out_scope = make_action("crm.query"), make_action("shell.exec")
    assert ctx.snapshot(T0, action=in_scope).risk_signals["scope_expansion"] is False
    assert ctx.snapshot(T0, action=out_scope).risk_signals["scope_expansion"] is True
    request(ctx, out_scope)
    sig = ctx.snapshot(T0, action=in_scope).risk_signals
    assert sig["scope_expansion"] is True and sig["out_of_scope_actions"] == 1  # sticky for the session


@pytest.mark.parametrize("tools", [None, ()])
def test_no_catalogue_means_no_scope_signal(store: Store, classifier: Classifier, tools: object) -> None:
    ctx = start(store, classifier, tools=tools)
    assert "scope_expansion" not in ctx.snapshot(T0, action=make_action("shell.exec")).risk_signals


def test_derive_signals_is_pure() -> None:
    kw = dict(max_rank=3, expected_rank=0, sensitive_rank=2, action_count=7, velocity=2, out_of_scope=None,
              current_out_of_scope=False)
    assert derive_signals(**kw) == derive_signals(**kw)  # type: ignore[arg-type]
    assert derive_signals(**kw)["classification_escalation"] is True  # type: ignore[arg-type]


def test_bad_signal_config_is_refused() -> None:
    with pytest.raises(ValueError, match="velocity_window_seconds"):
        SignalConfig(velocity_window_seconds=0)
