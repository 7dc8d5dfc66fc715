"""The hash chain: entry hash format, genesis, and detection of edits, deletions, insertions, reorders."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from aarmor.canonical import TAG_LOG, canonical_bytes, digest
from aarmor.context import Anchor, Classifier, check_chain, entry_hash, make_record, verify_chain
from aarmor.errors import ChainError, InputError
from aarmor.store import GENESIS, Store, open_store
from tests.context.helpers import SID, build_session


def _records(store: Store, classifier: Classifier) -> list:
    build_session(store, classifier)
    return list(store.read_log(SID))


def test_entry_hash_is_domain_tagged_canonical_digest(classifier: Classifier) -> None:
    recs = _records(open_store("memory://"), classifier)
    for r in recs:
        want = digest(TAG_LOG, {"session_id": r.session_id, "seq": r.seq, "kind": r.kind,
                                "recorded_at": r.recorded_at, "prev_hash": r.prev_hash, "body": r.body})
        assert r.entry_hash == want == entry_hash(r)
    assert recs[0].seq == 0 and recs[0].prev_hash == GENESIS and recs[0].kind == "session_start"
    assert all(b.prev_hash == a.entry_hash and b.seq == a.seq + 1 for a, b in itertools.pairwise(recs))


def test_log_hash_cannot_be_replayed_as_another_structure() -> None:
    rec = make_record(session_id="s", seq=0, kind="session_start", recorded_at="t", prev_hash=GENESIS,
                      body={})
    env = {"session_id": "s", "seq": 0, "kind": "session_start", "recorded_at": "t", "prev_hash": GENESIS,
           "body": {}}
    assert rec.entry_hash != digest("aarmor.receipt.v1", env)
    assert rec.entry_hash == "sha256:" + __import__("hashlib").sha256(
        b"aarmor.log.v1\x00" + canonical_bytes(env)).hexdigest()


def test_intact_chain_verifies(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    report = verify_chain(recs)
    assert report.verified and report.entries == len(recs) == 9
    assert report.head == (recs[-1].seq, recs[-1].entry_hash)


def test_log_entry_body_edit_detected(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    body = dict(recs[3].body, action_id="act_forged")
    recs[3] = dataclasses.replace(recs[3], body=body)
    with pytest.raises(ChainError) as exc:
        verify_chain(recs)
    assert exc.value.seq == 3 and exc.value.session_id == SID
    assert "entry hash mismatch" in str(exc.value)
    assert [f.what for f in check_chain(recs).failures] == ["edited"]


def test_log_entry_deletion_detected(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    del recs[4]
    report = check_chain(recs)
    first = report.failures[0]
    assert (first.what, first.seq) == ("deleted", 4)
    assert "gap in the log: expected seq 4, found seq 5 (entries 4 missing)" in first.message


def test_log_genesis_deletion_detected(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)[1:]
    first = check_chain(recs, session_id=SID).failures[0]
    assert (first.what, first.seq) == ("deleted", 0)


def test_log_entry_reorder_detected(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    a, b = recs[3], recs[4]  # swap their places, keeping the positions' seq numbers
    recs[3] = dataclasses.replace(b, seq=3)
    recs[4] = dataclasses.replace(a, seq=4)
    first = check_chain(recs).failures[0]
    assert (first.what, first.seq) == ("reordered", 3)


def test_forged_entry_insertion_detected(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    # the attacker computes a valid hash for the forged entry and renumbers everything after it
    forged = make_record(session_id=SID, seq=3, kind="context_value", recorded_at=recs[3].recorded_at,
                         prev_hash=recs[2].entry_hash,
                         body={"name": "approved", "value": True, "source": "x"})
    tail = [dataclasses.replace(r, seq=r.seq + 1) for r in recs[3:]]
    report = check_chain([*recs[:3], forged, *tail])
    first = report.failures[0]
    assert (first.what, first.seq) == ("inserted", 4)
    assert "links to seq 2, not to seq 3" in first.message


def test_relinked_prev_hash_detected(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    recs[5] = dataclasses.replace(recs[5], prev_hash="sha256:" + "ab" * 32)
    first = check_chain(recs).failures[0]
    assert (first.what, first.seq) == ("edited", 5)


def test_tail_truncation_needs_an_anchor(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    anchor = Anchor(recs[-1].seq, recs[-1].entry_hash, "receipt rct_1")
    truncated = recs[:-2]
    assert check_chain(truncated).verified  # a keyless chain cannot see a cut tail ...
    first = check_chain(truncated, anchors=[anchor]).failures[0]  # ... an anchor can
    assert (first.what, first.seq) == ("truncated", 8)
    assert "receipt rct_1 anchors seq 8 but the log ends at seq 6" in first.message


def test_rewritten_chain_detected_by_anchor(store: Store, classifier: Classifier) -> None:
    recs = _records(store, classifier)
    anchor = Anchor(2, recs[2].entry_hash, "receipt rct_2")
    # an attacker who rewrites entry 2 and recomputes every hash after it keeps the chain self-consistent
    rewritten = [*recs[:2]]
    prev = recs[1].entry_hash
    for r in recs[2:]:
        body = dict(r.body, note="rewritten") if r.seq == 2 else r.body
        n = make_record(session_id=SID, seq=r.seq, kind=r.kind, recorded_at=r.recorded_at, prev_hash=prev,
                        body=body)
        rewritten.append(n)
        prev = n.entry_hash
    assert check_chain(rewritten).verified
    first = check_chain(rewritten, anchors=[anchor]).failures[0]
    assert (first.what, first.seq) == ("edited", 2) and "rewritten" in first.message


def test_foreign_session_entry_detected(classifier: Classifier) -> None:
    st = open_store("memory://")
    build_session(st, classifier, session_id="a")
    build_session(st, classifier, session_id="b")
    mixed = list(st.read_log("a"))
    mixed[2] = list(st.read_log("b"))[2]
    whats = {f.what for f in check_chain(mixed).failures}
    assert "foreign" in whats


def test_entry_that_is_not_json_is_refused() -> None:
    with pytest.raises(InputError, match="integer outside"):
        make_record(session_id="s", seq=0, kind="k", recorded_at="t", prev_hash=GENESIS, body={"n": 2**60})


def test_empty_log_has_nothing_to_verify() -> None:
    report = verify_chain([], session_id="s")
    assert report.entries == 0 and report.head is None
