"""What every sink needs: strict validation of its `options`, and formatting that fails as a `SinkError`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from aarmor.errors import ConfigError
from aarmor.telemetry import SinkRejected, TelemetryEvent

__all__ = ["SinkOptions", "formatted", "parse_options"]

M = TypeVar("M", bound=BaseModel)


class SinkOptions(BaseModel):
    """Base of every sink's options: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def parse_options(model: type[M], kind: str, name: str, options: Mapping[str, Any]) -> M:
    """`options` validated by `model`.

    Raises:
        ConfigError: `telemetry sink `<name>` (<kind>): option `<key>`: <what is wrong>` for every problem.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(options)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            parts.append(f"option `{loc}`: {msg}")
        raise ConfigError(f"telemetry sink `{name}` ({kind}): " + "; ".join(parts)) from exc


def formatted(formatter: Callable[[TelemetryEvent], str], event: TelemetryEvent, sink: str) -> str:
    """`formatter(event)`; a formatter that raises is a `SinkRejected` naming the event (`sink` names the sink):
    it would raise again on every retry."""
    try:
        return formatter(event)
    except Exception as exc:
        raise SinkRejected(f"{sink}: formatting event `{event.event_id}` failed: {type(exc).__name__}: {exc}") from exc
