"""The composition root: configuration in, one wired pipeline out (DESIGN.md section 2).

`Guard.open` reads the configuration, opens the store, the keyring and the policy, and builds the single
`Mediator` every door uses. Policy reload is atomic: a policy that fails to load never replaces the active
one; the error is kept in `guard.policy_status` and logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aarmor.approvals.service import ApprovalDesk
from aarmor.canonical import format_ts
from aarmor.config import Config, load_config
from aarmor.context import Classifier, SessionContext, SignalConfig
from aarmor.credentials import CredentialBroker
from aarmor.deferrals.service import DeferralDesk, Resolver
from aarmor.errors import ChainError, ConfigError, InputError, LimitExceeded, PolicyError
from aarmor.identity import ClaimedIdentityVerifier, IdentityError, IdentityVerifier
from aarmor.identity.delegation import DelegationAuthority, DelegationCheck, chain_original_request
from aarmor.identity.mtls import TransportBoundVerifier
from aarmor.identity.revocation import RevocationCheck
from aarmor.intent import AlignmentScorer, build_scorer
from aarmor.mediator import Mediator, SessionState
from aarmor.model import Identity, ToolSpec
from aarmor.normalize import normalize_name
from aarmor.policy import PolicySet, load_builtin, load_policy
from aarmor.receipts import Keyring, ReceiptSigner
from aarmor.receipts.transparency import TreeHeadPublisher
from aarmor.recovery import OwnerLease, new_owner, recover_actions
from aarmor.store import RECOVERED, Store, open_store

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.sdk import Session
    from aarmor.telemetry.exporter import Exporter

__all__ = ["Guard", "PolicyStatus"]

log = logging.getLogger("aarmor")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """The active policy and the outcome of the last (re)load attempt."""

    source: str
    policy_id: str | None
    version: str | None
    hash: str | None
    loaded_at: datetime
    last_error: str | None = None


class _PolicyHolder:
    """Holds the active policy; reloads from its file when it changes, keeping the last good one."""

    def __init__(self, source: str, internal_domains: tuple[str, ...], limits: Any,
                 reload_interval: float, pin: str | None = None) -> None:
        self.source = source
        self.pin = pin
        self._domains = internal_domains
        self._limits = limits
        self._interval = reload_interval
        #: called with the new status after every reload attempt (telemetry: policy.loaded / policy.rejected)
        self.on_change: Callable[[PolicyStatus], None] | None = None
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._mtime = self._stat()
        self.policy: PolicySet = self._load()  # raises PolicyError: a bad policy at start-up is fatal
        self.status = PolicyStatus(source, self.policy.policy_id, self.policy.version, self.policy.hash,
                                   utc_now())

    def _stat(self) -> float | None:
        if self.source.startswith("builtin:"):
            return None
        try:
            p = Path(self.source)
            return max([p.stat().st_mtime] + [c.stat().st_mtime for c in p.glob("*.y*ml")]) if p.is_dir() \
                else p.stat().st_mtime
        except OSError:
            return None

    def _load(self) -> PolicySet:
        if self.source.startswith("builtin:"):
            policy = load_builtin(self.source.removeprefix("builtin:"), internal_domains=self._domains,
                                  limits=self._limits)
        else:
            policy = load_policy(self.source, internal_domains=self._domains, limits=self._limits)
        if self.pin is not None and policy.hash != self.pin:
            # every node of a cluster decides with the same policy: another one is an error, not an update
            raise PolicyError(f"policy `{self.source}` has hash {policy.hash}, not the pinned {self.pin} "
                              "(`policy_pin`)")
        return policy

    def current(self) -> PolicySet:
        # Hot path: one monotonic read; a stat at most once per interval.
        if self._interval > 0 and time.monotonic() - self._checked >= self._interval:
            self.maybe_reload()
        return self.policy

    def maybe_reload(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            mtime = self._stat()
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                self.reload()

    def reload(self) -> PolicyStatus:
        try:
            new = self._load()
        except (PolicyError, OSError) as exc:
            # INVARIANT: a policy that fails to load never replaces the active one.
            self.status = PolicyStatus(self.source, self.policy.policy_id, self.policy.version,
                                       self.policy.hash, self.status.loaded_at, last_error=str(exc))
            log.error("policy reload rejected, keeping %s (%s): %s", self.policy.policy_id,
                      self.policy.hash, exc)
            if self.on_change is not None:
                self.on_change(self.status)
            return self.status
        self.policy = new
        self.status = PolicyStatus(self.source, new.policy_id, new.version, new.hash, utc_now())
        if self.on_change is not None:
            self.on_change(self.status)
        log.info("policy loaded: %s version %s (%s)", new.policy_id, new.version, new.hash)
        return self.status


class Guard:
    """An aarmor runtime: policy, context store, keys and the mediation pipeline.

    Use `Guard.open()`; then `guard.session(...)` for each agent session.
    """

    def __init__(self, config: Config, *, verifier: IdentityVerifier | None = None,
                 scorer: AlignmentScorer | None = None, clock: Callable[[], datetime] = utc_now,
                 policy_reload_interval: float = 2.0, recover: bool = True) -> None:
        self.config = config
        self._clock = clock
        # `intent.scorer` (docs/intent.md); `embedding` without the extra fails here, before anything opens
        self.scorer: AlignmentScorer = scorer or build_scorer(config.intent)
        # `identity.mode`; a JWKS file that cannot be used fails here, before anything opens. Wrapped so that a
        # service a client certificate vouched for stays vouched (`jwt+mtls`, aarmor.identity.mtls)
        identity_verifier: IdentityVerifier = TransportBoundVerifier(verifier or _verifier(config))
        self._policy = _PolicyHolder(config.policy, config.internal_domains, config.limits,
                                     policy_reload_interval, config.policy_pin)
        self.store: Store = open_store(config.store)
        try:
            self.keyring = Keyring.open(config.keys)
            #: AARM R9 just-in-time credentials (`credentials`; docs/credentials.md): inert with no tool listed
            creds = config.credentials if config.credentials.keys is not None else dataclasses.replace(
                config.credentials, keys=config.keys / "credentials")
            self.credentials = CredentialBroker(creds, store=self.store, clock=clock)
        except BaseException:
            self.store.close()
            raise
        d = config.identity_delegation
        #: signs and verifies delegation chains (`Session.delegate`; docs/identity.md "Delegation")
        self.delegation = DelegationAuthority(self.keyring, issuer=d.issuer, max_ttl=d.max_ttl,
                                              max_depth=d.max_depth, leeway=d.leeway)
        # every verifier, a custom one too, gets the chain checked; only mode `jwt` refuses unsigned links
        identity_verifier = DelegationCheck(identity_verifier, self.delegation,
                                            require_signed=config.identity_mode == "jwt")
        # Revocation is always on (docs/identity.md "Revocation"), outermost: around the mode's verifier or a
        # `verifier=` passed in alike, and after the chain verified (so it sees verified delegation link ids).
        identity_verifier = RevocationCheck(identity_verifier, self.store)
        #: the identity verifier every decision goes through: RevocationCheck(DelegationCheck(
        #: TransportBoundVerifier(the mode's verifier or yours)))
        self.verifier: IdentityVerifier = identity_verifier
        self.classifier = Classifier(
            declared={name: t.returns for name, t in config.tools.items()},
            trusted=frozenset(name for name, t in config.tools.items() if t.trusted),
            levels=config.classification.levels, unclassified=config.classification.unclassified,
            limits=config.limits)
        self._signals = SignalConfig(internal_domains=tuple(d.lower().strip(".") for d in config.internal_domains),
                                     tool_classes=tuple((k, t.classes) for k, t in config.tools.items() if t.classes))
        #: STEP_UP requests: decided through `guard.approvals.decide` (CLI, HTTP API, page)
        self.approvals = ApprovalDesk(self.store, config.approvals, clock=clock)
        self._notifications = _notifications(config, self.approvals.record_delivery)
        self.approvals.notifications = self._notifications
        #: DEFER deferrals: resolved through `guard.deferrals.supply`, resolvers or `Session.update_context`
        self.deferrals = DeferralDesk(self.store, config.deferrals, clock=clock)
        self.mediator = Mediator(
            policy=self._policy.current, store=self.store, signer=ReceiptSigner(self.keyring),
            verifier=identity_verifier,
            scorer=self.scorer, approvals=self.approvals, deferrals=self.deferrals,
            config=config, clock=clock, credentials=self.credentials)
        #: the telemetry exporter (AARM R8), None without `telemetry.sinks`
        self.telemetry: Exporter | None = None
        try:
            self.telemetry = _telemetry(config, self.store, self._policy, clock)
        except BaseException:
            self.keyring.close()
            self.store.close()
            raise
        #: signed tree heads of the receipt transparency log every `transparency.sth_interval` s (0: none)
        self.tree_heads: TreeHeadPublisher | None = None
        if config.transparency.sth_interval > 0:
            self.tree_heads = TreeHeadPublisher(self.store, self.keyring, config.transparency.sth_interval, clock)
        #: this Guard as the owner of the actions it mediates; its lease says it is alive (docs/durability.md)
        self.owner = new_owner()
        self.store.owner = self.owner
        # each renewal also writes the records of executed actions the store refused earlier (disk full)
        self._lease = OwnerLease(self.store, self.owner, config.recovery_lease,
                                 on_tick=self.mediator.flush_unrecorded)
        self._closed = False
        try:
            self._lease.start()
        except BaseException:
            self.close()
            raise
        if recover:
            self.recover_abandoned()
            self.recover_actions()

    @classmethod
    def open(cls, config: str | os.PathLike[str] | Config | None = None, **overrides: Any) -> Guard:
        """Open a runtime from a configuration file (or `Config`) with keyword overrides.

        Overrides: `policy=` a path or `builtin:NAME`, `store=` a store URL, `keys=` a key directory, `home=`,
        and any other `aarmor.config.load_config` keyword.

        Raises:
            ConfigError: invalid configuration. PolicyError: the policy does not load.
            StoreError: the store cannot be opened. SigningKeyError: the signing key is unusable.
        """
        if isinstance(config, Config):
            if overrides:
                raise TypeError("pass overrides to load_config, not together with a Config object")
            return cls(config)
        return cls(load_config(config, **overrides))

    # --- policy -------------------------------------------------------------------------------
    @property
    def policy(self) -> PolicySet:
        return self._policy.policy

    @property
    def policy_status(self) -> PolicyStatus:
        return self._policy.status

    def reload_policy(self) -> PolicyStatus:
        """Reload the policy now; on failure the active policy stays and `last_error` says why."""
        return self._policy.reload()

    # --- sessions -----------------------------------------------------------------------------
    def session(self, *, identity: Identity, original_request: str | None = None,
                tools: list[ToolSpec] | tuple[ToolSpec, ...] | None = None, session_id: str | None = None,
                intent_classification: str | None = None) -> Session:
        """Start (or, with an existing `session_id`, resume) an agent session.

        Raises:
            InputError: bad identity, request text over the limit, a tool spec name that cannot be
                normalised, or `session_id` names a session that has ended.
            ChainError: resuming a session whose stored log does not verify.
        """
        from aarmor.adapters.sdk import Session

        self._check_open()
        if not isinstance(identity, Identity):
            raise InputError(f"identity must be an aarmor.Identity, found {type(identity).__name__}")
        if original_request is not None and len(original_request) > self.config.limits.max_request_chars:
            raise LimitExceeded("max_request_chars", self.config.limits.max_request_chars,
                                len(original_request), "original request")
        specs = tuple(tools or ())
        for spec in specs:
            normalize_name(spec.name)
        original_request = _chain_request(identity, original_request)
        sid = session_id or "sess_" + uuid.uuid4().hex
        identity = dataclasses.replace(identity, session=sid)
        now = self._clock()
        if session_id is not None and self.store.log_head(sid) is not None:
            ctx = self._resume(sid)
            if ctx.ended:
                raise InputError(f"session `{sid}` has ended; start a new session")
        else:
            ctx = SessionContext.start(self.store, session_id=sid, identity=identity,
                                       original_request=original_request,
                                       intent_classification=intent_classification, tools=specs, now=now,
                                       classifier=self.classifier, window=self.config.limits.max_window,
                                       limits=self.config.limits, signals=self._signals)
        state = SessionState(sid, identity, ctx)
        head = self.store.receipt_head(sid)
        if head is not None:
            state.receipt_seq, state.receipt_head = head
        return Session(self, state)

    def add_resolver(self, fn: Resolver, *, name: str | None = None) -> None:
        """Register a deferral resolver: called with a deferral's view, returns context fields or None."""
        self.deferrals.add_resolver(fn, name=name)

    def recover_abandoned(self) -> list[str]:
        """End as DENY (with a receipt) every approval or deferral whose waiting caller died.

        An item is abandoned when its owner stopped renewing its lease (`lease_seconds`). Run at start-up;
        safe to run from several processes (each item is claimed by compare-and-set). Returns receipt ids.
        """
        from aarmor.waiting import parse_ts

        now = self._clock()
        # a waiter lives inside a Guard: while a Guard of its process holds a live owner lease (judged by the
        # store's lease clock, which wall-clock steps do not move), its items are not abandoned, whatever the
        # wall-clock lease on the item says (docs/durability.md "Clock jumps")
        live = {_process(o) for o in self.store.owners_alive()}
        done: list[str] = []
        for status in ("pending", "approved"):
            for rec in self.store.pending_list(status=status):
                if parse_ts(rec.lease_until) > now or _process(rec.owner) in live:
                    continue  # its caller is alive (or was, moments ago)
                claimed = self.store.pending_update(rec.item_id, rec.version, status="abandoned", outcome={
                    "reason": "waiting caller ended", "ended_at": format_ts(now)})
                if claimed is None:
                    continue
                held = self.store.inflight_owner(rec.session_id, rec.action_id)
                if held == RECOVERED or (held not in (None, self.owner) and
                                         not self.store.inflight_claim(rec.session_id, rec.action_id, held)):
                    continue  # its end is (being) recorded by `recover_actions`
                try:
                    st = self._state(rec.session_id, Identity.from_json(rec.body["action"]["identity"]))
                    receipt = self.mediator.close_abandoned(st, claimed)
                except Exception:  # recorded as abandoned in the store either way; keep going
                    log.exception("could not write the receipt for abandoned %s %s", rec.kind, rec.item_id)
                    continue
                if receipt:
                    done.append(receipt)
        return done

    def recover_actions(self) -> list[str]:
        """End with an "unknown: process ended" receipt every action a dead process left between its
        `action_requested` entry and its outcome (docs/durability.md).

        A process is dead when its owner lease (`recovery.lease_seconds`) ran out. Run at start-up after
        `recover_abandoned`; safe from several processes and while others mediate (each action is claimed
        by compare-and-set; a live process's actions are never touched). Returns receipt ids.
        """
        return recover_actions(self.store, self.mediator, self.owner, self._state)

    def _resume(self, sid: str) -> SessionContext:
        try:
            return SessionContext.resume(self.store, sid, classifier=self.classifier,
                                         window=self.config.limits.max_window, limits=self.config.limits,
                                         signals=self._signals)
        except ChainError as exc:  # AARM R8: a chain that does not verify is an event for the SIEM too
            if self.telemetry is not None:
                from aarmor.telemetry.events import system_event

                at = format_ts(self._clock())
                with contextlib.suppress(Exception):
                    self.store.telemetry_append([system_event(
                        "verification.failed", time=at, severity="critical", source=f"chain|{sid}|{at}",
                        alert={"kind": "chain_broken", "message": str(exc),
                               "detail": {"session_id": sid, "seq": exc.seq}})])
            raise

    def _state(self, sid: str, identity: Identity) -> SessionState:
        state = SessionState(sid, identity, self._resume(sid))
        head = self.store.receipt_head(sid)
        if head is not None:
            state.receipt_seq, state.receipt_head = head
        return state

    def protect(self, tool: str, *, operation: str | None = None) -> Callable[[Any], Any]:
        """Decorator: mediate every call of a sync or async function in the current session."""
        from aarmor.adapters.sdk import protect

        return protect(tool, operation=operation)

    # --- lifecycle ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("guard already closed")

    def close(self) -> None:
        """Release waiters (they end as DENY) and close the store."""
        if self._closed:
            return
        self._closed = True
        self.approvals.close()
        self.deferrals.close()
        if self.telemetry is not None:  # a last delivery pass before the store closes
            self.telemetry.close()
        if self._notifications is not None:
            self._notifications.close()
        # a last try at the records the store refused (the lease tick retries them while we run)
        with contextlib.suppress(Exception):
            if self.mediator.flush_unrecorded():
                log.error("closing with executed actions whose outcome the store refused; they stay in flight "
                          "and end as \"unknown: process ended\" by crash recovery")
        self._lease.close()  # after the waiters' outcomes are written: nothing of ours is left to recover
        self.credentials.close()
        if self.tree_heads is not None:  # before the keyring and the store it signs and reads
            self.tree_heads.close()
        self.keyring.close()
        self.store.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _process(owner: str) -> str:
    """`host:pid` of an owner id (`host:pid:random`): Guards and waiters of one process share it."""
    return owner.rsplit(":", 1)[0]


