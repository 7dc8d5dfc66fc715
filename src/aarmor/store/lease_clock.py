"""Owner leases judged on the host's boot clock, not the wall clock (docs/durability.md, "Clock jumps").

A lease says "this process is alive until T". If T were wall time, a wall clock stepped forwards (NTP, an
operator, a VM restored from a snapshot) in the process that judges, or a clock behind in the process that
renews, would make a live process look dead, and crash recovery would close its running actions as
"unknown: process ended". The embedded stores (SQLite, memory) serve processes of one host (SQLite's
locking does not work across hosts), and every process of a host shares one clock that wall-clock steps do
not move: Linux's CLOCK_BOOTTIME (it also counts suspended time, so a lease never outlives a suspend
unnoticed). So a lease is written as

    "<wall until, RFC 3339> <host> <boot id> <boot clock until, ms (rounded down)>"

and judged by the boot clock when it was written on this host in this boot; a lease written in an earlier
boot of this host is dead (no process survives a reboot). A lease from another host, from an older aarmor
(wall time only), or on a system without a boot id (non-Linux) falls back to the wall time it starts
with. PostgreSQL judges leases by its own server clock instead (aarmor.store.postgres).
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aarmor.canonical import format_ts

__all__ = ["BOOT_ID", "HOST", "boot_clock", "lease_alive", "lease_text"]

#: this host's name, without spaces (it is one field of the lease text)
HOST = socket.gethostname().replace(" ", "_") or "localhost"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: no boot id, leases fall back to wall time (documented)
        return ""


#: changes at every boot; empty where the system has none
BOOT_ID = _boot_id()

_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def boot_clock() -> float:
    """Seconds on the host-wide clock that wall-clock steps do not move (CLOCK_BOOTTIME on Linux)."""
    return time.clock_gettime(_CLOCK) if _CLOCK is not None else time.monotonic()


def lease_text(seconds: float) -> str:
    """The stored form of a lease that runs `seconds` from now."""
    until = format_ts(datetime.now(UTC) + timedelta(seconds=seconds))
    if not BOOT_ID:
        return until
    return f"{until} {HOST} {BOOT_ID} {int((boot_clock() + seconds) * 1000)}"


def lease_alive(text: str) -> bool:
    """Whether the lease stored as `text` still runs (see the module docstring for which clock judges)."""
    parts = text.split(" ")
    if len(parts) == 4 and BOOT_ID and parts[1] == HOST:
        if parts[2] != BOOT_ID:
            return False  # written before this host last booted: its process is gone
        try:
            return int(parts[3]) > boot_clock() * 1000
        except ValueError:
            pass
    return parts[0] > format_ts(datetime.now(UTC))
