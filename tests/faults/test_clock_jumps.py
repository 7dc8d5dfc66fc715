"""Wall-clock jumps (issue 8, "fail closed under faults").

Owner leases (crash recovery) must not take a live process for dead when a wall clock steps, nor keep a
dead one alive: real worker processes (tests/durability/crash_worker.py) on one SQLite file, with the wall
clock of one process stepped by libfaketime (Debian `faketime`, installed by .ci/run). libfaketime is run with
FAKETIME_DONT_FAKE_MONOTONIC=1 because a real wall-clock step (settimeofday, NTP) moves neither
CLOCK_MONOTONIC nor CLOCK_BOOTTIME; without it libfaketime would shift those clocks too, which no real clock
step does. Receipts and chains with timestamps going backwards use the Guard's injectable clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.canonical import format_ts
from aarmor.context import check_chain
from aarmor.receipts import verify_receipts
from aarmor.store.sqlite import SqliteStore
from tests.durability import crash_worker
from tests.faults.small_disk import wait_for

LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), Path("libfaketimeMT.so.1"))
ALICE = Identity(human="alice@company.com", agent="ops-agent")
POLICY = 'policy: {id: faults, version: "1", default: ALLOW}\nrules:\n  - {id: no-shell, match: {tool: shell}, ' \
         'action: DENY}\n'

#: crash_worker's `block` mode, waiting with Event.wait: time.sleep fails (EINVAL) under libfaketime once the
#: wall clock is stepped while the monotonic clock stays real
BLOCKER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from tests.durability import crash_worker
    home = Path(sys.argv[1])
    guard = crash_worker.open_guard(home)
    print("ready", flush=True)
    def slow(arguments):
        print("running", flush=True)
        while not (home / "release").exists():
            threading.Event().wait(0.02)
        return "done"
    with guard.session(identity=crash_worker.identity(), session_id="sess_block", original_request="b") as s:
        print(s.invoke("files.read", {"path": "/tmp/slow"}, slow), flush=True)
    guard.close()
""")

#: a Guard on the workers' store that runs recovery at once and then every 50 ms until it ends an action or
#: `seconds` pass; prints how many actions it ended
RECOVERER = textwrap.dedent("""
    import sys, threading, time
    from pathlib import Path
    from tests.durability import crash_worker
    home, seconds = Path(sys.argv[1]), float(sys.argv[2])
    guard = crash_worker.open_guard(home, recover=False)  # recovery below, counted
    done = []
    deadline = time.monotonic() + seconds
    while True:
        done = guard.recover_actions()
        if done or time.monotonic() >= deadline:
            break
        threading.Event().wait(0.05)  # time.sleep fails (EINVAL) under libfaketime with a real monotonic clock
    guard.close()
    print(len(done), flush=True)
""")


def _env(clock_file: Path | None = None, offset: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if clock_file is None and offset is None:
        return env
    assert LIBFAKETIME.exists(), "libfaketime is needed (apt-get install faketime; .ci/run installs it)"
    env.update(LD_PRELOAD=str(LIBFAKETIME), FAKETIME_DONT_FAKE_MONOTONIC="1")
    if clock_file is not None:  # the offset is read from the file at every call: it can change mid-run
        env.update(FAKETIME_TIMESTAMP_FILE=str(clock_file), FAKETIME_NO_CACHE="1")
    else:
        env["FAKETIME"] = str(offset)
    return env


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "policy.yaml").write_text(crash_worker.POLICY)
    crash_worker.open_guard(tmp_path).close()  # the key and the store exist before any worker starts
    yield tmp_path


