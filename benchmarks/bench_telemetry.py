"""Cost of telemetry on decisions, and how many events per second the exporter sustains (AARM R8).

1. `session.invoke` (a whole mediated call, SQLite store, fsync'd commits) with telemetry off and with a
   file sink (jsonl, and OCSF), measured interleaved in one run: the cost on the decision path is the
   projection and the spool rows written inside the call's own commits (the export runs in its thread).
2. The exporter alone: a spool of N events delivered to a file sink (jsonl, OCSF, CEF) by one thread,
   events per second, with the formatting cost per event beside it.

    .venv/bin/python benchmarks/bench_telemetry.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _timing import HEADER, Result, measure

from aarmor import Guard, Identity
from aarmor.config import load_config
from aarmor.telemetry.formats import format_event

ALICE = Identity(human="alice@company.com", agent="mail-agent")
ARGS = {"to": "bob@company.com", "subject": "Q3", "body": "The summary you asked for."}


def _guard(tmp: Path, name: str, sinks: list[dict[str, Any]] | None) -> Guard:
    over: dict[str, Any] = {"policy": "builtin:agent-default", "store": f"sqlite:///{tmp / f'{name}.db'}",
                            "keys": str(tmp / "keys")}
    if sinks is not None:
        over["telemetry"] = {"sinks": sinks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Guard(load_config(**over))


def decision_cost(n: int = 1500) -> list[Result]:
    """Interleaved: each round runs one call on every Guard, so drift and noise hit all of them alike."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        guards = {
            "telemetry off": _guard(tmp, "off", None),
            "file sink, jsonl": _guard(tmp, "jsonl", [{"type": "file", "options": {"path": str(tmp / "a.jsonl")}}]),
            "file sink, OCSF": _guard(tmp, "ocsf", [{"type": "file", "format": "ocsf",
                                                     "options": {"path": str(tmp / "b.jsonl")}}]),
        }
        sessions = {k: g.session(identity=ALICE, original_request="email Bob the Q3 summary")
                    for k, g in guards.items()}
        samples: dict[str, list[int]] = {k: [] for k in guards}
        for i in range(n + 100):
            for k, s in sessions.items():
                t0 = time.perf_counter_ns()
                s.invoke("email.send", ARGS, lambda a: "sent", operation="send")
                if i >= 100:  # warm-up
                    samples[k].append(time.perf_counter_ns() - t0)
        for s in sessions.values():
            s.close()
        for g in guards.values():
            g.close()
    out = []
    for k, xs in samples.items():
        xs.sort()
        out.append(Result(f"session.invoke, {k}", len(xs), statistics.median(xs) / 1000,
                           xs[int(len(xs) * 0.99) - 1] / 1000, xs[int(len(xs) * 0.999) - 1] / 1000,
                           len(xs) / (sum(xs) / 1e9)))
    return out


def exporter_throughput(n: int = 20_000) -> list[Result]:
    """A spool of `n` events (from real calls) delivered by one exporter thread, per format."""
    from aarmor.telemetry.exporter import EventFilter, Exporter
    from aarmor.telemetry.sinks.file import FileSink

    out: list[Result] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "x").write_text("blocks the parked sink: the spool fills")
        guard = _guard(tmp, "spool", [{"name": "parked", "type": "file", "options": {"path": str(tmp / "x" / "y")}}])
        with guard.session(identity=ALICE, original_request="email Bob the Q3 summary") as s:
            while guard.store.telemetry_span()[0] < n:
                s.invoke("email.send", ARGS, lambda a: "sent", operation="send")
        guard.telemetry.close()  # type: ignore[union-attr]
        events = guard.store.telemetry_read(0, 1000)
        for fmt in ("jsonl", "ocsf", "cef"):
            out.append(measure(f"format one event: {fmt}", lambda f=fmt: [format_event(e, f) for e in events[:1]],
                               n=3000))
        for fmt in ("jsonl", "ocsf", "cef"):
            sink = FileSink(f"bench-{fmt}", lambda e, f=fmt: format_event(e, f), tmp / f"{fmt}.out", 1 << 30, 0)
            exp = Exporter(guard.store, [(sink, EventFilter())], batch_size=500, max_events=10**9)
            t0 = time.perf_counter_ns()
            delivered = 0
            while exp.deliver_once(sink, EventFilter()):
                delivered = exp.status[sink.name].delivered
            secs = (time.perf_counter_ns() - t0) / 1e9
            out.append(Result(f"exporter to a file sink, {fmt}: events/s", delivered, secs / delivered * 1e6, 0.0,
                              0.0, delivered / secs))
        guard.close()
    return out


def run() -> list[Result]:
    return decision_cost() + exporter_throughput()


def main() -> None:
    print(HEADER)
    for r in run():
        print(r.row())


if __name__ == "__main__":
    main()
