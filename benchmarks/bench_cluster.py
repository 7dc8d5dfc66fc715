"""Load: N sessions across M processes deciding against one PostgreSQL store (issue 8), SQLite beside it.

Each process opens its own Guard on the shared store and runs its sessions in threads, each calling
`session.invoke` (ALLOW, a tool that returns at once) in a closed loop for `--seconds`. Reported per
(backend, M, N): total decisions per second, and p50/p99 of the per-call latency (a full mediated call:
decision, the requested entry, the outcome and the signed receipt, each commit durable).

    .venv/bin/python benchmarks/bench_cluster.py [--seconds 5] [--pg postgresql://postgres@127.0.0.1/postgres]
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


def _worker(store: str, keys: str, policy: str, sessions: int, seconds: float, start_at: float,
            out: Any) -> None:
    from aarmor import Guard, Identity
    from aarmor.config import load_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard(load_config(store=store, keys=keys, policy=policy), recover=False)
    samples: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        s = guard.session(identity=Identity(human="alice@company.com", agent=f"load-{i}"))
        mine = []
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        while time.time() < end:
            t0 = time.perf_counter()
            s.invoke("email.send", {"to": "bob@company.com"}, lambda a: "ok")
            mine.append(time.perf_counter() - t0)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    guard.close()
    out.put(samples)


def run(store: str, keys: str, policy: str, processes: int, sessions: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 3.0  # every process opened and warmed before the clock starts
    procs = [ctx.Process(target=_worker, args=(store, keys, policy, sessions, seconds, start_at, q))
             for _ in range(processes)]
    for p in procs:
        p.start()
    samples: list[float] = []
    for _ in procs:
        samples.extend(q.get(timeout=seconds + 120))
    for p in procs:
        p.join()
    samples.sort()
    return {"decisions_per_s": len(samples) / seconds, "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000, "n": len(samples)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    import psycopg

    print("| backend | processes (M) | sessions per process | total sessions (N) | decisions/s | p50 (ms) | "
          "p99 (ms) |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        for backend in ("postgresql", "sqlite"):
            for m, per in ((1, 1), (1, 4), (2, 2), (2, 8), (4, 4)):
                if backend == "postgresql":
                    db = "aarmor_load_" + uuid.uuid4().hex[:8]
                    with psycopg.connect(args.pg, autocommit=True) as admin:
                        admin.execute(f'CREATE DATABASE "{db}"')
                    store = args.pg.rsplit("/", 1)[0] + "/" + db
                else:
                    store = f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
                try:
                    r = run(store, str(tmp / "keys"), str(policy), m, per, args.seconds)
                finally:
                    if backend == "postgresql":
                        with psycopg.connect(args.pg, autocommit=True) as admin:
                            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                print(f"| {backend} | {m} | {per} | {m * per} | {r['decisions_per_s']:,.0f} | {r['p50_ms']:.2f} | "
                      f"{r['p99_ms']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
