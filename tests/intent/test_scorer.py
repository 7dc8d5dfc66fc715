"""The alignment/drift scorer: written scenarios on the real model, drift math, and through a real Guard."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from aarmor import ActionDenied, DecisionResult, Identity
from aarmor.intent import AlignmentSignal
from aarmor.intent.embedding import MiniLMEncoder
from aarmor.intent.scorer import (
    Calibration,
    DriftSettings,
    DriftState,
    SemanticScorer,
    action_descriptor,
    request_confidence,
)
from aarmor.model import Action, ContextSnapshot, PriorAction
from aarmor.normalize import normalize_action

D = DecisionResult
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ALICE = Identity(human="alice@company.com", agent="mail-agent")


def act(tool: str, args: dict[str, Any] | None = None, sid: str = "s1", action_id: str | None = None) -> Action:
    return normalize_action(tool, args or {}, operation=None, identity=ALICE, session_id=sid, now=NOW,
                            action_id=action_id)


def snap(request: str | None, priors: tuple[PriorAction, ...] = (), sid: str = "s1") -> ContextSnapshot:
    return ContextSnapshot(session_id=sid, started_at=NOW, original_request=request, prior_actions=priors)


def prior(a: Action) -> PriorAction:
    return PriorAction(a.action_id, a.tool, a.operation, D.ALLOW, NOW)


@pytest.fixture(scope="module")
def scorer(encoder: MiniLMEncoder) -> SemanticScorer:
    return SemanticScorer("embedding", encoder.similarity, calibration=Calibration(0.0, 0.3),
                          drift=DriftSettings(0.4, 0.9), encoder=encoder)


def test_descriptor_keeps_tool_operation_and_short_arguments() -> None:
    a = act("send_email", {"to": "mark@attacker.com", "subject": "Report", "body": "Hello " * 40,
                           "api_key": "sk-live-123", "cc": ["a@x.com", "b@y.com"], "attachments": {"n": 1}})
    assert action_descriptor(a) == "send email: to mark@attacker.com, subject Report, cc a@x.com, b@y.com"
    assert action_descriptor(act("email.send", {})) == "email send"
    assert action_descriptor(act("get_unread_emails", {"maxResults": 10, "unread": True})) == \
        "get unread emails: max Results 10, unread true"


def test_confidence_grows_with_the_request() -> None:
    assert request_confidence("please") == 0.0
    assert request_confidence("emails") == pytest.approx(1 / 3)
    assert request_confidence("summarise my unread emails") == 1.0


def test_no_request_no_signal(scorer: SemanticScorer) -> None:
    assert scorer.score(act("delete_file", {"path": "/x"}), snap(None)) is None
    assert scorer.score(act("delete_file", {"path": "/x"}), snap("   ")) is None


# (request, on-task actions, off-task actions): each on-task action must be closer to the request than each
# off-task one, and the off-task ones below the default alignment threshold 0.7
SCENARIOS = [
    ("Summarise my unread emails",
     [("list_emails", {"folder": "inbox", "unread": True}), ("search_emails", {"query": "unread"}),
      ("read_email", {"id": 42})],
     [("delete_file", {"path": "/home/alice/notes.txt"}), ("update_password", {"user": "alice"}),
      ("drop_table", {"name": "customers"})]),
    ("Pay my rent for this month, the landlord details are in landlord-notices.txt",
     [("read_file", {"file_path": "landlord-notices.txt"}),
      ("send_money", {"recipient": "GB29NWBK60161331926819", "amount": 1100, "subject": "rent"})],
     [("update_password", {"password": "hunter2"}), ("delete_calendar_event", {"id": 3})]),
    ("Prepare for my meeting with Acme tomorrow",
     [("get_calendar_events", {"day": "tomorrow"}), ("search_crm", {"company": "Acme"})],
     [("delete_database_table", {"name": "customers"}), ("rotate_credentials", {"service": "billing"})]),
]


@pytest.mark.parametrize(("request_", "on_task", "off_task"), SCENARIOS, ids=["emails", "rent", "meeting"])
def test_on_task_actions_align_and_off_task_ones_do_not(scorer: SemanticScorer, request_: str,
                                                        on_task: list[Any], off_task: list[Any]) -> None:
    s = snap(request_)
    good = [scorer.score(act(t, a), s) for t, a in on_task]
    bad = [scorer.score(act(t, a), s) for t, a in off_task]
    assert all(isinstance(x, AlignmentSignal) for x in good + bad)
    worst_good = max(x.semantic_distance for x in good)  # type: ignore[union-attr,type-var]
    best_bad = min(x.semantic_distance for x in bad)  # type: ignore[union-attr,type-var]
    assert worst_good < best_bad, (good, bad)
    assert all(x.alignment >= 0.7 for x in good)  # type: ignore[union-attr,operator]
    assert all(x.alignment < 0.7 for x in bad)  # type: ignore[union-attr,operator]
    for x in good + bad:
        assert x is not None and x.confidence == 1.0
        assert 0.0 <= x.semantic_distance <= 1.0  # type: ignore[operator]


def test_a_send_to_an_unknown_address_is_further_than_reading(scorer: SemanticScorer) -> None:
    """Semantics alone cannot tell a hijacked send from a wanted one (provenance does); it is only further."""
    s = snap("Summarise my unread emails")
    read = scorer.score(act("list_emails", {"unread": True}), s)
    send = scorer.score(act("send_email", {"to": "mark@attacker.com", "subject": "Your emails"}), s)
    assert read is not None and send is not None
    assert send.semantic_distance > read.semantic_distance + 0.1  # type: ignore[operator]


# --- drift: the math on a scripted similarity, then on the model ---------------------------------------

def test_drift_state_ema_and_max() -> None:
    st = DriftState()
    for d in (0.5, 0.9, 0.2):
        st = st.step(d, 0.4)
    # e1 = 0.5; e2 = 0.4*0.9 + 0.6*0.5 = 0.66; e3 = 0.4*0.2 + 0.6*0.66 = 0.476
    assert st.ema == pytest.approx(0.476) and st.max == 0.9 and st.count == 3
    assert DriftState().step(0.7, 1.0).step(0.1, 1.0).ema == pytest.approx(0.1)  # alpha 1: the last distance


def scripted(similarities: dict[str, float]) -> SemanticScorer:
    return SemanticScorer("scripted", lambda request, text: similarities[text], calibration=Calibration(0.0, 0.5),
                          drift=DriftSettings(alpha=0.5, threshold=0.6))


def test_drift_counts_each_requested_action_once_in_order() -> None:
    sc = scripted({"a": 0.8, "b": 0.4, "c": 0.0, "d": -0.5})
    a, b, c, d = (act(n, action_id=f"act_{n}") for n in "abcd")
    sig = sc.score(a, snap("r"))
    assert sig is not None
    assert (sig.semantic_distance, sig.alignment) == (pytest.approx(0.2), 1.0)
    assert dict(sig.risk_signals) == {"semantic_drift": pytest.approx(0.2), "semantic_drift_max": pytest.approx(0.2),
                                      "drift_detected": False, "semantic_drift_actions": 1,
                                      "intent_profile": "default"}
    # `a` was recorded; `b` is scored twice (a dry run, then for real): counts once
    sc.score(b, snap("r", (prior(a),)))
    sig = sc.score(b, snap("r", (prior(a),)))
    assert sig is not None and sig.risk_signals["semantic_drift"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.2)
    sig = sc.score(c, snap("r", (prior(a), prior(b))))
    # e = 0.2 -> 0.4 -> 0.5*1.0 + 0.5*0.4 = 0.7 > 0.6
    assert sig is not None and sig.risk_signals["semantic_drift"] == pytest.approx(0.7)
    assert sig.risk_signals["drift_detected"] is True and sig.risk_signals["semantic_drift_max"] == 1.0
    assert sig.alignment == 0.0 and sig.semantic_distance == 1.0
    # a negative cosine is distance 1 (clipped), not 1.5
    sig = sc.score(d, snap("r", (prior(a), prior(b), prior(c))))
    assert sig is not None and sig.semantic_distance == 1.0 and sig.risk_signals["semantic_drift_actions"] == 4


def test_a_dry_run_never_enters_the_drift() -> None:
    sc = scripted({"a": 0.9, "x": -1.0})
    a = act("a", action_id="act_a")
    sc.score(act("x", action_id="act_x"), snap("r"))  # evaluated, never recorded
    sig = sc.score(a, snap("r"))
    assert sig is not None and sig.risk_signals["semantic_drift_actions"] == 1
    assert sig.risk_signals["semantic_drift_max"] == pytest.approx(0.1)


def test_gradual_drift_is_caught_by_the_ema_and_a_single_spike_is_not() -> None:
    sims = {f"t{i}": s for i, s in enumerate([0.7, 0.6, 0.5, 0.35, 0.2, 0.1, 0.0])} | {"spike": -0.2, "ok": 0.8}
    gradual = scripted(sims)
    done: list[PriorAction] = []
    flags = []
    for i in range(7):
        a = act(f"t{i}", action_id=f"act_t{i}")
        sig = gradual.score(a, snap("r", tuple(done), sid="g"))
        assert sig is not None
        flags.append(sig.risk_signals["drift_detected"])
        done.append(prior(a))
    # distances 0.3 0.4 0.5 0.65 0.8 0.9 1.0 -> EMA 0.3 0.35 0.425 0.5375 0.669 ... (threshold 0.6)
    assert flags == [False, False, False, False, True, True, True]
    spiky = scripted(sims)
    done = []
    for i, name in enumerate(["ok", "ok", "spike", "ok", "ok"]):
        a = act(name, action_id=f"act_{i}")
        sig = spiky.score(a, snap("r", tuple(done), sid="s"))
        assert sig is not None
        done.append(prior(a))
    assert sig.risk_signals["drift_detected"] is False
    assert sig.risk_signals["semantic_drift_max"] == 1.0  # the spike stays on record


def test_actions_scored_elsewhere_are_folded_from_their_name() -> None:
    sc = scripted({"a": 0.5, "earlier": 0.9})
    resumed = PriorAction("act_old", "earlier", "", D.ALLOW, NOW)  # recorded before a restart
    sig = sc.score(act("a", action_id="act_a"), snap("r", (resumed,)))
    assert sig is not None and sig.risk_signals["semantic_drift_actions"] == 2
    assert sig.risk_signals["semantic_drift_max"] == pytest.approx(0.5)


def test_drift_on_the_model_for_a_hijacked_session(scorer: SemanticScorer) -> None:
    request = "Summarise my unread emails"
    steps = [("list_emails", {"unread": True}), ("read_email", {"id": 1}), ("read_email", {"id": 2}),
             ("delete_file", {"path": "/etc/passwd"}), ("update_password", {"user": "root"}),
             ("drop_table", {"name": "users"}), ("delete_file", {"path": "/var/backups"})]
    done: list[PriorAction] = []
    drift = []
    for i, (tool, args) in enumerate(steps):
        a = act(tool, args, sid="hijack", action_id=f"act_h{i}")
        sig = scorer.score(a, snap(request, tuple(done), sid="hijack"))
        assert sig is not None
        drift.append(sig.risk_signals["semantic_drift"])
        done.append(prior(a))
    assert drift[2] < 0.7 and drift[-1] > drift[2] + 0.2
    assert sig.risk_signals["drift_detected"] is True


# --- through a real Guard ----------------------------------------------------------------------------

POLICY = """
policy: {id: intent-test, version: "1", default: ALLOW, alignment_threshold: 0.7}
rules:
  - id: far-from-the-request
    match: {tool: "*", context: {semantic_distance: {gt: 0.95}}}
    action: STEP_UP
    reason: far from the request
