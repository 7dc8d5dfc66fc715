"""The telemetry spool contract, on both backends: ordered, deduplicated by event id, cursors, trim, span."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor.telemetry.events import system_event
from tests.pg_support import BACKENDS, backend

T = "2026-11-29T10:00:00.000Z"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with backend(request.param, tmp_path / "s.db") as s:
        yield s


def ev(i: int) -> Any:
    return system_event("policy.loaded", time=T, severity="info", source=f"src-{i}")


def test_events_are_read_in_order_once_each_and_trimmed(store: Any) -> None:
    store.telemetry_append([ev(1), ev(2), ev(1)])  # the same event twice: spooled once
    store.telemetry_append([ev(3)])
    got = store.telemetry_read(0, 10)
    assert [e.event_id for e in got] == [ev(1).event_id, ev(2).event_id, ev(3).event_id]
    assert [e.seq for e in got] == sorted(e.seq for e in got) and len({e.seq for e in got}) == 3
    assert [e.event_id for e in store.telemetry_read(got[0].seq, 1)] == [ev(2).event_id]
    assert store.telemetry_span() == (3, got[0].seq, got[-1].seq)
    assert store.telemetry_cursor("a") == 0
    store.telemetry_set_cursor("a", got[1].seq)
    assert store.telemetry_cursor("a") == got[1].seq
    assert store.telemetry_trim(got[1].seq) == 2
    assert [e.event_id for e in store.telemetry_read(0, 10)] == [ev(3).event_id]
    assert store.telemetry_span() == (1, got[2].seq, got[2].seq)
    store.telemetry_trim(got[2].seq)
    assert store.telemetry_span() == (0, 0, got[2].seq)  # the sequence never goes back
    store.telemetry_append([ev(4)])
    assert store.telemetry_read(0, 10)[0].seq > got[2].seq


def test_a_commit_spools_what_its_projector_returns_in_the_same_transaction(store: Any) -> None:
    from aarmor.errors import ChainError
    from aarmor.store import GENESIS, LogRecord

    store.telemetry_projector = lambda logs, receipts: [ev(100 + r.seq) for r in logs]
    good = LogRecord("s1", 0, "session_start", {}, T, GENESIS, "sha256:" + "1" * 64)
    store.append_all(logs=(good,))
    assert len(store.telemetry_read(0, 10)) == 1
    bad = LogRecord("s1", 5, "signal", {}, T, "sha256:" + "9" * 64, "sha256:" + "2" * 64)
    with pytest.raises(ChainError):
        store.append_all(logs=(bad,))
    assert len(store.telemetry_read(0, 10)) == 1  # the refused commit spooled nothing
