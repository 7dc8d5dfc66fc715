"""AgentDojo efficacy benchmark: `python -m benchmarks.agentdojo --suites all [--quick] [--policy ...]`.

Runs every (user task, injection task) pair and every benign user task of AgentDojo v1.2.2's suites
through each policy given with `--policy` (default: `builtin:default`) and, in the same invocation, the two
baselines: allow-all and deny-side-effects (only tools the tool risk model classes `read_only`), under each
attack given with `--attack` (default: `important_instructions`; benign runs are shared by all attacks).
Prints one table per suite and attack (markdown) with Wilson 95% intervals; `--json FILE` writes every count
(`attacks.<attack>.<suite>`; `suites` repeats the first attack's).

Needs agentdojo: `.venv/bin/pip install -e '.[bench]'`. See benchmarks/agentdojo/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .harness import ATTACKS, DOS_ATTACKS, EXECUTED, Run, SuiteRunner, _Stub, load_suites, open_guard

VERSION = "v1.2.2"
SUITES = ("workspace", "travel", "banking", "slack")
#: travel is the validation fold: nothing is tuned on it (issue 5)
VALIDATION = frozenset({"travel"})
POLICIES = Path(__file__).parent / "policies"
BASELINES = {"allow-all": str(POLICIES / "allow_all.yaml"),
             "deny-side-effects": str(POLICIES / "deny_side_effects.yaml")}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (95% with the default z)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    # the bounds at k = 0 and k = n are exactly 0 and 1 (the arithmetic leaves 1e-16 either way)
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def tally(c: Counter[str], prefix: str, run: Run) -> None:
    for call in run.calls:
        key = f"{prefix}_{call.origin}"
        c[f"{key}_calls"] += 1
        c[f"{key}_blocked"] += call.outcome != EXECUTED
        c[f"{key}_step_up"] += call.outcome == "STEP_UP"
        c[f"{key}_defer"] += call.outcome == "DEFER"


def run_benign(runner: SuiteRunner, guards: dict[str, Any], *, max_user: int | None) -> dict[str, Counter[str]]:
    """The suite's benign runs (no injection; the same for every attack): counts per policy."""
    counts: dict[str, Counter[str]] = {name: Counter() for name in guards}
    for ut in list(runner.suite.user_tasks.values())[:max_user]:
        env = runner.benign_env(ut)
        for name, guard in guards.items():
            r = runner.run(ut, None, env, guard)
            c = counts[name]
            c["benign_runs"] += 1
            c["benign_utility"] += r.utility
            c["benign_broken"] += bool(r.blocked())
            tally(c, "benign", r)
    return counts


