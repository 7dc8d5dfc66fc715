"""Telemetry sinks by type. Each module has `build(name, formatter, options) -> Sink` and validates its own
options (unknown keys refused); modules are imported only when a sink of their type is configured."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from aarmor.errors import ConfigError
from aarmor.telemetry import Sink
from aarmor.telemetry.events import TelemetryEvent

__all__ = ["DEFAULT_FORMAT", "SINK_TYPES", "build_sink"]

#: type -> "module:function" building it
SINK_TYPES = {
    "file": "aarmor.telemetry.sinks.file:build",
    "syslog": "aarmor.telemetry.sinks.syslog:build",
    "webhook": "aarmor.telemetry.sinks.webhook:build",
    "splunk_hec": "aarmor.telemetry.sinks.splunk_hec:build",
    "otlp": "aarmor.telemetry.sinks.otlp:build",
}
#: the format a sink type gets when the configuration names none
DEFAULT_FORMAT = {"file": "jsonl", "syslog": "cef", "webhook": "jsonl", "splunk_hec": "jsonl", "otlp": "jsonl"}


def build_sink(type_: str, name: str, fmt: str, options: Mapping[str, Any]) -> Sink:
    """Raises:
    ConfigError: an unknown type or format, options the sink refuses, or a sink whose extra is missing.
    """
    from aarmor.telemetry.formats import FORMATS, format_event

    if type_ not in SINK_TYPES:
        raise ConfigError(f"telemetry sink `{name}`: type `{type_}` is not one of {', '.join(SINK_TYPES)}")
    if fmt not in FORMATS:
        raise ConfigError(f"telemetry sink `{name}`: format `{fmt}` is not one of {', '.join(FORMATS)}")
    module, _, fn = SINK_TYPES[type_].partition(":")
    try:
        factory = getattr(importlib.import_module(module), fn)
    except ImportError as exc:
        raise ConfigError(f"telemetry sink `{name}` (type {type_}) cannot load: {exc}") from exc

    def formatter(ev: TelemetryEvent) -> str:
        return format_event(ev, fmt)

    built: Sink = factory(name, formatter, options)
    return built


Formatter = Callable[[TelemetryEvent], str]
