"""Telemetry sinks (see `aarmor.telemetry`): each module validates its own options and has a `build`."""
