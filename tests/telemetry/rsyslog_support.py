"""A real rsyslogd on loopback for the syslog sink tests (installed by .ci/run: `apt_install rsyslog`).

`Rsyslog(tmp_path)` writes a private configuration (UDP and TCP inputs on free loopback ports, or a TLS
input with rsyslog's OpenSSL driver), runs `rsyslogd -n` as a child and records every message it receives
as one JSON line: PRI, the parsed timestamp, header fields, the raw structured data, rsyslog's own parse of
it (mmpstrucdata) and MSG. Only messages from the inputs reach the file (rsyslog's own notices go to a ruleset
of their own). `stop()` / `start()` restart it on the same ports.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

DEADLINE = 15.0  # seconds to wait for rsyslogd to listen, or for messages to reach its file


def rsyslogd() -> str:
    path = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(path).exists():
        raise RuntimeError("rsyslogd is not installed: `apt-get install -y rsyslog rsyslog-openssl` (see .ci/run)")
    return path


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    def __init__(self, root: Path, *, tls: tuple[Path, Path, Path] | None = None) -> None:
        """`tls`: (CA file, server certificate, server key) for a TLS-only TCP input."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.out = root / "received.jsonl"
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port(socket.SOCK_STREAM)
        self.tls = tls
        self.conf = root / "rsyslog.conf"
        self.conf.write_text(self._config())
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def _config(self) -> str:
        if self.tls:
            ca, cert, key = self.tls
            head = (f'global(workDirectory="{self.root}" maxMessageSize="64k" DefaultNetstreamDriverCAFile="{ca}" '
                    f'DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")\n'
                    'module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")\n'
                    f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="sinks")\n')
        else:
            head = (f'global(workDirectory="{self.root}" maxMessageSize="64k")\n'
                    'module(load="imudp")\nmodule(load="imtcp")\n'
                    f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="sinks")\n'
                    f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="sinks")\n')
        fields = [("pri", "pri"), ("time", "timereported"), ("hostname", "hostname"), ("app", "app-name"),
                  ("procid", "procid"), ("msgid", "msgid"), ("sd", "structured-data"), ("parsed", "$!rfc5424-sd"),
                  ("msg", "msg")]
        props = "\n".join(f'  property(outname="{o}" name="{n}" format="jsonf"'
                          + (' dateFormat="rfc3339"' if n == "timereported" else "") + ")" for o, n in fields)
        return (head + 'module(load="mmpstrucdata")\n'
                f'template(name="record" type="list" option.jsonf="on") {{\n{props}\n}}\n'
                'ruleset(name="sinks") {\n  action(type="mmpstrucdata")\n'
                f'  action(type="omfile" file="{self.out}" template="record")\n}}\n')

    def start(self) -> None:
        log = (self.root / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen([rsyslogd(), "-n", "-f", str(self.conf), "-i", str(self.root / "rsyslogd.pid")],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + DEADLINE
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsyslogd did not start: {(self.root / 'rsyslogd.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        """Both inputs bound (read from /proc, so probing makes no connection rsyslog would log)."""
        def bound(table: str, port: int, state: str) -> bool:
            want = f"0100007F:{port:04X}"
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[1] == want and cols[3] == state:
                    return True
            return False
        tcp = bound("tcp", self.tcp_port, "0A")
        return tcp if self.tls else tcp and bound("udp", self.udp_port, "07")

    def stop(self) -> None:
        """SIGTERM and wait: rsyslogd writes what it has received, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        # only whole lines: rsyslogd may be writing the last one right now
        complete = self.out.read_bytes().split(b"\n")[:-1]
        return [json.loads(line.decode("utf-8")) for line in complete if line.strip()]

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        """The records once there are at least `count` (or what there is at the deadline)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            got = self.records()
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def parse_sd(sd: str) -> list[tuple[str, dict[str, str]]]:
    """RFC 5424 STRUCTURED-DATA parsed strictly (escapes `\\"`, `\\\\`, `\\]` undone); ValueError if invalid."""
    out: list[tuple[str, dict[str, str]]] = []
    i = 0
    while i < len(sd):
        if sd[i] != "[":
            raise ValueError(f"expected `[` at {i}: {sd!r}")
        j = i + 1
        while sd[j] not in " ]":
            j += 1
        sd_id, params, i = sd[i + 1:j], {}, j
        while sd[i] == " ":
            eq = sd.index("=", i)
            name = sd[i + 1:eq]
            if sd[eq + 1] != '"':
                raise ValueError(f"expected `\"` at {eq + 1}: {sd!r}")
            k, value = eq + 2, []
            while sd[k] != '"':
                if sd[k] == "\\" and sd[k + 1] in '"\\]':
                    value.append(sd[k + 1])
                    k += 2
                else:
                    if sd[k] in '"]':
                        raise ValueError(f"unescaped {sd[k]!r} at {k}: {sd!r}")
                    value.append(sd[k])
                    k += 1
            params[name] = "".join(value)
            i = k + 1
        if sd[i] != "]":
            raise ValueError(f"expected `]` at {i}: {sd!r}")
        out.append((sd_id, params))
        i += 1
    return out
