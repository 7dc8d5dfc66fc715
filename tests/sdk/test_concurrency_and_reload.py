"""Many threads on one session keep both chains linear; a changed policy file is picked up on its own."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from aarmor import ActionDenied, Identity
from aarmor.context import check_chain
from aarmor.receipts import verify_receipts

POLICY = """
policy: {id: conc, version: "1", default: ALLOW}
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: no shell
"""


def test_parallel_calls_in_one_session_keep_chains_linear(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    errors: list[BaseException] = []
    with guard.session(identity=Identity(human="alice@company.com")) as s:
        def worker(n: int) -> None:
            try:
                for i in range(25):
                    if i % 5 == 0:
                        try:
                            s.invoke("shell.run", {"cmd": f"id {n}"}, lambda a: None)
                        except ActionDenied:
                            pass
                    else:
                        s.invoke("notes.write", {"n": n, "i": i}, lambda a: "ok")
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    receipts = [r.body for r in guard.store.read_receipts(s.session_id)]
    assert [r["seq"] for r in receipts] == list(range(200))
    assert sum(r["decision"]["result"] == "DENY" for r in receipts) == 40
    report = verify_receipts(receipts, guard.keyring.public_keys())
    assert report.ok, report.failures[:3]
    chain = check_chain(list(guard.store.read_log(s.session_id)), session_id=s.session_id)
    assert not chain.failures
    # start + 160 allowed (requested + outcome) + 40 denied (requested + outcome) + end
    assert chain.entries == 1 + 2 * 200 + 1


def test_changed_policy_file_is_reloaded_without_restart(make_guard: Any) -> None:
    guard = make_guard(POLICY, policy_reload_interval=0.05)
    path = Path(guard.config.policy)
    with guard.session(identity=Identity(human="alice@company.com")) as s:
        assert s.evaluate("notes.write", {}).result.value == "ALLOW"
        path.write_text(POLICY.replace('version: "1"', 'version: "2"').replace("tool: shell", "tool: notes"))
        deadline = time.monotonic() + 5
        while guard.policy.version != "2" and time.monotonic() < deadline:
            s.evaluate("notes.write", {})
            time.sleep(0.06)
        assert s.evaluate("notes.write", {}).result.value == "DENY"
        # a broken edit is reported and the last good policy stays active
        path.write_text("policy: {id: conc, version: '3'}\nrules: [")
        deadline = time.monotonic() + 5
        while not guard.policy_status.last_error and time.monotonic() < deadline:
            s.evaluate("notes.write", {})
            time.sleep(0.06)
        assert s.evaluate("notes.write", {}).result.value == "DENY"
    assert guard.policy.version == "2"
    assert guard.policy_status.last_error
