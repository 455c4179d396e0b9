"""``minisip serve``: the one nursery tree that runs the PBX.

Start-up order: configuration (a bad config at start is fatal, later it is
only reported), persistent state from the data dir, listeners (bound before
anything is announced, so "serving" means reachable), then the tasks: one per
listener, the timer loop, the config watcher, the control socket and the
signal handler.

Shutdown (SIGINT/SIGTERM, ARCHITECTURE.md rule 6): while the sockets are still
open, new calls and registrations get 503, every call is released on the wire
(BYE to both parties; CANCEL to ringing phones and 503 to their callers) and
the server waits up to ``shutdown_grace`` for the answers; then the tree is
cancelled and ``finally`` writes the CDRs and closes the SQLite files. A second
signal cuts the wait short.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .collector import run_collector
from .config.loader import ConfigError
from .config.paths import resolve_data_dir
from .config.reloader import Reloader
from .config.schema import FILES, START_ONLY, Snapshot
from .config.watcher import ConfigHolder, watch_config
from .control.api import ControlError, Rows, require_arg
from .control.events import EventBus
from .control.server import serve_control
from .faults import Faults
from .loopwatch import LoopWatch
from .media.pacer import Pacer
from .media.relay import MediaIO, PortPool
from .pbx.apps import starters
from .pbx.apps.voicemail import VoicemailService
from .pbx.calls import CallController
from .pbx.cdr import CdrStore
from .pbx.core import Pbx
from .pbx.events import EventService
from .pbx.guard import AuthGuard
from .pbx.lines.manager import LineManager
from .pbx.location import Binding, LocationService
from .pbx.registrar import Registrar, RegistrarPolicy
from .pbx.storage import checkpoint_forever
from .sip.digest import DigestAuthenticator
from .sip.peer import Peer
from .transaction.layer import TransactionLayer
from .transaction.timers import Timers
from .transport import tls
from .transport.driver import SipDriver
from .transport.stream import StreamListener
from .transport.udp import UdpListener

log = logging.getLogger("minisip")

# For trace filters only: rough on purpose, the trace shows the message as it is.
_CALL_ID = re.compile(r"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.I | re.M)
_USERS = re.compile(r"^(?:From|f|To|t)[ \t]*:[^\r\n]*?sips?:([^@;>\s]+)@", re.I | re.M)
#: seconds between sweeps of the digest nonce-counts (sealing past seconds, dropping expired)
NONCE_SWEEP = 5.0


class ListenError(OSError):
    """A listener could not be opened; ``strerror`` names the address and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class ServeOptions:
    config_dir: Path = Path("configs")
    #: default: system.yaml's data_dir, relative to the configuration directory
    data_dir: Path | None = None
    hosts: list[str] | None = None  #: listen addresses; default: system.yaml's listen
    udp_port: int | None = None
    tcp_port: int | None = None
    tls_port: int | None = None


@dataclass
class ServerInfo:
    """What a started server tells its caller (tests, the startup banner)."""
    listeners: list[str]
    users: int
    tls_fingerprint: str | None
    data_dir: Path
    control_socket: Path
    default_passwords: list[str] = field(default_factory=list)


def default_passwords(snap: Snapshot) -> set[str]:
    """Users whose password is still their name (the manual's presets, or a hand edit)."""
    return {n for n, u in snap.users.items() if u.password == n}


def warn_default_password(user: str) -> None:
    log.warning("user %s has its name as password; change it with: "
                "minisip user set %s --password ...", user, user)


@contextlib.contextmanager
def _naming(transport: str, host: str, port: int) -> Iterator[None]:
    """A bind error names the address it was for, in one line."""
    try:
        yield
    except OSError as exc:
        where = f"[{host}]" if ":" in host else host
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(exc.errno, f"cannot listen on {transport}:{where}:{port}: "
                                     f"{reason}") from None


