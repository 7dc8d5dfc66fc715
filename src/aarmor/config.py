"""Configuration: the `aarmor.yaml` schema, defaults and keyword overrides.

Rules this module enforces:
- Unknown keys anywhere are an error naming the key and the file (pydantic `extra="forbid"`).
- Precedence: keyword overrides > `AARMOR_HOME` (for `home` only) > the file > built-in defaults.
- Which file: the `path` argument, else `$AARMOR_CONFIG`, else `./aarmor.yaml` if it exists, else none.
- Defaults are embedded: SQLite under the per-user data directory, keys in `<home>/keys`, the built-in
  `default` policy. Nothing here can switch mediation to fail-open: there is no such key.
Pydantic stays at this edge; `load_config` returns frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aarmor.errors import ConfigError
from aarmor.limits import Limits
from aarmor.metatools import BUILTIN_META_TOOLS, MetaTool

__all__ = [
    "AccessTokenToolConfig",
    "ApprovalsConfig",
    "ClassificationConfig",
    "Config",
    "CredentialsConfig",
    "DeferralsConfig",
    "DelegationConfig",
    "GatewayConfig",
    "GatewayTokenConfig",
    "IntentConfig",
    "IntentProfile",
    "JwtConfig",
    "NotifierConfig",
    "PostgresToolConfig",
    "RedactionConfig",
    "ResolverConfig",
    "ServerConfig",
    "TelemetryConfig",
    "TelemetrySinkConfig",
    "TlsConfig",
    "ToolConfig",
    "TransparencyConfig",
    "UpstreamConfig",
    "default_home",
    "load_config",
]

DEFAULT_REDACT_FIELDS = (
    "password", "passwd", "secret", "token", "api_key", "apikey", "authorization", "access_token",
    "refresh_token", "private_key", "client_secret", "cookie", "ssn", "card_number",
)
LEVELS = ("PUBLIC", "INTERNAL", "CONFIDENTIAL", "RESTRICTED")


@dataclass(frozen=True, slots=True)
class RedactionConfig:
    """How parameters appear in receipts and the context log (AARM threat 10: no side channel).

    mode `clear`: values kept, except keys in `fields` (any depth, case-insensitive) -> digests.
    mode `digest`: every leaf value digested, except keys in `allow`.
    Credential-looking strings are digested in both modes.
    """

    mode: Literal["clear", "digest"] = "clear"
    fields: tuple[str, ...] = DEFAULT_REDACT_FIELDS
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolConfig:
    """Per-tool declarations: output labels (R2), trust, the default operation name, and risk classes
    (`aarmor.context.tool_risk`; empty: computed from the tool's catalogue entry)."""

    returns: tuple[str, ...] = ()
    trusted: bool = False
    operation: str | None = None
    classes: tuple[str, ...] = ()
    #: the tool is a meta-tool: policy judges the tool its arguments name (aarmor.metatools)
    meta: MetaTool | None = None


@dataclass(frozen=True, slots=True)
class ClassificationConfig:
    levels: tuple[str, ...] = LEVELS
    #: AARM R2: what an output no mechanism classifies, from an undeclared tool, counts as
    unclassified: str = "RESTRICTED"


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """An outgoing channel for approval requests: `webhook` (generic JSON) or `slack` (Block Kit)."""

    type: Literal["webhook", "slack"]
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    #: Slack: rule approver (group) -> channel name, shown in the message
    channel_mapping: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    retries: int = 5


@dataclass(frozen=True, slots=True)
class ApprovalsConfig:
    """STEP_UP (AARM 2.5). Timeouts always end in DENY: there is no other `timeout_action`."""

    default_timeout: float = 3600.0
    #: upper bound for any rule's `timeout` (a day by default)
    max_timeout: float = 86400.0
    #: approver group name -> the principals in it; a name that is no group is a principal itself
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    notifiers: tuple[NotifierConfig, ...] = ()
    #: how often a waiting caller looks in the store for a decision taken by another process
    poll_interval: float = 0.25
    #: a waiting caller renews its claim this often x3; a claim older than this is a dead caller's
    lease_seconds: float = 30.0

    def members(self, name: str) -> tuple[str, ...]:
        for group, people in self.groups:
            if group == name:
                return people
        return (name,)


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """An HTTP callback asked for the context a deferral needs (POST JSON, answer `{"fields": {...}}`)."""

    url: str
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class DeferralsConfig:
    """DEFER (AARM 2.6). Timeouts always end in DENY; fail-open on timeout is not configurable."""

    default_timeout: float = 300.0
    max_timeout: float = 3600.0
    #: a chain of actions deferred because they depend on deferred actions deeper than this is DENY
    max_cascade: int = 3
    resolvers: tuple[ResolverConfig, ...] = ()
    poll_interval: float = 0.25
    lease_seconds: float = 30.0


#: where the service identity is read from a verified client certificate (docs/identity.md)
ServiceFrom = Literal["subject_cn", "san_uri", "san_dns"]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """`server.tls` / `gateway.tls`: HTTPS for a listener, and mutual TLS when `client_ca` is set.

    With `client_ca`, the service identity of a session opened over a connection is the verified client
    certificate's `service_from` name (docs/identity.md "Service identity from mutual TLS").
    """

    #: the server's certificate chain (PEM) and its private key (None: the key is in `cert`)
    cert: str
    key: str | None = None
    #: CA certificates (PEM) that sign client certificates; None: no client certificate is asked for
    client_ca: str | None = None
    #: without a client certificate the handshake fails (False: a client may connect without one)
    require_client_cert: bool = True
    service_from: ServiceFrom = "subject_cn"
    #: certificate revocation lists (PEM) of `client_ca`: a revoked client certificate cannot connect
    crl: str | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`aarmor serve`: the HTTP API and the approver page. Localhost unless configured otherwise."""

    host: str = "127.0.0.1"
    port: int = 8731
    #: the address approvers reach the page at, for links in notifications (default http(s)://host:port)
    public_url: str | None = None
    tls: TlsConfig | None = None
    #: seconds an allowed action of the mediate protocol waits for its client's outcome report; then its
    #: receipt says the outcome is unknown (docs/http-api.md)
    outcome_timeout: float = 300.0

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One MCP server behind the gateway: a stdio subprocess (`command`) or a Streamable HTTP `url`."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: stdio only: `never`, `on-failure` (exit status != 0 or a signal) or `always`
    restart: Literal["never", "on-failure", "always"] = "on-failure"
    max_restarts: int = 5
    #: seconds the upstream may take to answer `initialize`
    startup_timeout: float = 30.0
    #: seconds it may take to answer any other forwarded request (None: wait as long as the client does)
    request_timeout: float | None = 600.0


@dataclass(frozen=True, slots=True)
class GatewayTokenConfig:
    """A static bearer token of the gateway's HTTP front: its SHA-256 (hex) and the identity it stands for."""

    sha256: str
    identity: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """`aarmor gateway` (docs/mcp-gateway.md)."""

    upstreams: tuple[UpstreamConfig, ...] = ()
    #: `stdio`, or `http://HOST:PORT/PATH` for Streamable HTTP
    listen: str = "stdio"
    #: the identity of the gateway's caller on stdio (and on HTTP when no token or header says otherwise)
    principal: tuple[tuple[str, Any], ...] = ()
    tokens: tuple[GatewayTokenConfig, ...] = ()
    #: identity level -> HTTP header carrying it (trust these only behind a proxy that sets them)
    identity_headers: tuple[tuple[str, str], ...] = ()
    #: prefix for a tool, prompt or resource-template name two upstreams both offer: `<upstream><sep><name>`
    namespace_separator: str = "__"
    #: leave tools the policy denies whatever their arguments out of `tools/list`
    hide_denied_tools: bool = False
    #: seconds between progress notifications while a call waits for an approval or context
    progress_interval: float = 5.0
    #: HTTPS (and mutual TLS) for an `https://` listener
    tls: TlsConfig | None = None


#: the token algorithms `identity.jwt` accepts, one per key type (RSA, EC P-256, Ed25519): no `none`, no HMAC
JwtAlgorithm = Literal["RS256", "ES256", "EdDSA"]
JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("RS256", "ES256", "EdDSA")


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """`identity.jwt`: bearer tokens (OIDC / JWT) checked against a JWKS (docs/identity.md)."""

    issuer: str
    #: accepted audiences: a token must name at least one
    audience: tuple[str, ...]
    #: exactly one of a JWKS file (read once, at start) or URL (fetched when needed, cached)
    jwks_file: str | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = JWT_ALGORITHMS
    #: clock skew tolerated on exp, nbf, iat and max_age, in seconds
    leeway: float = 60.0
    #: a token issued (`iat`) longer ago than this is refused; None: not checked (`exp` still is)
    max_age: float | None = None
    #: claim names (a dotted path reaches into objects: `realm_access.roles`); scopes_claim None:
    #: `scope` (space-separated) else `scp` (a list or a string)
    roles_claim: str = "roles"
    scopes_claim: str | None = None
    principal_claim: str = "sub"
    #: JWKS URL: the cached key set is fetched again after this many seconds
    jwks_cache_seconds: float = 300.0
    #: JWKS URL: an unknown `kid` fetches the set again, at most once per this many seconds
    jwks_refetch_interval: float = 30.0
    #: JWKS URL: seconds a fetch may take
    jwks_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class DelegationConfig:
    """`identity.delegation`: signed delegation chains (docs/identity.md "Delegation")."""

    #: the `iss` of delegation tokens; nodes that verify each other's links share it (and the keys)
    issuer: str = "aarmor"
    #: the longest a delegation may last, in seconds (a link never outlives its parent either)
    max_ttl: float = 3600.0
    #: the most links a chain may have
    max_depth: int = 4
    #: clock skew tolerated on a link's iat and exp, in seconds
    leeway: float = 30.0


@dataclass(frozen=True, slots=True)
class IntentProfile:
    """Thresholds for one agent type (`intent.profiles.<agent type>`); None: the top-level value."""

    drift_threshold: float | None = None
    drift_alpha: float | None = None
    similarity_floor: float | None = None
    similarity_ceiling: float | None = None


@dataclass(frozen=True, slots=True)
class TelemetrySinkConfig:
    """One `telemetry.sinks` entry: where events go, in which format, which of them (docs/telemetry.md)."""

    name: str
    type: str
    format: str
    #: event types (exact, or a prefix like `alert.*`), tools, decision results, identities, severity floor
    types: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    min_severity: str = "info"
    #: the sink type's own settings (path, url, host...), validated by the sink
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """`telemetry` (AARM R8): sinks, what parameters may leave in clear, the spool's bound."""

    sinks: tuple[TelemetrySinkConfig, ...] = ()
    #: parameter fields exported as their (redacted) value; every other parameter travels as a digest only
    export_parameters: tuple[str, ...] = ()
    #: above this many undelivered events the oldest are dropped, counted in a `telemetry.dropped` alert
    spool_max_events: int = 100_000
    batch_size: int = 500
    poll_interval: float = 0.2


@dataclass(frozen=True, slots=True)
class TransparencyConfig:
    """`transparency`: the receipt transparency log's signed tree heads (docs/transparency.md)."""

    #: seconds between the tree heads a running Guard publishes when the log grew; 0: only on demand
    #: (`aarmor receipts tree-head`, `prove`)
    sth_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class IntentConfig:
    """The intent scorer (docs/intent.md): alignment, semantic distance and drift for the PDP."""

    #: `neutral` (no signal), `embedding` (the `aarmor[semantic]` extra) or `lexical` (word overlap)
    scorer: Literal["neutral", "embedding", "lexical"] = "neutral"
    #: onnxruntime intra-op threads (embedding)
    threads: int = 1
    #: texts kept in the embedding cache
    cache_size: int = 4096
    #: model.onnx / tokenizer.json elsewhere than in their packages (the pinned SHA-256 still applies)
    model_path: str | None = None
    tokenizer_path: str | None = None
    #: similarity -> alignment calibration; None: the scorer's default (docs/intent.md)
    similarity_floor: float | None = None
    similarity_ceiling: float | None = None
    #: weight of the newest action in the drift EMA, and the EMA level that sets `drift_detected`
    drift_alpha: float = 0.4
    drift_threshold: float | None = None
    #: (agent type, profile) pairs: chosen by context `agent_type`, else `Identity.agent` (docs/intent.md)
    profiles: tuple[tuple[str, IntentProfile], ...] = ()


#: table privileges a `postgresql` credential may carry (DML only: DDL, TRUNCATE and ownership never)
PG_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: operation -> privileges when a `postgresql` tool names none; `write` includes SELECT because an UPDATE or
#: DELETE with a WHERE clause reads the columns it filters on (PostgreSQL checks SELECT for them)
DEFAULT_PG_PRIVILEGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("read", ("SELECT",)), ("write", ("SELECT", "INSERT", "UPDATE", "DELETE")))
#: the longest a just-in-time credential may live, in seconds
MAX_CREDENTIAL_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class AccessTokenToolConfig:
    """`credentials.tools.<tool>` of kind `access_token`: an EdDSA JWT per action (docs/credentials.md)."""

    #: the token's `aud`; None: the tool's name as configured
    audience: str | None = None
    #: put the digest of the arguments that run in the token (`args_digest`), so the tool can check them
    bind_arguments: bool = True
    #: operation -> scopes; empty: the scope is the operation's name (an operation not listed: no credential)
    scopes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: seconds the token is valid; None: `credentials.ttl`
    ttl: float | None = None
    kind: Literal["access_token"] = "access_token"


