"""`policy_pin`: every node of a cluster decides with the same policy (issue 8). A policy with another hash
does not load at start-up, and a reload to another hash is refused (the pinned one stays active)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aarmor import Identity
from aarmor.errors import ConfigError, PolicyError

POLICY = 'policy: {id: pinned, version: "1", default: ALLOW}\nrules:\n  - id: no-shell\n    match: {tool: shell}\n' \
         '    action: DENY\n'


def test_the_pinned_policy_loads_another_does_not_and_a_reload_cannot_change_it(make_guard: Callable[..., Any],
                                                                                tmp_path: Path) -> None:
    first = make_guard(POLICY)
    pin = first.policy.hash
    path = Path(first.config.policy)
    guard = make_guard(policy=str(path), policy_pin=pin)
    assert guard.policy.hash == pin
    with pytest.raises(PolicyError, match="not the pinned"):
        make_guard(policy=str(path), policy_pin="sha256:" + "0" * 64)
    path.write_text(POLICY.replace("DENY", "STEP_UP\n    approvers: [carol]"))  # an edit on one node
    status = guard.reload_policy()
    assert "not the pinned" in (status.last_error or "") and guard.policy.hash == pin
    with guard.session(identity=Identity(human="a@company.com")) as s:
        assert s.evaluate("shell", {"cmd": "id"}).result.value == "DENY"  # still the pinned policy
    with pytest.raises(ConfigError, match="policy_pin"):
        make_guard(policy=str(path), policy_pin="md5:abc")

