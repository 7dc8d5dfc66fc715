"""`file`: formatted events appended to a file, one per line, rotated by size.

Each batch is written and fsync'd before `send` returns, so a delivered event is on disk. Rotation keeps
`backups` older files (`events.jsonl.1` is the newest of them); a line is never split across files,
and a write the disk could not take whole (disk full) is cut back off before the batch is retried.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError
from aarmor.telemetry.events import TelemetryEvent

__all__ = ["FileSink", "build"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    path: str = Field(min_length=1)
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    backups: int = Field(5, ge=0, le=1000)


class FileSink:
    def __init__(self, name: str, formatter: Callable[[TelemetryEvent], str], path: Path, max_bytes: int,
                 backups: int) -> None:
        self.name = name
        self._format = formatter
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    def send(self, events: Sequence[TelemetryEvent]) -> None:
        data = "".join(self._format(e) + "\n" for e in events).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # a full disk may take part of the batch: cut it off again, so that the retry (the cursor
                # did not move) neither splits a line nor writes an event twice
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise SinkError(f"telemetry file `{self.path}`: {exc.strerror or exc}") from exc

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink()
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        pass


def build(name: str, formatter: Callable[[TelemetryEvent], str], options: Mapping[str, Any]) -> FileSink:
    """Raises:
    ConfigError: options the sink does not know or accept.
    """
    try:
        o = _Options.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(f"telemetry sink `{name}` (file): " + "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors())) from None
    return FileSink(name, formatter, Path(o.path), o.max_bytes, o.backups)
