"""The receipt transparency log end to end: real signed receipts in a real SQLite store, tree heads signed with
the real keyring, proofs checked offline with public keys only, and the attacks the log exists for (a receipt
deleted, altered, or the history rewritten and re-grown) detected."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aarmor.cli import keys, receipts
from aarmor.config import load_config
from aarmor.receipts import Keyring, ReceiptSigner
from aarmor.receipts.transparency import (
    ProofError,
    TransparencyLog,
    TreeHeadPublisher,
    tree_head_json,
    verify_consistency_proof,
    verify_inclusion_proof,
    verify_tree_head,
)
from aarmor.store import ReceiptRecord, Store, open_store
from aarmor.store.sqlite import SqliteStore
from tests.receipts.helpers import STEPS, open_keyring, sign_chain

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "aarmor.db")
    yield s
    s.close()


def _fill(store: Store, signer: ReceiptSigner, session: str) -> list[ReceiptRecord]:
    head = store.receipt_head(session)
    recs = sign_chain(signer, STEPS, session=session, prev=head or (-1, "sha256:" + "0" * 64))
    store.append_all(receipts=tuple(recs))
    return recs


def test_every_receipt_proves_against_a_signed_head_offline(store: Store, keyring: Keyring,
                                                            signer: ReceiptSigner) -> None:
    recs = _fill(store, signer, "s-1") + _fill(store, signer, "s-2")
    tlog = TransparencyLog(store)
    head = tlog.publish(keyring, NOW)
    assert head.tree_size == 8 and store.tree_heads() == [head]
    public = keyring.public_keys()
    assert verify_tree_head(tree_head_json(head), public) == head
    for i, r in enumerate(recs):
        proof = json.loads(json.dumps(tlog.inclusion(r.receipt_id, head)))  # as it travels
        assert proof["leaf_index"] == i
        assert verify_inclusion_proof(proof, public) == head
        assert verify_inclusion_proof(proof, public, receipt=r.body) == head


def test_altered_proofs_tree_heads_and_receipts_fail(store: Store, keyring: Keyring, signer: ReceiptSigner) -> None:
    recs = _fill(store, signer, "s-1") + _fill(store, signer, "s-2")
    tlog = TransparencyLog(store)
    head = tlog.publish(keyring, NOW)
    good = tlog.inclusion(recs[5].receipt_id, head)
    public = keyring.public_keys()

    def altered(change: Any) -> dict[str, Any]:
        doc = copy.deepcopy(good)
        change(doc)
        return doc

    def flip(h: str) -> str:
        return ("1" if h[0] == "0" else "0") + h[1:]

    cases = {
        "bad signature": lambda d: d["tree_head"].__setitem__("tree_size", 9),
        "bad signature ": lambda d: d["tree_head"].__setitem__("root_hash", flip(d["tree_head"]["root_hash"])),
        "audit path does not lead": lambda d: d["audit_path"].__setitem__(1, flip(d["audit_path"][1])),
        "audit path does not lead ": lambda d: d.__setitem__("leaf_index", 4),
        "audit path does not lead  ": lambda d: d["audit_path"].pop(),
        "does not hash to the proof's leaf": lambda d: d.__setitem__("leaf_hash", flip(d["leaf_hash"])),
        "does not verify": lambda d: d["receipt"]["decision"].__setitem__("result", "ALLOW"),
        "is not `": lambda d: d.__setitem__("receipt", recs[4].body),
        "unknown key id": lambda d: d["tree_head"]["signature"].__setitem__("key_id", "aarmor-20260101-deadbeef"),
    }
    for message, change in cases.items():
        with pytest.raises(ProofError, match=message.strip()):
            verify_inclusion_proof(altered(change), public)
    with pytest.raises(ProofError, match="is not `"):  # a valid proof of another receipt
        verify_inclusion_proof(good, public, receipt=recs[4].body)
    other = open_keyring(Path(keyring.directory).parent / "other-keys")
    with pytest.raises(ProofError, match="unknown key id"):
        verify_inclusion_proof(good, other.public_keys())


def test_consistency_holds_while_the_log_only_grows(store: Store, keyring: Keyring, signer: ReceiptSigner) -> None:
    tlog = TransparencyLog(store)
    heads = [tlog.publish(keyring, NOW)]  # the empty tree
    for i, sid in enumerate(("s-1", "s-2", "s-3")):
        _fill(store, signer, sid)
        heads.append(tlog.publish(keyring, NOW + timedelta(minutes=i + 1)))
    public = keyring.public_keys()
    for a, old in enumerate(heads):
        for new in heads[a:]:
            proof = tlog.consistency(old.tree_size, new)
            assert verify_consistency_proof(tree_head_json(old), tree_head_json(new), proof, public) == (old, new)
    # the wrong way round, or a proof for other sizes, is refused
    with pytest.raises(ProofError, match="sizes"):
        verify_consistency_proof(tree_head_json(heads[1]), tree_head_json(heads[3]),
                                 tlog.consistency(heads[2].tree_size, heads[3]), public)
    with pytest.raises(ProofError, match="not between"):
        tlog.consistency(heads[3].tree_size, heads[1])


def _rewrite_history(path: Path) -> None:
    """What an operator with write access to the database does to make receipt #2 disappear: delete the receipt
    and every later leaf, then re-log the later receipts so that the leaves are contiguous again."""
    db = sqlite3.connect(path)
    rid = db.execute("SELECT receipt_id FROM merkle_leaves WHERE leaf_index = 2").fetchone()[0]
    db.execute("DELETE FROM receipts WHERE receipt_id = ?", (rid,))
    later = db.execute("SELECT receipt_id, leaf_hash FROM merkle_leaves WHERE leaf_index > 2 ORDER BY leaf_index"
                       ).fetchall()
    db.execute("DELETE FROM merkle_leaves WHERE leaf_index >= 2")
    db.executemany("INSERT INTO merkle_leaves VALUES (?,?,?)", [(2 + i, r, h) for i, (r, h) in enumerate(later)])
    db.commit()
    db.close()


def test_a_rewritten_history_fails_the_old_heads_consistency(tmp_path: Path, keyring: Keyring,
                                                              signer: ReceiptSigner) -> None:
    path = tmp_path / "aarmor.db"
    with SqliteStore(path) as store:
        recs = _fill(store, signer, "s-1") + _fill(store, signer, "s-2")
        old = TransparencyLog(store).publish(keyring, NOW)
        kept = tree_head_json(old)  # what the auditor keeps
        kept_proof = TransparencyLog(store).inclusion(recs[2].receipt_id, old)
    _rewrite_history(path)
    with SqliteStore(path) as store:
        tlog = TransparencyLog(store)
        # the operator also drops the heads it published (the auditor kept a copy)
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM tree_heads")
        _fill(store, signer, "s-3")  # and the log grows on
        new = tlog.publish(keyring, NOW + timedelta(hours=1))
        with pytest.raises(ProofError, match="no leaf"):
            tlog.inclusion(recs[2].receipt_id, new)
        proof = tlog.consistency(old.tree_size, new)
    with pytest.raises(ProofError, match="rewritten or truncated"):
        verify_consistency_proof(kept, tree_head_json(new), proof, keyring.public_keys())
    # the auditor's old inclusion proof still verifies against the old head: the receipt existed then
    assert verify_inclusion_proof(kept_proof, keyring.public_keys()) == old


def test_the_store_refuses_to_prove_or_sign_over_a_tampered_log(tmp_path: Path, keyring: Keyring,
                                                                signer: ReceiptSigner) -> None:
    path = tmp_path / "aarmor.db"
    with SqliteStore(path) as store:
        recs = _fill(store, signer, "s-1")
        head = TransparencyLog(store).publish(keyring, NOW)
    db = sqlite3.connect(path)
    body = json.loads(db.execute("SELECT body FROM receipts WHERE receipt_id=?", (recs[2].receipt_id,)).fetchone()[0])
    body["decision"]["result"] = "ALLOW"
    db.execute("UPDATE receipts SET body=? WHERE receipt_id=?", (json.dumps(body), recs[2].receipt_id))
    db.execute("DELETE FROM receipts WHERE receipt_id=?", (recs[3].receipt_id,))
    db.commit()
    with SqliteStore(path) as store:
        tlog = TransparencyLog(store)
        with pytest.raises(ProofError, match="altered after it was logged"):
            tlog.inclusion(recs[2].receipt_id, head)
        with pytest.raises(ProofError, match="deleted"):
            tlog.inclusion(recs[3].receipt_id, head)
    db.execute("DELETE FROM merkle_leaves WHERE leaf_index = 3")  # truncation of the log itself
    db.commit()
    with SqliteStore(path) as store:
        with pytest.raises(ProofError, match="receipts were removed"):
            TransparencyLog(store).publish(keyring, NOW)
    db.execute("UPDATE merkle_leaves SET leaf_hash=? WHERE leaf_index = 0", (b"\x00" * 32,))
    db.execute("INSERT INTO merkle_leaves VALUES (3, 'rct_x', ?)", (b"\x01" * 32,))
    db.commit()
    db.close()
    with SqliteStore(path) as store:
        with pytest.raises(ProofError, match="rewritten"):
            TransparencyLog(store).publish(keyring, NOW)
        with pytest.raises(ProofError, match="rewritten"):
            TransparencyLog(store).inclusion(recs[1].receipt_id, head)


def test_the_publisher_signs_a_head_when_the_log_grew(tmp_path: Path, keyring: Keyring,
                                                      signer: ReceiptSigner) -> None:
    store = open_store("memory://")
    pub = TreeHeadPublisher(store, keyring, 3600, clock=lambda: NOW)  # the thread will not tick in this test
    try:
        first = pub.publish_if_grown()
        assert first is not None and first.tree_size == 0
        assert pub.publish_if_grown() is None  # nothing new: no new head
        _fill(store, signer, "s-1")
        grown = pub.publish_if_grown()
        assert grown is not None and grown.tree_size == 4 and store.tree_heads() == [first, grown]
    finally:
        pub.close()


# --- the commands -------------------------------------------------------------------------------------------

@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "site" / "aarmor.yaml"
    path.parent.mkdir()
    path.write_text(f"store: sqlite:///{tmp_path / 'site' / 'aarmor.db'}\nkeys: keys\n")
    return path


def _run(*args: Any) -> Any:
    return runner.invoke(receipts.app, [str(a) for a in args])


def test_the_commands_prove_and_verify_offline(config: Path, tmp_path: Path) -> None:
    assert runner.invoke(keys.app, ["generate", "--config", str(config)]).exit_code == 0
    cfg = load_config(config)
    signer = ReceiptSigner(Keyring.open(cfg.keys, create=False))
    with open_store(cfg.store) as store:
        recs = _fill(store, signer, "s-1")
    pub = tmp_path / "public.jwks"
    pub.write_text(runner.invoke(keys.app, ["export-public", "--config", str(config), "--format", "jwks"]).stdout)

    res = _run("tree-head", "--config", config, "--json")
    assert res.exit_code == 0, res.output
    old = tmp_path / "old.json"
    old.write_text(res.stdout)
    assert json.loads(res.stdout)["tree_size"] == 4

    res = _run("prove", recs[1].receipt_id, "--config", config, "--json")
    assert res.exit_code == 0, res.output
    proof = tmp_path / "proof.json"
    proof.write_text(res.stdout)
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(recs[1].body))
    res = _run("verify-proof", proof, "--public-keys", pub, "--receipt", receipt)
    assert res.exit_code == 0 and "is leaf 1 of the signed tree of 4 receipts" in res.stdout, res.output

    with open_store(cfg.store) as store:
        more = _fill(store, signer, "s-2")
    # a receipt after the latest head: `prove` publishes a head that covers it
    res = _run("prove", more[0].receipt_id, "--config", config)
    assert res.exit_code == 0 and "leaf 4 of the tree of 8 receipts" in res.stdout, res.output
    new = tmp_path / "new.json"
    new.write_text(_run("tree-head", "--config", config, "--json").stdout)
    res = _run("prove", "--consistency", 4, 8, "--config", config, "--json")
    assert res.exit_code == 0, res.output
    cons = tmp_path / "cons.json"
    cons.write_text(res.stdout)
    res = _run("verify-consistency", old, new, cons, "--public-keys", pub, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True, res.output

    # tampering, seen by the offline verifiers: exit 1 naming it
    doc = json.loads(proof.read_text())
    doc["audit_path"][0] = "0" * 64
    proof.write_text(json.dumps(doc))
    res = _run("verify-proof", proof, "--public-keys", pub)
    assert res.exit_code == 1 and "FAIL: the audit path does not lead from leaf 1" in res.stdout
    res = _run("verify-consistency", new, old, cons, "--public-keys", pub)
    assert res.exit_code == 1 and "sizes 4 and 8" in res.stdout
    (tmp_path / "junk.json").write_text("{not json")
    assert _run("verify-proof", tmp_path / "junk.json", "--public-keys", pub).exit_code == 2
    res = _run("prove", "rct_missing", "--tree-size", 4, "--config", config)
    assert res.exit_code == 1 and "has no leaf" in res.stderr
    assert _run("prove", "--config", config).exit_code == 2
    res = _run("prove", "--consistency", 2, 5, "--config", config)
    assert res.exit_code == 1 and "no tree head of size 5" in res.stderr


# --- the Guard's periodic publication (`transparency.sth_interval`) -------------------------------------------

POLICY = """
policy: {id: t, version: "1", default: ALLOW}
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: no shell
"""


def test_a_guard_publishes_tree_heads_over_its_receipts(make_guard: Any) -> None:
    from aarmor import Identity

    guard = make_guard(POLICY, transparency={"sth_interval": 0.05})
    with guard.session(identity=Identity(human="alice@company.com")) as s:
        s.invoke("files.read", {"path": "/tmp/a"}, lambda a: "ok")
    size = guard.store.tree_size()
    assert size >= 1
    deadline = datetime.now(UTC) + timedelta(seconds=30)  # a bound for a loaded machine, not a timing claim
    while not any(h.tree_size == size for h in guard.store.tree_heads()) and datetime.now(UTC) < deadline:
        time.sleep(0.02)
    head = next(h for h in guard.store.tree_heads() if h.tree_size == size)
    rid = next(iter(guard.store.read_receipts())).receipt_id
    proof = TransparencyLog(guard.store).inclusion(rid, head)
    assert verify_inclusion_proof(proof, guard.keyring.public_keys()) == head


def test_the_interval_is_configured_and_zero_turns_it_off(make_guard: Any) -> None:
    from aarmor.errors import ConfigError

    assert make_guard(POLICY).tree_heads is not None  # on by default (60 s)
    assert load_config(store="memory://").transparency.sth_interval == 60
    assert make_guard(POLICY, transparency={"sth_interval": 0}).tree_heads is None
    with pytest.raises(ConfigError, match="sth_interval"):
        load_config(store="memory://", transparency={"sth_interval": -1})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(store="memory://", transparency={"interval": 5})
