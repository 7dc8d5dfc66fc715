"""Where the time of one mediated call goes: median per phase of `session.invoke` (ALLOW, SQLite normal).

    .venv/bin/python benchmarks/profile_phases.py

Not a benchmark for BENCHMARKS.md (the wrappers add overhead); a tool for finding the hot phase.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_invoke import POLICY

from aarmor import Guard, Identity


def main(n: int = 3000) -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "p.yaml").write_text(POLICY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard.open(policy=str(tmp / "p.yaml"), store=f"sqlite:///{tmp}/n.db?synchronous=normal",
                           keys=str(tmp / "k"))
    session = guard.session(identity=Identity(human="alice@company.com", service="a"),
                            original_request="send report")
    args = {"to": "bob@company.com", "subject": "weekly report", "body": "numbers attached"}
    times: dict[str, list[float]] = {}

    def wrap(obj: Any, name: str, key: str) -> None:
        fn: Callable[..., Any] = getattr(obj, name)
        times[key] = []

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[key].append(time.perf_counter() - t)

        setattr(obj, name, timed)

    med = guard.mediator
    for name, key in (("_normalize", "normalize"), ("_decide", "decide (snapshot + PDP)"),
                      ("_record_requested", "requested entry (commit 1)"),
                      ("_finish", "outcome + receipt (commit 2)")):
        wrap(med, name, key)
    wrap(med._signer, "sign", "  of which: sign")
    wrap(guard.store, "append_all", "  of which: store append_all (each)")

    def tool(arguments: dict[str, Any]) -> str:
        return "ok"

    for _ in range(300):
        session.invoke("email.send", args, tool)
    for v in times.values():
        v.clear()
    total = []
    for _ in range(n):
        t = time.perf_counter()
        session.invoke("email.send", args, tool)
        total.append(time.perf_counter() - t)
    for key, v in times.items():
        print(f"{key:40s} {statistics.median(v) * 1e6:8.1f} us")
    print(f"{'total':40s} {statistics.median(total) * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
