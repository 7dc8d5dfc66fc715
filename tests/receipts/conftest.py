from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aarmor.receipts import Keyring, ReceiptSigner
from tests.receipts.helpers import STEPS, open_keyring, sign_chain


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return open_keyring(tmp_path / "keys")


@pytest.fixture
def signer(keyring: Keyring) -> ReceiptSigner:
    return ReceiptSigner(keyring)


@pytest.fixture
def chain(signer: ReceiptSigner) -> list[dict[str, Any]]:
    """Four signed, chained receipts of one session, as exported (bodies)."""
    return [r.body for r in sign_chain(signer, STEPS)]
