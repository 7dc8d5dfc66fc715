"""`aarmor policy check|test|explain`: output, --json, and CI exit codes (0 pass, 1 failures, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aarmor.cli.policy import app

RUN = CliRunner()
GOOD = (
    "policy: {id: cli, version: '3', default: DENY}\nrules:\n"
    "  - id: allow-read\n    match: {operation: get}\n"
    "    action: ALLOW\n  - id: no-shell\n    match: {tool: shell}\n    action: DENY\n"
)


def _files(tmp: Path) -> tuple[Path, Path, Path]:
    pol = tmp / "policy.yaml"
    pol.write_text(GOOD)
    cases = tmp / "cases.yaml"
    cases.write_text(
        "cases:\n  - name: read ok\n    action: {tool: crm.get}\n    expect: {result: ALLOW}\n"
        "  - name: shell denied\n    action: {tool: shell.exec}\n"
        "    expect: {result: DENY, rule_id: no-shell}\n"
    )
    act = tmp / "action.json"
    act.write_text(json.dumps({"action": {"tool": "shell.exec", "parameters": {"cmd": "ls"}}, "context": {}}))
    return pol, cases, act


def test_check_prints_id_version_hash_and_posture(tmp_path: Path) -> None:
    pol, _, _ = _files(tmp_path)
    r = RUN.invoke(app, ["check", str(pol), "--json"])
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert (
        info["policy_id"] == "cli"
        and info["version"] == "3"
        and info["default"] == "DENY"
        and info["rules"] == 2
    )
    assert info["hash"].startswith("sha256:")
    assert "cli" in RUN.invoke(app, ["check", str(pol)]).output


def test_check_bad_policy_exits_2_with_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policy: {id: b}\nrules:\n  - id: deny-shell\n    match: {tool: shell, parameters.c: {regexp: x}}\n"
        "    action: DENY\n"
    )
    r = RUN.invoke(app, ["check", str(bad), "--json"])
    assert r.exit_code == 2
    assert "rule `deny-shell` (bad.yaml:4): unknown operator `regexp`" in json.loads(r.output)["error"]


def test_test_command_passes_and_fails(tmp_path: Path) -> None:
    pol, cases, _ = _files(tmp_path)
    r = RUN.invoke(app, ["test", str(pol), str(cases), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["passed"] == 2
    cases.write_text(cases.read_text().replace("expect: {result: ALLOW}", "expect: {result: DENY}"))
    r = RUN.invoke(app, ["test", str(pol), str(cases), "--json"])
    out = json.loads(r.output)
    assert r.exit_code == 1 and out["failed"] == 1
    assert out["cases"][0]["mismatches"] == ["result: expected DENY, got ALLOW"]
    assert RUN.invoke(app, ["test", str(pol), str(cases)]).exit_code == 1


def test_test_command_bad_cases_file_exits_2(tmp_path: Path) -> None:
    pol, cases, _ = _files(tmp_path)
    cases.write_text("cases:\n  - name: x\n    acton: {tool: a}\n")
    assert RUN.invoke(app, ["test", str(pol), str(cases)]).exit_code == 2


def test_explain_lists_conditions_and_counts_other_rules(tmp_path: Path) -> None:
    pol, _, act = _files(tmp_path)
    r = RUN.invoke(app, ["explain", str(pol), str(act), "--json"])
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert out["decision"]["result"] == "DENY" and out["decision"]["rule_id"] == "no-shell"
    assert [c["rule_id"] for c in out["candidates"]] == ["no-shell"]
    assert out["rules_about_other_tools"] == 1
    human = RUN.invoke(app, ["explain", str(pol), str(act)])
    assert human.exit_code == 0 and "no-shell" in human.output


def test_builtin_pack_is_reachable_from_the_cli() -> None:
    r = RUN.invoke(app, ["check", "builtin:default", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["policy_id"] == "aarmor-default"
