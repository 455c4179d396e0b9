"""SIP MESSAGE without sockets: forking to devices, store-and-forward, expiry, restarts."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from minisip.pbx.events.message import MessagePolicy, MessageService
from minisip.pbx.location import Binding, LocationService
from minisip.sip.message import Request, Response
from minisip.sip.peer import Peer

from tests.pbx.events_helpers import PEER, FakeCore, request


class World:
    def __init__(self, policy: MessagePolicy = MessagePolicy(),
                 db: sqlite3.Connection | None = None) -> None:
        self.core = FakeCore()
        self.location = LocationService(None)
        self.policy = policy
        self.wall = 5000.0
        self.svc = self.service(db)

    def service(self, db: sqlite3.Connection | None) -> MessageService:
        return MessageService(self.core, self.core.identity, self.location,
                              lambda: self.core.users, lambda: "minisip",
                              lambda u: '"Bob" ' if u == "102" else "", lambda: self.policy, db,
                              wall=lambda: self.wall)

    def register(self, user: str, devices: int = 1) -> None:
        for i in range(devices):
            self.location.put(Binding(user, f"sip:{user}@192.0.2.{20 + i}:5060",
                                      time.time() + 3600, None, f"r{user}{i}", 1,
                                      Peer("udp", f"192.0.2.{20 + i}", 5060)))
        self.svc.user_online(user)

    def send(self, to: str, text: str = "hello", sender: str = "102") -> Response | None:
        self.req = request("MESSAGE", sender, to, body=text.encode(),
                           headers=[("Content-Type", "text/plain;charset=utf-8")])
        return self.svc.on_message(self.req, PEER, self.core.t)

    def messages(self) -> list[Request]:
        return self.core.requests("MESSAGE")

    def answers(self) -> list[Response]:
        return [m for m in self.core.log if isinstance(m, Response)]


def test_a_message_without_a_user_is_a_keepalive() -> None:
    w = World()
    req = request("MESSAGE", "102", "101")
    req.uri = "sip:minisip"
    resp = w.svc.on_message(req, PEER, 0)
    assert resp is not None and resp.status == 200 and not w.messages()


def test_a_message_to_an_unknown_user_gets_404_and_a_huge_one_513() -> None:
    w = World()
    assert (r := w.send("999")) is not None and r.status == 404
    w.register("101")
    assert (r := w.send("101", "x" * 20000)) is not None and r.status == 513


def test_a_message_goes_to_every_device_and_the_first_2xx_answers() -> None:
    w = World()
    w.register("101", devices=2)
    assert w.send("101", "hi there") is None
    first, second = w.messages()
    assert {first.uri, second.uri} == {"sip:101@192.0.2.20:5060", "sip:101@192.0.2.21:5060"}
    assert str(first.headers.get("From")).startswith('"Bob" <sip:102@minisip>;tag=')
    assert first.headers.get("To") == "<sip:101@minisip>" and first.body == b"hi there"
    assert first.headers.get("Content-Type") == "text/plain;charset=utf-8"
    assert "Contact" not in first.headers  # RFC 3428: MESSAGE carries no Contact
    w.core.sent[1].answer(202)
    w.core.sent[0].answer(500)
    (answer,) = w.answers()
    assert answer.status == 202 and answer.call_id == w.req.call_id


def test_when_every_device_fails_the_most_telling_failure_answers() -> None:
    w = World()
    w.register("101", devices=2)
    w.send("101")
    w.core.sent[0].answer(408)
    assert not w.answers()
    w.core.sent[1].answer(486)
    assert [a.status for a in w.answers()] == [486]


def test_offline_users_get_messages_stored_and_delivered_in_order_on_registering() -> None:
    w = World()
    assert (r := w.send("101", "one")) is not None and r.status == 202
    w.wall += 60
    assert (r := w.send("101", "two", sender="103")) is not None and r.status == 202
    w.register("101")
    assert not w.messages()  # after the REGISTER's 200: on the timer loop's next pass
    w.core.advance(0)
    (one,) = w.messages()
    assert one.body == b"one" and one.headers.get("Date") == "Thu, 01 Jan 1970 01:23:20 GMT"
    w.core.sent[-1].answer(200)
    two = w.messages()[-1]
    assert two.body == b"two" and str(two.headers.get("From")).startswith("<sip:103@minisip>")
    w.core.sent[-1].answer(200)
    assert not w.svc.queues and w.svc.stats()["messages_delivered_later"] == 2


def test_a_refused_stored_message_waits_for_the_next_registration() -> None:
    w = World()
    w.send("101", "one")
    w.send("101", "two")
    w.register("101")
    w.core.advance(0)
    w.core.sent[-1].answer(480)
    assert len(w.messages()) == 1 and len(w.svc.queues["101"]) == 2
    w.location.remove_all("101")
    w.register("101")
    w.core.advance(0)
    assert [m.body for m in w.messages()] == [b"one", b"one"]


def test_the_store_is_bounded_per_user() -> None:
    w = World(MessagePolicy(store_per_user=2))
    assert [getattr(w.send("101"), "status", None) for _ in range(3)] == [202, 202, 480]
    w0 = World(MessagePolicy(store_per_user=0))
    assert (r := w0.send("101")) is not None and r.status == 480


def test_stored_messages_expire() -> None:
    w = World(MessagePolicy(store_per_user=1, keep_seconds=100))
    w.send("101", "old")
    w.wall += 101
    assert (r := w.send("101", "new")) is not None and r.status == 202  # the old one made room
    w.register("101")
    w.core.advance(0)
    assert [m.body for m in w.messages()] == [b"new"]


def test_stored_messages_survive_a_restart(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    w = World(db=db)
    w.send("101", "kept")
    w.send("102", "gone")
    w.svc.commit()
    w.wall += 10
    w2 = World()
    w2.wall = w.wall
    w2.svc = w2.service(db)
    w2.register("101")
    w2.core.advance(0)
    (m,) = w2.messages()
    assert m.body == b"kept"
    m_answer = w2.core.sent[-1]
    m_answer.answer(200)
    w2.svc.commit()
    left = db.execute("SELECT recipient, body FROM messages").fetchall()
    assert left == [("102", b"gone")]