def _secret(data_dir: Path) -> bytes:
    """The nonce key: kept so nonces stay valid across a restart."""
    path = data_dir / "secret.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _policy(snap: Snapshot) -> RegistrarPolicy:
    reg = snap.system.registration
    return RegistrarPolicy(reg.min_expires, reg.max_expires, reg.default_expires,
                           snap.system.max_contacts_per_user)


class Server:
    """The running PBX's parts, reachable from the control handlers.

    ``clock`` is the layers' monotonic "now" (trio's; tests/pbx/harness.py drives
    the same wiring with a fake one, without sockets)."""

    def __init__(self, opts: ServeOptions, *,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.opts = opts
        self.started = time.time()
        self.holder = ConfigHolder(opts.config_dir)  # raises ConfigError: fatal at start
        system = self.holder.current.system
        self.data_dir = resolve_data_dir(opts.config_dir, system.data_dir, opts.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.bus = EventBus()
        self.faults = Faults()  #: exceptions caught at an entry point (SIP, timers, RTP, control)
        self.loop_watch = LoopWatch()  #: the run loop's stalls and what caused them
        self.location = LocationService(self.data_dir / "registrations.db",
                                        on_state=self._user_state,
                                        on_binding=self._binding_event)
        # Built with defaults; _apply_config puts the snapshot's settings in, here and
        # after every reload (one place, so no key is live at start but dead on reload).
        self.auth = DigestAuthenticator(system.realm, secret=_secret(self.data_dir))
        self.guard = AuthGuard()
        self.layer = TransactionLayer()
        self.registrar = Registrar(self.location, self.auth, self.guard, self._password_of,
                                   lambda: _policy(self.holder.current), self._open_gateway)
        self.driver = SipDriver(self.layer, self._handle_events, self._commit,
                                trace=self._trace, faults=self.faults, clock=clock)
        self.pbx = Pbx(self.layer, self.registrar, self.bus.publish, now=clock,
                       local_address=self.driver.local_address)
        self.driver.stateless = self.pbx.stateless
        self.cdr = CdrStore(self.data_dir, timeout=0)
        self.lines = LineManager(self.pbx, self.location, lambda: self.holder.current)
        self.calls = CallController(self.pbx, self.location, lambda: self.holder.current,
                                    self.cdr, lines=self.lines)
        self.media_io = MediaIO(on_fault=self.faults.record)
        self.calls.media_io = self.media_io
        self.calls.port_pool = PortPool(system.rtp_port_min, system.rtp_port_max)
        self.events = EventService(self.pbx, self.calls, self.location,
                                   lambda: self.holder.current,
                                   self.data_dir / "registrations.db", self.bus.publish)
        self.events.wants = self.pbx.wants = self.bus.wants
        # A change's NOTIFY delay counts from its datagram's arrival in the socket.
        self.events.notifier.lag = lambda: max((u.delay for u in self.udp), default=0.0)
        self.pacer = Pacer()  # one clock for every prompt and music on hold
        self.calls.pacer = self.pacer
        self.voicemail = VoicemailService(self.data_dir, lambda: self.holder.current)
        # the message waiting lamp: voicemail counts, the events framework notifies
        self.events.mailbox_counts = self.voicemail.mailbox_counts
        self.voicemail.changed.append(self.events.mwi_changed)
        self.voicemail.flush = self.driver.flush
        self.driver.wall_timers += [self.location, self.cdr, self.events]
        self.driver.mono_timers += [self.pbx.timers, self.guard]
        self.udp: list[UdpListener] = []
        self.streams: list[StreamListener] = []
        self.fingerprint: str | None = None
        self._tls_loaded: tuple[object, ...] | None = None  #: the TLS files served (stat)
        self._tls_names: list[str] = []  #: names a self-signed certificate is made for
        self._default_passwords = default_passwords(self.holder.current)
        self.stopping = False
        self.reloader = Reloader(opts.config_dir, self.holder.current)
        #: start-only keys as they were at start, and changes already logged
        self.started_with = {k: getattr(system, k) for k in START_ONLY}
        self._restart_logged: dict[str, Any] = {}
        self._apply_config(self.holder.current)

    # -- hooks ------------------------------------------------------------------
    def _commit(self) -> None:
        # End of a receive batch, before its responses leave: what they confirm is on disk.
        clock, note = time.perf_counter, self.loop_watch.note
        t0 = clock()
        self.location.commit()
        t1 = clock()
        self.cdr.commit()
        t2 = clock()
        self.events.commit()
        t3 = clock()
        self.voicemail.commit()
        t4 = clock()
        if t4 - t0 >= 0.005:  # name the slow part in the loop's stall report
            note("location commit", t1 - t0)
            note("cdr commit", t2 - t1)
            note("events commit", t3 - t2)
            note("voicemail commit", t4 - t3)

    def _handle_events(self, now: float) -> None:
        self.pbx.handle_events(now)

    def _password_of(self, user: str) -> str | None:
        u = self.holder.current.users.get(user)
        if u is not None:
            return u.password
        gateway = self.lines.gateway_account(user)  # a type 1 line's gateway registering
        return gateway.password if gateway is not None and gateway.password else None

    def _open_gateway(self, aor: str) -> bool:
        gateway = self.lines.gateway_account(aor)
        return gateway is not None and not gateway.password

    def _user_state(self, user: str, online: bool) -> None:
        if user not in self.holder.current.users and self.lines.gateway_account(user):
            self.lines.gateway_changed(user)
            return
        self.bus.publish("users", "user_state",
                         {"user": user, "state": "online" if online else "offline"})
        self.events.user_state(user, online)

    def _binding_event(self, event: str, b: Binding) -> None:
        if self.bus.wants("registrations"):
            self.bus.publish("registrations", event, {
                "user": b.aor, "contact": b.contact, "expires": b.remaining(time.time()),
                "source": str(b.source), "user_agent": b.user_agent})

    def _trace(self, direction: str, data: bytes, peer: Peer) -> None:
        if self.bus.wants("sip"):  # the hot path pays one dict lookup when nobody traces
            text = data.decode("utf-8", "replace")
            m = _CALL_ID.search(text)
            self.bus.publish("sip", "sip_message", {
                "direction": direction, "transport": peer.transport, "host": peer.host,
                "port": peer.port, "text": text, "call_id": m.group(1) if m else None,
                "users": sorted(set(_USERS.findall(text)))})

    def _apply_config(self, snap: Snapshot) -> None:
        """Put a snapshot's settings in force: for the next challenge, transaction and
        call (calls already up keep the snapshot they started with). The rest of the
        live keys are read from the snapshot where they are used."""
        system = snap.system
        self.auth.configure(realm=system.realm, nonce_ttl=system.nonce_ttl,
                            algorithms=system.digest_algorithms)
        sec = system.security
        self.guard.configure(max_failures=sec.auth_failures_before_block,
                             max_users_per_source=sec.max_users_per_source,
                             window=sec.failure_window, block_seconds=sec.block_seconds)
        t = system.timers
        self.layer.timers = Timers(t1=t.t1, t2=t.t2, t4=t.t4)
        self.driver.advertised = system.sip_address
        assert self.calls.port_pool is not None
        self.calls.port_pool.configure(system.rtp_port_min, system.rtp_port_max)
        self._reload_tls(system)
        for key, value in self.restart_pending(snap).items():
            if self._restart_logged.get(key, self.started_with[key]) != value["configured"]:
                log.warning("system.yaml %s changed to %r: takes effect after restart "
                            "(running with %r)", key, value["configured"], value["running"])
        self._restart_logged = {k: getattr(system, k) for k in START_ONLY}

    def restart_pending(self, snap: Snapshot | None = None) -> dict[str, dict[str, Any]]:
        """Start-only keys whose value in system.yaml differs from the one at start."""
        system = (snap or self.holder.current).system
        return {k: {"running": _plain(v), "configured": _plain(getattr(system, k))}
                for k, v in self.started_with.items() if getattr(system, k) != v}

    def _on_reload(self, snap: Snapshot | None, error: ConfigError | None) -> None:
        t0 = time.perf_counter()
        try:
            self._apply_reload(snap, error)
        finally:
            self.loop_watch.note("reload", time.perf_counter() - t0)

    def _apply_reload(self, snap: Snapshot | None, error: ConfigError | None) -> None:
        if error is not None:
            for line in str(error).splitlines():  # one whole line per problem in the log
                log.error("configuration not reloaded, still serving the previous one: %s",
                          line)
            self.bus.publish("reloads", "reload_failed", {"error": str(error)})
            return
        assert snap is not None
        self._apply_config(snap)
        before = self._default_passwords
        self._default_passwords = default_passwords(snap)
        for user in self._default_passwords:
            if user not in before:  # a hand edit gave a user its name as password
                warn_default_password(user)
        gateways = {line.account for line in snap.lines.values() if line.type == 1}
        for aor in [a for a in self.location.aors()
                    if a not in snap.users and a not in gateways]:
            self.location.remove_all(aor)  # a deleted user's phones are unregistered
        self.location.commit()
        self.events.reloaded(snap)
        self.lines.configure(snap)
        self.driver.flush()  # registrations of new or changed lines leave now
        self.voicemail.reloaded(snap)
        log.info("configuration reloaded: %d users", len(snap.users))
        self.bus.publish("reloads", "reloaded", {"users": len(snap.users)})

    # -- listeners -----------------------------------------------------------------
    async def bind(self) -> None:
        system = self.holder.current.system
        o = self.opts
        hosts = o.hosts or list(system.listen)
        udp_port = system.udp_port if o.udp_port is None else o.udp_port
        tcp_port = system.tcp_port if o.tcp_port is None else o.tcp_port
        tls_port = system.tls_port if o.tls_port is None else o.tls_port
        ctx = None
        if tls_port:
            self._tls_names = [h for h in [system.sip_address, *hosts]
                               if h and h not in ("0.0.0.0", "::")] or ["localhost"]
            cert, key = tls.certificate_paths(self.data_dir, system.tls_certificate,
                                              system.tls_private_key, self._tls_names)
            ctx = tls.server_context(cert, key)
            self.fingerprint = tls.fingerprint(cert)
            self._tls_loaded = tls.files_state(cert, key)
        for host in hosts:
            if udp_port:
                with _naming("udp", host, udp_port):
                    self.udp.append(UdpListener(host, udp_port))
                self.driver.add_sender("udp", self.udp[-1])
            for transport, port, c in (("tcp", tcp_port, None), ("tls", tls_port, ctx)):
                if port:
                    listener = StreamListener(host, port, transport, c)
                    listener.server_name = self.lines.resolver.name_for
                    with _naming(transport, host, port):
                        await listener.bind()
                    self.streams.append(listener)
                    self.driver.add_sender(transport, listener)

    def _reload_tls(self, system: Any) -> None:
        """A renewed certificate (the same files rewritten, or others named in
        system.yaml) serves the next TLS connections; connections up keep theirs. A
        pair that does not load is reported and the previous one stays."""
        if self._tls_loaded is None:
            return
        try:
            cert, key = tls.certificate_paths(self.data_dir, system.tls_certificate,
                                              system.tls_private_key, self._tls_names)
            state = tls.files_state(cert, key)
            if state == self._tls_loaded:
                return
            ctx = tls.server_context(cert, key)
            fingerprint = tls.fingerprint(cert)
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.error("TLS certificate %s not loaded (%s): still serving the previous one",
                      system.tls_certificate or "(self-signed)", exc)
            return
        for listener in self.streams:
            if listener.ssl_context is not None:
                listener.ssl_context = ctx
        self._tls_loaded, self.fingerprint = state, fingerprint
        log.info("TLS certificate %s loaded for new connections: fingerprint %s", cert,
                 fingerprint)

    def _listener_names(self) -> list[str]:
        return [u.name for u in self.udp] + [s.name for s in self.streams]

    def info(self) -> ServerInfo:
        snap = self.holder.current
        return ServerInfo(self._listener_names(), len(snap.users),
                          self.fingerprint, self.data_dir.absolute(),
                          self.control_path.absolute(),
                          sorted(self._default_passwords))

    @property
    def control_path(self) -> Path:
        return self.data_dir / "control.sock"

    # -- control requests ------------------------------------------------------------
    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        h = self.holder
        return {
            "version": __version__,
            "uptime": round(time.time() - self.started, 1),
            "stopping": self.stopping,
            "listeners": self._listener_names(),
            "tls_fingerprint": self.fingerprint,
            "config": {"dir": str(self.opts.config_dir), "generation": h.generation,
                       "last_reload": h.last_reload,
                       "error": str(h.last_error) if h.last_error else None,
                       "restart_pending": self.restart_pending()},
            "data_dir": str(self.data_dir.absolute()),
            "users": len(h.current.users),
            "online": sum(1 for a in self.location.aors() if a in h.current.users),
            "lines": self._line_summary(),
            "calls": len(self.calls.calls),
            "calls_completed": self.calls.completed,
            "bindings": self.location.count(),
            "tables": self.tables(),
            "memory": {"allocated_blocks": sys.getallocatedblocks()},
            "counters": {
                "registered": self.registrar.registered,
                "challenged": self.registrar.challenged,
                "refused": self.registrar.refused,
                "bad_messages": self.driver.bad_messages + self.pbx.bad_input
                + self.layer.counters.bad_messages,
                "shed_overload": self.driver.shed,
                "keepalives": self.driver.keepalives,
                "send_failures": self.driver.send_failures,
                "transport_failures": self.layer.counters.transport_failures,
                "responses_dropped": self.layer.counters.responses_dropped,
            },
            "events": self.events.stats(),
            "security": {
                "auth_failed": self.registrar.auth_failed,
                "blocks": self.guard.blocks,
                "refused_while_blocked": self.guard.blocked,
                "scanners_dropped": self.pbx.scanners_dropped,
            },
            "transactions": {k: getattr(self.layer.counters, k)
                             for k in ("ict", "nict", "ist", "nist")},
            "faults": self.faults.as_dict(),
            "loop": self.loop_watch.stats(),
        }

    def tables(self) -> dict[str, int]:
        """The sizes of the state a peer can make grow: each must come back down."""
        c = self.layer.counters
        return {"transactions": c.ict + c.nict + c.ist + c.nist,
                "calls": len(self.calls.calls), "pbx_timers": self.pbx.timers.entries,
                "auth_guard": len(self.guard), "expiry_heap": self.location.heap_entries,
                "connections": sum(len(s.connections) for s in self.streams),
                "cdrs_pending": self.cdr.pending}

    def _known_user(self, args: dict[str, Any]) -> str | None:
        """The ``user`` filter of a listing, refused when no such user exists."""
        user = require_arg(args, "user", str, default=None)
        if user is not None and user not in self.holder.current.users:
            raise ControlError(f"no user {user!r} in users.yaml")
        return user

    def _line_summary(self) -> dict[str, Any]:
        states = self.lines.states()
        return {"configured": len(states),
                "online": sum(1 for s in states if s["state"] == "online"),
                "offline": sorted(f"{s['line']} ({s['reason']})" for s in states
                                  if s["state"] != "online"),
                "trunks": len(self.holder.current.trunks),
                "calls": sum(self.lines.usage.calls.values())}

    def line_states(self, args: dict[str, Any]) -> Rows:
        return Rows(self.lines.states())

    def registrations(self, args: dict[str, Any]) -> Rows:
        user = self._known_user(args)
        now = time.time()
        aors = [user] if user is not None else sorted(self.location.aors())
        return Rows([{"user": aor, "contact": b.contact, "expires": b.remaining(now),
                      "source": str(b.source), "user_agent": b.user_agent}
                     for aor in aors
                     for b in sorted(self.location.bindings(aor), key=lambda b: b.contact)])

    def user_states(self, args: dict[str, Any]) -> Rows:
        """Users that are not offline, with their state and devices (offline is the rest).
        An unknown ``user`` is simply offline: the CLI may know it before a reload."""
        user = require_arg(args, "user", str, default=None)
        users = self.holder.current.users
        if user is not None:
            names = [user]
        else:
            names = sorted(n for n in {*self.location.aors(), *self.calls.talking,
                                       *self.calls.ringing} if n in users)
        rows = []
        for name in names:
            state = self.calls.user_state(name)
            if state != "offline":
                rows.append({"user": name, "state": state,
                             "contacts": [b.contact for b in self.location.bindings(name)]})
        return Rows(rows)

    def live_calls(self, args: dict[str, Any]) -> Rows:
        user = self._known_user(args)
        calls = self.calls.live()
        if user is not None:
            calls = [c for c in calls if user in (c["caller"], c["callee"])]
        return Rows(calls)

    def presence(self, args: dict[str, Any]) -> Rows:
        return Rows(self.events.overview(self._known_user(args)))

    def cdr_query(self, args: dict[str, Any]) -> Rows:
        user = self._known_user(args)
        since = args.get("since")
        if since is not None and (not isinstance(since, int | float) or isinstance(since, bool)):
            raise ControlError("argument 'since' must be a number (seconds since the epoch)")
        return Rows(self.cdr.query(user=user, since=since,
                                   limit=require_arg(args, "limit", int, default=100),
                                   line=require_arg(args, "line", str, default=None)))

    def voicemail_delete(self, args: dict[str, Any]) -> dict[str, Any] | None:
        """Delete a message through the server, so the user's lamp follows."""
        gone = self.voicemail.mailbox.delete(int(args.get("id", 0)))
        self.voicemail.commit()
        self.driver.flush()  # the NOTIFY of the lamp, if any
        return gone.as_dict() if gone is not None else None

    async def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        """SIGHUP, ``minisip reload``: read and check every file again now."""
        _, snap, error = await self.reloader.load(force=True)
        self._on_reload_async(snap, error)
        return {"ok": error is None, "error": str(error) if error else None,
                "generation": self.holder.generation}

    def handlers(self) -> dict[str, Any]:
        async def wrap(fn: Any, args: dict[str, Any]) -> Any:
            return fn(args)
        sync = {"status": self.status, "registrations": self.registrations,
                "user_states": self.user_states, "calls": self.live_calls,
                "cdr": self.cdr_query, "line_states": self.line_states,
                "presence": self.presence, "voicemail_delete": self.voicemail_delete}
        out: dict[str, Any] = {k: (lambda a, f=f: wrap(f, a)) for k, f in sync.items()}
        out["reload"] = self.reload
        return out

    # -- the tree -----------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        trio.lowlevel.add_instrument(self.loop_watch)
        self.loop_watch.install()
        try:
            await self.bind()
            async with trio.open_nursery() as nursery:
                for u in self.udp:
                    nursery.start_soon(u.serve, self.driver.on_message, self.driver.flush)
                for s in self.streams:
                    nursery.start_soon(s.serve, self.driver.on_message, self.driver.flush,
                                       self.driver.connection_lost)
                nursery.start_soon(self.driver.run_timers)
                nursery.start_soon(checkpoint_forever, [
                    self.data_dir / "registrations.db", self.cdr.db_path,
                    self.voicemail.mailbox.path])
                await nursery.start(self.media_io.run)
                await nursery.start(self.pacer.run)
                await nursery.start(self.voicemail.run)
                self.calls.spawn = nursery.start_soon
                self.calls.apps = starters(self.opts.config_dir,
                                           lambda: self.holder.current.system.voice_prompts,
                                           snapshot=lambda: self.holder.current,
                                           voicemail=self.voicemail,
                                           parking=self.calls.parking)
                self.calls.flush = self.driver.flush
                await nursery.start(self.lines.resolver.run)
                self.lines.flush = self.driver.flush
                self.lines.configure(self.holder.current)  # lines start registering
                self.driver.flush()
                await nursery.start(self.reloader.serve)
                await nursery.start(partial(watch_config, reloader=self.reloader),
                                    self.opts.config_dir, self._on_reload_async)
                if self._edited_since_load():  # an edit between our load and the watcher
                    await self.reload({})
                await nursery.start(partial(serve_control, on_fault=self.faults.record),
                                    self.control_path, self.handlers(), self.bus)
                system = self.holder.current.system
                if system.metrics_port:
                    from .metrics import serve_metrics
                    await nursery.start(serve_metrics, self, system.metrics_address,
                                        system.metrics_port)
                await nursery.start(self._signals, nursery)
                nursery.start_soon(run_collector)
                nursery.start_soon(self._expire_nonces)
                for user in sorted(self._default_passwords):
                    warn_default_password(user)
                task_status.started(self.info())
        finally:
            # Whatever is left (the tree failed, or a second signal) ends on paper only:
            # the sockets are closed now, and nothing is sent.
            self.loop_watch.uninstall()
            trio.lowlevel.remove_instrument(self.loop_watch)
            self.calls.release_all("shutdown")
            self.location.close()
            self.cdr.close()
            self.events.close()
            self.voicemail.close()

    def _edited_since_load(self) -> bool:
        sources = self.holder.current.sources
        for name in FILES:
            try:
                st = (self.opts.config_dir / name).stat()
            except FileNotFoundError:
                if name in sources:
                    return True
                continue
            src = sources.get(name)
            if src is None or (src.mtime, src.size) != (st.st_mtime, st.st_size):
                return True
        return False

    def _on_reload_async(self, snap: Snapshot | None, error: ConfigError | None) -> None:
        # The watcher already built the snapshot; the holder swaps it in one assignment.
        if self.stopping:  # leaving: no line starts registering, no setting changes now
            return
        if snap is not None:
            self.holder.swap(snap)
        else:
            self.holder.fail(error)
        self._on_reload(snap, error)

    async def _signals(self, nursery: trio.Nursery, *,
                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGINT, signal.SIGTERM) as sigs:
            task_status.started()  # before the banner: a SIGHUP right after it reloads
            async for signum in sigs:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    if not self.stopping:
                        await self.reload({})
                elif self.stopping:
                    log.info("%s again: stopping now", name)
                    nursery.cancel_scope.cancel()
                    return
                else:
                    nursery.start_soon(self.shutdown, nursery.cancel_scope, name)

    async def _expire_nonces(self) -> None:
        """Nonce-counts leave with their nonces even when no request comes to drop them
        (``DigestAuthenticator.expire``; what a load left is then all freed)."""
        while True:
            await trio.sleep(NONCE_SWEEP)
            self.auth.expire(self.pbx.now())

    async def shutdown(self, scope: trio.CancelScope, why: str = "shutdown") -> None:
        """Refuse new work, end every call on the wire, wait for the answers, stop."""
        self.stopping = True
        grace = self.holder.current.system.shutdown_grace
        log.info("shutting down (%s): ending %d calls, waiting up to %d s for the answers",
                 why, len(self.calls.calls), grace)
        self.driver.draining = True
        self.calls.release_all("shutdown")
        self.lines.stop()  # unregister from providers: their answers are waited for too
        self.driver.flush()
        answered = trio.Event()
        self.pbx.when_answered(answered.set)
        with trio.move_on_after(grace):
            await answered.wait()
        if not answered.is_set():
            log.warning("stopping with %d requests unanswered after %d s: %s",
                        len(self.pbx.unanswered), grace, ", ".join(self.pbx.unanswered))
        scope.cancel()


async def serve(opts: ServeOptions, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await Server(opts).run(task_status=task_status)