@dataclass(frozen=True, slots=True)
class PostgresToolConfig:
    """`credentials.tools.<tool>` of kind `postgresql`: a temporary login role per action."""

    #: the connection the broker creates and drops roles with (a role with CREATEROLE); may hold a
    #: password, so it is never shown (repr) nor recorded
    admin_dsn: str = field(repr=False)
    #: schema-qualified tables the credential's privileges are granted on
    tables: tuple[str, ...]
    #: operation -> table privileges (a subset of `PG_PRIVILEGES`); an operation not listed: no credential
    privileges: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_PG_PRIVILEGES
    #: seconds the broker waits to connect to PostgreSQL
    connect_timeout: float = 5.0
    ttl: float | None = None
    kind: Literal["postgresql"] = "postgresql"


CredentialToolConfig = AccessTokenToolConfig | PostgresToolConfig


@dataclass(frozen=True, slots=True)
class CredentialsConfig:
    """`credentials` (AARM R9): just-in-time credentials minted per mediated action."""

    #: default seconds a credential is valid
    ttl: float = 60.0
    #: `iss` of access tokens
    issuer: str = "aarmor"
    #: the Ed25519 keyring that signs access tokens (not the receipt keys); None: `<keys>/credentials`
    keys: Path | None = None
    #: (tool name, its credential) pairs; a tool not listed gets no credential
    tools: tuple[tuple[str, CredentialToolConfig], ...] = ()

    def for_tool(self, *names: str) -> tuple[str, CredentialToolConfig] | None:
        """The first configured tool among `names` (an action's `tool.operation`, then `tool`)."""
        table = dict(self.tools)
        for name in names:
            if name in table:
                return name, table[name]
        return None


