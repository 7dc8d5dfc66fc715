"""`aarmor hook claude-code`: the Claude Code hook command (docs/claude-code.md).

Claude Code runs it once per configured event with the event's JSON on stdin. The answer (stdout JSON, exit
code, stderr) comes from `aarmor.adapters.claude_code.handle`; this module adds the options and a watchdog:
whatever hangs (stdin never closed, a stuck call), the process answers exit 2 ("blocked") when its
`--timeout` ends, before Claude Code's own hook timeout would end it without an answer.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "claude_code"]

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

#: seconds between the end of the hook's budget and the watchdog's exit
WATCHDOG_GRACE = 0.5


def _default_state_dir() -> Path:
    env = os.environ.get("AARMOR_HOME")
    if env:  # the same home aarmor.config.default_home names, without importing the config stack
        return Path(env).expanduser() / "claude-code-hook"
    import platformdirs

    return Path(platformdirs.user_data_dir("aarmor", appauthor=False)) / "claude-code-hook"


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment: the session then has no human principal
        return None


@app.command(name="claude-code")
def claude_code(
    url: Annotated[str, typer.Option("--url", envvar="AARMOR_URL",
                                     help="The aarmor server (`aarmor serve`).")] = "http://127.0.0.1:8731",
    token: Annotated[str, typer.Option("--token", envvar="AARMOR_TOKEN", show_default=False,
                                       help="An aarmor agent token (prefer the environment variable).")] = "",
    timeout: Annotated[float, typer.Option("--timeout", envvar="AARMOR_HOOK_TIMEOUT", min=1.0, max=3600.0,
                                           help="Seconds this hook may take in all, approvals and deferrals "
                                                "included; keep it below the hook's `timeout` in Claude "
                                                "Code's settings.")] = 50.0,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", envvar="AARMOR_HOOK_STATE",
                                                   help="Where tool calls are mapped to aarmor actions "
                                                        "(default: $AARMOR_HOME/claude-code-hook).")] = None,
    human: Annotated[str | None, typer.Option("--human", envvar="AARMOR_HUMAN",
                                              help="The human principal of the sessions (default: the login "
                                                   "name; a claim, not verified).")] = None,
    agent: Annotated[str, typer.Option("--agent", help="The agent identity of the sessions.")] = "claude-code",
) -> None:
    """Mediate one Claude Code hook event (stdin JSON) through a running aarmor server."""
    from aarmor.adapters.claude_code import HookConfig, handle

    start = time.monotonic()
    lock = threading.Lock()
    answered = False

    def watchdog() -> None:
        with lock:
            if not answered:
                sys.stderr.write(f"aarmor hook claude-code: no answer within --timeout {timeout:g} s; blocked "
                                 "(fail closed).\n")
                sys.stderr.flush()
                os._exit(2)

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    cfg = HookConfig(url=url, token=token, state_dir=state_dir or _default_state_dir(), timeout=timeout,
                     human=human if human is not None else _user(), agent=agent)
    raw = sys.stdin.buffer.read()
    answer = handle(raw, cfg, start + timeout - WATCHDOG_GRACE)
    with lock:
        answered = True
        timer.cancel()
        if answer.stdout:
            sys.stdout.write(answer.stdout)
            sys.stdout.flush()
        if answer.stderr:
            sys.stderr.write(answer.stderr)
            sys.stderr.flush()
    raise typer.Exit(answer.exit_code)
