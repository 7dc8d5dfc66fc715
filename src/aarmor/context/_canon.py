"""Re-export of the canonical fast path (it moved to `aarmor.canonical`)."""

from aarmor.canonical import plain_and_bytes

__all__ = ["plain_and_bytes"]
