"""The context log's hash chain: entry hashes, record construction and verification (AARM R2).

Rules this module enforces:
- INVARIANT (entry hash): `entry_hash = digest(TAG_LOG, {session_id, seq, kind, recorded_at, prev_hash,
  body})`, i.e. `"sha256:" + sha256(b"aarmor.log.v1\\x00" + RFC 8785 canonical JSON)`. Every field of a
  stored entry except the hash itself is covered, so editing any of them changes the hash.
- INVARIANT (links): entry `seq` 0 has `prev_hash == GENESIS`; entry `n` has `prev_hash` equal to the
  `entry_hash` of entry `n - 1`, so deleting, inserting or reordering entries breaks a link.
- Each entry is canonicalised exactly once when it is made (`make_record`); the stored body is the plain
  JSON that was hashed, so a store round trip re-hashes to the same value. The bytes are RFC 8785,
  produced by `_canon.plain_and_bytes` (a fast path proven equal to `canonical.canonical_bytes`).
- Verification reports the first failure with session, seq and what is wrong (`edited`, `deleted`,
  `inserted`, `reordered`, `truncated`, `foreign`, `malformed`), in one of two styles (DESIGN habit 5):
  `verify_chain` raises `ChainError`; `check_chain` returns a typed `ChainReport` listing every failure.
- Limits of a keyless chain: someone who can write the store *and* recompute hashes can rewrite or
  truncate the tail undetected. An `Anchor` (a (seq, hash) pair held elsewhere, e.g. a signed receipt's
  `context.context_hash`/`log_seq`) pins the chain up to that point and makes tail truncation visible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aarmor.canonical import TAG_LOG, digest
from aarmor.errors import ChainError, InputError
from aarmor.store.records import GENESIS, LogRecord

from ._canon import plain_and_bytes

__all__ = [
    "Anchor",
    "ChainFailure",
    "ChainReport",
    "check_chain",
    "entry_hash",
    "make_record",
    "verify_chain",
]


def _envelope(session_id: str, seq: int, kind: str, recorded_at: str, prev_hash: str,
              body: Any) -> dict[str, Any]:
    return {"session_id": session_id, "seq": seq, "kind": kind, "recorded_at": recorded_at,
            "prev_hash": prev_hash, "body": body}


def entry_hash(rec: LogRecord) -> str:
    """Recompute the hash a stored entry should carry (over everything but `entry_hash`).

    Raises:
        InputError: the stored entry holds values that JSON cannot carry exactly.
    """
    env = _envelope(rec.session_id, rec.seq, rec.kind, rec.recorded_at, rec.prev_hash, rec.body)
    return digest(TAG_LOG, raw=plain_and_bytes(env, path="$entry")[1])


def make_record(*, session_id: str, seq: int, kind: str, recorded_at: str, prev_hash: str,
                body: Any) -> LogRecord:
    """Build one chained entry; `body` is converted to plain JSON and canonicalised once.

    Raises:
        InputError: `body` holds a value JSON cannot carry exactly (the message names its path).
    """
    # canonicalised once: `env` is the plain JSON that was hashed and is what the store keeps
    env, raw = plain_and_bytes(_envelope(session_id, seq, kind, recorded_at, prev_hash, body), path="$entry")
    h = digest(TAG_LOG, raw=raw)
    return LogRecord(session_id=session_id, seq=seq, kind=kind, body=env["body"], recorded_at=recorded_at,
                     prev_hash=prev_hash, entry_hash=h)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A (seq, entry hash) pair recorded outside the log, e.g. in a signed receipt."""

    seq: int
    entry_hash: str
    source: str = "anchor"


