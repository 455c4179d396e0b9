"""The presence event package (RFC 3856, PIDF RFC 3863) and PUBLISH (RFC 3903).

A user's presence is composed from three sources:

* registration: no device registered is ``closed`` ("Offline"), one is
  ``open``, so idle and unregistered are told apart;
* calls: talking or on hold adds the RPID activity ``on-the-phone``;
* do-not-disturb set for the user (users.yaml, the *78 feature code) adds ``busy``;
* what the user's phones PUBLISH: a ``closed`` basic status (a phone going
  invisible or into do-not-disturb), RPID activities (``away``, ``busy``...)
  and a note. Each publication is soft state with its own entity tag and
  expiry (RFC 3903: 412 for an unknown SIP-If-Match, Expires: 0 removes it).

The document is rebuilt only when one of them changes, and watchers are told
only when the document differs from the last one.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, unescape

from ...sip.errors import BadMessage
from ...sip.message import Request, Response, make_response, new_tag
from ...sip.peer import Peer
from ..identity import Identity
from ..timers import Timer
from .framework import SubscriptionPolicy, parse_event_untrusted

PIDF = "application/pidf+xml"
MAX_PIDF = 16384  #: bytes; phones publish a few hundred
MAX_PUBLICATIONS = 8  #: per user: a new one beyond this replaces the oldest

_BASIC = re.compile(r"<(?:[\w.-]+:)?basic\s*>\s*(open|closed)\s*</", re.I)
_ACTIVITIES = re.compile(r"<(?:[\w.-]+:)?activities\b[^>]*>(.*?)</(?:[\w.-]+:)?activities\s*>",
                         re.S | re.I)
_ELEMENT = re.compile(r"<(?:[\w.-]+:)?([a-z][a-z-]{0,30})\b[^>]*/?>", re.I)
_NOTE = re.compile(r"<(?:[\w.-]+:)?note\b[^>]*>([^<]{0,200})</", re.I)


@dataclass(frozen=True, slots=True)
class Published:
    """What one PUBLISH said."""
    basic: str | None  #: "open", "closed" or None (not said)
    activities: tuple[str, ...]
    note: str


def parse_pidf_untrusted(body: bytes) -> Published:
    """The parts of a PIDF document presence needs. Raises only BadMessage."""
    if len(body) > MAX_PIDF:
        raise BadMessage("PIDF document too large", 413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("PIDF document is not UTF-8") from None
    if "<presence" not in text and ":presence" not in text:
        raise BadMessage("Not a PIDF document")
    basics = {m.lower() for m in _BASIC.findall(text)}
    basic = "open" if "open" in basics else ("closed" if basics else None)
    activities: list[str] = []
    for block in _ACTIVITIES.findall(text):
        for name in _ELEMENT.findall(block):
            name = name.lower()
            if name not in activities and name != "other" and len(activities) < 8:
                activities.append(name)
    note = _NOTE.search(text)
    return Published(basic, tuple(activities),
                     unescape(note.group(1).strip()) if note else "")


@dataclass(slots=True)
class Publication:
    etag: str
    published: Published
    timer: Timer


class PresencePackage:
    event = "presence"
    content_type = PIDF

    def __init__(self, core: Any, identity: Identity, domain: Callable[[], str],
                 policy: Callable[[], SubscriptionPolicy],
                 is_online: Callable[[str], bool], activity: Callable[[str], str],
                 dnd: Callable[[str], bool], changed: Callable[[str], None]) -> None:
        self.core = core
        self.identity = identity
        self.domain = domain
        self.policy = policy
        self.is_online = is_online
        self.activity = activity  #: the user's calls: idle, ringing, talking, on hold...
        self.dnd = dnd  #: the user's do_not_disturb setting
        self.changed = changed  #: called with a user whose document changed
        #: whether ``user`` has watchers (the service sets it): only their documents are
        #: kept, as only theirs are refreshed on every change
        self.watched: Callable[[str], bool] = lambda user: True
        self.publications: dict[str, dict[str, Publication]] = {}
        self._docs: dict[str, bytes] = {}

    # -- the state ------------------------------------------------------------------
    def state(self, user: str) -> tuple[str, tuple[str, ...], str]:
        """(basic, activities, note) of a user, composed as the module says."""
        if not self.is_online(user):
            return "closed", (), "Offline"
        basic, activities, note = "open", [], ""
        for pub in self.publications.get(user, {}).values():
            p = pub.published
            if p.basic == "closed":
                basic = "closed"
            activities += [a for a in p.activities if a not in activities]
            note = p.note or note
        if self.dnd(user) and "busy" not in activities:
            activities.append("busy")
            note = note or "Do not disturb"
        calls = self.activity(user)
        if calls in ("talking", "on hold") and "on-the-phone" not in activities:
            activities.append("on-the-phone")
        if not note:
            note = {"talking": "On the phone", "on hold": "On hold"}.get(
                calls, "Available" if basic == "open" else "Not available")
        return basic, tuple(activities), note

    def refresh(self, user: str) -> bool:
        """Rebuild ``user``'s document; True when it differs from the last one."""
        doc = self._render(user)
        if self._docs.get(user) == doc:
            return False
        self._docs[user] = doc
        return True

    def drop_document(self, user: str) -> None:
        """Nobody watches ``user``: no document is kept (``body`` renders it anew)."""
        self._docs.pop(user, None)

    def body(self, user: str, version: int) -> bytes:
        doc = self._docs.get(user)
        if doc is None:
            doc = self._render(user)
            if self.watched(user):
                self._docs[user] = doc
        return doc

    def _render(self, user: str) -> bytes:
        basic, activities, note = self.state(user)
        entity = f"sip:{escape(user)}@{self.domain()}"
        acts = "".join(f"<rpid:{a}/>" for a in activities) or "<rpid:unknown/>"
        uid = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="{entity}">\n'
            f'  <tuple id="t{uid}"><status><basic>{basic}</basic></status>'
            f'<contact>{entity}</contact><note>{escape(note)}</note></tuple>\n'
            f'  <dm:person id="p{uid}"><rpid:activities>{acts}</rpid:activities>'
            f'<dm:note>{escape(note)}</dm:note></dm:person>\n'
            '</presence>\n').encode()

    # -- PUBLISH (RFC 3903) ---------------------------------------------------------
    def on_publish(self, req: Request, peer: Peer, now: float) -> Response | None:
        event, _ = parse_event_untrusted(req.headers.get("Event"))
        if event != self.event:
            return make_response(req, 489, to_tag=new_tag(),
                                 headers=[("Allow-Events", self.event)])
        sender = self.identity.sender(req, peer, now)
        if isinstance(sender, Response):
            return sender
        user = req.request_uri.user or ""
        if user != sender:  # the sender is a known user: so is a user it may publish
            return make_response(req, 403, "Only your own presence", to_tag=new_tag())
        policy = self.policy()
        expires = req.expires
        if expires is None:
            expires = policy.default_expires
        elif 0 < expires < policy.min_expires:
            return make_response(req, 423, to_tag=new_tag(),
                                 headers=[("Min-Expires", str(policy.min_expires))])
        expires = min(expires, policy.max_expires)
        mine = self.publications.setdefault(user, {})
        etag = req.headers.get("SIP-If-Match")
        published: Published | None = None
        if req.body:
            if req.mime_type != PIDF:
                return make_response(req, 415, to_tag=new_tag(), headers=[("Accept", PIDF)])
            published = parse_pidf_untrusted(req.body)
        if etag is not None:
            old = mine.pop(etag.strip(), None)
            if old is None:
                return make_response(req, 412, to_tag=new_tag())
            old.timer.cancel()
            if published is None:
                published = old.published  # a refresh: same state, new tag and expiry
        elif published is None:
            return make_response(req, 400, "PUBLISH without a body", to_tag=new_tag())
        if not expires:
            self._update(user)
            return make_response(req, 200, to_tag=new_tag(), headers=[("Expires", "0")])
        while len(mine) >= MAX_PUBLICATIONS:
            oldest = mine.pop(next(iter(mine)))
            oldest.timer.cancel()
        new = new_tag() + new_tag()
        mine[new] = Publication(new, published, self.core.timers.schedule(
            now + expires, self._expired, user, new))
        self._update(user)
        return make_response(req, 200, to_tag=new_tag(),
                             headers=[("SIP-ETag", new), ("Expires", str(expires))])

    def _expired(self, user: str, etag: str) -> None:
        if self.publications.get(user, {}).pop(etag, None) is not None:
            self._update(user)

    def _update(self, user: str) -> None:
        if not self.publications.get(user):
            self.publications.pop(user, None)
        self.changed(user)

    def forget(self, user: str) -> None:
        """A deleted user's publications go with it."""
        for pub in self.publications.pop(user, {}).values():
            pub.timer.cancel()
        self._docs.pop(user, None)
