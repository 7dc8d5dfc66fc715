"""What the HTTP sinks (`webhook`, `splunk_hec`) share: URL and token rules, and one POST per batch.

Why the standard library (`http.client`) and not httpx: httpx is only in the `test` extra, and a sink is part
of core aarmor (the exporter runs in every deployment that configures one). One blocking POST per batch from
the exporter's own thread is all a sink needs; `http.client` never follows redirects (so the token never
reaches another host) and takes an `ssl` context, which is all the TLS control wanted here.

Rules:
- https with certificate and host name verification (the system's CAs, or `ca_file`); there is no option to
  turn verification off. Plain http is accepted for a loopback receiver only when a token is sent, so a token
  never crosses a network in clear.
- The token comes from the environment variable named by `token_env`, never from the configuration file; it
  is read at every send (a rotated token is picked up without a restart) and never appears in an error.
- A URL with user info (`https://user:pass@host`) is refused: credentials do not belong in the file.
- One connection per batch, closed afterwards: no stale kept-alive connection to fail a later batch.
- Any transport error, timeout (per socket operation), redirect or non-2xx status is a `SinkError` naming the
  receiver by its origin (scheme, host and port: a path or query may carry a secret) and the status.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from aarmor import __version__
from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError, SinkRejected

__all__ = ["RESPONSE_BYTES", "HttpTarget", "Response", "read_token", "target"]

RESPONSE_BYTES = 64 * 1024  # at most this much of a response body is read
_DETAIL_CHARS = 200  # of a response body quoted in an error
USER_AGENT = f"aarmor/{__version__}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """Where a sink POSTs, and how (built by `target`, which checked everything)."""

    sink: str  # `<kind> sink `<name>``, for messages
    scheme: str
    host: str
    port: int
    path: str  # path and query
    timeout: float
    context: ssl.SSLContext | None
    token_env: str | None

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def post(self, body: bytes, headers: dict[str, str], token_header: tuple[str, str] | None = None) -> Response:
        """POST `body`; `token_header` is (header name, scheme) for the token, e.g. ("Authorization", "Bearer").

        Raises:
            SinkError: the token variable is empty, the request failed or timed out, or the status is not 2xx.
        """
        all_headers = {"User-Agent": USER_AGENT, **headers, "Content-Length": str(len(body))}
        token = None
        if token_header is not None and self.token_env is not None:
            token = read_token(self.token_env)
            if token is None:
                raise SinkError(f"{self.sink}: the environment variable `{self.token_env}` (option `token_env`) "
                                "is not set or empty")
            all_headers[token_header[0]] = f"{token_header[1]} {token}"
        conn: http.client.HTTPConnection
        if self.context is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.path, body=body, headers=all_headers)
            resp = conn.getresponse()
            data = resp.read(RESPONSE_BYTES)
        except (OSError, http.client.HTTPException) as exc:  # timeouts and TLS errors included
            raise SinkError(f"{self.sink}: POST to {self.origin} failed: {_scrub(_why(exc), token)}") from exc
        except ValueError as exc:  # http.client refuses a header value with CR/LF: only the token can be one
            raise SinkError(f"{self.sink}: the token in `{self.token_env}` is not a valid header value") from exc
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            what = " (redirects are not followed)" if 300 <= resp.status < 400 else ""
            # a 4xx other than timeout/too-many-requests refuses this content: retrying cannot help
            error = SinkRejected if 400 <= resp.status < 500 and resp.status not in (401, 403, 408, 429) \
                else SinkError
            raise error(f"{self.sink}: {self.origin} answered HTTP {resp.status}{what}: "
                        f"{_scrub(_excerpt(data), token)}")
        return Response(resp.status, data)


def target(sink: str, url: str, *, timeout: float, ca_file: str | None, token_env: str | None,
           default_path: str = "") -> HttpTarget:
    """The checked target for `url` (`default_path` is used when the URL's path is empty or `/`).

    Raises:
        ConfigError: not an http(s) URL, user info in it, plain http to a non-loopback host with a token, the
            token variable unset, or a CA file that cannot be read.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{sink}: option `url`: `{_origin_of(url)}` is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{sink}: option `url`: user info in the URL is refused (put the token in the "
                          "environment variable named by `token_env`)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConfigError(f"{sink}: option `url`: {exc}") from exc
    if token_env is not None:
        if read_token(token_env) is None:
            raise ConfigError(f"{sink}: option `token_env`: the environment variable `{token_env}` is not set or "
                              "empty")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigError(f"{sink}: option `url`: a token is sent only over https (plain http is accepted for "
                              f"a loopback receiver), not to `{parts.hostname}`")
    if ca_file is not None and parts.scheme != "https":
        raise ConfigError(f"{sink}: option `ca_file` needs an https:// `url`")
    context = None
    if parts.scheme == "https":
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{sink}: option `ca_file`: cannot use `{ca_file}`: {_why(exc)}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    path = (parts.path if parts.path not in ("", "/") else default_path or "/") + (f"?{parts.query}" if parts.query
                                                                                  else "")
    return HttpTarget(sink, parts.scheme, parts.hostname, port, path, timeout, context, token_env)


def read_token(env: str) -> str | None:
    value = os.environ.get(env, "").strip()
    return value or None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" if parts.hostname else url[:40]


def _excerpt(data: bytes) -> str:
    text = data[:_DETAIL_CHARS * 4].decode("utf-8", "replace").strip()
    text = "".join(c if c.isprintable() else " " for c in text)
    return (text[:_DETAIL_CHARS] + "...") if len(text) > _DETAIL_CHARS else (text or "(empty body)")


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "[token]") if token else text


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
