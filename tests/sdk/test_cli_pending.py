"""`aarmor approvals ...` and `aarmor deferrals ...`: the real console script in another process deciding
for a caller waiting in this one, on the same SQLite store."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.tokens import create_token

POLICY = """
policy: {id: cli-pending, version: "1", default: ALLOW}
rules:
  - id: big-payment
    match: {tool: payment, operation: transfer}
    action: STEP_UP
    approvers: [finance]
    timeout: 30
    reason: payments need finance
  - id: rotation-waits
    match: {tool: credentials, operation: rotate, context: {window: {ne: open}}}
    action: DEFER
    context_needed: [window]
    timeout: 30
    reason: waits for the change window
"""

CONFIG = """
policy: policy.yaml
store: sqlite:///{home}/a.db
keys: {home}/keys
approvals:
  groups: {{finance: [carol@company.com]}}
  poll_interval: 0.05
deferrals:
  poll_interval: 0.05
  default_timeout: 30
"""


@pytest.fixture
def setup(tmp_path: Path, make_guard: Callable[..., Any]) -> tuple[Any, Path]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    config = tmp_path / "aarmor.yaml"
    config.write_text(CONFIG.format(home=tmp_path))
    from aarmor.config import load_config

    guard = make_guard(**{k: v for k, v in vars_of(load_config(config)).items()})
    return guard, config


def vars_of(cfg: Any) -> dict[str, Any]:
    return {"policy": cfg.policy, "store": cfg.store, "keys": str(cfg.keys), "approvals": cfg.approvals,
            "deferrals": cfg.deferrals}


def _wait_for(pred: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("timed out")


def _invoke_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except ActionDenied as exc:
            out["denied"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_approve_from_the_cli_releases_the_waiting_call(setup: tuple[Any, Path],
                                                        cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    guard, config = setup
    _, carol = create_token(guard.store, "carol@company.com", "approver", now=guard._clock())
    _, alice_tok = create_token(guard.store, "alice@company.com", "approver", now=guard._clock())
    _, agent_tok = create_token(guard.store, "carol@company.com", "agent", now=guard._clock())
    with guard.session(identity=Identity(human="alice@company.com", service="pay-agent")) as s:
        t, out = _invoke_in_thread(lambda: s.invoke("payment.transfer", {"amount": 9}, lambda a: "paid"))
        [item] = _wait_for(guard.approvals.list)
        listed = cli("approvals", "list", "--json", "--config", str(config))
        assert listed.returncode == 0 and json.loads(listed.stdout)[0]["id"] == item["id"]
        shown = cli("approvals", "show", item["id"], "--config", str(config))
        assert json.loads(shown.stdout)["request"]["reason"] == "payments need finance"

        no_token = cli("approvals", "approve", item["id"], "-r", "ok", "--config", str(config))
        assert no_token.returncode == 2 and "no token" in no_token.stderr
        wrong_role = cli("approvals", "approve", item["id"], "-r", "ok", "--token", agent_tok, "--config",
                         str(config))
        assert wrong_role.returncode == 2 and "role `agent`" in wrong_role.stderr
        selfish = cli("approvals", "approve", item["id"], "-r", "mine", "--config", str(config),
                      env={"AARMOR_TOKEN": alice_tok})
        assert selfish.returncode == 1 and "self_approval" in selfish.stderr
        ok = cli("approvals", "approve", item["id"], "-r", "invoice checked", "--config", str(config),
                 env={"AARMOR_TOKEN": carol})
        assert ok.returncode == 0, ok.stderr
        t.join(20)
        again = cli("approvals", "deny", item["id"], "-r", "too late", "--token", carol, "--config", str(config))
        assert again.returncode == 1 and "not_pending" in again.stderr
    assert out == {"result": "paid"}
    receipt = list(guard.store.read_receipts(s.session_id))[-1].body
    assert receipt["approval"]["approver"] == "carol@company.com"
    assert receipt["approval"]["reason"] == "invoice checked"


def test_resolve_a_deferral_from_the_cli(setup: tuple[Any, Path],
                                         cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    guard, config = setup
    _, carol = create_token(guard.store, "carol@company.com", "approver", now=guard._clock())
    with guard.session(identity=Identity(human="alice@company.com", service="ops")) as s:
        t, out = _invoke_in_thread(lambda: s.invoke("credentials.rotate", {"target": "db"}, lambda a: "rotated"))
        [item] = _wait_for(guard.deferrals.list)
        listed = cli("deferrals", "list", "--config", str(config))
        assert listed.returncode == 0 and item["id"] in listed.stdout
        bad = cli("deferrals", "resolve", item["id"], "--set", "is_admin=true", "--token", carol, "--config",
                  str(config))
        assert bad.returncode == 1 and "bad_field" in bad.stderr
        malformed = cli("deferrals", "resolve", item["id"], "--set", "window", "--token", carol, "--config",
                        str(config))
        assert malformed.returncode == 2 and "field=value" in malformed.stderr
        ok = cli("deferrals", "resolve", item["id"], "--set", "window=open", "--token", carol, "--config",
                 str(config))
        assert ok.returncode == 0, ok.stderr
        t.join(20)
        shown = json.loads(cli("deferrals", "show", item["id"], "--config", str(config)).stdout)
    assert out == {"result": "rotated"}
    assert shown["status"] == "resolved" and shown["supplied"] == {"window": "open"}
    assert shown["resolution"]["resolver"] == "carol@company.com"
    missing = cli("deferrals", "show", "dfr_nope", "--config", str(config))
    assert missing.returncode == 2 and "no deferral" in missing.stderr
