"""A real Guard on a SQLite file, run as a separate process by the crash-recovery tests (killed with SIGKILL).

    python crash_worker.py HOME churn    # two threads, one session each, mediating calls until killed
    python crash_worker.py HOME block    # one call whose tool blocks until HOME/release exists

Prints `ready` once its Guard is open (and, in `block`, `running` once the tool has started).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from aarmor import Guard, Identity
from aarmor.config import load_config
from aarmor.errors import ActionDenied

POLICY = """
policy: {id: crash-test, version: "1", default: ALLOW}
rules:
  - id: no-shell
    match: {tool: shell}
    action: DENY
    reason: no shell here
  - id: cap-bulk-query
    match: {tool: database, operation: query, parameters: {limit: {gt: 100}}}
    action: MODIFY
    modifications: {parameters: {limit: 100}}
    reason: bulk reads are capped at 100 rows
"""
SESSIONS = ("sess_crash_a", "sess_crash_b")
LEASE = 1.0


def open_guard(home: Path, **kw: Any) -> Guard:
    # AARMOR_CRASH_STORE: the same runs on PostgreSQL (tests/durability/test_crash_recovery.py sets it)
    store = os.environ.get("AARMOR_CRASH_STORE") or f"sqlite:///{home}/a.db?synchronous=normal"
    cfg = load_config(policy=str(home / "policy.yaml"), store=store,
                      keys=str(home / "keys"), recovery_lease=LEASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Guard(cfg, **kw)


def identity() -> Identity:
    return Identity(human="alice@company.com", agent="crash-agent")


def _tool(arguments: dict[str, Any]) -> str:
    time.sleep(0.002)  # a tool takes a moment: the process is often killed while one runs
    return f"rows={arguments.get('limit', 0)}"


def churn(guard: Guard, sid: str) -> None:
    rng = random.Random()
    with guard.session(identity=identity(), session_id=sid, original_request="crash test") as s:
        while True:
            pick = rng.random()
            try:
                if pick < 0.5:
                    s.invoke("files.read", {"path": f"/tmp/{rng.randrange(1000)}"}, _tool)
                elif pick < 0.75:
                    s.invoke("database.query", {"limit": rng.choice([10, 500])}, _tool)
                else:
                    s.invoke("shell.exec", {"cmd": "ls"}, _tool)
            except ActionDenied:
                pass


def block(guard: Guard, home: Path) -> None:
    def slow(arguments: dict[str, Any]) -> str:
        print("running", flush=True)
        while not (home / "release").exists():
            time.sleep(0.02)
        return "done"

    with guard.session(identity=identity(), session_id="sess_block", original_request="block") as s:
        print(s.invoke("files.read", {"path": "/tmp/slow"}, slow), flush=True)


def main() -> None:
    home, mode = Path(sys.argv[1]), sys.argv[2]
    guard = open_guard(home)
    print("ready", flush=True)
    if mode == "block":
        block(guard, home)
        guard.close()
        return
    threads = [threading.Thread(target=churn, args=(guard, sid), daemon=True) for sid in SESSIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