def run_suite(runner: SuiteRunner, guards: dict[str, Any], *, max_user: int | None,
              max_injection: int | None, benign: dict[str, Counter[str]] | None = None) -> dict[str, Any]:
    """Every pair of the runner's current attack (plus the benign runs, unless `benign` already holds them)."""
    users = list(runner.suite.user_tasks.values())[:max_user]
    injections = list(runner.suite.injection_tasks.values())[:max_injection]
    if runner.dos:  # AgentDojo runs a DoS attack with the first injection task only (its goal is unused)
        injections = injections[:1]
    if benign is None:
        benign = run_benign(runner, guards, max_user=max_user)
    counts: dict[str, Counter[str]] = {name: Counter(benign[name]) for name in guards}
    excluded: Counter[str] = Counter()
    excluded_pairs: list[str] = []
    for ut in users:
        for it in injections:
            pair = f"{ut.ID}/{it.ID}"
            env = runner.attack_env(ut, it)
            if not runner.dos and not it.ground_truth(env.model_copy(deep=True)):
                excluded["empty_attack"] += 1
                excluded_pairs.append(f"{pair}: no attacker call")
                continue
            oracle = runner.run(ut, it, env, None)
            if oracle.security:
                excluded["succeeds_without_attacker_calls"] += 1
                excluded_pairs.append(f"{pair}: succeeds with every attacker call withheld")
                continue
            for name, guard in guards.items():
                r = runner.run(ut, it, env, guard)
                c = counts[name]
                c["pairs"] += 1
                c["pairs_injected"] += r.injected
                c["attack_success"] += bool(r.security)
                c["utility_under_attack"] += r.utility
                tally(c, "attack", r)
    return {"attack": runner.attack_name, "users": len(users), "injection_tasks": len(injections),
            "excluded": dict(excluded), "excluded_pairs": excluded_pairs,
            "policies": {n: dict(c) for n, c in counts.items()}}


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def metrics(c: dict[str, int]) -> dict[str, Any]:
    g = c.get
    benign_calls = g("benign_user_calls", 0)
    attack_calls = g("attack_user_calls", 0) + g("attack_attack_calls", 0)
    return {
        "attack_success": rate(g("attack_success", 0), g("pairs", 0)),
        "utility_under_attack": rate(g("utility_under_attack", 0), g("pairs", 0)),
        "benign_utility": rate(g("benign_utility", 0), g("benign_runs", 0)),
        "benign_breakage": rate(g("benign_broken", 0), g("benign_runs", 0)),
        "benign_call_false_positive": rate(g("benign_user_blocked", 0), benign_calls),
        "benign_step_up": rate(g("benign_user_step_up", 0), benign_calls),
        "benign_defer": rate(g("benign_user_defer", 0), benign_calls),
        "attacker_calls_blocked": rate(g("attack_attack_blocked", 0), g("attack_attack_calls", 0)),
        "user_calls_blocked_under_attack": rate(g("attack_user_blocked", 0), g("attack_user_calls", 0)),
        "attack_run_step_up": rate(g("attack_user_step_up", 0) + g("attack_attack_step_up", 0), attack_calls),
        "attack_run_defer": rate(g("attack_user_defer", 0) + g("attack_attack_defer", 0), attack_calls),
        "pairs_injection_reached": rate(g("pairs_injected", 0), g("pairs", 0)),
    }


ROWS = [
    ("attack success (ASR)", "attack_success"),
    ("utility under attack", "utility_under_attack"),
    ("benign utility", "benign_utility"),
    ("benign task breakage", "benign_breakage"),
    ("per-call false positives (benign)", "benign_call_false_positive"),
    ("STEP_UP rate (benign calls)", "benign_step_up"),
    ("DEFER rate (benign calls)", "benign_defer"),
    ("STEP_UP rate (calls under attack)", "attack_run_step_up"),
    ("DEFER rate (calls under attack)", "attack_run_defer"),
    ("attacker calls blocked", "attacker_calls_blocked"),
    ("pairs where the agent saw the injection", "pairs_injection_reached"),
]


def fmt(m: dict[str, Any]) -> str:
    if not m["n"]:
        return "-"
    lo, hi = m["ci95"]
    return f"{m['rate'] * 100:.1f}% ({m['k']}/{m['n']}; {lo * 100:.1f}-{hi * 100:.1f})"


def label(name: str) -> str:
    """A policy's column heading: a file's stem (`policies/x.yaml` -> `x`), a builtin as given."""
    return Path(name).stem if name.endswith((".yaml", ".yml")) else name


