"""`aarmor identity revoke|unrevoke|list` as the installed console script (real subprocesses, a real store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "aarmor.yaml"
    path.write_text(f"store: sqlite:///{tmp_path / 'aarmor.db'}\nkeys: {tmp_path / 'keys'}\n")
    return path


def test_revoke_list_unrevoke_round_trip(cli: Any, config: Path) -> None:
    c = ("--config", str(config))
    made = cli("identity", "revoke", "--token-id", "jti-42", "--reason", "laptop stolen", "--by", "alice",
               "--until", "2099-06-01T12:00:00+02:00", "--json", *c)
    assert made.returncode == 0, made.stderr
    rev = json.loads(made.stdout)
    assert rev == {"kind": "token", "value": "jti-42", "reason": "laptop stolen", "revoked_by": "alice",
                   "revoked_at": rev["revoked_at"], "until": "2099-06-01T10:00:00.000Z", "created": True}
    again = cli("identity", "revoke", "--token-id", "jti-42", "--reason", "other", *c)
    assert again.returncode == 0 and "already revoked" in again.stdout and "laptop stolen" in again.stdout
    assert cli("identity", "revoke", "--subject", "bob@company.com", *c).returncode == 0
    listed = json.loads(cli("identity", "list", "--json", *c).stdout)
    assert [(r["kind"], r["value"], r["in_force"]) for r in listed] == [("token", "jti-42", True),
                                                                          ("subject", "bob@company.com", True)]
    table = cli("identity", "list", *c).stdout
    assert "jti-42" in table and "laptop stolen" in table and "until 2099-06-01T10:00:00.000Z" in table
    lifted = cli("identity", "unrevoke", "--token-id", "jti-42", "--reason", "found it", "--by", "alice", *c)
    assert lifted.returncode == 0, lifted.stderr
    missing = cli("identity", "unrevoke", "--token-id", "jti-42", *c)
    assert missing.returncode == 2 and "no revocation of token id `jti-42`" in missing.stderr
    history = json.loads(cli("identity", "list", "--history", "--json", *c).stdout)
    assert [(e["event"], e["value"], e["reason"]) for e in history] == [
        ("revoke", "jti-42", "laptop stolen"), ("revoke", "bob@company.com", "no reason given"),
        ("unrevoke", "jti-42", "found it")]


@pytest.mark.parametrize(("args", "message"), [
    ((), "name exactly one of --token-id, --subject or --agent"),
    (("--agent", "a", "--subject", "b"), "name exactly one of --token-id, --subject or --agent (got 2)"),
    (("--agent", ""), "revocation value must be a non-empty string"),
    (("--agent", " bot"), "must not contain control characters nor start or end with white space"),
    (("--agent", "bot", "--reason", " "), "revocation reason must be a non-empty string"),
    (("--agent", "bot", "--until", "next week"), "--until `next week` is not an ISO 8601 time"),
    (("--agent", "bot", "--until", "2030-01-01T00:00:00"), "is not an ISO 8601 time with a timezone"),
    (("--agent", "bot", "--until", "2001-01-01T00:00:00Z"), "is not after now"),
])
def test_bad_input_is_a_clear_error_and_nothing_is_written(cli: Any, config: Path, args: tuple[str, ...],
                                                           message: str) -> None:
    done = cli("identity", "revoke", *args, "--config", str(config))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert json.loads(cli("identity", "list", "--all", "--json", "--config", str(config)).stdout) == []
    assert json.loads(cli("identity", "list", "--history", "--json", "--config", str(config)).stdout) == []
