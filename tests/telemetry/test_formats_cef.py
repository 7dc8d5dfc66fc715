"""CEF output: every sample event gives one line that a strict CEF parser (written here from the spec, so it
shares no code with the formatter) reads back to the same values, hostile text included."""

from __future__ import annotations

import re

import pytest

from aarmor import __version__
from aarmor.telemetry.events import TelemetryEvent
from aarmor.telemetry.formats import format_event
from aarmor.telemetry.formats.cef import to_cef
from tests.telemetry.sample_events import HOSTILE, sample_events

EVENTS = sample_events()
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


class CEFSyntaxError(ValueError):
    pass


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """(7 header fields, extension) of a CEF:0 line, strictly: unknown escapes, raw line breaks, an
    unescaped `=` inside a value or a duplicated key are errors."""
    if "\n" in line or "\r" in line:
        raise CEFSyntaxError("a raw line break")
    header: list[str] = []
    field, i = [], 0
    while len(header) < 7:
        if i >= len(line):
            raise CEFSyntaxError("header has fewer than 7 fields")
        c = line[i]
        if c == "\\":
            nxt = line[i + 1: i + 2]
            if nxt not in ("\\", "|"):
                raise CEFSyntaxError(f"bad header escape \\{nxt}")
            field.append(nxt)
            i += 2
            continue
        if c == "|":
            header.append("".join(field))
            field = []
        else:
            field.append(c)
        i += 1
    if header[0] != "CEF:0":
        raise CEFSyntaxError("not CEF:0")
    return header, _parse_extension(line[i:])


def _parse_extension(text: str) -> dict[str, str]:
    pieces, cur, i = [], [], 0
    while i < len(text):  # split on unescaped `=`, keeping escapes for the value decoder
        if text[i] == "\\":
            cur.append(text[i: i + 2])
            i += 2
        elif text[i] == "=":
            pieces.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(text[i])
            i += 1
    pieces.append("".join(cur))
    if len(pieces) < 2:
        return {}
    out: dict[str, str] = {}
    key = pieces[0]
    for n, piece in enumerate(pieces[1:], start=1):
        if n < len(pieces) - 1:
            if " " not in piece:
                raise CEFSyntaxError(f"no key after value {piece!r} (an unescaped `=`)")
            raw, next_key = piece.rsplit(" ", 1)
        else:
            raw, next_key = piece, ""
        if not _KEY.match(key) or key in out:
            raise CEFSyntaxError(f"bad or repeated key {key!r}")
        out[key] = _unescape_value(raw)
        key = next_key
    return out


def _unescape_value(raw: str) -> str:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\":
            nxt = raw[i + 1: i + 2]
            mapped = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}.get(nxt)
            if mapped is None:
                raise CEFSyntaxError(f"bad extension escape \\{nxt}")
            out.append(mapped)
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def _cef_text(text: str) -> str:
    """What CEF can carry of `text`: line separators it cannot escape become spaces."""
    return text.replace("\u2028", " ").replace("\u2029", " ")


def _id(e: TelemetryEvent) -> str:
    return f"{e.type}:{(e.decision or {}).get('result') or ''}:{e.event_id[-6:]}"


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_round_trip(event: TelemetryEvent) -> None:
    line = format_event(event, "cef")
    assert line == to_cef(event)
    header, ext = parse_cef(line)
    assert header[1:5] == ["aarmor", "aarmor", __version__, event.type]
    assert 0 <= int(header[6]) <= 10
    assert ext["externalId"] == event.event_id and ext["cat"] == event.type
    assert int(ext["rt"]) > 1_700_000_000_000
    act, ident, dec = event.action or {}, event.identity or {}, event.decision or {}
    if ident.get("human"):
        assert ext["suser"] == _cef_text(ident["human"])
    if act.get("action_id"):
        assert (ext["cs2"], ext["cs2Label"]) == (act["action_id"], "actionId")
    if event.session_id:
        assert (ext["cs1"], ext["cs1Label"]) == (event.session_id, "sessionId")
    if event.type == "action.decided" and dec.get("enforcement") == "observed":
        # aarmor observed it (not mediated): never reported as its own DENY
        assert ext["act"] == "OBSERVED" and "outcome" not in ext
        assert header[5] == f"observed {act['tool']}.{act['operation']} (policy would decide {dec['result']})"
    elif event.type == "action.decided":
        assert ext["act"] == dec["result"]
        assert ext["msg"] == _cef_text(dec["reason"])
        assert header[5] == _cef_text(f"{dec['result']} {act['tool']}.{act['operation']}").replace("\n", " ") \
            .replace("\r", " ")
    assert "secret body text" not in line


def test_hostile_values_are_escaped_not_interpreted() -> None:
    event = next(e for e in EVENTS if e.type == "action.decided" and (e.action or {}).get("tool") == HOSTILE)
    line = to_cef(event)
    header, ext = parse_cef(line)
    # exactly the documented keys came back: no key was injected by `=` or ` key=` in a value
    assert set(ext) <= {"rt", "externalId", "cat", "act", "outcome", "msg", "suser", "duser", "sproc",
                        "requestMethod", "cs1", "cs1Label", "cs2", "cs2Label", "cs3", "cs3Label", "cs4",
                        "cs4Label", "cs5", "cs5Label", "cs6", "cs6Label", "cn1", "cn1Label"}
    assert ext["msg"] == _cef_text(HOSTILE) and "\n" in ext["msg"] and "\r" in ext["msg"]
    assert ext["requestMethod"] == _cef_text(f"{HOSTILE}.{HOSTILE}")
    assert "𝄞" in ext["msg"] and "☃" in header[5]
    assert r"a\|b=c\\d e f" in line  # the header escapes `|` and `\`, and flattens line breaks


def test_controls_and_lengths() -> None:
    base = EVENTS[0]
    long = "x" * 5000
    event = TelemetryEvent(base.event_id, base.type, base.time, base.severity, base.session_id,
                           decision={**(base.decision or {}), "reason": "a\x00b\x1bc\x85d" + long},
                           action={**(base.action or {}), "tool": "t" * 2000})
    header, ext = parse_cef(to_cef(event))
    assert ext["msg"].startswith("a b c d") and len(ext["msg"]) == 1023 and ext["msg"].endswith("…")
    assert len(header[5]) == 512


@pytest.mark.parametrize("bad", [
    "CEF:0|a|b|c|d|e|1|k=v\\x", "CEF:0|a|b|c|d|e|1|k=a=b", "CEF:0|a|b\\x|c|d|e|1|", "CEF:0|a|b|c|d|e|1|k=1 k=2",
    "CEF:0|a|b|c|d|e|1|k=v\nx", "CEF:0|a|b|c",
])
def test_the_parser_is_strict(bad: str) -> None:
    with pytest.raises(CEFSyntaxError):
        parse_cef(bad)