def markdown(suite: str, res: dict[str, Any], names: list[str]) -> str:
    per = {n: metrics(res["policies"][n]) for n in names}
    any_policy = res["policies"][names[0]]
    fold = " (validation fold: not tuned on)" if suite in VALIDATION else ""
    ex = res["excluded"]
    dos = ""
    if res["attack"] in DOS_ATTACKS:
        dos = " (denial of service: the agent resists; success = the user task fails)"
    lines = [
        f"### {suite}, attack {res['attack']}{dos}{fold}",
        "",
        f"{res['users']} user tasks, {res['injection_tasks']} injection tasks: {any_policy.get('pairs', 0)} pairs "
        f"scored; excluded {ex.get('empty_attack', 0)} with no attacker call and "
        f"{ex.get('succeeds_without_attacker_calls', 0)} that succeed with every attacker call withheld.",
        "",
        "| metric | " + " | ".join(map(label, names)) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row, key in ROWS:
        lines.append(f"| {row} | " + " | ".join(fmt(per[n][key]) for n in names) + " |")
    return "\n".join(lines)


def summary(by_attack: dict[str, dict[str, Any]], names: list[str]) -> str:
    """Attack success per attack and suite, one column per policy (rate, k/n)."""
    lines = ["### attack success per attack", "", "| attack | suite | " + " | ".join(map(label, names)) + " |",
             "|---|---|" + "---|" * len(names)]
    for attack, suites in by_attack.items():
        for suite, res in suites.items():
            cells = []
            for n in names:
                m = res["metrics"][n]["attack_success"]
                cells.append(f"{m['rate'] * 100:.1f}% ({m['k']}/{m['n']})" if m["n"] else "-")
            lines.append(f"| {attack} | {suite} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.agentdojo", description=__doc__.split("\n")[0])
    ap.add_argument("--suites", nargs="+", default=["all"], help="all, or any of " + ", ".join(SUITES))
    ap.add_argument("--policy", action="append", dest="policies",
                    help="policy to measure (a file or builtin:NAME); repeatable; default builtin:default")
    ap.add_argument("--attack", action="append", dest="attacks", choices=ATTACKS, metavar="NAME",
                    help="AgentDojo attack filling the injection vectors; repeatable; default important_instructions; "
                         "one of " + ", ".join(ATTACKS))
    ap.add_argument("--quick", action="store_true", help="the first 3 user tasks x first 3 injection tasks per suite")
    ap.add_argument("--max-user-tasks", type=int)
    ap.add_argument("--max-injection-tasks", type=int)
    ap.add_argument("--json", type=Path, help="write every count and rate here")
    args = ap.parse_args(argv)
    names = list(SUITES) if "all" in args.suites else args.suites
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        ap.error(f"unknown suite {unknown[0]}, expected one of {', '.join(SUITES)}")
    max_user = args.max_user_tasks or (3 if args.quick else None)
    max_inj = args.max_injection_tasks or (3 if args.quick else None)
    policies = {p: p for p in (args.policies or ["builtin:default"])} | BASELINES
    attacks = list(dict.fromkeys(args.attacks or ["important_instructions"]))
    by_attack: dict[str, dict[str, Any]] = {a: {} for a in attacks}
    out: dict[str, Any] = {"agentdojo_benchmark_version": VERSION, "policies": list(policies), "attacks": by_attack,
                           "victim_model_name": _Stub.name, "suites": by_attack[attacks[0]]}
    try:
        import agentdojo  # type: ignore[import-untyped]
        out["agentdojo_package"] = getattr(agentdojo, "__version__", None) or _dist_version("agentdojo")
    except ImportError:
        print("agentdojo is not installed: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aarmor-agentdojo-") as home:
        guards = {name: open_guard(src, f"{home}/{i}") for i, (name, src) in enumerate(policies.items())}
        try:
            for suite in load_suites(VERSION, names):
                runner = SuiteRunner(suite, attacks[0])
                t = time.monotonic()
                benign = run_benign(runner, guards, max_user=max_user)
                for attack in attacks:
                    runner.attack_name = attack
                    res = run_suite(runner, guards, max_user=max_user, max_injection=max_inj, benign=benign)
                    res["seconds"] = round(time.monotonic() - t, 1)  # the first attack's includes the benign runs
                    t = time.monotonic()
                    res["metrics"] = {n: metrics(res["policies"][n]) for n in policies}
                    by_attack[attack][suite.name] = res
                    print(markdown(suite.name, res, list(policies)), end="\n\n", flush=True)
        finally:
            for g in guards.values():
                g.close()
    out["seconds"] = round(time.monotonic() - t0, 1)
    if len(attacks) > 1:
        print(summary(by_attack, list(policies)), end="\n\n")
    print(f"{len(attacks)} attack(s) x {len(names)} suites in {out['seconds']} s "
          f"(agentdojo {out['agentdojo_package']}, benchmark {VERSION})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
