"""Shared fixtures: every test gets its own AARMOR_HOME so nothing touches the user's data."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "aarmor-home"
    monkeypatch.setenv("AARMOR_HOME", str(home))
    monkeypatch.delenv("AARMOR_CONFIG", raising=False)
    return home


@pytest.fixture
def zero_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., object]]:
    """`Guard.open(**overrides)` with nothing configured: no config file, the isolated AARMOR_HOME."""
    from aarmor import Guard

    monkeypatch.chdir(tmp_path)  # no ./aarmor.yaml
    opened: list[Guard] = []

    def open_(**overrides: object) -> Guard:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the one-time development-key notice
            g = Guard.open(**overrides)
        opened.append(g)
        return g

    yield open_
    for g in opened:
        g.close()


@pytest.fixture
def make_guard(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Open a real Guard (SQLite store, generated Ed25519 key) on a policy given as YAML text."""
    from aarmor import Guard
    from aarmor.config import load_config

    opened: list[object] = []

    def factory(policy_text: str | None = None, **overrides: object) -> object:
        if policy_text is not None:
            path = tmp_path / f"policy-{len(opened)}.yaml"
            path.write_text(policy_text)
            overrides.setdefault("policy", str(path))
        overrides.setdefault("store", f"sqlite:///{tmp_path / 'aarmor.db'}")
        overrides.setdefault("keys", str(tmp_path / "keys"))
        parts = {k: overrides.pop(k) for k in ("scorer", "verifier", "clock", "recover",
                                               "policy_reload_interval") if k in overrides}
        with warnings.catch_warnings():
            # the one-time development-key warning is asserted in tests/receipts, not here
            warnings.simplefilter("ignore")
            guard = Guard(load_config(**overrides), **parts)
        opened.append(guard)
        return guard

    yield factory
    for g in opened:
        g.close()  # type: ignore[attr-defined]


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed `aarmor` console script for real, in a subprocess (no in-process shortcuts)."""
    exe = Path(sys.executable).parent / "aarmor"

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                              timeout=120, input=input)

    return run
