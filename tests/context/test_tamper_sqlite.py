"""Tampering with a real SQLite store file (raw sqlite3 UPDATE/DELETE/INSERT) is detected (AARM R2)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aarmor.cli.log import app
from aarmor.context import Classifier, SessionContext, check_chain, make_record
from aarmor.errors import ChainError
from aarmor.store import GENESIS, ReceiptRecord
from tests.context.helpers import SID, build_session, sqlite_store

runner = CliRunner()


def _db(path: Path, *, receipts: bool = False) -> Path:
    st = sqlite_store(path)
    ctx = build_session(st, Classifier(declared={"crm.query": ["PII"]}))
    if receipts:  # an (unsigned) receipt carrying the anchor the pipeline puts in `context`
        seq, h = ctx.head
        st.append_receipt(ReceiptRecord("rct_1", SID, 0, "act_1", "t", "crm", "query", "ALLOW", None, None,
                                        "sha256:" + "1" * 64,
                                        {"prev_receipt_hash": GENESIS, "context": {"log_seq": seq,
                                                                                   "context_hash": h}}))
    st.close()
    return path


def _sql(path: Path, *stmts: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for sql, args in stmts:
            conn.execute(sql, args)
    conn.close()


def _check(path: Path):
    st = sqlite_store(path)
    try:
        return check_chain(list(st.read_log(SID)), session_id=SID)
    finally:
        st.close()


def _cli(path: Path, *extra: str):
    return runner.invoke(app, ["verify", "--store", f"sqlite:///{path}", *extra])


def test_untampered_store_verifies(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db", receipts=True)
    res = _cli(db)
    assert res.exit_code == 0, res.output
    assert f"ok     session `{SID}`: 9 entries, 1 anchors" in res.output
    assert "verified 1 session(s), 9 entries" in res.output


def test_sqlite_body_edit_detected(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    _sql(db, ("UPDATE log_entries SET body = replace(body, 'acme 1', 'evil 1') WHERE seq = 4", ()))
    first = _check(db).failures[0]
    assert (first.session_id, first.seq, first.what) == (SID, 4, "edited")
    res = _cli(db)
    assert res.exit_code == 1
    assert f"first bad entry: session `{SID}` seq 4 (edited)" in res.output


def test_sqlite_row_deletion_detected(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    _sql(db, ("DELETE FROM log_entries WHERE seq = 3", ()))
    first = _check(db).failures[0]
    assert (first.seq, first.what) == (3, "deleted")
    assert "expected seq 3, found seq 4 (entries 3 missing)" in first.message
    res = _cli(db)
    assert res.exit_code == 1 and "seq 3 (deleted)" in res.output


def test_sqlite_forged_row_insertion_detected(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    st = sqlite_store(db)
    rows = list(st.read_log(SID))
    st.close()
    forged = make_record(session_id=SID, seq=4, kind="context_value", recorded_at=rows[4].recorded_at,
                         prev_hash=rows[3].entry_hash,
                         body={"name": "approved", "value": True, "source": "x"})
    stmts = [("UPDATE log_entries SET seq = seq + 1 WHERE seq = ?", (s,)) for s in range(8, 3, -1)]
    stmts.append(("INSERT INTO log_entries VALUES (?,?,?,?,?,?,?)",
                  (SID, 4, forged.kind, json.dumps(forged.body), forged.recorded_at, forged.prev_hash,
                   forged.entry_hash)))
    _sql(db, *stmts)
    first = _check(db).failures[0]
    assert (first.seq, first.what) == (5, "inserted")
    assert _cli(db).exit_code == 1


def test_sqlite_reorder_detected(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    _sql(db, ("UPDATE log_entries SET seq = -1 WHERE seq = 2", ()),
         ("UPDATE log_entries SET seq = 2 WHERE seq = 3", ()),
         ("UPDATE log_entries SET seq = 3 WHERE seq = -1", ()))
    first = _check(db).failures[0]
    assert (first.seq, first.what) == (2, "reordered")
    assert _cli(db).exit_code == 1


def test_sqlite_tail_truncation_detected_by_receipt_anchor(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db", receipts=True)
    _sql(db, ("DELETE FROM log_entries WHERE seq >= 7", ()))
    assert _check(db).verified  # the chain alone cannot tell: documented in docs/context.md
    res = _cli(db)
    assert res.exit_code == 1
    assert "truncated" in res.output
    assert "receipt `rct_1` anchors seq 8 but the log ends at seq 6" in res.output
    assert _cli(db, "--no-anchors").exit_code == 0


def test_sqlite_whole_log_deletion_detected_by_receipt_anchor(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db", receipts=True)
    _sql(db, ("DELETE FROM log_entries", ()))
    res = _cli(db)
    assert res.exit_code == 1 and f"session `{SID}` seq 8 (truncated)" in res.output


def test_sqlite_unparseable_body_reported_not_crashed(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    _sql(db, ("UPDATE log_entries SET body = '{not json' WHERE seq = 2", ()))
    res = _cli(db, "--json")
    assert res.exit_code == 1
    report = json.loads(res.output)
    assert report["failures"][0]["what"] == "unreadable"


def test_resume_refuses_tampered_log(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    _sql(db, ("UPDATE log_entries SET recorded_at = '2026-01-01T00:00:00.000Z' WHERE seq = 4", ()))
    st = sqlite_store(db)
    with pytest.raises(ChainError) as exc:
        SessionContext.resume(st, SID, classifier=Classifier())
    assert exc.value.seq == 4 and "entry hash mismatch" in str(exc.value)
    st.close()


def test_cli_unknown_session_is_bad_input(tmp_path: Path) -> None:
    db = _db(tmp_path / "a.db")
    res = _cli(db, "--session", "nope")
    assert res.exit_code == 2
    assert _cli(db, "--session", SID).exit_code == 0


def test_cli_bad_store_url_is_bad_input(tmp_path: Path) -> None:
    res = runner.invoke(app, ["verify", "--store", "ftp://x"])
    assert res.exit_code == 2 and "unsupported scheme" in res.output


# --- property: any single change to a stored entry is detected ----------------------------------------

_FIELDS = ("body", "kind", "seq", "prev_hash", "recorded_at", "entry_hash")


@st.composite
def _mutation(draw: st.DrawFn, n: int) -> tuple[str, ...] | tuple[object, ...]:
    op = draw(st.sampled_from(["edit", "delete", "insert", "reorder", "append_naive"]))
    if op == "edit":
        return ("edit", draw(st.integers(0, n - 1)), draw(st.sampled_from(_FIELDS)),
                draw(st.text(min_size=1, max_size=12)), draw(st.integers(-3, n + 20)))
    if op == "delete":
        return ("delete", draw(st.integers(0, n - 2)))  # a cut tail needs an anchor (tested above)
    if op == "insert":
        return ("insert", draw(st.integers(0, n - 1)), draw(st.text(max_size=12)))
    if op == "reorder":
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, n - 1).filter(lambda x: x != i))
        return ("reorder", i, j)
    return ("append_naive", draw(st.text(max_size=12)))


_BASE: dict[str, Path] = {}


def _base_db() -> Path:
    if "db" not in _BASE:
        _BASE["db"] = _db(Path(tempfile.mkdtemp(prefix="aarmor-ctx-")) / "base.db")
    return _BASE["db"]


def _apply(db: Path, mut: tuple[object, ...]) -> None:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT seq, kind, body, recorded_at, prev_hash, entry_hash FROM log_entries "
                        "WHERE session_id = ? ORDER BY seq", (SID,)).fetchall()
    op = mut[0]
    with conn:
        if op == "edit":
            _, i, field, text, new_seq = mut
            seq, kind, body, at, prev, h = rows[i]  # type: ignore[index]
            if field == "body":
                value = json.dumps({**json.loads(body), "tampered": text})
            elif field == "kind":
                value = "context_value" if kind != "context_value" else "action_outcome"
            elif field == "seq":
                used = {r[0] for r in rows}
                value = new_seq if new_seq not in used else max(used) + 1 + abs(int(new_seq))  # type: ignore[call-overload]
            elif field == "recorded_at":
                value = at + text
            else:  # prev_hash / entry_hash: any other hash
                value = "sha256:" + (text.encode().hex() + "0" * 64)[:64]
                if value == (prev if field == "prev_hash" else h):
                    value = "sha256:" + "f" * 64
            conn.execute(f"UPDATE log_entries SET {field} = ? WHERE session_id = ? AND seq = ?",
                         (value, SID, seq))
        elif op == "delete":
            conn.execute("DELETE FROM log_entries WHERE session_id = ? AND seq = ?", (SID, rows[mut[1]][0]))  # type: ignore[index]
        elif op == "insert":
            _, i, text = mut
            prev = GENESIS if i == 0 else rows[i - 1][5]  # type: ignore[operator,index]
            forged = make_record(session_id=SID, seq=i, kind="context_value", recorded_at=rows[i][3],  # type: ignore[index,arg-type]
                                 prev_hash=prev, body={"name": "forged", "value": text, "source": "attacker"})
            for seq in range(len(rows) - 1, i - 1, -1):  # type: ignore[operator]
                conn.execute("UPDATE log_entries SET seq = seq + 1 WHERE session_id = ? AND seq = ?",
                             (SID, seq))
            conn.execute("INSERT INTO log_entries VALUES (?,?,?,?,?,?,?)",
                         (SID, i, forged.kind, json.dumps(forged.body), forged.recorded_at, forged.prev_hash,
                          forged.entry_hash))
        elif op == "reorder":
            _, i, j = mut
            a, b = rows[i][0], rows[j][0]  # type: ignore[index]
            conn.execute("UPDATE log_entries SET seq = -100 WHERE session_id = ? AND seq = ?", (SID, a))
            conn.execute("UPDATE log_entries SET seq = ? WHERE session_id = ? AND seq = ?", (a, SID, b))
            conn.execute("UPDATE log_entries SET seq = ? WHERE session_id = ? AND seq = -100", (b, SID))
        else:  # a naive forger appends without being able to compute the right hash
            last = rows[-1]
            conn.execute("INSERT INTO log_entries VALUES (?,?,?,?,?,?,?)",
                         (SID, last[0] + 1, "context_value", json.dumps({"name": "x", "value": mut[1],  # type: ignore[operator]
                                                                          "source": "attacker"}),
                          last[3], last[5], "sha256:" + "e" * 64))
    conn.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_change_to_a_stored_entry_is_detected(data: st.DataObject) -> None:
    base = _base_db()
    mut = data.draw(_mutation(9))
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "t.db"
        shutil.copy(base, db)
        _apply(db, mut)
        report = _check(db)
        assert not report.verified, mut
        assert report.failures[0].session_id == SID
        assert report.failures[0].what in {"edited", "deleted", "inserted", "reordered", "malformed"}


def test_sqlite_seq_made_negative_on_the_last_entry_is_detected(tmp_path: Path) -> None:
    """Found by the property above: a read filtered on `seq > -1` dropped a row whose seq was edited to -1,
    so a tampered last entry looked like a clean, shorter chain. Every stored row must reach the check."""
    db = _db(tmp_path / "a.db")
    last = max(r[0] for r in sqlite3.connect(db).execute("SELECT seq FROM log_entries"))
    _sql(db, ("UPDATE log_entries SET seq = -1 WHERE seq = ?", (last,)))
    assert not _check(db).verified
    assert _cli(db).exit_code == 1
