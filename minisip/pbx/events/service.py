"""The events service: SUBSCRIBE/NOTIFY packages and MESSAGE, wired to the PBX.

State comes from the PBX's own events: the call controller tells every call
change (``CallController.on_change``; the calls changed by a batch are read at
its end), the location service every user going on- or offline (through the
server's hook), reloads the do-not-disturb settings. Each change updates the
dialog package, then the presence document; watchers of what changed are told
by the notifier, and the control socket's ``presence`` topic carries the same.
What nobody watches is not kept (most calls concern no watched user): the
dialog package keeps the calls of watched users only, and a presence document
lives while its user has presence watchers.

Who may see whom (manual 3.6): a user always sees itself; ``subscribe_all_presence``
users (operators) see everyone and are not held to ``max_per_user``; the others
see the users of their own ``presence_group`` (0 is a group too: the users in
none). A mailbox (message-summary) is for its own user only. Refused
subscriptions get 403; a reload that takes the right away ends them.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..call import Call
from ..identity import Identity
from ..durable import Retry
from ..location import LocationService
from ..storage import open_store
from .dialog import DialogPackage
from .framework import Notifier, Subscription, SubscriptionPolicy
from .message import MessagePolicy, MessageService
from .message_summary import MessageSummaryPackage
from .presence import PresencePackage

log = logging.getLogger(__name__)

Publish = Callable[[str, str, dict[str, Any]], None]


def may_watch(users: Any, watcher: str, resource: str, event: str) -> tuple[int, str] | None:
    """None when ``watcher`` may subscribe to ``resource``'s ``event``, else (status, reason)."""
    if resource not in users:
        return 404, "No such user"
    w = users.get(watcher)
    if w is None:
        return 403, "Forbidden"
    if watcher == resource:
        return None
    if event == "message-summary":
        return 403, "Only your own mailbox"
    if w.subscribe_all_presence or w.presence_group == users[resource].presence_group:
        return None
    return 403, "Not in your presence group"


