"""`aarmor demo` (the README's first command) end to end, as a real subprocess on a fresh data directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable


def test_demo_shows_all_five_decisions_a_cli_approval_and_a_resolved_defer(
        cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("demo", env={"COLUMNS": "160"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for decision in ("ALLOW", "DENY", "MODIFY", "STEP_UP", "DEFER"):
        assert decision in out
    assert "with `aarmor approvals approve`: approved" in out  # the STEP_UP approved from the CLI
    assert "(STEP_UP, payments.transfer)" in out
    assert "supplied context.environment_state_conflict = false" in out  # the DEFER resolved by new context
    assert "(escalated DEFER, credentials.rotate)" in out
    assert "hash chain verified" in out
    assert "receipts verified" in out and "FAILED" not in out