def _blocked_worker(home: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", BLOCKER, str(home)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for expected in ("ready", "running"):
        assert proc.stdout is not None
        got = proc.stdout.readline().strip()
        if got != expected:
            proc.kill()
            raise AssertionError(f"worker said `{got}`, expected `{expected}`: {proc.communicate()[1]}")
    return proc


def _recover(home: Path, env: dict[str, str], seconds: float, expect: int) -> None:
    done = subprocess.run([sys.executable, "-c", RECOVERER, str(home), str(seconds)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip()) == expect, done.stderr[-3000:]


def _block_receipts(home: Path) -> list[dict[str, Any]]:
    store = SqliteStore(home / "a.db")
    try:
        bodies = [r.body for r in store.read_receipts("sess_block")]
        log = list(store.read_log("sess_block"))
        assert check_chain(log, session_id="sess_block").verified
        return bodies
    finally:
        store.close()


def _leases(home: Path) -> dict[str, str]:
    store = SqliteStore(home / "a.db")
    try:
        return store.owner_leases()
    finally:
        store.close()


def test_a_live_process_whose_wall_clock_steps_back_is_not_taken_for_dead(home: Path) -> None:
    clock = home / "worker-clock"
    clock.write_text("+0\n")
    worker = _blocked_worker(home, _env(clock_file=clock))
    try:
        clock.write_text("-3h\n")  # its wall clock steps back 3 hours while its tool runs
        # wait until it renewed its lease since: the lease's wall-time part (old aarmor: all of it) is now
        # 3 hours in the past, so a judge by wall time takes it for dead
        wait_for(lambda: all(t.split(" ")[0] < format_ts(datetime.now(UTC)) for t in _leases(home).values())
                 and _leases(home))
        _recover(home, _env(), seconds=1.0, expect=0)  # a process with the right time: nothing to recover
        _recover(home, _env(offset="+3h"), seconds=1.0, expect=0)  # nor one whose clock is far ahead
        assert _block_receipts(home) == []  # the running action was not closed as "unknown: process ended"
        (home / "release").touch()
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0 and out.strip() == "done", err[-3000:]
    finally:
        worker.kill()
    (receipt,) = _block_receipts(home)  # exactly one: the real outcome, written by the live process
    assert receipt["enforcement"]["executed"] is True and receipt["execution"]["success"] is True


def test_a_dead_process_is_recovered_by_one_whose_wall_clock_is_behind(home: Path) -> None:
    worker = _blocked_worker(home, _env())
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=10)
    # 3 hours behind: by wall time the dead worker's lease would look alive for 3 more hours
    _recover(home, _env(offset="-3h"), seconds=15.0, expect=1)
    (receipt,) = _block_receipts(home)
    assert receipt["enforcement"]["executed"] == "unknown"
    assert receipt["enforcement"]["recovered"]["owner"].split(":")[1] == str(worker.pid)


class JumpingClock:
    """A Guard clock that steps as a wall clock can: back an hour, forward a day, back a year."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def step(self, delta: timedelta) -> None:
        self.now += delta


def test_receipts_and_chains_hold_when_timestamps_go_backwards(make_guard: Callable[..., Any]) -> None:
    clock = JumpingClock()
    guard = make_guard(POLICY, clock=clock)
    s = guard.session(identity=ALICE)
    ran: list[int] = []
    for n, step in enumerate([timedelta(0), timedelta(hours=-1), timedelta(days=1), timedelta(days=-366),
                              timedelta(seconds=-1)]):
        clock.step(step)
        s.invoke("email.send", {"n": n}, lambda a, n=n: ran.append(n))
        with pytest.raises(ActionDenied):
            s.invoke("shell", {"cmd": "id"}, lambda a: ran.append(-1))
    assert ran == [0, 1, 2, 3, 4]
    bodies = [r.body for r in guard.store.read_receipts(s.session_id)]
    stamps = [b["issued_at"] for b in bodies]
    assert stamps != sorted(stamps)  # they did go backwards
    assert verify_receipts(bodies, guard.keyring.public_keys()).ok  # signatures and the hash chain hold
    assert check_chain(list(guard.store.read_log(s.session_id)), session_id=s.session_id).verified
    again = make_guard(POLICY)  # and a session resumed from the store verifies its chain on the way in
    again.session(identity=ALICE, session_id=s.session_id).invoke("email.send", {"n": 9}, lambda a: ran.append(9))
    assert ran[-1] == 9


def test_an_approval_wait_ends_at_its_timeout_even_if_the_wall_clock_steps_back(
        make_guard: Callable[..., Any]) -> None:
    """The stored deadline is wall time (other processes judge it); the waiter also ends the wait after its
    timeout on the monotonic clock, so a wall clock stepped back (frozen here, the limit) does not stretch it."""
    from aarmor.config import ApprovalsConfig

    frozen = datetime.now(UTC) - timedelta(hours=2)
    policy = POLICY + "  - {id: pay, match: {tool: payment}, action: STEP_UP, approvers: [carol@company.com], " \
                      "timeout: 1}\n"
    guard = make_guard(policy, clock=lambda: frozen, approvals=ApprovalsConfig(poll_interval=0.05))
    s = guard.session(identity=ALICE)
    ran: list[int] = []
    started = time.monotonic()
    with pytest.raises(ActionDenied) as info:
        s.invoke("payment", {"amount": 5}, lambda a: ran.append(1))
    assert ran == [] and "timeout" in info.value.decision.reason
    assert time.monotonic() - started >= 1.0  # not before its timeout either


#: renews (or reads) owner leases in a PostgreSQL store from a process whose wall clock is stepped
PG_LEASES = textwrap.dedent("""
    import sys
    from aarmor.store import open_store
    store = open_store(sys.argv[1])
    if sys.argv[2] == "renew":
        store.owner_renew("far-host:1:stepped", 30.0)
    print(" ".join(sorted(store.owners_alive())), flush=True)
    store.close()
""")


def test_postgresql_leases_follow_the_server_clock_not_the_clients() -> None:
    from aarmor.store import open_store
    from tests.pg_support import fresh_database

    def run(url: str, offset: str, what: str) -> set[str]:
        done = subprocess.run([sys.executable, "-c", PG_LEASES, url, what], capture_output=True, text=True,
                              env=_env(offset=offset), timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        return set(done.stdout.split())

    with fresh_database() as url:
        store = open_store(url)
        try:
            store.owner_renew("here:1:right", 30.0)
            # a client 3 hours behind renews: its lease is alive for everyone (server time), not dead on arrival
            assert run(url, "-3h", "renew") == {"here:1:right", "far-host:1:stepped"}
            assert store.owners_alive() == {"here:1:right", "far-host:1:stepped"}
            # a client 3 hours ahead does not take the others' leases for run out
            assert run(url, "+3h", "read") == {"here:1:right", "far-host:1:stepped"}
        finally:
            store.close()
