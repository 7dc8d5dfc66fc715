"""The LangChain door is an extra: core aarmor imports without langchain/langgraph, and the door says which
extra to install when they are missing (checked in subprocesses that block those packages)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCK = "import sys\nfor m in ('langchain', 'langchain_core', 'langgraph'): sys.modules[m] = None\n"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                     os.environ.get("PYTHONPATH", "")])}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)


def test_core_imports_without_langchain() -> None:
    r = _run(BLOCK + "import aarmor, aarmor.adapters, aarmor.adapters.sdk, aarmor.cli; aarmor.Guard; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_core_import_does_not_load_langchain() -> None:
    r = _run("import sys, aarmor, aarmor.cli; aarmor.Guard; "
             "print(sorted(m for m in ('langchain', 'langchain_core', 'langgraph') if m in sys.modules))")
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_the_door_without_the_extra_names_it() -> None:
    r = _run(BLOCK + "import aarmor.adapters.langchain")
    assert r.returncode == 1 and "pip install 'aarmor[langchain]'" in r.stderr, r.stderr
