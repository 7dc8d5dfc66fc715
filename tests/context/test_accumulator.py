"""SessionContext: what the PDP sees, durable appends, atomic commits with receipts, resume, threads."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from aarmor.canonical import TAG_OUTPUT, digest
from aarmor.context import Classifier, SessionContext, unresolved_actions, verify_chain
from aarmor.errors import ChainError, InputError, LimitExceeded
from aarmor.limits import Limits
from aarmor.model import Decision, DecisionResult
from aarmor.store import GENESIS, ReceiptRecord, Store, open_store
from tests.context.helpers import IDENT, SID, T0, at, build_session, make_action, request, start

DENY = Decision(DecisionResult.DENY, "denied by rule-9", rule_id="rule-9")


def _receipt(seq: int, prev: str, rid: str = "rct_1") -> ReceiptRecord:
    return ReceiptRecord(rid, SID, seq, "act", "t", "crm", "query", "ALLOW", None, None,
                         "sha256:" + f"{seq:064x}", {"prev_receipt_hash": prev})


def test_pdp_receives_all_prior_actions_and_classifications(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier, intent_classification="meeting_prep")
    steps = [("crm.query", {"contact": "Jane"}), ("calendar.read", "10:00 ACME"),
             ("docs.read", "card 4111 1111 1111 1111")]
    for i, (tool, out) in enumerate(steps):
        a = make_action(tool, now=at(i))
        request(ctx, a, now=at(i))
        ctx.record_outcome(a, executed=True, success=True, output=out, error=None, now=at(i))
    snap = ctx.snapshot(at(30))
    assert [p.name for p in snap.prior_actions] == ["crm.query", "calendar.read", "docs.read"]
    assert snap.original_request == "prepare the meeting with ACME"
    assert snap.intent_classification == "meeting_prep"
    # declared PII, undeclared calendar (R2: highest), detected card
    assert {"PII", "RESTRICTED", "FINANCIAL", "PUBLIC", "CONFIDENTIAL"} == snap.classifications
    assert snap.max_sensitivity == "RESTRICTED" and snap.action_count == 3 and snap.elapsed_seconds == 30
    assert snap.prior_actions[1].classifications == {"RESTRICTED"}
    assert all(p.executed and p.success for p in snap.prior_actions)
    assert snap.chain_head == ctx.head[1]


def test_resumed_session_sees_the_same_context(tmp_path: Path, classifier: Classifier) -> None:
    st = open_store(f"sqlite:///{tmp_path}/a.db")
    ctx = build_session(st, classifier, actions=5)
    a = make_action("web.fetch", now=at(20))
    request(ctx, a, DENY, now=at(20))
    live = ctx.snapshot(at(40), action=a)
    st.close()
    st2 = open_store(f"sqlite:///{tmp_path}/a.db")
    resumed = SessionContext.resume(st2, SID, classifier=classifier)
    assert resumed.snapshot(at(40), action=a) == live
    assert resumed.head == ctx.head
    rec = request(resumed, make_action(now=at(41)), now=at(41))  # and it extends the same chain
    assert rec.seq == ctx.head[0] + 1 and rec.prev_hash == ctx.head[1]
    st2.close()


def test_window_is_bounded_but_aggregates_cover_the_whole_session(store: Store,
                                                                  classifier: Classifier) -> None:
    ctx = start(store, classifier, window=3)
    first = make_action("vault.read", now=at(0))
    request(ctx, first, now=at(0))
    ctx.record_outcome(first, executed=True, success=True, output="x", error=None, now=at(0))
    for i in range(1, 10):
        a = make_action("calc.add", now=at(i))
        request(ctx, a, now=at(i))
        ctx.record_outcome(a, executed=True, success=True, output=i, error=None, now=at(i))
    snap = ctx.snapshot(at(10))
    assert len(snap.prior_actions) == 3 and snap.action_count == 10
    assert "RESTRICTED" in snap.classifications and snap.max_sensitivity == "RESTRICTED"  # from action 1
    assert len(list(store.read_log(SID))) == 21  # the full history stays in the store
    assert SessionContext.resume(store, SID, classifier=classifier, window=3).snapshot(at(10)) == snap


def test_denied_action_is_a_prior_action_that_did_not_run(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action("email.send")
    request(ctx, a, DENY)
    rec, labels = ctx.record_outcome(a, executed=False, success=None, output=None, error=None, now=T0)
    assert labels == frozenset() and rec.body["executed"] is False
    (p,) = ctx.snapshot(T0).prior_actions
    assert (p.decision, p.executed, p.success) == (DecisionResult.DENY, False, None)


def test_snapshot_is_immutable_and_unchanged_by_later_writes(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    before = ctx.snapshot(T0)
    a = make_action()
    request(ctx, a)
    ctx.record_outcome(a, executed=True, success=True, output="x", error=None, now=T0)
    assert before.prior_actions == () and before.classifications == frozenset() and before.action_count == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.action_count = 5  # type: ignore[misc]


def test_raw_parameters_and_outputs_never_reach_the_log(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action("db.login", {"password": "hunter2-secret"})
    ctx.record_requested(a, Decision(DecisionResult.ALLOW, "ok"), parameters_view={"password": "[REDACTED]"},
                         parameters_digest="sha256:" + "a" * 64, now=T0)
    out = "AKIAIOSFODNN7EXAMPLE"
    rec, labels = ctx.record_outcome(a, executed=True, success=True, output=out, error=None, now=T0)
    text = repr([r.body for r in store.read_log(SID)])
    assert "hunter2" not in text and out not in text
    assert rec.body["output_digest"] == digest(TAG_OUTPUT, out)
    assert rec.body["detectors"] == ["aws_access_key"] and labels == {"CREDENTIALS", "RESTRICTED"}


def test_tool_error_is_recorded_with_class_and_cut_message(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action()
    request(ctx, a)
    rec, _ = ctx.record_outcome(a, executed=True, success=False, output=None, error=TimeoutError("x" * 5000),
                                now=T0)
    assert rec.body["error"]["class"] == "TimeoutError" and len(rec.body["error"]["message"]) == 1024


def test_a_writer_behind_another_catches_up_and_commits_on_top(store: Store, classifier: Classifier) -> None:
    """Two writers on one session (two processes): the store refuses the stale head; the writer behind folds
    in the other's entries and commits its own after them. The chain never forks."""
    ctx = start(store, classifier)
    other = SessionContext.resume(store, SID, classifier=classifier)
    request(other, make_action(now=at(1)), now=at(1))  # another writer moves the chain
    rec = request(ctx, make_action(now=at(2)), now=at(2))
    assert rec.seq == 2 and ctx.head == (rec.seq, rec.entry_hash)
    assert ctx.snapshot(at(3)).action_count == 2  # the other writer's action is in this writer's context
    verify_chain(store.read_log(SID))


