"""A real, small filesystem (tmpfs) that a test can fill to the last byte: disk-full faults without fakes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = ["SmallDisk", "small_disk", "wait_for"]


class SmallDisk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        """Write a filler file until the filesystem refuses (ENOSPC): nothing else fits after this."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for size in (1 << 20, 4096, 1):  # big blocks, then the last pages, then the last bytes
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        free = os.statvfs(self.root)
        assert free.f_bavail == 0, f"{self.root} still has {free.f_bavail} free blocks"

    def free(self) -> None:
        """The fault clears: the filler goes, the space is back."""
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(where: Path, size: str = "8m") -> Iterator[SmallDisk]:
    """Mount a tmpfs of `size` at `where` (root only); always unmounted afterwards.

    Fails (never skips) when the mount is not possible: these tests need a real full disk.
    """
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a {size} tmpfs at {where} for the disk-full tests (they need root and "
                    f"`mount`): {done.stderr.strip() or done.returncode}")
    try:
        yield SmallDisk(where)
    finally:
        # lazily: a file a failed test left open must not leave the mount behind
        subprocess.run(["umount", "-l", str(where)], check=False)


def wait_for(probe: Callable[[], object], timeout: float = 20.0) -> object:
    """Poll until `probe()` is truthy (an event in another thread or process); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout} s: {probe}")
