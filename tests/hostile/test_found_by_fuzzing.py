"""Regressions the fuzzer (tests/hostile/test_fuzz.py) found, each kept as a plain test."""

from __future__ import annotations

from pathlib import Path

import pytest

from aarmor.errors import PolicyError


def test_an_operator_argument_of_the_wrong_shape_is_a_policy_error_not_a_crash(tmp_path: Path) -> None:
    """Found by tests/hostile/test_fuzz.py: `type: []` (a list, which does not even hash) raised TypeError."""
    from aarmor.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text('policy: {id: p, version: "1", default: ALLOW}\nrules:\n  - id: r\n'
                    '    match: {tool: x, parameters: {a: {not: {type: []}}}}\n    action: DENY\n')
    with pytest.raises(PolicyError, match="type"):
        load_policy(str(path))
