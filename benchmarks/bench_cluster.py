"""Load: N sessions across M processes against one PostgreSQL store (issue 8), SQLite beside it.

Each process opens its own Guard on the shared store and runs its sessions in threads, each calling
`session.invoke` (ALLOW, a tool that returns at once) in a closed loop for `--seconds`. Reported per
(backend, M processes, sessions per process, pool size):
- calls/s: full mediated calls completed per second (each: the decision, the durable `requested` entry,
  the tool, then the outcome entry, the signed receipt and its transparency-log leaf in a second commit);
- decision p50/p99: from `invoke` to the tool starting, i.e. the decision and its durable record, the
  latency an agent waits before its action may run;
- call p50/p99: the whole mediated call;
- CPU busy: the whole machine's CPU use over the window (/proc/stat), clients and server together, to tell
  a saturated machine from a slow path.
The PostgreSQL store's pool (`aarmor_pool`) is measured at 1 connection (a store object's commits queue on
one connection, as before the pool) beside the default 4, in the same run.

    .venv/bin/python benchmarks/bench_cluster.py [--seconds 5] [--svg benchmarks/cluster.svg]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

POLICY = 'policy: {id: load, version: "1", default: ALLOW}\nrules:\n  - id: no-shell\n    match: {tool: shell}\n' \
         '    action: DENY\n'

#: (processes, sessions per process, pool size) for PostgreSQL; the pool is ignored for SQLite
PG_CONFIGS = ((1, 1, 4), (1, 4, 1), (1, 4, 4), (2, 1, 4), (2, 2, 1), (2, 2, 4), (2, 4, 4), (4, 1, 4), (4, 2, 4),
              (4, 4, 4))
SQLITE_CONFIGS = ((1, 1), (1, 4), (2, 2), (4, 4))


def _worker(store: str, keys: str, policy: str, sessions: int, seconds: float, start_at: float,
            out: Any) -> None:
    from aarmor import Guard, Identity
    from aarmor.config import load_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard(load_config(store=store, keys=keys, policy=policy), recover=False)
    calls: list[float] = []
    decisions: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        s = guard.session(identity=Identity(human="alice@company.com", agent=f"load-{i}"))
        mine_calls, mine_decisions = [], []
        for _ in range(20):  # warm: connections opened, statements prepared
            s.invoke("email.send", {"to": "bob@company.com"}, lambda a: "ok")
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        while time.time() < end:
            t0 = time.perf_counter()
            started: list[float] = []
            s.invoke("email.send", {"to": "bob@company.com"}, lambda a, st=started: st.append(time.perf_counter()))
            t1 = time.perf_counter()
            mine_calls.append(t1 - t0)
            mine_decisions.append(started[0] - t0)
        with lock:
            calls.extend(mine_calls)
            decisions.extend(mine_decisions)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    guard.close()
    out.put((calls, decisions))


def _cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _pct(xs: list[float], q: float) -> float:
    return xs[max(0, int(len(xs) * q) - 1)]


def run(store: str, keys: str, policy: str, processes: int, sessions: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 6.0  # every process opened and warmed before the clock starts
    procs = [ctx.Process(target=_worker, args=(store, keys, policy, sessions, seconds, start_at, q))
             for _ in range(processes)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.005)
    cpu0 = _cpu()
    time.sleep(seconds)
    cpu1 = _cpu()
    calls: list[float] = []
    decisions: list[float] = []
    for _ in procs:
        c, d = q.get(timeout=seconds + 120)
        calls.extend(c)
        decisions.extend(d)
    for p in procs:
        p.join()
    calls.sort()
    decisions.sort()
    return {"calls_per_s": len(calls) / seconds, "n": len(calls),
            "decision_p50_ms": statistics.median(decisions) * 1000, "decision_p99_ms": _pct(decisions, 0.99) * 1000,
            "call_p50_ms": statistics.median(calls) * 1000, "call_p99_ms": _pct(calls, 0.99) * 1000,
            "cpu_busy": (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1])}


def svg(rows: list[dict[str, Any]]) -> str:
    """Calls/s and decision p99 by total sessions, one line per process count (PostgreSQL, default pool)."""
    pg = [r for r in rows if r["backend"] == "postgresql" and r["pool"] == 4]
    width, height, pad = 720, 330, 50
    panel = (width - 3 * pad) // 2
    max_n = max(r["m"] * r["per"] for r in pg)
    max_tp = max(r["calls_per_s"] for r in pg) * 1.15
    max_p99 = max(max(r["decision_p99_ms"] for r in pg) * 1.15, 12.0)
    colours = {1: "#1f77b4", 2: "#d62728", 4: "#2ca02c"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>']

    def axes(x0: int, title: str, ymax: float, unit: str) -> None:
        y0 = height - pad
        out.append(f'<text x="{x0 + panel / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + panel}" y2="{y0}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{pad - 20}" stroke="black"/>')
        for i in range(5):
            v = ymax * i / 4
            y = y0 - (y0 - pad + 20) * i / 4
            out.append(f'<text x="{x0 - 5}" y="{y + 4}" text-anchor="end">{v:,.0f}{unit}</text>')
            out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + panel}" y2="{y}" stroke="#ddd"/>')
        for n in sorted({r["m"] * r["per"] for r in pg}):
            x = x0 + panel * n / max_n
            out.append(f'<text x="{x}" y="{y0 + 14}" text-anchor="middle">{n}</text>')
        out.append(f'<text x="{x0 + panel / 2}" y="{y0 + 30}" text-anchor="middle">total sessions N</text>')

    def line(x0: int, key: str, ymax: float) -> None:
        y0 = height - pad
        for m, colour in colours.items():
            pts = sorted((r["m"] * r["per"], r[key]) for r in pg if r["m"] == m)
            if not pts:
                continue
            xy = " ".join(f"{x0 + panel * n / max_n:.1f},{y0 - (y0 - pad + 20) * v / ymax:.1f}" for n, v in pts)
            out.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for pt in xy.split():
                px, py = pt.split(",")
                out.append(f'<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>')

    axes(pad, "calls/s (PostgreSQL)", max_tp, "")
    line(pad, "calls_per_s", max_tp)
    x1 = 2 * pad + panel
    axes(x1, "decision p99 (ms)", max_p99, "")
    line(x1, "decision_p99_ms", max_p99)
    target_y = height - pad - (height - 2 * pad + 20) * 10 / max_p99
    out.append(f'<line x1="{x1}" y1="{target_y:.1f}" x2="{x1 + panel}" y2="{target_y:.1f}" stroke="black" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{x1 + panel}" y="{target_y - 4:.1f}" text-anchor="end">target 10 ms</text>')
    for i, (m, colour) in enumerate(colours.items()):
        out.append(f'<rect x="{pad + 10 + i * 110}" y="{height - 14}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{pad + 24 + i * 110}" y="{height - 5}">M = {m} process{"es" if m > 1 else ""}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--svg", type=Path, help="write the scaling plot here")
    args = ap.parse_args()
    import psycopg

    print("| backend | M | sessions/process | N | pool | calls/s | decision p50 | decision p99 | call p50 | "
          "call p99 | CPU busy |\n|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        configs = [("postgresql", m, per, pool) for m, per, pool in PG_CONFIGS] + \
                  [("sqlite", m, per, None) for m, per in SQLITE_CONFIGS]
        for backend, m, per, pool in configs:
            if backend == "postgresql":
                db = "aarmor_load_" + uuid.uuid4().hex[:8]
                with psycopg.connect(args.pg, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{db}"')
                store = args.pg.rsplit("/", 1)[0] + "/" + db + f"?aarmor_pool={pool}"
            else:
                store = f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
            try:
                r = run(store, str(tmp / "keys"), str(policy), m, per, args.seconds)
            finally:
                if backend == "postgresql":
                    with psycopg.connect(args.pg, autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            rows.append({"backend": backend, "m": m, "per": per, "pool": pool, **r})
            print(f"| {backend} | {m} | {per} | {m * per} | {pool or '-'} | {r['calls_per_s']:,.0f} | "
                  f"{r['decision_p50_ms']:.2f} | {r['decision_p99_ms']:.2f} | {r['call_p50_ms']:.2f} | "
                  f"{r['call_p99_ms']:.2f} | {r['cpu_busy']:.0%} |", flush=True)
    if args.svg:
        args.svg.write_text(svg(rows))


if __name__ == "__main__":
    main()