#: the policy with no configuration: protection for tool-using agents that lets ordinary work run
#: (src/aarmor/policy/packs/agent-default.yaml); `builtin:default` is the deny-by-default baseline
DEFAULT_POLICY = "builtin:agent-default"


@dataclass(frozen=True, slots=True)
class Config:
    home: Path
    store: str
    keys: Path
    policy: str = DEFAULT_POLICY
    #: `sha256:...`: the only policy this node may decide with (every node of a cluster pins the same hash);
    #: a policy with another hash does not load at start-up and is refused on reload (docs/cluster.md)
    policy_pin: str | None = None
    internal_domains: tuple[str, ...] = ()
    #: `enforce`: an action without a human or service identity is DENY; `flag`: recorded and allowed on;
    #: `jwt`: every action needs a bearer token valid under `identity_jwt` (docs/identity.md)
    identity_mode: Literal["enforce", "flag", "jwt"] = "enforce"
    identity_jwt: JwtConfig | None = None
    identity_delegation: DelegationConfig = DelegationConfig()
    tools: dict[str, ToolConfig] = field(default_factory=dict)
    classification: ClassificationConfig = ClassificationConfig()
    redaction: RedactionConfig = RedactionConfig()
    confidence_threshold: float = 0.0
    approvals: ApprovalsConfig = ApprovalsConfig()
    deferrals: DeferralsConfig = DeferralsConfig()
    server: ServerConfig = ServerConfig()
    gateway: GatewayConfig = GatewayConfig()
    limits: Limits = field(default_factory=Limits)
    intent: IntentConfig = IntentConfig()
    credentials: CredentialsConfig = CredentialsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    transparency: TransparencyConfig = TransparencyConfig()
    #: nobody will approve or resolve (offline runs, benchmarks): STEP_UP and DEFER end at once, not
    #: executed, as `ActionDenied` whose decision keeps STEP_UP or DEFER (`Guard.open(unattended=True)`)
    unattended: bool = False
    #: seconds a Guard's owner lease lasts (renewed every third): a process silent for longer is taken for
    #: dead and its in-flight actions end as "unknown: process ended" (`recovery.lease_seconds`,
    #: docs/durability.md)
    recovery_lease: float = 30.0
    source: str | None = None

    @property
    def meta_tools(self) -> dict[str, MetaTool]:
        """Meta-tools resolved before policy: AARM 4.3's built-in examples and `tools.<name>.meta`."""
        declared = {k: t.meta for k, t in self.tools.items() if t.meta is not None}
        return {**BUILTIN_META_TOOLS, **declared} if declared else BUILTIN_META_TOOLS


