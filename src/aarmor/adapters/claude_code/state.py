"""What one hook process leaves for the next: which aarmor action a Claude Code tool call is.

PreToolUse and PostToolUse are separate processes, so the mapping lives in small files under
`<state_dir>/<aarmor session id>/` (directories 0700, files written whole via a rename):

- `opened`: the aarmor session exists (so later events do not try to open it again);
- `run-<tool_use_id>.json`: the action allowed for that tool call, waiting for its outcome (PostToolUse
  removes it once the outcome is recorded);
- `wait-<digest>.json`: an action the hook stopped waiting for (approval or deferral still pending) and
  answered "deny"; the same call retried later (same tool, same input) picks it up instead of asking again.
  Taking one is a rename, so two concurrent retries never both use it.

Nothing secret is stored: ids, the tool name and a digest of the input.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["SessionState", "input_digest", "safe_name"]

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,120}$")


def safe_name(value: str) -> str:
    """`value` if it is a harmless file name part, else its SHA-256 (never a path, never `..`)."""
    if _SAFE.match(value) and value not in (".", ".."):
        return value
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def input_digest(tool: str, tool_input: Any) -> str:
    text = json.dumps({"tool": tool, "input": tool_input}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class SessionState:
    """The state files of one aarmor session."""

    def __init__(self, root: Path, session_id: str) -> None:
        self.dir = root / safe_name(session_id)

    def _ensure(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self._ensure()
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.dir / name)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    # --- the session -------------------------------------------------------------------------------
    @property
    def opened(self) -> bool:
        return (self.dir / "opened").exists()

    def mark_opened(self) -> None:
        self._write("opened", {})

    # --- allowed actions waiting for their outcome ---------------------------------------------------
    def put_running(self, tool_use_id: str, entry: dict[str, Any]) -> None:
        self._write(f"run-{safe_name(tool_use_id)}.json", entry)

    def running(self, tool_use_id: str) -> dict[str, Any] | None:
        return self._read(self.dir / f"run-{safe_name(tool_use_id)}.json")

    def drop_running(self, tool_use_id: str) -> None:
        (self.dir / f"run-{safe_name(tool_use_id)}.json").unlink(missing_ok=True)

    # --- actions the hook stopped waiting for ----------------------------------------------------------
    def put_waiting(self, digest: str, entry: dict[str, Any]) -> None:
        self._write(f"wait-{digest}.json", entry)

    def take_waiting(self, digest: str) -> dict[str, Any] | None:
        """Claim the waiting action of this call, if any (atomic: only one process gets it)."""
        src = self.dir / f"wait-{digest}.json"
        claimed = self.dir / f".claimed-{digest}.{os.getpid()}"
        try:
            os.rename(src, claimed)
        except FileNotFoundError:
            return None
        try:
            return self._read(claimed)
        finally:
            claimed.unlink(missing_ok=True)
