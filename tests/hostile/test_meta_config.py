"""Meta-tools declared in the configuration file (`tools.<name>.meta`) reach the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from aarmor.config import load_config
from aarmor.errors import ConfigError
from aarmor.metatools import BUILTIN_META_TOOLS, MetaTool


def test_meta_tools_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "aarmor.yaml"
    path.write_text("tools:\n  Execute_Tool: {meta: {tool: tool, arguments: arguments}}\n"
                    "  remote: {meta: {tool: [server, name]}}\n  plain: {operation: run}\n")
    cfg = load_config(path)
    assert cfg.meta_tools["execute_tool"] == MetaTool(("tool",), "arguments")
    assert cfg.meta_tools["remote"] == MetaTool(("server", "name"), None)
    assert "plain" not in cfg.meta_tools and set(BUILTIN_META_TOOLS) <= set(cfg.meta_tools)


@pytest.mark.parametrize("meta", ["{}", "{tool: []}", "{tool: ['']}", "{tool: x, extra: 1}"])
def test_bad_meta_declarations_are_config_errors(tmp_path: Path, meta: str) -> None:
    path = tmp_path / "aarmor.yaml"
    path.write_text(f"tools:\n  execute_tool: {{meta: {meta}}}\n")
    with pytest.raises(ConfigError, match="meta"):
        load_config(path)
