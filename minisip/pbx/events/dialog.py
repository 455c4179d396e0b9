"""The dialog event package (RFC 4235): what a busy lamp field shows.

A user's document lists the calls it is in, one ``<dialog>`` per call, seen
from that user: the caller is the initiator; each user the call's plan rings,
then the one who answered, a recipient. Their dialog states come from the
call's state through the tables below; a ringing user appears once a device
rings (18x: before that no lamp should blink), and leaves, terminated, when its
step ends or another user answers.
A call on hold stays confirmed, with ``+sip.rendering=no`` on the target of
the side that put it on hold (as RFC 4235 section 4.1.6 and Asterisk do).
A dialog is reported once as terminated when its call ends, then dropped:
every NOTIFY carries the full state, so a later one simply lacks it.

Directed pick-up: the dialog of a call that rings carries the Call-ID and the
tags of the caller's dialog with minisip, the one the B2BUA can find
(``CallController.calls`` is keyed by that Call-ID): ``local-tag`` is
minisip's tag on it (standing in for the called user), ``remote-tag`` the
caller's, and ``<remote>`` the caller's identity. A phone pressing a blinking
key sends INVITE with ``Replaces`` naming that dialog. ``ringing(user)`` gives
the same to code in the PBX.

Only what someone may see is kept: the views of a user are kept while
``watched`` says so (the service: the user has dialog or presence watchers, or
the control socket's presence topic a listener), built from the live calls when
that starts and dropped at the next change of one of its calls once it ends.
Most calls concern nobody watched and cost a few lookups. A user not watched is
answered from the live calls (``_unkept``: a fetch, ``minisip presence``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from ..call import Call, CallState

INITIATOR, RECIPIENT = "initiator", "recipient"

#: call state -> the caller's RFC 4235 dialog state
_CALLER: dict[CallState, str] = {
    CallState.ROUTING: "trying", CallState.RINGING: "early", CallState.ANSWERED: "confirmed",
    CallState.TALKING: "confirmed", CallState.ENDED: "terminated"}
#: call state -> the state of a user whose devices ring; None: none rings yet (no 18x)
_RINGING: dict[CallState, str | None] = {
    CallState.ROUTING: None, CallState.RINGING: "early", CallState.ANSWERED: "early",
    CallState.TALKING: "early", CallState.ENDED: None}
#: call state -> the state of the user who answered
_ANSWERED: dict[CallState, str | None] = {
    CallState.ROUTING: None, CallState.RINGING: None, CallState.ANSWERED: "confirmed",
    CallState.TALKING: "confirmed", CallState.ENDED: "terminated"}

_BUSY = {"idle": 0, "calling": 1, "ringing": 2, "on hold": 3, "talking": 4}


class DialogView(NamedTuple):
    """One call as one of its users sees it (a tuple: built on every change of a call,
    and a frozen dataclass's __init__ costs five times as much)."""
    call_id: str
    local_tag: str
    remote_tag: str
    direction: str
    state: str
    local_user: str
    remote_user: str
    remote_display: str
    held_here: bool  #: this side put the call on hold
    held_there: bool  #: the other side did


def _sides(call: Call) -> list[tuple[str, str, str]]:
    """(user, direction, dialog state) of each user the call concerns now."""
    out = [(call.caller, INITIATOR, _CALLER[call.state])]
    if call.answered_user is not None:
        state = _ANSWERED[call.state]
        if state is not None:
            out.append((call.answered_user, RECIPIENT, state))
    ringing = _RINGING[call.state]
    if ringing is not None:  # users a plan step rings (after an answer too: a hand-on)
        out += [(u, RECIPIENT, ringing) for u in sorted(call.ringing_users)
                if u != call.answered_user]
    return out


class DialogPackage:
    event = "dialog"
    content_type = "application/dialog-info+xml"

    def __init__(self, domain: Callable[[], str], display: Callable[[str], str],
                 watched: Callable[[str], bool] = lambda user: True,
                 live: Callable[[], Iterable[Call]] = tuple) -> None:
        self.domain = domain
        self.display = display  #: user -> display name ("" = none)
        self.watched = watched  #: user -> whether anyone may see its calls now
        self.live = live  #: the calls in progress
        self.kept: set[str] = set()  #: users whose views are kept (see the module)
        #: every user's views found from the live calls, until the next update
        self._derived: DialogPackage | None = None
        self.views: dict[str, dict[tuple[str, str], DialogView]] = {}
        self._users_of: dict[str, set[str]] = {}  # call id -> users with a view of it
        self._docs: dict[str, tuple[bytes, bytes]] = {}  # user -> document around version
        #: (user, view key) of the dialogs reported as terminated, dropped by ``prune``
        self._ended: set[tuple[str, tuple[str, str]]] = set()
        #: user -> how many of its views are in each activity ("talking": 2, ...), so
        #: ``activity`` does not walk a user's calls (a trunk user may have hundreds)
        self._kinds: dict[str, dict[str, int]] = {}

    def _set(self, user: str, key: tuple[str, str], view: DialogView | None) -> None:
        """The one place a view changes (None: gone), keeping ``_kinds`` in step."""
        mine = self.views.setdefault(user, {})
        kinds = self._kinds.setdefault(user, {})
        old = mine.get(key)
        if old is not None:
            k = _kind(old)
            if k is not None:
                kinds[k] -= 1
                if not kinds[k]:
                    del kinds[k]
        if view is None:
            mine.pop(key, None)
            if not mine:
                del self.views[user]
        else:
            mine[key] = view
            k = _kind(view)
            if k is not None:
                kinds[k] = kinds.get(k, 0) + 1
        if not kinds:
            del self._kinds[user]

    # -- state from calls ----------------------------------------------------------
    def update(self, call: Call) -> set[str]:
        """Take a call's new state; the users whose document changed (a user kept
        from now on counts as changed)."""
        self._derived = None
        users = {call.caller, *call.ringing_users}
        if call.answered_user is not None:
            users.add(call.answered_user)
        # (reading the INVITE, kept compacted, parses it again: not while nobody is watched)
        had = self._users_of.get(call.a.invite.call_id) if self._users_of else None
        if had:
            users |= had
        only: set[str] = set()
        fresh: set[str] = set()
        for user in users:
            if user in self.kept:
                if self.watched(user):
                    only.add(user)
                else:
                    self._forget(user)
            elif self._keep(user):
                only.add(user)
                fresh.add(user)
        return self._apply(call, only) | fresh if only else set()

    def _keep(self, user: str) -> bool:
        """Start keeping ``user``'s views if it is watched (False if not)."""
        if not self.watched(user):
            return False
        self.kept.add(user)
        for call in self.live():
            self._apply(call, {user})
        return True

    def _forget(self, user: str) -> None:
        """Nobody watches ``user`` any more: its views go."""
        self.kept.discard(user)
        for call_id, _ in self.views.pop(user, {}):
            users = self._users_of.get(call_id)
            if users is not None:
                users.discard(user)
                if not users:
                    del self._users_of[call_id]
        self._kinds.pop(user, None)
        self._docs.pop(user, None)

    def _apply(self, call: Call, only: set[str]) -> set[str]:
        """``update`` for the users of ``only``."""
        inv = call.a.invite
        call_id, caller_tag = inv.call_id, inv.from_tag or ""
        wanted: dict[tuple[str, str], DialogView] = {}
        for user, direction, state in _sides(call):
            if user not in only:
                continue
            caller_side = direction == INITIATOR
            remote = (call.callee or call.dialed) if caller_side else call.caller
            wanted[(user, direction)] = DialogView(
                call_id, caller_tag if caller_side else call.a_tag,
                call.a_tag if caller_side else caller_tag, direction, state, user, remote,
                self.display(remote), ("A" if caller_side else "B") in call.holding,
                ("B" if caller_side else "A") in call.holding)
        changed: set[str] = set()
        had = self._users_of.get(call_id, set())
        for user in had & only:
            mine = self.views.get(user, {})
            for direction in (INITIATOR, RECIPIENT):
                old = mine.get((call_id, direction))
                if old is not None and (user, direction) not in wanted \
                        and old.state != "terminated":  # a fork another device beat
                    self._set(user, (call_id, direction), _ended(old))
                    changed.add(user)
                    self._ended.add((user, (call_id, direction)))
        for (user, direction), view in wanted.items():
            mine = self.views.get(user, {})
            if view.state == "terminated" and (call_id, direction) not in mine:
                continue  # ended before it was ever shown: nothing to report
            if mine.get((call_id, direction)) != view:
                self._set(user, (call_id, direction), view)
                changed.add(user)
                if view.state == "terminated":
                    self._ended.add((user, (call_id, direction)))
        users = had | {u for (u, d) in wanted if (call_id, d) in self.views.get(u, {})}
        if users:
            self._users_of[call_id] = users
        else:
            self._users_of.pop(call_id, None)
        for user in changed:
            self._docs.pop(user, None)
        return changed

    def prune(self) -> None:
        """Drop the dialogs reported as terminated: later documents omit them."""
        for user, key in self._ended:
            view = self.views.get(user, {}).get(key)
            if view is None or view.state != "terminated":
                continue  # (the same call and direction came back meanwhile)
            self._set(user, key, None)
            self._docs.pop(user, None)
            users = self._users_of.get(key[0])
            if users is not None:
                users.discard(user)
                if not users:
                    del self._users_of[key[0]]
        self._ended.clear()

    def _holder(self, user: str) -> DialogPackage:
        """The package holding ``user``'s views: this one, or for a user nobody
        watches, one with every user's views found from the live calls."""
        if user in self.kept or self._keep(user):
            return self
        if self._derived is None:
            self._derived = DialogPackage(self.domain, self.display)
            for call in self.live():
                self._derived.update(call)
            self._derived.prune()
        return self._derived

    # -- what a user is doing ----------------------------------------------------------
    def activity(self, user: str) -> str:
        """idle, calling, ringing, on hold or talking: the busiest of its calls."""
        kinds = self._holder(user)._kinds.get(user)
        return max(kinds, key=_BUSY.__getitem__) if kinds else "idle"

    def ringing(self, user: str) -> list[DialogView]:
        """The calls ringing ``user``'s phones, as directed pick-up needs them."""
        return [v for v in self._holder(user).views.get(user, {}).values()
                if v.direction == RECIPIENT and v.state == "early"]

    # -- the document ----------------------------------------------------------------------
    def body(self, user: str, version: int) -> bytes:
        holder = self._holder(user)
        if holder is not self:
            return holder.body(user, version)
        doc = self._docs.get(user)
        if doc is None:
            doc = self._docs[user] = self._render(user)
        return doc[0] + str(version).encode() + doc[1]

    def _render(self, user: str) -> tuple[bytes, bytes]:
        domain = self.domain()
        head = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="')
        parts = [f'" state="full" entity="sip:{escape(user)}@{domain}">\n']
        for v in self.views.get(user, {}).values():
            local, remote = f"sip:{v.local_user}@{domain}", f"sip:{v.remote_user}@{domain}"
            display = f" display={quoteattr(v.remote_display)}" if v.remote_display else ""
            parts.append(
                f"  <dialog id={quoteattr(f'{v.call_id}-{v.direction}')} "
                f"call-id={quoteattr(v.call_id)} local-tag={quoteattr(v.local_tag)} "
                f"remote-tag={quoteattr(v.remote_tag)} direction=\"{v.direction}\">\n"
                f"    <state>{v.state}</state>\n"
                f"    <local><identity>{escape(local)}</identity>"
                f"{_target(local, v.held_here)}</local>\n"
                f"    <remote><identity{display}>{escape(remote)}</identity>"
                f"{_target(remote, v.held_there)}</remote>\n"
                f"  </dialog>\n")
        parts.append("</dialog-info>\n")
        return head.encode(), "".join(parts).encode()

    def summary(self, user: str) -> list[dict[str, Any]]:
        views = self._holder(user).views.get(user, {})
        return [{"call_id": v.call_id, "direction": v.direction, "state": v.state,
                 "remote": v.remote_user} for v in views.values()]


def _kind(v: DialogView) -> str | None:
    """What a view makes its user: talking, on hold, ringing, calling, or nothing."""
    if v.state == "confirmed":
        return "on hold" if v.held_here or v.held_there else "talking"
    if v.state in ("trying", "early"):
        return "ringing" if v.direction == RECIPIENT else "calling"
    return None


def _ended(view: DialogView) -> DialogView:
    return DialogView(view.call_id, view.local_tag, view.remote_tag, view.direction,
                      "terminated", view.local_user, view.remote_user, view.remote_display,
                      False, False)


def _target(uri: str, held: bool) -> str:
    if not held:
        return f"<target uri={quoteattr(uri)}/>"
    return (f"<target uri={quoteattr(uri)}>"
            '<param pname="+sip.rendering" pval="no"/></target>')
