"""The "README snippet" of docs/ingest-otlp.md, run as written: the token and receiver commands as real
`aarmor` processes, the exporter variables as the environment of a real agent process (the Python snippet,
whose SDK exporter reads them the way Claude Code's does), then `aarmor audit timeline` on the result."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tests.server.conftest import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "ingest-otlp.md"
POLICY = """
policy: {id: snippet, version: "1", default: ALLOW, internal_domains: [example.com]}
rules:
  - id: external-mail-needs-a-human
    match: {tool: send_email}
    action: STEP_UP
    approvers: [leads]
    reason: mail leaving the company needs a lead
"""


def _snippet() -> tuple[list[str], str]:
    section = DOC.read_text().split("## README snippet", 1)[1]
    bash, python = re.findall(r"```(?:bash|python)\n(.*?)```", section, re.S)
    return [ln for ln in bash.splitlines() if ln.strip() and not ln.startswith("#")], python


def test_the_readme_snippet_records_an_observed_receipt(cli: Callable[..., subprocess.CompletedProcess[str]],
                                                        tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "aarmor.yaml").write_text(f"store: sqlite:///{tmp_path / 'aarmor.db'}\nkeys: {tmp_path / 'keys'}\n"
                                          "policy: policy.yaml\n")
    lines, python = _snippet()
    port = str(free_port())
    token_cmd, ingest_cmd, *exports = lines
    made = cli(*shlex.split(token_cmd)[1:], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    env = dict(os.environ)
    for line in exports:
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0].replace("<the token's secret>", secret).replace("4318", port)
    argv = [str(Path(sys.executable).parent / "aarmor"), *shlex.split(ingest_cmd)[1:]]
    argv[argv.index("--port") + 1] = port
    proc = subprocess.Popen(argv, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    output: list[str] = []
    drain = threading.Thread(target=lambda: output.extend(proc.stderr or ()), daemon=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # uvicorn says when it listens: wait for that line, not for a time
            output.append(line)
            if "Uvicorn running on" in line:
                break
        assert proc.poll() is None, "".join(output)
        drain.start()  # keep reading, so the pipe never fills
        assert "observe-only" in "".join(output) and "never blocked" in "".join(output)
        agent = subprocess.run([sys.executable, "-c", python], env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=60)
        assert agent.returncode == 0, agent.stderr
    finally:
        proc.terminate()
        proc.wait(15)
        if drain.is_alive():
            drain.join(15)  # ends at the pipe's end of file, once the process has exited
        if proc.stderr is not None:
            proc.stderr.close()
    shown = cli("audit", "timeline", "--session", "my-session-1", "--config", str(tmp_path / "aarmor.yaml"),
                "--json")
    assert shown.returncode == 0, shown.stderr
    timeline = json.loads(shown.stdout)
    [event] = timeline["events"]
    assert timeline["ok"] is True
    assert (event["action"], event["result"], event["decision"]) == ("send_email", "OBSERVED", "STEP_UP")
    assert "would have decided STEP_UP" in "".join(output)  # the receiver's alert line
