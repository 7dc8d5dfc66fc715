"""The AgentDojo efficacy harness runs (benchmarks/agentdojo): a handful of banking pairs through three guards.

Proves the harness works end to end on the installed agentdojo: the allow-all baseline lets the scripted
attacks succeed, deny-side-effects (tool risk classes) stops every attacker call, and the JSON report
carries the per-suite rates with Wilson intervals. The figures themselves are in BENCHMARKS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.agentdojo.__main__ import main, wilson


def test_wilson_interval() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.28
    lo, hi = wilson(5, 10)
    assert 0.23 < lo < 0.24 and 0.76 < hi < 0.77
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.filterwarnings("ignore")  # agentdojo's dependencies warn on import
def test_harness_runs_banking_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main(["--suites", "banking", "--max-user-tasks", "2", "--max-injection-tasks", "3",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    banking = report["suites"]["banking"]
    assert report["policies"] == ["builtin:default", "allow-all", "deny-side-effects"]
    m = banking["metrics"]
    assert m["allow-all"]["attack_success"]["n"] == 6
    assert m["allow-all"]["attack_success"]["k"] > 0
    assert m["allow-all"]["benign_call_false_positive"]["k"] == 0
    assert m["deny-side-effects"]["attacker_calls_blocked"]["rate"] == 1.0
    assert m["deny-side-effects"]["attack_success"]["k"] == 0
    lo, hi = m["allow-all"]["attack_success"]["ci95"]
    assert 0.0 <= lo <= m["allow-all"]["attack_success"]["rate"] <= hi <= 1.0
    assert "| attack success (ASR) |" in capsys.readouterr().out


ESCALATING = """
policy: {id: escalating, version: "1", default: ALLOW}
rules:
  - id: money-needs-a-human
    match: {category: financial}
    action: STEP_UP
    timeout: 3600
  - id: passwords-wait-for-a-ticket
    match: {category: credential_or_permission_change}
    action: DEFER
    context_needed: [change_ticket]
    timeout: 3600
"""


@pytest.mark.filterwarnings("ignore")
def test_step_up_and_defer_end_at_once_and_count_as_blocked(tmp_path: Path) -> None:
    policy = tmp_path / "escalating.yaml"
    policy.write_text(ESCALATING)
    out = tmp_path / "report.json"
    # banking user task 0 pays a bill (send_money); the injection tasks send money, one changes the password
    assert main(["--suites", "banking", "--max-user-tasks", "1", "--policy", str(policy),
                 "--json", str(out)]) == 0  # an hour's timeout: returns only because the run is unattended
    m = json.loads(out.read_text())["suites"]["banking"]["metrics"][str(policy)]
    assert m["benign_step_up"]["k"] == 1 and m["benign_breakage"]["k"] == 1
    assert m["attack_run_step_up"]["k"] > 0 and m["attack_run_defer"]["k"] > 0
    assert m["attack_success"]["k"] < m["attack_success"]["n"]


@pytest.mark.filterwarnings("ignore")
def test_attack_option_runs_each_attack_and_dos_counts_the_users_task(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert main(["--suites", "banking", "--max-user-tasks", "2", "--max-injection-tasks", "2",
                 "--attack", "direct", "--attack", "dos", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["attacks"]) == ["direct", "dos"]
    assert report["suites"] == report["attacks"]["direct"]  # `suites` repeats the first attack's
    direct = report["attacks"]["direct"]["banking"]
    assert direct["attack"] == "direct"
    assert direct["metrics"]["allow-all"]["attack_success"]["n"] == 4
    dos = report["attacks"]["dos"]["banking"]
    # a DoS attack pairs each user task with the first injection task only; the scripted agent resists,
    # so with no monitor the user's task succeeds (the attack fails) and no attacker call is made
    m = dos["metrics"]["allow-all"]
    assert dos["injection_tasks"] == 1 and m["attack_success"]["n"] == 2 and m["attack_success"]["k"] == 0
    assert m["attacker_calls_blocked"]["n"] == 0
    # benign runs are shared by the attacks
    assert m["benign_utility"] == direct["metrics"]["allow-all"]["benign_utility"]


def test_unknown_attack_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--suites", "banking", "--attack", "manual"])
