"""`aarmor policy check|test|explain`: load, test and explain policies.

Exit codes: 0 pass, 1 failures, 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aarmor.canonical import loads_strict
from aarmor.errors import AarmorError

if TYPE_CHECKING:  # the policy engine is imported by each command, so `aarmor --help` stays fast
    from aarmor.policy import PolicySet

__all__ = ["app"]

app = typer.Typer(help="Check, test and explain aarmor policies.", no_args_is_help=True, add_completion=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
Internal = Annotated[
    list[str] | None,
    typer.Option("--internal-domain", "-d", help="An internal domain for `external:` (repeatable)."),
]


def _console() -> Console:
    return Console(soft_wrap=True)


def _fail(msg: str, as_json: bool, code: int = 2) -> None:
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": msg}))
    else:
        Console(stderr=True).print(f"[bold red]error:[/] {msg}", markup=True, highlight=False)
    raise typer.Exit(code)


def _load(file: str, internal: list[str] | None) -> PolicySet:
    from aarmor.policy import load_builtin, load_policy

    if file.startswith("builtin:"):
        return load_builtin(file.removeprefix("builtin:"), internal_domains=internal or ())
    return load_policy(file, internal_domains=internal or ())


@app.command()
def check(
    file: Annotated[str, typer.Argument(help="Policy file, directory, or builtin:NAME.")],
    internal_domain: Internal = None,
    as_json: JsonFlag = False,
) -> None:
    """Load a policy strictly and print its id, version, hash, default posture and rule count."""
    try:
        p = _load(file, internal_domain)
    except AarmorError as exc:
        _fail(str(exc), as_json)
        return
    info = {
        "ok": True,
        "policy_id": p.policy_id,
        "version": p.version,
        "hash": p.hash,
        "default": p.default_decision.value,
        "rules": len(p.rules),
        "sources": list(p.sources),
        "intent_boundaries": sorted(p.boundaries),
    }
    if as_json:
        typer.echo(json.dumps(info))
        return
    t = Table(title=f"policy {file}: OK", show_header=False)
    for k in ("policy_id", "version", "hash", "default", "rules"):
        t.add_row(k, str(info[k]))
    _console().print(t)


@app.command("test")
def test_cases(
    file: Annotated[str, typer.Argument(help="Policy file, directory, or builtin:NAME.")],
    cases: Annotated[Path, typer.Argument(help="CASES.yaml")],
    internal_domain: Internal = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the cases of CASES.yaml against a policy; exit 1 if any fails."""
    try:
        p = _load(file, internal_domain)
        from aarmor.policy.cases import load_cases, run_cases

        loaded = load_cases(cases)
    except AarmorError as exc:
        _fail(str(exc), as_json)
        return
    report = run_cases(p, loaded)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "passed": len(report.results) - report.failed,
                    "failed": report.failed,
                    "policy_hash": p.hash,
                    "cases": [
                        {
                            "name": r.case.name,
                            "passed": r.passed,
                            "expected": r.case.expect,
                            "actual": r.decision.to_json(),
                            "mismatches": list(r.mismatches),
                        }
                        for r in report.results
                    ],
                },
                default=str,
            )
        )
    else:
        t = Table(
            title=f"{p.policy_id} {p.version}: {len(report.results) - report.failed}/"
            f"{len(report.results)} passed"
        )
        for col in ("", "case", "expected", "actual", "rule", "detail"):
            t.add_column(col)
        for r in report.results:
            want = str(r.case.expect.get("result", r.case.expect.get("decision", "")))
            t.add_row(
                "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                r.case.name,
                want,
                r.decision.result.value
                + (f" ({r.decision.defer_trigger})" if r.decision.defer_trigger else ""),
                r.decision.rule_id or "-",
                "; ".join(r.mismatches) or r.decision.reason,
            )
        _console().print(t)
    raise typer.Exit(0 if report.ok else 1)


@app.command("explain")
def explain_cmd(
    file: Annotated[str, typer.Argument(help="Policy file, directory, or builtin:NAME.")],
    action_file: Annotated[Path, typer.Argument(help="ACTION.json: {action: {...}, context: {...}}")],
    internal_domain: Internal = None,
    as_json: JsonFlag = False,
) -> None:
    """Show which rules matched, which did not and why, condition by condition."""
    try:
        p = _load(file, internal_domain)
        raw: Any = loads_strict(action_file.read_text(encoding="utf-8"))
        from aarmor.policy.cases import case_action, case_snapshot, parse_case

        case = parse_case(raw, source=action_file.name)
        action, snapshot = case_action(case), case_snapshot(case)
    except (AarmorError, OSError, ValueError, TypeError, KeyError) as exc:
        _fail(
            str(exc) if not isinstance(exc, OSError) else f"cannot read {action_file}: {exc.strerror}",
            as_json,
        )
        return
    from aarmor.policy.explain import explain as explain_decision

    ex = explain_decision(action, snapshot, p, now=case.now, confidence_threshold=case.confidence_threshold)
    if as_json:
        typer.echo(json.dumps(ex.to_json()))
        return
    d = ex.decision
    con = _console()
    con.print(
        f"[bold]{action.name}[/] -> [bold]{d.result.value}[/] (rule {d.rule_id or '-'}): {d.reason}",
        highlight=False,
    )
    if d.errors:
        con.print("errors: " + "; ".join(d.errors), highlight=False)
    for r in ex.rules:
        t = Table(
            title=f"rule {r.rule_id} ({r.decision}, priority {r.priority}, {r.classification}): {r.outcome}",
            title_justify="left",
        )
        t.add_column("condition")
        t.add_column("outcome")
        for cond, out in r.conditions:
            colour = "green" if out == "true" else "red" if out == "false" else "yellow"
            t.add_row(cond, f"[{colour}]{out}[/]")
        con.print(t)
    con.print(f"{ex.other_rules} rule(s) about other tools not considered", highlight=False)
