"""The in-flight contract every store keeps (crash recovery, docs/durability.md), on both backends here.

A requested entry starts an in-flight row in its own commit, the outcome's commit ends it, a claim is a
compare-and-set (one winner), and an outcome from an owner that lost its action is refused, never a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aarmor.context import Classifier, SessionContext
from aarmor.errors import StoreError
from aarmor.model import Action, Decision, DecisionResult, FrozenMap, Identity
from aarmor.store import RECOVERED, Store
from tests.pg_support import BACKENDS, backend

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
SID = "sess_inflight"
ALICE = Identity(human="alice@company.com", agent="agent-1", session=SID)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with backend(request.param, tmp_path / "a.db") as s:
        s.owner = "host:1:aaaa"  # type: ignore[attr-defined]
        yield s  # type: ignore[misc]


def _ctx(store: Store) -> SessionContext:
    return SessionContext.start(store, session_id=SID, identity=ALICE, original_request="r", now=NOW,
                                classifier=Classifier())


def _action(aid: str) -> Action:
    return Action(aid, NOW, "files", "read", FrozenMap({"path": "/tmp/x"}), ALICE, SID)


def _requested(ctx: SessionContext, aid: str) -> None:
    ctx.record_requested(_action(aid), Decision(result=DecisionResult.ALLOW, reason="ok"), parameters_view={},
                         parameters_digest="sha256:" + "1" * 64, now=NOW)


def _outcome(ctx: SessionContext, aid: str) -> None:
    ctx.record_outcome(_action(aid), executed=True, success=True, output="x", error=None, now=NOW)


def test_a_requested_action_is_in_flight_until_its_outcome_commits(store: Store) -> None:
    ctx = _ctx(store)
    _requested(ctx, "act_1")
    (row,) = store.inflight_list()
    assert (row.session_id, row.action_id, row.log_seq, row.owner) == (SID, "act_1", 1, "host:1:aaaa")
    _outcome(ctx, "act_1")
    assert store.inflight_list() == []
    assert store.inflight_owner(SID, "act_1") is None


def test_requested_and_outcome_in_one_commit_leave_nothing_in_flight(store: Store) -> None:
    ctx = _ctx(store)
    with ctx.atomic() as tx:  # how a DENY is written
        tx.requested(_action("act_d"), Decision(result=DecisionResult.DENY, reason="no"), parameters_view={},
                     parameters_digest="sha256:" + "2" * 64, now=NOW)
        tx.outcome(_action("act_d"), executed=False, success=None, output=None, error=None, now=NOW)
        tx.commit()
    assert store.inflight_list() == []


def test_one_claim_wins_and_the_loser_s_outcome_is_refused(store: Store) -> None:
    ctx = _ctx(store)
    _requested(ctx, "act_1")
    store.owner = "host:2:bbbb"  # another process takes the action over from the first (taken for dead)
    assert store.inflight_claim(SID, "act_1", "host:1:aaaa") is True
    assert store.inflight_claim(SID, "act_1", "host:1:aaaa") is False  # compare-and-set: one winner
    assert store.inflight_owner(SID, "act_1") == "host:2:bbbb"
    store.owner = "host:1:aaaa"  # the first process was alive after all: its late outcome is refused
    with pytest.raises(StoreError, match="held by `host:2:bbbb`"):
        _outcome(ctx, "act_1")
    assert [r.kind for r in store.read_log(SID)] == ["session_start", "action_requested"]  # nothing written


def test_a_recovered_tombstone_cannot_be_claimed_or_listed(store: Store) -> None:
    ctx = _ctx(store)
    _requested(ctx, "act_1")
    with store._txn():
        store._set_inflight_owner(SID, "act_1", RECOVERED)
    assert store.inflight_list() == []
    assert store.inflight_claim(SID, "act_1", RECOVERED) is False
    with pytest.raises(StoreError, match="held by `recovered`"):
        _outcome(ctx, "act_1")


def test_owner_leases_are_renewed_and_released(store: Store) -> None:
    store.owner_renew("host:1:aaaa", 0.0)  # already run out
    store.owner_renew("host:2:bbbb", 60.0)
    assert set(store.owner_leases()) == {"host:1:aaaa", "host:2:bbbb"}
    assert store.owners_alive() == {"host:2:bbbb"}
    store.owner_renew("host:1:aaaa", 60.0)  # renewed: alive again
    assert store.owners_alive() == {"host:1:aaaa", "host:2:bbbb"}
    store.owner_release("host:1:aaaa")
    assert set(store.owner_leases()) == {"host:2:bbbb"} and store.owners_alive() == {"host:2:bbbb"}


def test_a_store_without_owner_tracks_nothing(store: Store) -> None:
    store.owner = None
    ctx = _ctx(store)
    _requested(ctx, "act_1")
    assert store.inflight_list() == []
    with pytest.raises(RuntimeError, match="without an owner"):
        store.inflight_claim(SID, "act_1", "x")