# --- the file schema (edge only) --------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Meta(_Strict):
    #: the argument (or arguments, joined with `.`) that names the real tool
    tool: str | list[str]
    #: the argument holding the real tool's arguments; absent: the wrapper's other arguments
    arguments: str | None = None


class _Tool(_Strict):
    returns: list[str] = Field(default_factory=list)
    trusted: bool = False
    operation: str | None = None
    classes: list[str] | None = None
    meta: _Meta | None = None

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        from aarmor.context.tool_risk import check_classes

        return None if v is None else sorted(c.value for c in check_classes(v, what="tool classes"))


class _Classification(_Strict):
    levels: list[str] = Field(default_factory=lambda: list(LEVELS), min_length=1)
    unclassified: str = "RESTRICTED"


class _Redaction(_Strict):
    mode: Literal["clear", "digest"] = "clear"
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT_FIELDS))
    allow: list[str] = Field(default_factory=list)


class _Jwt(_Strict):
    jwks_file: str | None = None
    jwks_url: str | None = Field(None, pattern=r"^https?://")
    issuer: str = Field(min_length=1)
    audience: str | list[str]
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list(JWT_ALGORITHMS), min_length=1)
    leeway: float = Field(60.0, ge=0, le=3600)
    max_age: float | None = Field(None, gt=0)
    roles_claim: str = Field("roles", min_length=1)
    scopes_claim: str | None = Field(None, min_length=1)
    principal_claim: str = Field("sub", min_length=1)
    jwks_cache_seconds: float = Field(300.0, ge=0, le=86400)
    jwks_refetch_interval: float = Field(30.0, ge=0, le=3600)
    jwks_timeout: float = Field(5.0, gt=0, le=60)


class _Delegation(_Strict):
    issuer: str = Field("aarmor", min_length=1)
    max_ttl: float = Field(3600.0, gt=0, le=86400)
    max_depth: int = Field(4, ge=1, le=16)
    leeway: float = Field(30.0, ge=0, le=600)


class _Identity(_Strict):
    mode: Literal["enforce", "flag", "jwt"] = "enforce"
    jwt: _Jwt | None = None
    delegation: _Delegation = _Delegation()


class _Decision(_Strict):
    confidence_threshold: float = Field(0.0, ge=0.0, le=1.0)


class _IntentProfile(_Strict):
    drift_threshold: float | None = Field(None, ge=0.0, le=1.0)
    drift_alpha: float | None = Field(None, gt=0.0, le=1.0)
    similarity_floor: float | None = Field(None, ge=-1.0, le=1.0)
    similarity_ceiling: float | None = Field(None, ge=-1.0, le=1.0)


class _Intent(_Strict):
    scorer: Literal["neutral", "embedding", "lexical"] = "neutral"
    threads: int = Field(1, ge=1, le=64)
    cache_size: int = Field(4096, ge=0, le=1_000_000)
    model_path: str | None = None
    tokenizer_path: str | None = None
    similarity_floor: float | None = Field(None, ge=-1.0, le=1.0)
    similarity_ceiling: float | None = Field(None, ge=-1.0, le=1.0)
    drift_alpha: float = Field(0.4, gt=0.0, le=1.0)
    drift_threshold: float | None = Field(None, ge=0.0, le=1.0)
    profiles: dict[str, _IntentProfile] = Field(default_factory=dict)

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, v: dict[str, _IntentProfile]) -> dict[str, _IntentProfile]:
        for name in v:
            if not name.strip():
                raise ValueError("an agent type name must not be blank")
        return v


class _Notifier(_Strict):
    type: Literal["webhook", "slack"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    channel_mapping: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(5, ge=0, le=20)


class _Approvals(_Strict):
    default_timeout: float = Field(3600.0, gt=0)
    max_timeout: float = Field(86400.0, gt=0, le=7 * 86400)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    notifiers: list[_Notifier] = Field(default_factory=list)
    poll_interval: float = Field(0.25, gt=0, le=10)
    lease_seconds: float = Field(30.0, ge=1, le=600)


class _Resolver(_Strict):
    url: str = Field(pattern=r"^https?://")
    timeout: float = Field(5.0, gt=0, le=60)


class _Deferrals(_Strict):
    default_timeout: float = Field(300.0, gt=0)
    max_timeout: float = Field(3600.0, gt=0, le=3600.0)
    max_cascade: int = Field(3, ge=0, le=100)
    resolvers: list[_Resolver] = Field(default_factory=list)
    poll_interval: float = Field(0.25, gt=0, le=10)
    lease_seconds: float = Field(30.0, ge=1, le=600)


class _Tls(_Strict):
    cert: str = Field(min_length=1)
    key: str | None = Field(None, min_length=1)
    client_ca: str | None = Field(None, min_length=1)
    require_client_cert: bool = True
    service_from: ServiceFrom = "subject_cn"
    crl: str | None = Field(None, min_length=1)


class _Server(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8731, ge=0, le=65535)
    public_url: str | None = Field(None, pattern=r"^https?://")
    tls: _Tls | None = None
    # a tool may run long (a shell command: up to 10 minutes in Claude Code), but not for ever
    outcome_timeout: float = Field(300.0, gt=0, le=86400)


class _Principal(_Strict):
    human: str | None = None
    service: str | None = None
    agent: str | None = None
    roles: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)


