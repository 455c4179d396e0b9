"""The configuration snapshot: frozen dataclasses whose field metadata is the validation table.

Theory of operation
-------------------
Every config key is a dataclass field. Its metadata holds the one description the
rest of the package works from: the ``check`` (type, range, allowed values), the
``doc`` shown to administrators, and, for fields that name something defined
elsewhere, the ``ref`` kind (``"line"``, ``"user"``, ...). The loader walks these
fields generically; there is no if-chain per key. A class may add two hooks that
see all of its converted values at once:

* ``_check(values) -> [(key, message)]`` for rules across fields of one entry;
* ``_refs(values) -> [(key, kind, name)]`` for references whose kind depends on
  another field (a dial-plan route's target).

A :class:`Snapshot` is immutable (frozen slots dataclasses, tuples and
``MappingProxyType``), so the server swaps it in one assignment and calls keep
the one they started with. Defaults are the miniSIPServer manual's.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, TypeVar

from ..sip.digits import is_digits
from .paths import DEFAULT_DATA_DIR

T = TypeVar("T")

EMPTY: Mapping[Any, Any] = MappingProxyType({})


class Invalid(Exception):
    """A value failed its check; ``str()`` is the message after ``key:``."""


def show(value: Any) -> str:
    """A value as the administrator wrote it (YAML words, not Python's)."""
    if value is None:
        return "nothing"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# -- checks: one object per kind of value -------------------------------------------------

class Check:
    """Converts a parsed YAML value to the snapshot's value or raises :class:`Invalid`."""

    #: what the value must be, for messages and docs ("an integer >= 0")
    what: str = "a value"

    def convert(self, value: Any) -> Any:
        return value  # the plain Check constrains nothing; each kind below narrows it

    def fail(self, value: Any) -> Invalid:
        return Invalid(f"must be {self.what}, got {show(value)}")


class IntC(Check):
    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max
        if min is not None and max is not None:
            self.what = f"an integer from {min} to {max}"
        elif min is not None:
            self.what = f"an integer >= {min}"
        elif max is not None:
            self.what = f"an integer <= {max}"
        else:
            self.what = "an integer"

    def convert(self, value: Any) -> Any:
        # bool is an int subclass in Python; ``true`` is not a number in a config.
        if type(value) is not int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise self.fail(value)
            value = int(value)
        if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max):
            raise self.fail(value)
        return value


class FloatC(Check):
    def __init__(self, gt: float | None = None, max: float | None = None) -> None:
        self.gt, self.max = gt, max
        self.what = "a number" + (f" > {gt:g}" if gt is not None else "") + (
            f" and <= {max:g}" if max is not None else "")

    def convert(self, value: Any) -> Any:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(value)
        if (self.gt is not None and not value > self.gt) or (
                self.max is not None and value > self.max):
            raise self.fail(value)
        return float(value)


class BoolC(Check):
    what = "true or false"

    def convert(self, value: Any) -> Any:
        if value is True or value is False:
            return value
        raise self.fail(value)


class StrC(Check):
    """A string; ``pattern`` (full match) narrows it. Numbers are refused, not converted:
    YAML reads ``0086`` as the integer 86, so accepting it would lose digits silently."""

    def __init__(self, pattern: str | None = None, what: str = "a string",
                 nonempty: bool = False) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.nonempty = nonempty
        self.what = what

    def convert(self, value: Any) -> Any:
        if type(value) is not str:
            if value is None and not self.nonempty:
                return ""  # "key:" with nothing after it
            if isinstance(value, str):
                value = str(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                raise Invalid(f"must be {self.what} in quotes, got the number {value!r} "
                              f"(write \"{value}\" with the digits you mean)")
            else:
                raise self.fail(value)
        if self.nonempty and not value:
            raise Invalid(f"must be {self.what}, not empty")
        if self.pattern is not None and value and self.pattern.fullmatch(value) is None:
            raise self.fail(value)
        return value


DIAL_CHARS = "0-9 * # +"


def DialC(nonempty: bool = False) -> StrC:
    """A string of dial characters: what a phone keypad (and ``+``) can send."""
    return StrC(r"[0-9*#+]+", f"a string of dial characters ({DIAL_CHARS})", nonempty)


NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._+-]*"


def NameC() -> StrC:
    return StrC(NAME_RE, "a name of letters, digits and . _ + - (starting with a letter "
                         "or digit)", nonempty=True)


class ChoiceC(Check):
    def __init__(self, *choices: Any) -> None:
        self.choices = choices
        self.what = "one of " + ", ".join(str(c) for c in choices)

    def convert(self, value: Any) -> Any:
        if type(value) not in (str, int) or value not in self.choices:
            raise self.fail(value)
        return value


class IPNetC(Check):
    what = "an IP address or network (192.0.2.10, 192.0.2.0/24, 2001:db8::/32)"

    def convert(self, value: Any) -> Any:
        if type(value) is not str:
            raise self.fail(value)
        try:
            if "/" not in value:  # one address stays one address (as written, normalised)
                return str(ipaddress.ip_address(value))
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise self.fail(value) from None


