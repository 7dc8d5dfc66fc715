"""Run every benchmark and print a Markdown report (machine, then one table per benchmark).

    .venv/bin/python benchmarks/run_all.py > benchmarks/results/latest.md

Numbers go into BENCHMARKS.md by hand, with the reading of what they mean.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_approval
import bench_identity
import bench_invoke
import bench_pdp
import bench_revocation
import bench_telemetry
from _timing import HEADER


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu}; {os.cpu_count()} cores; "
            f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; load average {load[0]:.2f}")


def main() -> None:
    print(f"Machine: {machine()}\n")
    for title, bench in (("PDP", bench_pdp), ("Full mediated call", bench_invoke),
                         ("Approval round trip", bench_approval), ("Identity revocation", bench_revocation),
                         ("Identity verification", bench_identity), ("Telemetry", bench_telemetry)):
        print(f"### {title}\n\n{HEADER}")
        for r in bench.run():
            print(r.row())
        print()


if __name__ == "__main__":
    main()