class _Upstream(_Strict):
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = Field(None, pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    restart: Literal["never", "on-failure", "always"] = "on-failure"
    max_restarts: int = Field(5, ge=0, le=1000)
    startup_timeout: float = Field(30.0, gt=0, le=600)
    request_timeout: float | None = Field(600.0, gt=0, le=86400)


class _GatewayToken(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    identity: _Principal


class _Gateway(_Strict):
    upstreams: dict[str, _Upstream] = Field(default_factory=dict)
    listen: str = Field("stdio", pattern=r"^(stdio|https?://[^/\s]+(/\S*)?)$")
    principal: _Principal = _Principal()
    tokens: list[_GatewayToken] = Field(default_factory=list)
    identity_headers: dict[Literal["human", "service", "agent"], str] = Field(default_factory=dict)
    namespace_separator: str = Field("__", pattern=r"^[A-Za-z0-9_.:/-]{1,4}$")
    hide_denied_tools: bool = False
    progress_interval: float = Field(5.0, gt=0, le=300)
    tls: _Tls | None = None


class _AccessTokenTool(_Strict):
    kind: Literal["access_token"]
    audience: str | None = Field(None, min_length=1)
    bind_arguments: bool = True
    scopes: dict[str, list[str]] = Field(default_factory=dict)
    ttl: float | None = Field(None, gt=0, le=MAX_CREDENTIAL_TTL)


class _PostgresTool(_Strict):
    kind: Literal["postgresql"]
    admin_dsn: str = Field(min_length=1)
    tables: list[str] = Field(min_length=1)
    privileges: dict[str, list[str]] | None = None
    connect_timeout: float = Field(5.0, gt=0, le=60)
    ttl: float | None = Field(None, gt=0, le=MAX_CREDENTIAL_TTL)

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        for t in v:
            parts = t.split(".")
            if len(parts) != 2 or not all(parts) or t != t.strip():
                raise ValueError(f"table `{t}` must be schema-qualified: `schema.table`")
        return v

    @field_validator("privileges")
    @classmethod
    def _privileges(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if v is None:
            return None
        out = {}
        for op, privs in v.items():
            upper = [p.upper() for p in privs]
            bad = [p for p in upper if p not in PG_PRIVILEGES]
            if bad:
                raise ValueError(f"operation `{op}`: privilege `{bad[0]}` is not one of {', '.join(PG_PRIVILEGES)}")
            if not upper:
                raise ValueError(f"operation `{op}` names no privilege (leave the operation out to refuse it)")
            out[op] = list(dict.fromkeys(upper))
        return out


class _Credentials(_Strict):
    ttl: float = Field(60.0, gt=0, le=MAX_CREDENTIAL_TTL)
    issuer: str = Field("aarmor", min_length=1)
    keys: str | None = None
    tools: dict[str, Annotated[_AccessTokenTool | _PostgresTool, Field(discriminator="kind")]] = Field(
        default_factory=dict)


_LimitsModel = type(
    "_Limits", (_Strict,),
    {"__annotations__": {f.name: int | None for f in fields(Limits)}} | {f.name: None for f in fields(Limits)},
)


class _TelemetryFilter(_Strict):
    types: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    decisions: list[Literal["ALLOW", "DENY", "MODIFY", "STEP_UP", "DEFER"]] = Field(default_factory=list)
    identities: list[str] = Field(default_factory=list)
    min_severity: Literal["info", "low", "medium", "high", "critical"] = "info"


class _TelemetrySink(_Strict):
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["file", "syslog", "webhook", "splunk_hec", "otlp"]
    format: Literal["jsonl", "ocsf", "cef"] | None = None
    filter: _TelemetryFilter = _TelemetryFilter()
    #: the sink type's own settings; the sink validates them (unknown keys refused there)
    options: dict[str, Any] = Field(default_factory=dict)


class _Telemetry(_Strict):
    sinks: list[_TelemetrySink] = Field(default_factory=list)
    export_parameters: list[str] = Field(default_factory=list)
    spool_max_events: int = Field(100_000, ge=100, le=100_000_000)
    batch_size: int = Field(500, ge=1, le=10_000)
    poll_interval: float = Field(0.2, gt=0, le=10)


class _Transparency(_Strict):
    sth_interval: float = Field(60.0, ge=0, le=86_400)


class _Recovery(_Strict):
    lease_seconds: float = Field(30.0, ge=1, le=600)


class _File(_Strict):
    home: str | None = None
    store: str | None = None
    keys: str | None = None
    policy: str | None = None
    policy_pin: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$")
    internal_domains: list[str] = Field(default_factory=list)
    identity: _Identity = _Identity()
    tools: dict[str, _Tool] = Field(default_factory=dict)
    classification: _Classification = _Classification()
    redaction: _Redaction = _Redaction()
    decision: _Decision = _Decision()
    approvals: _Approvals = _Approvals()
    deferrals: _Deferrals = _Deferrals()
    server: _Server = _Server()
    gateway: _Gateway = _Gateway()
    intent: _Intent = _Intent()
    credentials: _Credentials = _Credentials()
    telemetry: _Telemetry = _Telemetry()
    transparency: _Transparency = _Transparency()
    recovery: _Recovery = _Recovery()
    limits: Any = Field(default_factory=_LimitsModel)  # a `_LimitsModel`, built from `Limits`' fields

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, v: dict[str, _Tool]) -> dict[str, _Tool]:
        from aarmor.normalize import normalize_name

        return {normalize_name(k): t for k, t in v.items()}


def _meta_tool(m: _Meta | None) -> MetaTool | None:
    if m is None:
        return None
    names = (m.tool,) if isinstance(m.tool, str) else tuple(m.tool)
    if not names or not all(names):
        raise ConfigError("tools.<name>.meta.tool: name the argument(s) that carry the real tool's name")
    return MetaTool(names, m.arguments)


def default_home() -> Path:
    """`$AARMOR_HOME`, else the per-user data directory (e.g. ~/.local/share/aarmor)."""
    env = os.environ.get("AARMOR_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("aarmor", appauthor=False))


def _find_file(path: str | os.PathLike[str] | None) -> Path | None:
    if path is not None:
        return Path(path)
    env = os.environ.get("AARMOR_CONFIG")
    if env:
        return Path(env)
    local = Path("aarmor.yaml")
    return local if local.is_file() else None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration `{path}`: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration `{path}` is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration `{path}` must be a mapping, found {type(data).__name__}")
    return data


_F = TypeVar("_F", bound=BaseModel)


def _override_section(model: type[_F], override: Any, name: str) -> _F:
    """A keyword override given as a mapping of the file's keys, validated as the file's section would be
    (its relative paths are then taken from the working directory, not the configuration file's folder)."""
    try:
        return model.model_validate(override)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, f"override `{name}`")) from exc


def _format_errors(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"`{loc}`: {msg}")
    return f"configuration {where}: " + "; ".join(parts)


_OVERRIDES = {"gateway", "home", "store", "keys", "policy", "policy_pin", "internal_domains", "identity_mode",
              "identity_jwt", "identity_delegation", "tools",
              "unattended", "redaction", "confidence_threshold", "approval_timeout", "defer_timeout", "limits",
              "classification", "approvals", "deferrals", "server", "intent", "credentials",
              "telemetry", "transparency", "recovery_lease"}


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Load the configuration file (if any) and apply keyword overrides.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys, wrong types or an unknown override.
    """
    unknown = set(overrides) - _OVERRIDES
    if unknown:
        raise ConfigError(f"unknown configuration override `{sorted(unknown)[0]}`; expected one of "
                          + ", ".join(sorted(_OVERRIDES)))
    file = _find_file(path)
    raw = _read(file) if file else {}
    try:
        f = _File.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, f"`{file}`")) from exc
    except Exception as exc:  # a tool name that cannot be normalised, from the validator
        raise ConfigError(f"configuration `{file}`: {exc}") from exc

    base = file.absolute().parent if file else Path.cwd()
    home = overrides.get("home")
    home = Path(home) if home else (default_home() if os.environ.get("AARMOR_HOME") or not f.home
                                    else (base / Path(f.home).expanduser()))
    store = overrides.get("store") or f.store or f"sqlite:///{Path(home).absolute() / 'aarmor.db'}"
    keys = Path(overrides.get("keys") or (base / f.keys if f.keys else Path(home) / "keys"))
    policy = overrides.get("policy") or (
        f.policy if f.policy is None or f.policy.startswith("builtin:") else str(base / f.policy)
    ) or DEFAULT_POLICY
    cls = f.classification
    if cls.unclassified not in cls.levels:
        raise ConfigError(f"configuration: classification.unclassified `{cls.unclassified}` is not one of "
                          f"the levels {', '.join(cls.levels)}")
    limits = Limits(**{k: v for k, v in f.limits.model_dump().items() if v is not None})
    cfg = Config(
        home=Path(home),
        store=store,
        keys=keys,
        policy=policy,
        policy_pin=overrides.get("policy_pin", f.policy_pin),
        internal_domains=tuple(overrides.get("internal_domains", f.internal_domains)),
        identity_mode=overrides.get("identity_mode", f.identity.mode),
        identity_jwt=_jwt(f.identity.jwt, base, overrides.get("identity_jwt")),
        identity_delegation=overrides.get("identity_delegation") or DelegationConfig(
            **f.identity.delegation.model_dump()),
        tools=overrides.get("tools") or {k: ToolConfig(tuple(t.returns), t.trusted, t.operation,
                                                                    tuple(t.classes or ()), _meta_tool(t.meta))
                                         for k, t in f.tools.items()},
        classification=overrides.get("classification") or ClassificationConfig(tuple(cls.levels),
                                                                                 cls.unclassified),
        redaction=overrides.get("redaction") or RedactionConfig(f.redaction.mode, tuple(f.redaction.fields),
                                                                tuple(f.redaction.allow)),
        confidence_threshold=overrides.get("confidence_threshold", f.decision.confidence_threshold),
        approvals=_approvals(f.approvals, overrides),
        deferrals=_deferrals(f.deferrals, overrides),
        server=overrides.get("server") or ServerConfig(f.server.host, f.server.port, f.server.public_url,
                                                       _tls(f.server.tls, base, "server"),
                                                       f.server.outcome_timeout),
        gateway=overrides.get("gateway") or _gateway(f.gateway, base),
        limits=overrides.get("limits") or limits,
        intent=_intent(f.intent, base, overrides.get("intent")),
        credentials=_credentials(f.credentials, base, keys, overrides.get("credentials")),
        telemetry=_telemetry(f.telemetry, base, overrides.get("telemetry")),
        transparency=_transparency(f.transparency, overrides.get("transparency")),
        unattended=_flag(overrides.get("unattended", False), "unattended"),
        recovery_lease=_lease(overrides.get("recovery_lease", f.recovery.lease_seconds)),
        source=str(file) if file else None,
    )
    if cfg.policy_pin is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", str(cfg.policy_pin)):
        raise ConfigError(f"policy_pin `{cfg.policy_pin}` is not a policy hash (sha256: and 64 hex digits, as "
                          "`aarmor policy check` prints it)")
    if not isinstance(cfg.identity_delegation, DelegationConfig):
        raise ConfigError("override `identity_delegation` must be an aarmor.config.DelegationConfig")
    if cfg.identity_mode not in ("enforce", "flag", "jwt"):
        raise ConfigError(f"identity_mode `{cfg.identity_mode}` is not one of enforce, flag, jwt")
    if cfg.identity_mode == "jwt" and cfg.identity_jwt is None:
        raise ConfigError("configuration: identity mode `jwt` needs an `identity.jwt` section "
                          "(issuer, audience, and jwks_file or jwks_url)")
    return cfg


def _lease(value: Any) -> float:
    """`recovery.lease_seconds` (or the `recovery_lease` override): 0.1 to 600 seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 600:
        raise ConfigError(f"recovery lease must be a number of seconds from 0.1 to 600, found `{value!r}`")
    return float(value)


def _jwt(j: _Jwt | None, base: Path, override: Any) -> JwtConfig | None:
    """`identity.jwt`; the override is a `JwtConfig` or a mapping of the file's keys (paths from the cwd)."""
    if isinstance(override, JwtConfig):
        return override
    if override is not None:
        j = _override_section(_Jwt, override, "identity_jwt")
        base = Path.cwd()
    if j is None:
        return None
    if (j.jwks_file is None) == (j.jwks_url is None):
        raise ConfigError("configuration: `identity.jwt` needs exactly one of `jwks_file` or `jwks_url`")
    audience = (j.audience,) if isinstance(j.audience, str) else tuple(j.audience)
    if not audience or not all(a for a in audience):
        raise ConfigError("configuration: `identity.jwt.audience` must name at least one non-empty audience")
    return JwtConfig(
        issuer=j.issuer, audience=audience,
        jwks_file=str(base / Path(j.jwks_file).expanduser()) if j.jwks_file else None, jwks_url=j.jwks_url,
        algorithms=tuple(dict.fromkeys(j.algorithms)), leeway=j.leeway, max_age=j.max_age,
        roles_claim=j.roles_claim, scopes_claim=j.scopes_claim, principal_claim=j.principal_claim,
        jwks_cache_seconds=j.jwks_cache_seconds, jwks_refetch_interval=j.jwks_refetch_interval,
        jwks_timeout=j.jwks_timeout)


def _credentials(c: _Credentials, base: Path, keys: Path, override: Any) -> CredentialsConfig:
    """`credentials`; the override is a `CredentialsConfig` or a mapping of the file's keys."""
    from aarmor.normalize import normalize_name

    if isinstance(override, CredentialsConfig):
        return override
    if override is not None:
        c = _override_section(_Credentials, override, "credentials")
        base = Path.cwd()
    tools: list[tuple[str, CredentialToolConfig]] = []
    for raw_name, t in c.tools.items():
        try:
            name = normalize_name(raw_name)
            if isinstance(t, _AccessTokenTool):
                scopes = tuple((normalize_name(op, what="operation"), tuple(s)) for op, s in t.scopes.items())
                tools.append((name, AccessTokenToolConfig(t.audience, t.bind_arguments, scopes, t.ttl)))
            else:
                privileges = DEFAULT_PG_PRIVILEGES if t.privileges is None else tuple(
                    (normalize_name(op, what="operation"), tuple(p)) for op, p in t.privileges.items())
                tools.append((name, PostgresToolConfig(t.admin_dsn, tuple(t.tables), privileges,
                                                       t.connect_timeout, t.ttl)))
        except Exception as exc:  # a tool or operation name that cannot be normalised
            raise ConfigError(f"configuration: `credentials.tools.{raw_name}`: {exc}") from exc
    return CredentialsConfig(ttl=c.ttl, issuer=c.issuer,
                             keys=base / Path(c.keys).expanduser() if c.keys else keys / "credentials",
                             tools=tuple(tools))


def _transparency(t: _Transparency, override: Any) -> TransparencyConfig:
    """`transparency`; the override is a `TransparencyConfig` or a mapping of the file's keys."""
    if isinstance(override, TransparencyConfig):
        return override
    if override is not None:
        t = _override_section(_Transparency, override, "transparency")
    return TransparencyConfig(t.sth_interval)


def _telemetry(t: _Telemetry, base: Path, override: Any) -> TelemetryConfig:
    """`telemetry`; the override is a `TelemetryConfig` or a mapping of the file's keys. A `file` sink's
    relative `path` is resolved against the configuration file's folder."""
    from aarmor.telemetry.events import types_matching
    from aarmor.telemetry.sinks import DEFAULT_FORMAT

    if isinstance(override, TelemetryConfig):
        return override
    if override is not None:
        t = _override_section(_Telemetry, override, "telemetry")
        base = Path.cwd()
    sinks: list[TelemetrySinkConfig] = []
    for i, sk in enumerate(t.sinks):
        name = sk.name or f"{sk.type}-{i}"
        where = f"configuration: `telemetry.sinks[{i}]` ({name})"
        if name in {x.name for x in sinks}:
            raise ConfigError(f"{where}: the name is used by another sink (cursors are kept by name)")
        try:
            types = tuple(sorted(types_matching(sk.filter.types))) if sk.filter.types else ()
        except ValueError as exc:
            raise ConfigError(f"{where}: filter.types: {exc}") from None
        options = dict(sk.options)
        if sk.type == "file" and isinstance(options.get("path"), str):
            options["path"] = str(base / Path(options["path"]).expanduser())
        sinks.append(TelemetrySinkConfig(name, sk.type, sk.format or DEFAULT_FORMAT[sk.type], types,
                                         tuple(sk.filter.tools), tuple(sk.filter.decisions),
                                         tuple(sk.filter.identities), sk.filter.min_severity,
                                         tuple(sorted(options.items()))))
    return TelemetryConfig(tuple(sinks), tuple(t.export_parameters), t.spool_max_events, t.batch_size,
                           t.poll_interval)


def _intent(i: _Intent, base: Path, override: Any) -> IntentConfig:
    if isinstance(override, IntentConfig):
        return override
    if override is not None:  # `intent={"scorer": "lexical"}` or `intent="lexical"`
        raw = {"scorer": override} if isinstance(override, str) else override
        i = _override_section(_Intent, raw, "intent")
        base = Path.cwd()
    return IntentConfig(
        scorer=i.scorer, threads=i.threads, cache_size=i.cache_size,
        model_path=str(base / i.model_path) if i.model_path else None,
        tokenizer_path=str(base / i.tokenizer_path) if i.tokenizer_path else None,
        similarity_floor=i.similarity_floor, similarity_ceiling=i.similarity_ceiling,
        drift_alpha=i.drift_alpha, drift_threshold=i.drift_threshold,
        profiles=tuple((name, IntentProfile(**p.model_dump())) for name, p in i.profiles.items()))


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"override `{name}` must be true or false, not {value!r}")
    return value


