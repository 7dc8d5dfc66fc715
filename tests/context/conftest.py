"""Fixtures: real stores (in-memory and SQLite files) and a classifier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aarmor.context import Classifier
from aarmor.store import Store, open_store


@pytest.fixture
def classifier() -> Classifier:
    return Classifier(declared={"crm.query": ["PII"], "calc": [], "docs.read": ["PUBLIC"]})


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/aarmor.db"
    st = open_store(url)
    yield st
    st.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "aarmor.db"
