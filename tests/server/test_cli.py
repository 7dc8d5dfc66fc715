"""`aarmor tokens ...` and `aarmor serve` as installed console scripts (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.server.conftest import free_port

CLI = Callable[..., subprocess.CompletedProcess[str]]


def test_tokens_create_list_revoke(cli: CLI, tmp_path: Path) -> None:
    made = cli("tokens", "create", "bob@company.com", "--role", "approver")
    assert made.returncode == 0, made.stderr
    token_id, secret = made.stdout.split()[1], made.stdout.strip().splitlines()[-1]
    assert secret.startswith("aat_") and "shown once" in made.stderr
    listed = cli("tokens", "list", "--json")
    [tok] = json.loads(listed.stdout)
    assert tok == {"token_id": token_id, "name": "bob@company.com", "role": "approver",
                   "created_at": tok["created_at"], "revoked_at": None}
    assert secret not in listed.stdout and secret not in cli("tokens", "list").stdout
    assert cli("tokens", "create", "x", "--role", "root").returncode == 2
    assert cli("tokens", "revoke", token_id).returncode == 0
    assert json.loads(cli("tokens", "list", "--json").stdout)[0]["revoked_at"] is not None
    again = cli("tokens", "revoke", token_id)
    assert again.returncode == 2 and "no active token" in again.stderr


def test_serve_runs_the_api_and_says_how_to_create_an_admin_token(cli: CLI, tmp_path: Path) -> None:
    port = free_port()
    exe = Path(sys.executable).parent / "aarmor"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert r.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
        text = log.read_text()
        assert "aarmor tokens create NAME --role admin" in text and "aat_" not in text
        # a token made while it runs works at once (same store)
        secret = cli("tokens", "create", "agent-1", "--role", "agent").stdout.strip().splitlines()[-1]
        made = httpx.post(f"http://127.0.0.1:{port}/v1/sessions", json={"identity": {"human": "a@b.c"}},
                          headers={"Authorization": f"Bearer {secret}"})
        assert made.status_code == 201
    finally:
        proc.terminate()
        proc.wait(20)
    secret_file = Path(os.environ["AARMOR_HOME"]) / "server-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_serve_without_the_server_extra_says_how_to_install_it(tmp_path: Path) -> None:
    code = ("import sys\n"
            "for m in ('uvicorn', 'starlette', 'jinja2'): sys.modules[m] = None\n"
            "sys.argv = ['aarmor', 'serve']\n"
            "from aarmor.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'aarmor[server]'" in r.stderr, r.stderr


def test_core_import_does_not_load_the_server_stack() -> None:
    code = "import sys, aarmor, aarmor.cli; aarmor.Guard; print(sorted(m for m in ('starlette', 'uvicorn', " \
           "'jinja2') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_unsafe_server_secret_permissions_are_refused(tmp_path: Path) -> None:
    from aarmor.errors import ConfigError
    from aarmor.server.app import load_secret

    first = load_secret(tmp_path)
    assert load_secret(tmp_path) == first and (tmp_path / "server-secret").stat().st_mode & 0o777 == 0o600
    (tmp_path / "server-secret").chmod(0o644)
    try:
        load_secret(tmp_path)
    except ConfigError as exc:
        assert "unsafe permissions" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a world-readable secret was accepted")