def test_a_receipt_commit_on_a_stale_head_is_refused_for_its_caller_to_redo(store: Store,
                                                                              classifier: Classifier) -> None:
    """With receipts the entries cannot be re-based (a receipt names the context hash it was decided on)."""
    ctx = start(store, classifier)
    other = SessionContext.resume(store, SID, classifier=classifier)
    request(other, make_action(now=at(1)), now=at(1))
    head, snap = ctx.head, ctx.snapshot(at(2))
    a = make_action(now=at(2))
    with pytest.raises(ChainError, match="expected seq 2"), ctx.atomic() as tx:
        tx.outcome(a, executed=False, success=None, output=None, error=None, now=at(2))
        tx.commit(receipts=(_receipt(0, GENESIS),))
    assert ctx.head == head and ctx.snapshot(at(2)) == snap
    verify_chain(store.read_log(SID))


def test_outcome_and_receipt_commit_atomically(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action()
    request(ctx, a)
    with ctx.atomic() as tx:
        rec, labels = tx.outcome(a, executed=True, success=True, output="x", error=None, now=T0)
        assert tx.head == (rec.seq, rec.entry_hash) and ctx.head[0] == rec.seq - 1  # not yet committed
        tx.commit(receipts=(_receipt(0, GENESIS),))
    assert ctx.head == (rec.seq, rec.entry_hash) and labels == {"PII", "CONFIDENTIAL"}
    assert store.receipt_head(SID) is not None


def test_failed_receipt_write_leaves_log_and_head_unchanged(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action()
    request(ctx, a)
    head, snap = ctx.head, ctx.snapshot(T0)
    with pytest.raises(ChainError, match="receipt chain"), ctx.atomic() as tx:
        tx.outcome(a, executed=True, success=True, output="x", error=None, now=T0)
        tx.commit(receipts=(_receipt(5, GENESIS),))  # a receipt that does not extend its chain
    assert ctx.head == head and ctx.snapshot(T0) == snap
    assert store.log_head(SID) == head and store.receipt_head(SID) is None


def test_prepare_outcome_then_commit_after_the_callers_write(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    a = make_action()
    request(ctx, a)
    rec = ctx.prepare_outcome(a, executed=True, success=True, output="x", error=None, now=T0)
    assert ctx.head[0] == rec.seq - 1
    store.append_all(logs=(rec,), receipts=(_receipt(0, GENESIS),))
    ctx.commit((rec,))
    assert ctx.head == (rec.seq, rec.entry_hash)
    assert ctx.snapshot(T0).classifications == {"PII", "CONFIDENTIAL"}
    with pytest.raises(ChainError, match="does not extend"):
        ctx.commit((rec,))  # the same record twice


def test_transaction_misuse(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    with pytest.raises(RuntimeError, match="uncommitted"), ctx.atomic() as tx:
        tx.event("approval", {"x": 1}, now=T0)
    assert ctx.head[0] == 0
    with ctx.atomic(), pytest.raises(RuntimeError, match="already open"):
        request(ctx, make_action())
    with pytest.raises(ValueError, match="boom"), ctx.atomic() as tx:
        tx.event("approval", {"x": 1}, now=T0)
        raise ValueError("boom")
    assert ctx.head[0] == 0 and len(list(store.read_log(SID))) == 1


def test_threads_sharing_a_session_serialise_appends(tmp_path: Path, classifier: Classifier) -> None:
    st = open_store(f"sqlite:///{tmp_path}/a.db?synchronous=normal")
    ctx = start(st, classifier)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                a = make_action("calc.add", {"n": n * 100 + i}, now=at(i))
                ctx.snapshot(at(i), action=a)
                request(ctx, a, now=at(i))
                ctx.record_outcome(a, executed=True, success=True, output=i, error=None, now=at(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ctx.snapshot(at(30)).action_count == 150
    assert verify_chain(st.read_log(SID)).entries == 301
    st.close()


def test_context_values_populate_context_for_the_pdp(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    ctx.set_value("maintenance_window", {"open": False, "until": "2026-02-10T14:00:00Z"}, source="env:ops",
                  now=T0)
    ctx.set_value("ticket_status", "open", source="jira", now=T0)
    ctx.set_value("ticket_status", "closed", source="jira", now=at(1))
    values = ctx.snapshot(at(2)).values
    assert values["ticket_status"] == "closed" and values["maintenance_window"]["open"] is False


@pytest.mark.parametrize("name,source,msg", [
    ("data_classification", "x", "would shadow the built-in fact `context.data_classification`"),
    ("Bad-Name", "x", "lower-case identifier"),
    ("ok", "", "source must be a non-empty string"),
])
def test_context_value_cannot_shadow_builtin_facts(store: Store, classifier: Classifier, name: str,
                                                   source: str, msg: str) -> None:
    ctx = start(store, classifier)
    with pytest.raises(InputError, match=msg):
        ctx.set_value(name, [], source=source, now=T0)
    assert ctx.head[0] == 0


def test_oversized_context_value_names_the_limit(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier, limits=Limits(max_argument_bytes=100))
    with pytest.raises(LimitExceeded, match="max_argument_bytes"):
        ctx.set_value("blob", "x" * 200, source="env", now=T0)


def test_builtin_kinds_cannot_be_forged_as_events(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    with pytest.raises(InputError, match="event kind `action_outcome`"):
        ctx.record_event("action_outcome", {"action_id": "x", "classifications": []}, now=T0)
    rec = ctx.record_event("deferral", {"reason": "waiting"}, now=T0)
    assert rec.kind == "deferral" and ctx.snapshot(T0).action_count == 0


def test_action_from_another_session_is_refused(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    with pytest.raises(InputError, match="belongs to session `other`"):
        request(ctx, make_action(session_id="other"))
    assert ctx.head[0] == 0


def test_session_id_reuse_is_refused(store: Store, classifier: Classifier) -> None:
    start(store, classifier)
    with pytest.raises(InputError, match="already has a context log"):
        start(store, classifier)


def test_oversized_original_request_names_the_limit(store: Store, classifier: Classifier) -> None:
    with pytest.raises(LimitExceeded, match="max_request_chars"):
        SessionContext.start(store, session_id=SID, identity=IDENT, original_request="x" * 11, now=T0,
                             classifier=classifier, limits=Limits(max_request_chars=10))
    assert store.log_head(SID) is None


def test_ended_session_refuses_writes(store: Store, classifier: Classifier) -> None:
    ctx = build_session(store, classifier)
    end = ctx.end(at(20))
    assert end.body == {"action_count": 3, "classifications": ["CONFIDENTIAL", "PII"],
                        "max_sensitivity": "CONFIDENTIAL"}
    with pytest.raises(RuntimeError, match="already ended"):
        request(ctx, make_action())
    resumed = SessionContext.resume(store, SID, classifier=classifier)
    assert resumed.ended
    with pytest.raises(RuntimeError, match="already ended"):
        resumed.set_value("x", 1, source="s", now=at(21))


def test_unresolved_actions_for_crash_recovery(store: Store, classifier: Classifier) -> None:
    ctx = start(store, classifier)
    done, crashed = make_action(action_id="act_done"), make_action(action_id="act_crashed")
    request(ctx, done)
    ctx.record_outcome(done, executed=True, success=True, output=1, error=None, now=T0)
    rec = request(ctx, crashed)
    assert unresolved_actions(store.read_log(SID)) == (("act_crashed", rec.seq),)


def test_resume_of_unknown_session_is_bad_input(store: Store, classifier: Classifier) -> None:
    with pytest.raises(InputError, match="no context log"):
        SessionContext.resume(store, "nope", classifier=classifier)
