"""The README's framework snippets are the ones the framework tests run.

Each door's doc has a "README snippet" section whose code block a test executes as written
(tests/adapters_langchain/test_readme_snippet.py, tests/adapters_openai_agents/test_readme_snippet.py,
tests/adapters_claude_code/test_settings_snippet.py, tests/ingest/test_readme_snippet.py). This test holds
the README to those same blocks, so the README never shows code no test runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snippet(doc: str, lang: str) -> str:
    section = (ROOT / doc).read_text().split("## README snippet", 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    assert blocks, f"{doc}: no ```{lang} block in its README snippet section"
    return blocks[0]


@pytest.mark.parametrize("doc,lang", [
    ("docs/frameworks-langchain.md", "python"),
    ("docs/frameworks-openai-agents.md", "python"),
    ("docs/claude-code.md", "json"),
    ("docs/ingest-otlp.md", "bash"),
])
def test_the_readme_shows_the_snippet_its_door_s_test_runs(doc: str, lang: str) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Protect the agent you already have", 1)[1].split("\n## ", 1)[0]
    assert f"```{lang}\n{_snippet(doc, lang)}```" in section, f"README's snippet differs from {doc}'s"