def _notifications(config: Config, on_result: Callable[[str, str, str, bool, str], None]) -> Any:
    if not config.approvals.notifiers:
        return None
    from aarmor.approvals.notify import Notifications

    return Notifications(config.approvals.notifiers, page_url=config.server.base_url, on_result=on_result)


def _telemetry(config: Config, store: Store, policy: _PolicyHolder, clock: Callable[[], datetime]
               ) -> Exporter | None:
    """With `telemetry.sinks`: every commit spools its events, policy (re)loads are events, and an exporter
    thread per sink delivers them (docs/telemetry.md). Without: nothing is spooled at all.

    Raises:
        ConfigError: a sink that cannot be built (options, format, a missing extra).
    """
    t = config.telemetry
    if not t.sinks:
        return None
    from aarmor.telemetry.events import project, system_event
    from aarmor.telemetry.exporter import EventFilter, Exporter
    from aarmor.telemetry.sinks import build_sink

    built = []
    try:
        for sk in t.sinks:
            built.append((build_sink(sk.type, sk.name, sk.format, dict(sk.options)),
                          EventFilter(frozenset(sk.types), frozenset(sk.tools), frozenset(sk.decisions),
                                      frozenset(sk.identities), sk.min_severity)))
    except BaseException:
        for sink, _ in built:
            sink.close()
        raise
    allowed = frozenset(t.export_parameters)
    store.telemetry_projector = lambda logs, receipts: project(logs, receipts, export_parameters=allowed)
    gauges = [g for g in (getattr(sink, "set_queue_depth", None) for sink, _ in built) if g is not None]

    def on_depth(n: int) -> None:  # the spool's depth, for sinks that export it (OTLP: a gauge)
        for gauge in gauges:
            gauge(n)

    exporter = Exporter(store, built, batch_size=t.batch_size, poll_interval=t.poll_interval,
                        max_events=t.spool_max_events, clock=clock, on_depth=on_depth if gauges else None)

    def on_policy(status: PolicyStatus) -> None:
        at = format_ts(clock())
        policy_json = {"policy_id": status.policy_id, "version": status.version, "hash": status.hash,
                       "error": status.last_error}
        type_ = "policy.rejected" if status.last_error else "policy.loaded"
        try:
            store.telemetry_append([system_event(type_, time=at, severity="high" if status.last_error else "info",
                                                 source=f"{status.source}|{status.hash}|{at}", policy=policy_json)])
        except Exception:
            log.exception("could not spool the %s event", type_)
        exporter.wake()

    policy.on_change = on_policy
    on_policy(policy.status)
    exporter.start()
    return exporter


def _chain_request(identity: Identity, original_request: str | None) -> str | None:
    """A sub-agent's session carries the human's original request from its signed delegation chain.

    Raises:
        InputError: a malformed link, or a different original request than the one the chain carries.
    """
    try:
        carried = chain_original_request(identity.delegation)
    except IdentityError as exc:
        raise InputError(str(exc)) from None
    if carried is None:
        return original_request
    if original_request is not None and original_request != carried:
        raise InputError("the original request differs from the one the delegation chain carries (the human's "
                         "request travels with the chain; leave `original_request` unset)")
    return carried


def _verifier(config: Config) -> IdentityVerifier:
    """`identity.mode`: `jwt` checks bearer tokens (docs/identity.md); `enforce`/`flag` take claims as given.

    Raises:
        ConfigError: mode `jwt` without `identity.jwt`, or a JWKS file that cannot be used.
    """
    if config.identity_mode == "jwt":
        from aarmor.identity.tokens import TokenVerifier

        if config.identity_jwt is None:
            raise ConfigError("identity mode `jwt` needs an `identity.jwt` section")
        return TokenVerifier(config.identity_jwt)
    return ClaimedIdentityVerifier(config.identity_mode)