def _principal(p: _Principal) -> tuple[tuple[str, Any], ...]:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in p.model_dump().items() if v)


def _gateway(g: _Gateway, base: Path) -> GatewayConfig:
    ups = []
    for name, u in g.upstreams.items():
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ConfigError(f"configuration: gateway upstream name `{name}` must be letters, digits, `_` or `-`")
        if (u.command is None) == (u.url is None):
            raise ConfigError(f"configuration: gateway upstream `{name}` needs exactly one of `command` "
                              "(a stdio server) or `url` (a Streamable HTTP server)")
        if u.url is not None and (u.args or u.env or u.cwd):
            raise ConfigError(f"configuration: gateway upstream `{name}`: `args`, `env` and `cwd` apply only "
                              "to a `command`")
        if u.command is not None and u.headers:
            raise ConfigError(f"configuration: gateway upstream `{name}`: `headers` apply only to a `url`")
        ups.append(UpstreamConfig(
            name=name, command=u.command, args=tuple(u.args), env=tuple(u.env.items()),
            cwd=str(base / u.cwd) if u.cwd else None, url=u.url, headers=tuple(u.headers.items()),
            restart=u.restart, max_restarts=u.max_restarts, startup_timeout=u.startup_timeout,
            request_timeout=u.request_timeout))
    tls = _tls(g.tls, base, "gateway")
    scheme = g.listen.split(":", 1)[0]
    if (scheme == "https" and tls is None) or (scheme == "http" and tls is not None):
        raise ConfigError("configuration: an `https://` `gateway.listen` needs `gateway.tls`, and `gateway.tls` "
                          f"needs an `https://` address (listen is `{g.listen}`)")
    return GatewayConfig(
        upstreams=tuple(ups), listen=g.listen, principal=_principal(g.principal),
        tokens=tuple(GatewayTokenConfig(t.sha256, _principal(t.identity)) for t in g.tokens),
        identity_headers=tuple(g.identity_headers.items()), namespace_separator=g.namespace_separator,
        hide_denied_tools=g.hide_denied_tools, progress_interval=g.progress_interval, tls=tls)