class IPAddrC(Check):
    what = "an IP address (0.0.0.0 and :: mean every address)"

    def convert(self, value: Any) -> Any:
        if type(value) is not str:
            raise self.fail(value)
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise self.fail(value) from None


class TargetC(Check):
    """A route target: a name, or a group number written with or without quotes."""
    what = "a name or number"

    def convert(self, value: Any) -> Any:
        if type(value) is int and value >= 0:
            return str(value)
        if type(value) is str:
            return value
        raise self.fail(value)


class SeqC(Check):
    """A YAML list of scalar items, kept as a tuple; nothing means empty."""

    def __init__(self, item: Check, nonempty: bool = False) -> None:
        self.item, self.nonempty = item, nonempty
        self.what = f"a list of {_plural(item.what)}"

    def convert(self, value: Any) -> Any:
        # The loader checks items one by one (each with its own line); this whole-list
        # form serves callers without lines, like command-line items.
        if value is None:
            value = []
        if not isinstance(value, (list, tuple)):
            raise self.fail(value)
        out = tuple(self.item.convert(v) for v in value)
        if self.nonempty and not out:
            raise Invalid(f"must be {self.what}, not empty")
        return out


class NestedC(Check):
    """A mapping that is one nested dataclass."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.what = "a mapping (key: value lines)"


class TableC(Check):
    """A mapping of names (or numbers) to entries of one dataclass."""

    def __init__(self, cls: type, key: Check, entry: str, key_name: str = "") -> None:
        self.cls, self.key, self.entry = cls, key, entry
        self.key_name = key_name or f"{entry} name"  #: what the keys are ("user name")
        self.what = f"a mapping of {entry} entries"


class ListC(Check):
    """A list of entries of one dataclass; ``unique`` fields must not repeat."""

    def __init__(self, cls: type, unique: tuple[str, ...] = ()) -> None:
        self.cls, self.unique = cls, unique
        self.what = "a list of entries (lines starting with '- ')"


def _plural(what: str) -> str:
    return what[3:] + "s" if what.startswith("an ") else (
        what[2:] + "s" if what.startswith("a ") else what)


# -- field helpers -------------------------------------------------------------------------

def opt(default: Any, doc: str, check: Check | None = None, *, ref: str | None = None,
        example: Any = None) -> Any:
    """An optional key with the manual's default. Nested dataclass defaults need no check.
    ``example``: a typical value, shown by the CLI's help (``key=example``)."""
    if check is None:
        if dataclasses.is_dataclass(default):
            check = NestedC(type(default))
        else:
            raise TypeError("a check is required")
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples and MappingProxyType for defaults")
    return field(default=default, metadata={"doc": doc, "check": check, "ref": ref,
                                            "example": example})


def req(doc: str, check: Check, *, ref: str | None = None, example: Any = None) -> Any:
    """A required key (no default)."""
    return field(metadata={"doc": doc, "check": check, "ref": ref, "example": example})


def table(cls: type, key: Check, entry: str, doc: str, key_name: str = "") -> Any:
    return field(default_factory=lambda: EMPTY,
                 metadata={"doc": doc, "check": TableC(cls, key, entry, key_name),
                           "ref": None})


def entries(cls: type, doc: str, unique: tuple[str, ...] = ()) -> Any:
    return field(default=(), metadata={"doc": doc, "check": ListC(cls, unique), "ref": None})


PORT = IntC(0, 65535)
PEER_PORT = IntC(1, 65535)
COUNT = IntC(0)
SECONDS = IntC(0)
GROUP_ID = IntC(0)
TRANSPORTS = ChoiceC("udp", "tcp", "tls")