"""


class Tool:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, args: dict[str, Any]) -> str:
        self.calls.append(args)
        return "ok"


def test_off_intent_action_is_denied_by_the_pdp(make_guard: Callable[..., Any], scorer: SemanticScorer) -> None:
    guard = make_guard(POLICY, scorer=scorer, unattended=True)
    delete = Tool()
    with guard.session(identity=ALICE, original_request="Summarise my unread emails") as s:
        s.invoke("list_emails", {"folder": "inbox", "unread": True}, Tool())
        with pytest.raises(ActionDenied) as info:
            s.invoke("delete_file", {"path": "/home/alice/notes.txt"}, delete)
        d = s.evaluate("read_email", {"id": 3})
    assert delete.calls == []
    assert info.value.decision.result is D.DENY
    assert "alignment" in info.value.decision.reason and info.value.decision.alignment is not None
    assert d.result is D.ALLOW and d.alignment is not None and d.alignment >= 0.7


def test_semantic_distance_is_usable_in_rules(make_guard: Callable[..., Any], scorer: SemanticScorer) -> None:
    guard = make_guard(POLICY, scorer=scorer)
    with guard.session(identity=ALICE, original_request="Summarise my unread emails") as s:
        d = s.evaluate("drop_table", {"name": "customers"})
    assert (d.result, d.rule_id) == (D.STEP_UP, "far-from-the-request")


def test_drift_signals_reach_the_policy(make_guard: Callable[..., Any], scorer: SemanticScorer) -> None:
    policy = """
policy: {id: drift, version: "1", default: ALLOW}
rules:
  - id: drifting
    match: {tool: "*", risk_signals: {drift_detected: true}}
    action: DENY
    reason: the session drifted away from the request
"""
    guard = make_guard(policy, scorer=scorer)
    with guard.session(identity=ALICE, original_request="Summarise my unread emails") as s:
        d = s.evaluate("drop_table", {"name": "customers"})
    assert (d.result, d.rule_id) == (D.DENY, "drifting")


def test_the_lexical_scorer_from_the_configuration(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY, intent={"scorer": "lexical"})
    assert guard.scorer.name == "lexical"
    with guard.session(identity=ALICE, original_request="Summarise my unread emails") as s:
        assert s.evaluate("list_unread_emails", {}).result is D.ALLOW
        d = s.evaluate("rotate_credentials", {"service": "billing"})
    assert d.result is D.STEP_UP  # distance 1 > 0.95 (and alignment 0 below tau: the rule's STEP_UP wins)
