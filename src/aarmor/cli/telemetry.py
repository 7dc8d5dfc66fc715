"""`aarmor telemetry export|status`: telemetry for historical analysis, and the live spool's state.

`export` projects events from the store's context logs and receipts (`aarmor.telemetry.events.project`,
the same projection live export uses, so the events and their ids are the same), keeps those recorded in
[--since, --until), orders them by time and writes one formatted event per line. It reads the store only:
nothing is spooled or marked delivered. A progress bar (on stderr) counts sessions.

Exit codes: 0 done; 2 bad input (a time without a timezone, --since after --until, an unknown format).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from aarmor.cli._common import ConfigOption, JsonOption, fail, opened_store

__all__ = ["app"]

app = typer.Typer(help="Export telemetry events; show the spool.", no_args_is_help=True)


def _when(text: str | None, what: str) -> str | None:
    """A `format_ts` string (fixed width: compares as text with recorded times), or None."""
    if text is None:
        return None
    from aarmor.canonical import format_ts, parse_ts

    try:
        ts = parse_ts(text)
    except ValueError:
        raise fail(f"{what} `{text}` is not an ISO 8601 time with a timezone (e.g. 2026-11-29T00:00:00Z)") from None
    return format_ts(ts)


def export_events(store: Any, *, since: str | None, until: str | None,
                  export_parameters: frozenset[str] = frozenset(), progress: Any = None) -> Iterator[Any]:
    """Events projected from every session's log and receipts, recorded in [since, until), by time."""
    from aarmor.telemetry.events import project

    sessions = store.log_sessions()
    out = []
    for sid in sessions:
        logs = list(store.read_log(sid))
        receipts = list(store.read_receipts(sid))
        for ev in project(logs, receipts, export_parameters=export_parameters):
            if (since is None or ev.time >= since) and (until is None or ev.time < until):
                out.append(ev)
        if progress is not None:
            progress()
    out.sort(key=lambda e: (e.time, e.session_id or "", e.event_id))
    yield from out


@app.command("export")
def export(
    since: Annotated[str | None, typer.Option(help="Only events recorded at or after this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only events recorded before this time (ISO 8601).")] = None,
    format: Annotated[str, typer.Option("--format", help="jsonl | ocsf | cef")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    config: ConfigOption = None,
) -> None:
    """Export the events of the store's history, one formatted event per line."""
    from rich.progress import Progress

    from aarmor.config import load_config
    from aarmor.telemetry.formats import FORMATS, format_event

    if format not in FORMATS:
        raise fail(f"--format `{format}` is not one of {', '.join(FORMATS)}")
    lo, hi = _when(since, "--since"), _when(until, "--until")
    if lo is not None and hi is not None and lo >= hi:
        raise fail("--since must be before --until")
    allowed = frozenset(load_config(config).telemetry.export_parameters)
    out = output.open("w", encoding="utf-8") if output is not None else sys.stdout
    n = 0
    try:
        with opened_store(config) as store, Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("sessions", total=len(store.log_sessions()))
            for ev in export_events(store, since=lo, until=hi, export_parameters=allowed,
                                    progress=lambda: bar.advance(task)):
                out.write(format_event(ev, format) + "\n")
                n += 1
    finally:
        if output is not None:
            out.close()
    typer.echo(f"exported {n} events", err=True)


@app.command("status")
def status(config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """The spool: events waiting, and each configured sink's cursor."""
    import json

    from aarmor.config import load_config

    cfg = load_config(config)
    with opened_store(config) as store:
        count, low, top = store.telemetry_span()
        sinks = {s.name: store.telemetry_cursor(s.name) for s in cfg.telemetry.sinks}
    view = {"spooled": count, "lowest_seq": low, "highest_seq": top,
            "sinks": [{"name": k, "cursor": v, "behind": max(0, top - v)} for k, v in sinks.items()]}
    if json_out:
        typer.echo(json.dumps(view))
        return
    typer.echo(f"spool: {count} events waiting (seq {low}-{top})" if count else f"spool: empty (last seq {top})")
    for s in view["sinks"]:
        typer.echo(f"  {s['name']}: delivered up to {s['cursor']}, {s['behind']} behind")
    if not sinks:
        typer.echo("  no sinks configured (telemetry.sinks)")

