"""Drift profiles per agent type: configuration, selection by the scorer, and through a real Guard."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aarmor import DecisionResult, Identity
from aarmor.config import IntentConfig, IntentProfile, load_config
from aarmor.errors import ConfigError
from aarmor.intent import build_scorer, resolve_profiles
from aarmor.intent.scorer import SemanticScorer, agent_type_of
from aarmor.model import ContextSnapshot, FrozenMap
from aarmor.normalize import normalize_action

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def act(agent: str | None, tool: str = "delete_file") -> Any:
    return normalize_action(tool, {"path": "/x"}, operation=None, identity=Identity(human="a@b.c", agent=agent),
                            session_id="s1", now=NOW)


def snap(values: dict[str, Any] | None = None, sid: str = "s1") -> ContextSnapshot:
    return ContextSnapshot(session_id=sid, started_at=NOW, original_request="summarise my unread emails",
                           values=FrozenMap(values or {}))


def test_the_profiles_section(tmp_path: Path) -> None:
    p = tmp_path / "aarmor.yaml"
    p.write_text("intent:\n  scorer: lexical\n  drift_threshold: 0.8\n  profiles:\n"
                 "    mail-assistant: {drift_threshold: 0.6, drift_alpha: 0.2}\n"
                 "    dev-assistant: {similarity_floor: 0.1, similarity_ceiling: 0.6}\n")
    cfg = load_config(p).intent
    assert cfg.profiles == (("mail-assistant", IntentProfile(drift_threshold=0.6, drift_alpha=0.2)),
                            ("dev-assistant", IntentProfile(similarity_floor=0.1, similarity_ceiling=0.6)))
    default, profiles = resolve_profiles(cfg)
    assert (default.drift.threshold, default.drift.alpha, default.calibration.ceiling) == (0.8, 0.4, 0.5)
    mail, dev = profiles["mail-assistant"], profiles["dev-assistant"]
    # a value a profile leaves out is the top-level one (itself the scorer's default when left out)
    assert (mail.drift.threshold, mail.drift.alpha, mail.calibration.floor, mail.calibration.ceiling) == \
        (0.6, 0.2, 0.0, 0.5)
    assert (dev.drift.threshold, dev.drift.alpha, dev.calibration.floor, dev.calibration.ceiling) == \
        (0.8, 0.4, 0.1, 0.6)


@pytest.mark.parametrize(("text", "message"), [
    ("intent: {profiles: {mail: {threshold: 0.5}}}", "`intent.profiles.mail.threshold`: unknown key"),
    ("intent: {profiles: {mail: {drift_alpha: 0}}}", "`intent.profiles.mail.drift_alpha`"),
    ("intent: {profiles: {mail: {drift_threshold: 1.5}}}", "`intent.profiles.mail.drift_threshold`"),
    ("intent: {profiles: {' ': {drift_threshold: 0.5}}}", "agent type name must not be blank"),
])
def test_bad_profiles(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "aarmor.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_a_profile_floor_above_its_ceiling_names_the_profile() -> None:
    cfg = IntentConfig(scorer="lexical", profiles=(("mail", IntentProfile(similarity_floor=0.6)),))
    with pytest.raises(ConfigError, match=r"intent\.profiles\.mail: .*similarity_floor 0\.6"):
        build_scorer(cfg)


def test_selection_rule() -> None:
    scorer = build_scorer(IntentConfig(scorer="lexical", profiles=(
        ("mail-assistant", IntentProfile(drift_threshold=0.1)), ("dev-assistant", IntentProfile(drift_threshold=0.2)))))
    assert isinstance(scorer, SemanticScorer)
    # the identity's agent
    assert scorer.profile_for(act("mail-assistant"), snap()).name == "mail-assistant"
    # the context field `agent_type` wins over the identity
    assert agent_type_of(act("mail-assistant"), snap({"agent_type": "dev-assistant"})) == "dev-assistant"
    assert scorer.profile_for(act("mail-assistant"), snap({"agent_type": "dev-assistant"})).name == "dev-assistant"
    # no profile of that name, no agent at all, or a blank/non-string field: the default profile
    assert scorer.profile_for(act("crm-bot"), snap()) is scorer.default_profile
    assert scorer.profile_for(act(None), snap()) is scorer.default_profile
    assert scorer.profile_for(act("mail-assistant"), snap({"agent_type": "crm-bot"})) is scorer.default_profile
    assert scorer.profile_for(act("mail-assistant"), snap({"agent_type": "  "})).name == "mail-assistant"
    assert scorer.profile_for(act("mail-assistant"), snap({"agent_type": 3})).name == "mail-assistant"


def test_the_profile_sets_drift_detected_and_alignment() -> None:
    cfg = IntentConfig(scorer="lexical", drift_threshold=0.99, profiles=(
        ("strict", IntentProfile(drift_threshold=0.5, similarity_floor=0.0, similarity_ceiling=0.9)),))
    scorer = build_scorer(cfg)
    assert isinstance(scorer, SemanticScorer)
    loose = scorer.score(act("other", "list_unread_emails"), snap(sid="a"))
    strict = scorer.score(act("strict", "list_unread_emails"), snap(sid="b"))
    off = scorer.score(act("strict"), snap(sid="c"))
    assert loose is not None and strict is not None and off is not None
    assert loose.semantic_distance == strict.semantic_distance  # the distance does not depend on the profile
    assert loose.alignment == 1.0 and strict.alignment is not None and strict.alignment < 1.0
    assert off.risk_signals["drift_detected"] is True  # distance 1 > 0.5
    default_off = scorer.score(act(None), snap(sid="d"))
    assert default_off is not None and default_off.risk_signals["drift_detected"] is True  # 1 > 0.99
    # the profile's alpha drives the EMA
    cfg2 = IntentConfig(scorer="lexical", profiles=(("slow", IntentProfile(drift_alpha=0.1)),))
    s2 = build_scorer(cfg2)
    assert isinstance(s2, SemanticScorer)
    assert s2.profile_for(act("slow"), snap()).drift.alpha == 0.1


POLICY = """
policy: {id: profiles, version: "1", default: ALLOW, alignment_threshold: null}
rules:
  - id: drifting
    match: {tool: "*", risk_signals: {drift_detected: true}}
    action: DENY
    reason: the session drifted away from the request
"""


def test_through_a_guard(make_guard: Callable[..., Any]) -> None:
    # lexical: `archive_old_emails` shares one word of three with the request: distance ~0.42
    guard = make_guard(POLICY, intent={"scorer": "lexical", "drift_threshold": 0.9,
                                       "profiles": {"strict-mailer": {"drift_threshold": 0.3}}})
    request = "Summarise my unread emails"
    with guard.session(identity=Identity(human="a@b.c", agent="relaxed"), original_request=request) as s:
        assert s.evaluate("archive_old_emails", {}).result is DecisionResult.ALLOW
    with guard.session(identity=Identity(human="a@b.c", agent="strict-mailer"), original_request=request) as s:
        d = s.evaluate("archive_old_emails", {})
        assert (d.result, d.rule_id) == (DecisionResult.DENY, "drifting")
    with guard.session(identity=Identity(human="a@b.c", agent="relaxed"), original_request=request) as s:
        s.set_context("agent_type", "strict-mailer", source="app")  # the explicit agent type wins
        assert s.evaluate("archive_old_emails", {}).result is DecisionResult.DENY