class EventService:
    def __init__(self, core: Any, calls: Any, location: LocationService,
                 snapshot: Callable[[], Any], db_path: Path | None, publish: Publish) -> None:
        self.core = core
        self.location = location
        self.snapshot = snapshot
        self.publish = publish
        #: whether the control socket's topic has a listener (the server sets the bus's)
        self.wants: Callable[[str], bool] = lambda topic: True
        #: voicemail's provider: user -> (new, old) messages; tell changes with mwi_changed()
        self.mailbox_counts: Callable[[str], tuple[int, int]] = lambda user: (0, 0)
        self._db: sqlite3.Connection | None = None
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_store(db_path)
        self.retry = Retry("subscriptions and messages")
        self.identity = Identity(core.registrar, lambda: snapshot().users)
        self.notifier = Notifier(core, self.identity, self._subscription_policy, self.authorize,
                                 self._unlimited, self._db, publish)
        self.notifier.unwatched = self._unwatched
        self.dialogs = DialogPackage(self._domain, self._display_name, self._watched,
                                     lambda: calls.calls.values())
        self.presence = PresencePackage(core, self.identity, self._domain,
                                        self._subscription_policy,
                                        location.is_online, self.dialogs.activity,
                                        self._dnd, self._user_changed)
        self.presence.watched = lambda user: ("presence", user) in self.notifier.by_resource
        self.mwi = MessageSummaryPackage(self._domain, lambda user: self.mailbox_counts(user))
        for package in (self.dialogs, self.presence, self.mwi):
            self.notifier.add_package(package)
        self.messages = MessageService(core, self.identity, location, lambda: snapshot().users,
                                       self._domain, calls.display_for, self._message_policy,
                                       self._db)
        self._told: dict[str, tuple[str, str, str]] = {}  # user -> last state on the stream
        self._calls_due: dict[int, Call] = {}  # calls changed in this batch
        self._dnd_users = {n for n, u in snapshot().users.items() if u.do_not_disturb}
        self._calls_at = 0.0  # when the first of them changed
        core.allow_events = self.notifier.allow_events
        core.route_method("SUBSCRIBE", self.notifier.on_subscribe, owns=self.notifier.owns)
        core.route_method("PUBLISH", self.presence.on_publish)
        core.route_method("MESSAGE", self.messages.on_message)
        calls.on_change = self.call_changed
        if self.messages.queues:
            core.timers.schedule(float("-inf"), self.messages.resume)

    # -- configuration ----------------------------------------------------------------
    def _domain(self) -> str:
        return str(self.snapshot().system.domain or "minisip")

    def _display_name(self, user: str) -> str:
        u = self.snapshot().users.get(user)
        return str(getattr(u, "display_name", "") or "") if u is not None else ""

    def _subscription_policy(self) -> SubscriptionPolicy:
        s = self.snapshot().system.subscriptions
        return SubscriptionPolicy(s.min_expires, s.max_expires, s.default_expires,
                                  s.max_per_user, s.max_total, s.notify_rate)

    def _message_policy(self) -> MessagePolicy:
        m = self.snapshot().system.messages
        return MessagePolicy(m.store_per_user, m.keep_seconds)

    def _dnd(self, user: str) -> bool:
        u = self.snapshot().users.get(user)
        return bool(u is not None and u.do_not_disturb)

    def authorize(self, watcher: str, resource: str, event: str) -> tuple[int, str] | None:
        return may_watch(self.snapshot().users, watcher, resource, event)

    def _watched(self, user: str) -> bool:
        """Whether anyone may see ``user``'s calls now: its dialog or presence watchers,
        or a listener on the control socket's presence topic."""
        by = self.notifier.by_resource
        return ("dialog", user) in by or ("presence", user) in by or self.wants("presence")

    def _unwatched(self, event: str, user: str) -> None:
        """Nobody watches ``user``'s ``event`` any more: its presence document goes
        (its calls no longer keep it up to date)."""
        if event == "presence":
            self.presence.drop_document(user)

    def _unlimited(self, watcher: str) -> bool:
        u = self.snapshot().users.get(watcher)
        return bool(u is not None and u.subscribe_all_presence)

    # -- news from the PBX -----------------------------------------------------------------
    def user_state(self, user: str, online: bool) -> None:
        """A user's first device registered, or its last one went."""
        self._user_changed(user)
        if online:
            self.messages.user_online(user)

    def call_changed(self, call: Call) -> None:
        """Calls are read at the end of the batch that changed them (``commit``):
        handling one message a call passes through states no phone should see (its
        ringing users stop ringing, then who answered is recorded)."""
        if not self._calls_due:
            self._calls_at = self.core.now() - self.notifier.lag()
        self._calls_due[id(call)] = call

    def _calls_changed(self) -> None:
        if not self._calls_due:
            return
        calls, self._calls_due = self._calls_due, {}
        if self._told and not self.wants("presence"):
            self._told.clear()  # a listener's first news is news; unwatched users skip it
        for call in calls.values():
            for user in self.dialogs.update(call):
                self.notifier.changed("dialog", user, self._calls_at)
                self._user_changed(user, self._calls_at)
        self.dialogs.prune()

    def mwi_changed(self, user: str) -> None:
        """Voicemail calls this when ``user``'s message counts changed."""
        self.notifier.changed("message-summary", user)

    def _user_changed(self, user: str, at: float | None = None) -> None:
        # Every call's every change lands here for both its users: what nobody
        # watches is not rendered (a watcher's first NOTIFY renders it afresh).
        if self.notifier.by_resource.get(("presence", user)):
            if self.presence.refresh(user):
                self.notifier.changed("presence", user, at)
        else:
            self.presence.drop_document(user)
        if not self.wants("presence"):
            self._told.pop(user, None)  # a listener's first news of it is news
            return
        state = self.state(user)
        told = (state["state"], state["presence"], state["note"])
        if self._told.get(user) != told:
            self._told[user] = told
            self.publish("presence", "user_presence", state)

    def reloaded(self, snap: Any) -> None:
        """Users deleted or rights taken away end the subscriptions they held; a
        do-not-disturb set or cleared (the feature code edits users.yaml) is news."""
        users = snap.users
        dnd = {name for name, u in users.items() if u.do_not_disturb}
        for user in sorted(dnd ^ self._dnd_users):
            self._user_changed(user)
        self._dnd_users = dnd

        def reason(sub: Subscription) -> str | None:
            refusal = may_watch(users, sub.watcher, sub.resource, sub.event)
            if refusal is None:
                return None
            return "noresource" if refusal[0] == 404 else "rejected"
        self.notifier.end_where(reason)
        for user in [u for u in self.presence.publications if u not in users]:
            self.presence.forget(user)

    # -- views --------------------------------------------------------------------------
    def state(self, user: str) -> dict[str, Any]:
        basic, activities, note = self.presence.state(user)
        online = self.location.is_online(user)
        return {"user": user, "state": self.dialogs.activity(user) if online else "offline",
                "presence": ", ".join((basic, *activities)), "note": note}

    def overview(self, only: str | None = None) -> list[dict[str, Any]]:
        """Every user's state and who watches whom (``minisip presence``)."""
        subs = self.notifier.subscriptions()
        return [self.state(user) | {
            "calls": self.dialogs.summary(user),
            "watched_by": [{"user": s["watcher"], "event": s["event"], "expires": s["expires"]}
                           for s in subs if s["user"] == user],
            "watches": [{"user": s["user"], "event": s["event"], "expires": s["expires"]}
                        for s in subs if s["watcher"] == user]}
            for user in self.snapshot().users if only is None or user == only]

    def stats(self) -> dict[str, Any]:
        """Subscriptions, NOTIFYs and their delays, messages (``minisip status``)."""
        return self.notifier.stats() | self.messages.stats()

    # -- storage ----------------------------------------------------------------------------
    def commit(self, *, force: bool = False) -> None:
        """End of a batch, before what it queued leaves: the calls it changed are
        read (their NOTIFYs leave with the batch), then what must last is written.
        When the disk refuses, the changes are kept and tried again a second later
        (``durable.Retry``), meanwhile not on every batch."""
        self._calls_changed()
        if not (self.notifier.pending or self.messages.pending or self.retry.retry_at):
            return  # most batches change no subscription and no message
        now = time.time()
        if not (force or self.retry.may_try(now)):
            return
        try:
            self.notifier.commit()
            self.messages.commit()
        except sqlite3.Error as exc:
            self.retry.failed(exc, now, self.notifier.pending + self.messages.pending)
        else:
            self.retry.succeeded(now)

    # -- retry of a failed commit (a wall-clock timer source of the server) -----------------
    def get_timer(self) -> float | None:
        return self.retry.retry_at

    def handle_timer(self, now: float) -> None:
        if self.retry.retry_at is not None and self.retry.retry_at <= now:
            self.commit(force=True)

    def close(self) -> None:
        self.commit(force=True)
        if self.retry.failing_since is not None:
            log.error("%d subscription and message changes could not be written at exit",
                      self.notifier.pending + self.messages.pending)
        if self._db is not None:
            self._db.close()
            self._db = None
