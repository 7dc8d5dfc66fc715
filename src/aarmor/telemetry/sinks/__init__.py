"""Telemetry sinks (AARM R8; docs/telemetry-sinks.md): one module per sink type, each with a factory

    build(name: str, formatter: Callable[[TelemetryEvent], str], options: Mapping[str, Any]) -> Sink

that validates its own `options` strictly (unknown keys and bad values raise `ConfigError` naming the key).
`formatter` turns one event into its text in the configured format (jsonl, ocsf, cef); sinks never choose
the format themselves.
"""