def _tls(t: _Tls | None, base: Path, section: str) -> TlsConfig | None:
    """`server.tls` / `gateway.tls`, paths from the configuration file's folder. The files are read when
    the listener starts (`aarmor.tls.server_context`), where an unusable one is refused."""
    if t is None:
        return None
    if t.client_ca is None:
        extra = sorted({"require_client_cert", "crl"} & t.model_fields_set)
        if extra:
            raise ConfigError(f"configuration: `{section}.tls.{extra[0]}` needs `{section}.tls.client_ca` "
                              "(the CA that signs client certificates)")

    def path(p: str | None) -> str | None:
        return str(base / Path(p).expanduser()) if p else None

    return TlsConfig(cert=str(path(t.cert)), key=path(t.key), client_ca=path(t.client_ca),
                     require_client_cert=t.require_client_cert, service_from=t.service_from, crl=path(t.crl))


def _approvals(a: _Approvals, overrides: dict[str, Any]) -> ApprovalsConfig:
    cfg: ApprovalsConfig = overrides.get("approvals") or ApprovalsConfig(
        default_timeout=min(a.default_timeout, a.max_timeout), max_timeout=a.max_timeout,
        groups=tuple((g, tuple(people)) for g, people in a.groups.items()),
        notifiers=tuple(NotifierConfig(n.type, n.url, tuple(n.headers.items()), tuple(n.channel_mapping.items()),
                                       n.timeout, n.retries) for n in a.notifiers),
        poll_interval=a.poll_interval, lease_seconds=a.lease_seconds)
    if "approval_timeout" in overrides:
        cfg = dataclasses.replace(cfg, default_timeout=float(overrides["approval_timeout"]))
    return cfg


def _deferrals(d: _Deferrals, overrides: dict[str, Any]) -> DeferralsConfig:
    cfg: DeferralsConfig = overrides.get("deferrals") or DeferralsConfig(
        default_timeout=d.default_timeout, max_timeout=d.max_timeout, max_cascade=d.max_cascade,
        resolvers=tuple(ResolverConfig(r.url, r.timeout) for r in d.resolvers),
        poll_interval=d.poll_interval, lease_seconds=d.lease_seconds)
    if "defer_timeout" in overrides:
        cfg = dataclasses.replace(cfg, default_timeout=float(overrides["defer_timeout"]))
    if cfg.default_timeout > cfg.max_timeout:  # AARM 2.6: every deferral is bounded by the maximum
        cfg = dataclasses.replace(cfg, default_timeout=cfg.max_timeout)
    return cfg
