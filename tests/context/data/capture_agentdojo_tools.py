"""Capture the tool definitions of AgentDojo's four suites (benchmark version v1.2.2) for test_tool_risk.py.

Run from the repository root with agentdojo installed (`.venv/bin/pip install -e '.[bench]'`):

    .venv/bin/python tests/context/data/capture_agentdojo_tools.py > tests/context/data/agentdojo_tools.json

Prints {suite: [{name, description, parameters}]} where `parameters` is the JSON schema AgentDojo gives
the model (pydantic's `model_json_schema()` of the tool's argument model). The tests read this file, so
they do not need agentdojo.
"""

from __future__ import annotations

import json
import sys
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    from agentdojo.task_suite import get_suites

    out = {}
    for name in ("workspace", "travel", "banking", "slack"):
        suite = get_suites("v1.2.2")[name]
        out[name] = [{"name": t.name, "description": t.description,
                      "parameters": t.parameters.model_json_schema()} for t in suite.tools]
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