# -- system.yaml -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    t1: float = opt(0.5, "RFC 3261 T1: round-trip time estimate (s); retransmissions start here",
                    FloatC(gt=0, max=60))
    t2: float = opt(4.0, "RFC 3261 T2: longest retransmit interval for non-INVITE requests (s)",
                    FloatC(gt=0, max=120))
    t4: float = opt(5.0, "RFC 3261 T4: how long a message may stay in the network (s)",
                    FloatC(gt=0, max=120))

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["t2"] < v["t1"]:
            yield "t2", f"must be >= t1 ({v['t1']:g}), got {v['t2']:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    min_expires: int = opt(60, "shortest registration accepted (s); shorter gets 423",
                           IntC(1, 86400))
    max_expires: int = opt(3600, "longest registration granted (s); longer is cut down",
                           IntC(1, 604800))
    default_expires: int = opt(3600, "granted when the phone asks for no particular time (s)",
                               IntC(1, 604800))

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["max_expires"] < v["min_expires"]:
            yield "max_expires", (f"must be >= min_expires ({v['min_expires']}), "
                                  f"got {v['max_expires']}")
        elif not v["min_expires"] <= v["default_expires"] <= v["max_expires"]:
            yield "default_expires", (f"must be from min_expires ({v['min_expires']}) to "
                                      f"max_expires ({v['max_expires']}), "
                                      f"got {v['default_expires']}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Security:
    auth_failures_before_block: int = opt(
        10, "failed logins of one user name from one address before that pair is blocked",
        IntC(1, 1000))
    block_seconds: int = opt(300, "how long a block lasts (s)", IntC(1, 86400 * 7))
    failure_window: int = opt(60, "failures older than this (s) are forgotten", IntC(1, 86400))
    max_users_per_source: int = opt(
        20, "distinct failing user names from one address before the whole address is "
            "blocked (a scanner walking extensions)", IntC(1, 100000))


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscriptions:
    min_expires: int = opt(60, "shortest subscription accepted (s); shorter gets 423",
                           IntC(1, 86400))
    max_expires: int = opt(3600, "longest subscription granted (s); longer is cut down",
                           IntC(1, 86400))
    default_expires: int = opt(3600, "granted when the phone asks for no particular time (s)",
                               IntC(1, 86400))
    max_per_user: int = opt(100, "subscriptions one user's phones may hold; more get 403 "
                                 "(subscribe_all_presence users are exempt)", IntC(1, 100000))
    max_total: int = opt(20000, "subscriptions the whole server holds; more get 503",
                         IntC(1, 10_000_000))
    notify_rate: int = opt(10, "NOTIFYs per second one subscription may get (bursts of as "
                               "many); faster changes are merged into the next NOTIFY",
                           IntC(1, 100))

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        yield from Registration._check(v)


@dataclass(frozen=True, slots=True, kw_only=True)
class Messages:
    store_per_user: int = opt(20, "messages kept for a user with no device online; more get "
                                  "480; 0 = keep none", IntC(0, 10000))
    keep_seconds: int = opt(604800, "stored messages not delivered within this long are "
                                    "deleted (s)", IntC(1, 31536000))


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemConfig:
    outgroup_prefix: str = opt("9", "dialled before an outside number; may be empty",
                               DialC())
    voice_prompts: str = opt("en", "language of the voice prompts", ChoiceC("en", "zh"))
    sip_address: str = opt("", "address phones use to reach us, put in Contact and Via; "
                               "empty = the address the request came in on",
                           StrC(r"[A-Za-z0-9.:\[\]-]+", "a host name or IP address"))
    listen: tuple[str, ...] = opt(("0.0.0.0", "::"), "addresses to listen on",
                                  SeqC(IPAddrC(), nonempty=True))
    udp_port: int = opt(5060, "SIP over UDP (0 = off)", PORT)
    tcp_port: int = opt(5060, "SIP over TCP (0 = off)", PORT)
    tls_port: int = opt(6060, "SIP over TLS (0 = off)", PORT)
    domain: str = opt("", "SIP domain of our users (user@domain); empty = the address "
                          "the request came in on", StrC(r"[A-Za-z0-9.-]+", "a domain name"))
    realm: str = opt("minisip", "digest authentication realm",
                     StrC(r"[^\"\\]+", "a string without quotes or backslashes",
                          nonempty=True))
    tls_certificate: str = opt("", "PEM certificate file; empty = self-signed in data_dir",
                               StrC())
    tls_private_key: str = opt("", "PEM private key file; empty = in tls_certificate's file",
                               StrC())
    timers: Timers = opt(Timers(), "SIP timers")
    registration: Registration = opt(Registration(), "REGISTER expiry limits")
    nonce_ttl: int = opt(300, "how long a digest nonce stays valid (s)", IntC(10, 86400))
    digest_algorithms: tuple[str, ...] = opt(
        ("MD5",), "digest challenges offered, in order of preference",
        SeqC(ChoiceC("MD5", "SHA-256"), nonempty=True))
    max_contacts_per_user: int = opt(3, "devices one user may register at once",
                                     IntC(1, 100))
    rtp_port_min: int = opt(10000, "lowest UDP port for relayed media", IntC(1024, 65534))
    rtp_port_max: int = opt(20000, "highest UDP port for relayed media", IntC(1025, 65535))
    relay_media: str = opt("auto", "always, never, or auto (per user/line relay_media "
                                   "and NAT detection)", ChoiceC("always", "never", "auto"))
    media_timeout: int = opt(0, "release an answered call whose relayed media stopped for "
                                "this long (s); 0 = never", IntC(0, 86400))
    security: Security = opt(Security(), "brute-force protection")
    subscriptions: Subscriptions = opt(Subscriptions(), "SUBSCRIBE/NOTIFY limits (presence, "
                                                        "busy lamps, voicemail lamps)")
    messages: Messages = opt(Messages(), "text messages (SIP MESSAGE) for offline users")
    no_answer_time: int = opt(30, "default ringing time before a call counts as not "
                                  "answered (s)", IntC(1, 3600))
    metrics_port: int = opt(0, "Prometheus metrics over HTTP on this port; 0 = off",
                            IntC(0, 65535))
    metrics_address: str = opt("127.0.0.1", "address the metrics port listens on",
                               StrC(nonempty=True))
    shutdown_grace: int = opt(5, "on SIGTERM/SIGINT, how long hung-up calls get to answer "
                                 "before the server exits (s)", IntC(0, 600))
    data_dir: str = opt(DEFAULT_DATA_DIR, "live state: registrations, CDRs, voicemail, TLS key; "
                                   "relative to the configuration directory",
                        StrC(nonempty=True, what="a directory path"))

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["rtp_port_max"] - v["rtp_port_min"] < 2:
            yield "rtp_port_max", (f"must be at least rtp_port_min + 2 "
                                   f"({v['rtp_port_min'] + 2}), got {v['rtp_port_max']}")
        if v["tcp_port"] and v["tcp_port"] == v["tls_port"]:
            yield "tls_port", f"must differ from tcp_port (both are {v['tls_port']})"
        if v["tls_private_key"] and not v["tls_certificate"]:
            yield "tls_private_key", "is set but tls_certificate is empty"


#: system.yaml keys read only when the server starts (sockets, certificates, the metrics
#: listener, the data dir); every other key takes effect on reload. ``minisip status``
#: shows a changed one.
START_ONLY = ("listen", "udp_port", "tcp_port", "tls_port", "metrics_port",
              "metrics_address", "data_dir")


# -- users.yaml ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Forwarding:
    enabled: bool = opt(False, "the user holds this forwarding right", BoolC())
    number: str = opt("", "where calls go; empty = not forwarding (phones set it with "
                          "feature codes)", DialC(), example="300")


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowMeDestinations:
    a: str = opt("", "destination A", DialC())
    b: str = opt("", "destination B", DialC())
    c: str = opt("", "destination C", DialC())


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowMe:
    strategy: int = opt(0, "0 ring all at once, 1 next on failure, 2 next after interval",
                        ChoiceC(0, 1, 2))
    interval: int = opt(10, "seconds before the next destination (strategy 2)", IntC(0, 600))
    destinations: FollowMeDestinations = opt(FollowMeDestinations(),
                                             "follow-me is on when any is set")

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["strategy"] == 2 and v["interval"] == 0:
            yield "interval", "must be > 0 when strategy is 2"


_NO_FORWARD = Forwarding()


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    password: str = req("password for SIP digest authentication", StrC(nonempty=True),
                        example="s3cret")
    display_name: str = opt("", "name shown to the called party; empty = the user name",
                            StrC(), example="Alice Smith")
    no_answer_time: int = opt(0, "ringing time before no-answer (s); 0 = system's",
                              IntC(0, 3600))
    external_line: str = opt("", "external line for outside calls; empty = any free line",
                             StrC(), ref="line")
    max_duration: int = opt(0, "longest outgoing call (s); 0 = unlimited", SECONDS,
                            example=600)
    max_concurrent_calls: int = opt(4, "calls at once, in and out; 0 = none at all", COUNT)
    max_concurrent_outgoing_calls: int = opt(2, "outgoing calls at once; 0 = none", COUNT)
    call_right: int = opt(0, "level; may dial dial-plan prefixes whose call_right is <= it",
                          IntC(0, 255))
    forward_unconditional: Forwarding = opt(_NO_FORWARD, "forward every call")
    forward_unreachable: Forwarding = opt(_NO_FORWARD, "forward when offline")
    forward_busy: Forwarding = opt(_NO_FORWARD, "forward when busy")
    forward_no_answer: Forwarding = opt(_NO_FORWARD, "forward when not answered")
    voicemail: bool = opt(False, "record a message when unreachable or not answered",
                          BoolC())
    mail_address: str = opt("", "where voice messages are mailed",
                            StrC(r"[^@\s]+@[^@\s]+", "an email address (name@domain)"))
    follow_me: FollowMe = opt(FollowMe(), "follow-me service")
    auto_attendant: bool = opt(False, "this user is an automatic attendant", BoolC())
    suppress_ring_group: bool = opt(False, "a direct call rings only this user, not the "
                                           "ring group", BoolC())
    ringing_group_id: int = opt(0, "ring group; 0 = none", GROUP_ID)
    pickup_group_id: int = opt(0, "pick-up group; 0 = none", GROUP_ID)
    call_park: bool = opt(True, "may park calls", BoolC())
    call_retrieve: bool = opt(True, "may retrieve parked calls", BoolC())
    call_waiting: bool = opt(False, "a second call is offered while talking (else busy)",
                             BoolC())
    one_number_multi_devices: bool = opt(True, "all registered devices ring together",
                                         BoolC())
    operator_break_in: bool = opt(False, "may break into other users' calls (*75*ext, or "
                                         "calling a busy user)", BoolC())
    operator_overstep: bool = opt(False, "cannot be broken into", BoolC())
    do_not_disturb: bool = opt(False, "callers get busy treatment (set by *78, cleared by "
                                      "*79)", BoolC())
    subscribe_all_presence: bool = opt(False, "may watch every user's presence and calls, "
                                              "with no group or per-user limit (operators)",
                                       BoolC())
    presence_group: int = opt(0, "watches presence and calls only of users with the same "
                                 "group; 0 = the users in no group", GROUP_ID)
    music_on_hold: bool = opt(True, "play music to the other party when put on hold",
                              BoolC())
    relay_media: bool = opt(False, "relay this user's media through the server (NAT)",
                            BoolC())
    allowed_ips: tuple[str, ...] = opt((), "addresses trusted without REGISTER/digest",
                                       SeqC(IPNetC()))


# -- lines.yaml ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming:
    transfer_to: str = opt("destination", "auto_attendant, or destination",
                           ChoiceC("auto_attendant", "destination"))
    destination_number: str = opt("", "number to analyze; empty = the called number",
                                  DialC())


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundProxy:
    enabled: bool = opt(False, "send requests via the outbound proxy", BoolC())
    address: str = opt("", "proxy host name or IP address", StrC())
    port: int = opt(5060, "proxy port", PEER_PORT)

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["enabled"] and not v["address"]:
            yield "address", "is required when enabled is true"


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    type: int = opt(0, "0 = we register to a provider, 1 = an FXO gateway registers to us",
                    ChoiceC(0, 1))
    account: str = req("account (user name) registered with", StrC(nonempty=True),
                       example="2001")
    password: str = opt("", "password; empty = no authentication", StrC())
    server: str = opt("", "provider host name or IP address (type 0)", StrC(),
                      example="sip.example.com")
    port: int = opt(5060, "provider port (type 0)", PEER_PORT)
    transport: str = opt("udp", "udp, tcp or tls", TRANSPORTS)
    authorization_id: str = opt("", "authorization user name; empty = account", StrC())
    register_expires: int = opt(3600, "expiry we ask for when registering (s)",
                                IntC(60, 86400))
    incoming: Incoming = opt(Incoming(), "where incoming calls go")
    outbound_proxy: OutboundProxy = opt(OutboundProxy(), "outbound proxy")
    request_uri_parameter: str = opt("", "appended to the Request-URI, e.g. user=phone",
                                     StrC(r"[^\s;][^\s]*", "a parameter without spaces"))
    all_users_can_use: bool = opt(True, "any user may call out on it (else only users "
                                        "bound to it)", BoolC())
    original_caller_as_display_name: bool = opt(False, "send the caller's number as "
                                                       "display name", BoolC())
    outgoing_group_id: int = opt(0, "outgoing group for the dial plan", GROUP_ID, example=1)
    no_answer_time: int = opt(0, "no-answer time on this line (s); 0 = system's", SECONDS)
    max_outgoing_calls: int = opt(4, "outgoing calls at once; 0 = none", COUNT)
    max_duration: int = opt(0, "longest outgoing call (s); 0 = unlimited", SECONDS)
    chain_to_next_line: str = opt("", "line to try when a call fails here", StrC(),
                                  ref="line")
    auth_user_with_domain: bool = opt(False, "authorize as account@server", BoolC())
    disable_100rel: bool = opt(False, "strip 100rel from INVITEs", BoolC())
    do_not_register: bool = opt(False, "never REGISTER (IP-trusted providers)", BoolC())
    relay_media: bool = opt(False, "relay media of calls on this line", BoolC())
    max_concurrent_calls: int = opt(4, "calls at once, in and out", IntC(1))

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["type"] == 0 and not v["server"]:
            yield "server", "is required for a type 0 line (the provider's address)"


# -- trunks.yaml -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Trunk:
    address: str = req("peer's IP address or host name (calls are trusted from it)",
                       StrC(nonempty=True), example="192.0.2.50")
    port: int = opt(5060, "peer's port", PEER_PORT, example=5080)
    transport: str = opt("udp", "udp, tcp or tls", TRANSPORTS)
    match_port: bool = opt(True, "trust calls only from address:port (false: any port)",
                           BoolC())
    unified_caller_number: str = opt("", "caller number on every outgoing call", DialC())
    request_uri_parameter: str = opt("", "appended to the Request-URI, e.g. user=phone",
                                     StrC(r"[^\s;][^\s]*", "a parameter without spaces"))
    tel_uri: bool = opt(False, "send tel: URIs instead of sip:", BoolC())
    outgoing_group_id: int = opt(0, "outgoing group for the dial plan", GROUP_ID, example=2)
    max_concurrent_calls: int = opt(30, "calls at once, in and out", IntC(1))
    max_duration: int = opt(0, "longest outgoing call (s); 0 = unlimited", SECONDS)
    no_answer_time: int = opt(0, "no-answer time (s); 0 = system's", SECONDS)
    incoming: Incoming = opt(Incoming(), "where incoming calls go")
    disable_100rel: bool = opt(False, "strip 100rel from INVITEs", BoolC())
    relay_media: bool = opt(False, "relay media of calls on this trunk", BoolC())


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingGroup:
    members: tuple[str, ...] = req("lines and trunks, tried in this order",
                                   SeqC(StrC(nonempty=True), nonempty=True),
                                   ref="line_or_trunk")
    description: str = opt("", "free text", StrC())


# -- dialplan.yaml ---------------------------------------------------------------------------

ROUTE_TYPES = ("local_user", "external_line", "outgoing_group", "routing_group",
               "sip_trunk", "service")
SERVICES = ("voicemail", "auto_attendant", "hunt_group", "ring_group")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerRule:
    transition: int = opt(0, "transition applied to the caller number; 0 = none",
                          IntC(0), ref="transition")
    description: str = opt("", "free text", StrC())


@dataclass(frozen=True, slots=True, kw_only=True)
class CalledRoute:
    route: str = req("local_user, external_line, outgoing_group, routing_group, "
                     "sip_trunk or service", ChoiceC(*ROUTE_TYPES))
    target: str = opt("", "line/group/trunk name, group number, user, or service",
                      TargetC())
    call_right: int = opt(0, "users need at least this call_right", IntC(0, 255))
    transition: int = opt(0, "transition applied to the called number; 0 = none",
                          IntC(0), ref="transition")
    description: str = opt("", "free text", StrC())

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        route, target = v["route"], v["target"]
        if route != "local_user" and not target:
            yield "target", f"is required for route {route}"
        elif route == "outgoing_group" and not is_digits(target):
            yield "target", f"must be an outgoing group number, got {target!r}"
        elif route == "service" and target.split(":")[0] not in SERVICES:
            yield "target", ("must be one of voicemail, voicemail:USER, auto_attendant, "
                             "hunt_group:NAME, "
                             f"ring_group:ID, got {target!r}")

    @classmethod
    def _refs(cls, v: dict[str, Any]) -> Iterable[tuple[str, str, Any]]:
        route, target = v["route"], v["target"]
        if not target:
            return
        kind = {"local_user": "user", "external_line": "line", "outgoing_group":
                "outgoing_group", "routing_group": "routing_group",
                "sip_trunk": "trunk"}.get(route)
        if kind is not None:
            yield "target", kind, target
        elif ":" in target:
            service, _, name = target.partition(":")
            if service in ("hunt_group", "ring_group"):
                yield "target", service, name
            elif service == "voicemail":
                yield "target", "user", name


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    type: str = req("replace, insert or delete", ChoiceC("replace", "insert", "delete"))
    start: int = opt(0, "position in the number, 0 = first digit", IntC(0, 64))
    length: int = opt(0, "digits replaced or deleted", IntC(0, 64))
    string: str = opt("", "digits inserted or put in place", DialC())

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["type"] == "delete" and v["length"] == 0:
            yield "length", "must be > 0 for delete"
        if v["type"] == "insert" and not v["string"]:
            yield "string", "is required for insert"

    def apply(self, number: str) -> str:
        """The number after this transition (pure)."""
        head, tail = number[:self.start], number[self.start:]
        if self.type == "insert":
            return head + self.string + tail
        if self.type == "delete":
            return head + tail[self.length:]
        return head + self.string + tail[self.length:]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefineRule:
    outgoing_group_id: int = req("outgoing group of the line/trunk the call leaves on",
                                 GROUP_ID, ref="outgoing_group")
    prefix: str = req("number prefix (longest match)", DialC(nonempty=True))
    transition: int = req("transition to apply", IntC(1), ref="transition")
    description: str = opt("", "free text", StrC())


@dataclass(frozen=True, slots=True, kw_only=True)
class DialPlan:
    analyze_caller: Mapping[str, CallerRule] = table(
        CallerRule, DialC(nonempty=True), "caller prefix", "caller prefix -> rule",
        "caller prefix")
    analyze_called: Mapping[str, CalledRoute] = table(
        CalledRoute, DialC(nonempty=True), "called prefix", "called prefix -> route",
        "called prefix")
    transitions: Mapping[int, Transition] = table(
        Transition, IntC(1), "transition", "transition id -> number change", "transition id")
    refine_called: tuple[RefineRule, ...] = entries(
        RefineRule, "last change of the called number before it leaves",
        ("outgoing_group_id", "prefix"))
    refine_caller: tuple[RefineRule, ...] = entries(
        RefineRule, "last change of the caller number before it leaves",
        ("outgoing_group_id", "prefix"))

    def called_route(self, number: str) -> tuple[str, CalledRoute] | None:
        """(prefix, route) of the longest analyze_called prefix of ``number``."""
        return longest_prefix(self.analyze_called, number)

    def refine(self, rules: tuple[RefineRule, ...], group: int,
               number: str) -> RefineRule | None:
        best: RefineRule | None = None
        for r in rules:
            if r.outgoing_group_id == group and number.startswith(r.prefix) and (
                    best is None or len(r.prefix) > len(best.prefix)):
                best = r
        return best


def longest_prefix(table: Mapping[str, T], number: str) -> tuple[str, T] | None:
    """The entry whose key is the longest prefix of ``number`` (the manual's rule)."""
    for n in range(len(number), 0, -1):
        hit = table.get(number[:n])
        if hit is not None:
            return number[:n], hit
    return None


# -- services.yaml ---------------------------------------------------------------------------

def _code(default: str, doc: str) -> Any:
    return opt(default, doc + "; empty = off", DialC())


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureCodes:
    forward_busy: str = _code("*90", "*90*number# sets busy forwarding, *90# clears it")
    forward_unreachable: str = _code("*91", "unreachable forwarding, as *90")
    forward_no_answer: str = _code("*92", "no-answer forwarding, as *90")
    forward_unconditional: str = _code("*93", "unconditional forwarding, as *90")
    directed_pickup: str = _code("*40", "*40*ext answers ext's ringing call")
    group_pickup: str = _code("*50", "*50 answers a ringing call of the pick-up group")
    call_park: str = _code("*70", "transfer a call to *70*nn to park it in slot nn (*70: "
                                  "minisip picks the slot and says it)")
    call_retrieve: str = _code("*71", "*71*nn takes the call parked in slot nn")
    one_number_join: str = _code("*74", "another device of the user takes over its "
                                        "answered call")
    break_in: str = _code("*75", "*75*ext breaks into ext's call (operators)")
    do_not_disturb_on: str = _code("*78", "do not disturb: callers get busy treatment")
    do_not_disturb_off: str = _code("*79", "do not disturb off")
    voicemail: str = _code("*97", "listen to one's voice messages (from one's own phone)")

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        seen: dict[str, str] = {}
        for name, code in v.items():
            if not code:
                continue
            for other, ocode in seen.items():
                if code == ocode:
                    yield name, f"{code!r} is also the code of {other}"
                    break
                if code.startswith(ocode) or ocode.startswith(code):
                    yield name, f"{code!r} and {other}'s {ocode!r} overlap (one is a prefix)"
                    break
            seen[name] = code


@dataclass(frozen=True, slots=True, kw_only=True)
class RingGroup:
    number: str = opt("", "pilot number that rings the whole group; empty = none",
                      DialC())
    no_answer_time: int = opt(0, "ringing time (s); 0 = system's", SECONDS)
    description: str = opt("", "free text", StrC())


@dataclass(frozen=True, slots=True, kw_only=True)
class HuntGroup:
    number: str = req("pilot number callers dial", DialC(nonempty=True))
    strategy: str = opt("linear", "linear (always from the first) or circular (after the "
                                  "last one tried)", ChoiceC("linear", "circular"))
    members: tuple[str, ...] = req("users, in hunting order (busy ones are skipped)",
                                   SeqC(StrC(nonempty=True), nonempty=True), ref="user")
    ring_time: int = opt(15, "seconds each member rings", IntC(1, 600))
    description: str = opt("", "free text", StrC())


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPark:
    first_slot: int = opt(1, "lowest park slot", IntC(1, 99))
    last_slot: int = opt(99, "highest park slot", IntC(1, 99))
    park_timer: int = opt(60, "seconds before a parked call rings back the parker",
                          IntC(1, 3600))

    @classmethod
    def _check(cls, v: dict[str, Any]) -> Iterable[tuple[str, str]]:
        if v["last_slot"] < v["first_slot"]:
            yield "last_slot", (f"must be >= first_slot ({v['first_slot']}), "
                                f"got {v['last_slot']}")


_PREFIX_OR_ALL = StrC(r"\*|[0-9*#+]+", f"'*' (all) or a number prefix ({DIAL_CHARS})",
                      nonempty=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListRule:
    caller_prefix: str = req("caller number prefix, '*' = every caller", _PREFIX_OR_ALL)
    called_prefix: str = req("called number prefix, '*' = every number", _PREFIX_OR_ALL)
    rate: int = opt(100, "percent of matching calls refused: 100 = black list, "
                         "0 = white list", IntC(0, 100))
    description: str = opt("", "free text", StrC())


@dataclass(frozen=True, slots=True, kw_only=True)
class Voicemail:
    max_message_seconds: int = opt(120, "longest message (s)", IntC(5, 3600))
    silence_seconds: int = opt(5, "a message ends after this long without voice (s); "
                                  "0 = only # or hang-up end it", IntC(0, 60))
    keep_days: int = opt(30, "messages older than this are deleted; 0 = keep", SECONDS)
    smtp_server: str = opt("", "mail server; empty = keep messages in data_dir only", StrC())
    smtp_port: int = opt(587, "mail server port", PEER_PORT)
    smtp_security: str = opt("starttls", "none, starttls or tls",
                             ChoiceC("none", "starttls", "tls"))
    smtp_username: str = opt("", "empty = no login", StrC())
    smtp_password: str = opt("", "mail login password", StrC())
    from_address: str = opt("minisip@localhost", "sender of voicemail mails",
                            StrC(r"[^@\s]+@[^@\s]+", "an email address (name@domain)"))


@dataclass(frozen=True, slots=True, kw_only=True)
class MenuEntry:
    number: str = req("where the caller goes: any number a user could dial",
                      DialC(nonempty=True))
    description: str = opt("", "free text", StrC())


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoAttendant:
    digit_timeout: int = opt(5, "seconds to wait for the next digit", IntC(1, 60))
    max_attempts: int = opt(3, "wrong numbers before the call goes to operator or ends",
                            IntC(1, 10))
    operator: str = opt("", "number reached by dialling 0; empty = none", DialC())
    menu: Mapping[str, MenuEntry] = table(
        MenuEntry, DialC(nonempty=True), "menu entry",
        "keys the caller presses -> the number they lead to (before extensions)", "keys")


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    feature_codes: FeatureCodes = opt(FeatureCodes(), "feature codes")
    ring_groups: Mapping[int, RingGroup] = table(
        RingGroup, IntC(1), "ring group", "ring group id -> options (members: users' "
                                          "ringing_group_id)", "ring group id")
    hunt_groups: Mapping[str, HuntGroup] = table(HuntGroup, NameC(), "hunt group",
                                                 "name -> hunt group")
    call_park: CallPark = opt(CallPark(), "call park")
    black_white_list: tuple[ListRule, ...] = entries(
        ListRule, "calls refused by caller/called prefix", ("caller_prefix", "called_prefix"))
    voicemail: Voicemail = opt(Voicemail(), "voicemail")
    auto_attendant: AutoAttendant = opt(AutoAttendant(), "automatic attendant")
    music_on_hold_file: str = opt("", "8 kHz WAV played on hold; empty = built-in", StrC())


# -- the snapshot ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """What a snapshot was built from: one config file."""
    mtime: float
    size: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    system: SystemConfig
    users: Mapping[str, User]
    lines: Mapping[str, Line]
    trunks: Mapping[str, Trunk]
    routing_groups: Mapping[str, RoutingGroup]
    dialplan: DialPlan
    services: Services
    loaded_at: float
    config_dir: Path
    sources: Mapping[str, SourceInfo]  #: file name -> info; absent files are not listed


# -- the files ---------------------------------------------------------------------------------
# system.yaml, dialplan.yaml and services.yaml hold their class's keys at the top level;
# users.yaml, lines.yaml and trunks.yaml hold named tables under one top-level key each
# (the store edits them as tables).

@dataclass(frozen=True, slots=True, kw_only=True)
class UsersFile:
    users: Mapping[str, User] = table(User, NameC(), "user", "user name -> user")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinesFile:
    lines: Mapping[str, Line] = table(Line, NameC(), "line", "line name -> external line")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunksFile:
    trunks: Mapping[str, Trunk] = table(Trunk, NameC(), "trunk", "trunk name -> SIP trunk")
    routing_groups: Mapping[str, RoutingGroup] = table(
        RoutingGroup, NameC(), "routing group", "group name -> lines/trunks tried in turn")


#: file name -> the dataclass its top level is
FILES: dict[str, type] = {
    "system.yaml": SystemConfig,
    "users.yaml": UsersFile,
    "lines.yaml": LinesFile,
    "trunks.yaml": TrunksFile,
    "dialplan.yaml": DialPlan,
    "services.yaml": Services,
}

#: Users when users.yaml is absent: the manual's preset users (password = name).
DEFAULT_USERS: Mapping[str, User] = MappingProxyType(
    {name: User(password=name) for name in ("100", "101", "102")})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    check: Check
    default: Any  #: dataclasses.MISSING when required
    ref: str | None
    doc: str
    example: Any = None  #: a typical value for the CLI's help; None = none given


_SPECS: dict[type, dict[str, FieldSpec]] = {}


def specs(cls: type) -> dict[str, FieldSpec]:
    """The validation table of one dataclass: name -> FieldSpec, in declaration order."""
    out = _SPECS.get(cls)
    if out is None:
        out = {}
        for f in dataclasses.fields(cls):
            default = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            out[f.name] = FieldSpec(f.name, f.metadata["check"], default, f.metadata["ref"],
                                    f.metadata["doc"], f.metadata.get("example"))
        _SPECS[cls] = out
    return out


def walk(cls: type, prefix: str = "") -> Iterable[tuple[str, FieldSpec]]:
    """Every key below ``cls`` as a dotted path (entries of tables included), for docs."""
    for name, spec in specs(cls).items():
        path = prefix + name
        yield path, spec
        if isinstance(spec.check, NestedC):
            yield from walk(spec.check.cls, path + ".")
        elif isinstance(spec.check, (TableC, ListC)):
            yield from walk(spec.check.cls, path + ".*.")