@dataclass(frozen=True, slots=True)
class ChainFailure:
    """One verification failure: where (`session_id`, `seq`) and `what` (see module docstring)."""

    session_id: str
    seq: int | None
    what: str
    message: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What a verification walked: entries checked, the head found and every failure."""

    session_id: str
    entries: int
    head: tuple[int, str] | None
    anchors_checked: int = 0
    failures: tuple[ChainFailure, ...] = ()

    @property
    def verified(self) -> bool:
        return not self.failures

    def raise_first(self) -> None:
        """Raise the first failure as `ChainError`; return None when there is none.

        Raises:
            ChainError: naming session, seq and what is wrong.
        """
        if self.failures:
            f = self.failures[0]
            raise ChainError(f.message, session_id=f.session_id, seq=f.seq)


def _recompute(rec: LogRecord) -> str | None:
    try:
        return entry_hash(rec)
    except (InputError, TypeError, ValueError, RecursionError):
        return None


def check_chain(records: Iterable[LogRecord], *, session_id: str | None = None,
                anchors: Iterable[Anchor] = ()) -> ChainReport:
    """Walk one session's entries (in stored order) and report every failure found.

    `session_id` defaults to the first entry's; `anchors` are checked against the walked entries.
    Never raises for bad entries: each becomes a `ChainFailure`.
    """
    recs = list(records)
    sid = session_id if session_id is not None else (recs[0].session_id if recs else "")
    fails: list[ChainFailure] = []

    def fail(seq: int | None, what: str, msg: str) -> None:
        fails.append(ChainFailure(sid, seq, what, f"session `{sid}` seq {seq}: {msg}"))

    by_hash = {r.entry_hash: i for i, r in enumerate(recs)}
    want_seq, want_prev = 0, GENESIS
    for i, rec in enumerate(recs):
        if rec.session_id != sid:
            fail(rec.seq, "foreign", f"entry belongs to session `{rec.session_id}`")
        computed = _recompute(rec)
        if rec.seq > want_seq:
            # AARM R2 tamper evidence: a gap in the sequence means entries were removed.
            missing = f"{want_seq}" if rec.seq == want_seq + 1 else f"{want_seq}..{rec.seq - 1}"
            fail(want_seq, "deleted", f"gap in the log: expected seq {want_seq}, found seq {rec.seq} "
                                      f"(entries {missing} missing)")
        elif rec.seq < want_seq:
            fail(rec.seq, "reordered", f"seq {rec.seq} appears after seq {want_seq - 1}")
        elif rec.prev_hash != want_prev:
            j = by_hash.get(rec.prev_hash)
            if j is not None and j > i:
                fail(rec.seq, "reordered", f"prev_hash links to the entry stored at seq {recs[j].seq}, "
                                           f"which comes later: entries were reordered")
            elif j is not None:
                fail(rec.seq, "inserted", f"prev_hash links to seq {recs[j].seq}, not to seq {rec.seq - 1}: "
                                          f"entries were inserted (or renumbered) before this one")
            elif computed is not None and computed == rec.entry_hash:
                fail(rec.seq, "inserted", f"prev_hash `{rec.prev_hash}` is not the hash of seq "
                                          f"{rec.seq - 1} (`{want_prev}`): a forged entry was inserted "
                                          f"or its predecessor replaced")
            else:
                fail(rec.seq, "edited", f"prev_hash `{rec.prev_hash}` does not match the hash of seq "
                                        f"{rec.seq - 1} (`{want_prev}`) and the entry hash does not verify")
        if computed is None:
            fail(rec.seq, "malformed", "entry cannot be canonicalised (stored values are not exact JSON)")
        elif computed != rec.entry_hash and not (fails and fails[-1].seq == rec.seq
                                                 and fails[-1].what in ("edited", "reordered", "inserted")):
            fail(rec.seq, "edited", f"entry hash mismatch: stored `{rec.entry_hash}`, computed `{computed}` "
                                    f"(kind, body, seq, recorded_at or prev_hash changed)")
        want_seq, want_prev = rec.seq + 1, rec.entry_hash

    n_anchors = 0
    by_seq = {r.seq: r for r in recs}
    last = recs[-1].seq if recs else -1
    for a in anchors:
        n_anchors += 1
        got = by_seq.get(a.seq)
        if got is None and a.seq > last:
            fail(a.seq, "truncated", f"{a.source} anchors seq {a.seq} but the log ends at seq {last}: "
                                     f"entries were removed from the end")
        elif got is None:
            fail(a.seq, "deleted", f"{a.source} anchors seq {a.seq}, which is missing from the log")
        elif got.entry_hash != a.entry_hash:
            fail(a.seq, "edited", f"{a.source} anchors hash `{a.entry_hash}` but the log has "
                                  f"`{got.entry_hash}`: the chain was rewritten")
    head = (recs[-1].seq, recs[-1].entry_hash) if recs else None
    return ChainReport(session_id=sid, entries=len(recs), head=head, anchors_checked=n_anchors,
                       failures=tuple(fails))


def verify_chain(records: Iterable[LogRecord], *, session_id: str | None = None,
                 anchors: Iterable[Anchor] = ()) -> ChainReport:
    """Verify one session's chain and return what was checked.

    Raises:
        ChainError: at the first failure, naming session, seq and what is wrong.
    """
    report = check_chain(records, session_id=session_id, anchors=anchors)
    report.raise_first()
    return report
