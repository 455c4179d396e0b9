"""The wire pieces of transfer and the finders of pick-up, without sockets: Refer-To and
Replaces parsing, sipfrag NOTIFYs, the transfer state table, which ringing or answered
call a pick-up, join or break-in acts on, and park slots."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minisip.pbx.apps.park import ParkLot
from minisip.pbx.call import CallState, LegState
from minisip.pbx.pickup import answered_call, pickup_group, ringing_call
from minisip.pbx.transfer import (
    _TRANSITIONS, Replaces, ReferTo, TransferState, notify_headers, parse_refer_to_untrusted,
    parse_replaces_untrusted, sipfrag,
)
from minisip.sip.errors import BadMessage


@pytest.mark.parametrize("value, expected", [
    ("<sip:102@pbx.example.com>", ReferTo("102")),
    ("sip:102@pbx", ReferTo("102")),
    ('"Desk" <sip:*70*5@pbx;user=phone>', ReferTo("*70*5")),
    ("<sip:102@pbx?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
     ReferTo("102", Replaces("abc@h", "1", "2"))),
    ("<sip:102@pbx?replaces=x%3Bfrom-tag%3D2%3Bto-tag%3D1%3Bearly-only>",
     ReferTo("102", Replaces("x", "1", "2", early_only=True))),
])
def test_refer_to_names_a_number_and_maybe_a_dialog(value: str, expected: ReferTo) -> None:
    assert parse_refer_to_untrusted(value) == expected


@pytest.mark.parametrize("value", [
    "", "<sip:pbx.example.com>", "<http://example.com/102>",
    "<sip:102@pbx?Replaces=abc>", "<sip:102@pbx?Replaces=abc%3Bto-tag%3D1>",
    "<sip:102@pbx?Replaces=%3Bto-tag%3D1%3Bfrom-tag%3D2>",
])
def test_a_bad_refer_to_is_a_bad_message(value: str) -> None:
    with pytest.raises(BadMessage):
        parse_refer_to_untrusted(value)


@given(st.text(max_size=200))
def test_refer_to_and_replaces_raise_only_bad_message(text: str) -> None:
    for parse in (parse_refer_to_untrusted, parse_replaces_untrusted):
        try:
            parse(text)  # type: ignore[operator]
        except BadMessage:
            pass


def test_replaces_header() -> None:
    assert parse_replaces_untrusted("98asjd8@test.com;to-tag=12345;from-tag=54321") == \
        Replaces("98asjd8@test.com", "12345", "54321")


def test_notify_bodies_and_headers() -> None:
    assert sipfrag(100, "Trying") == b"SIP/2.0 100 Trying\r\n"
    assert notify_headers(None, False) == [
        ("Event", "refer"), ("Subscription-State", "active;expires=60"),
        ("Content-Type", "message/sipfrag;version=2.0")]
    assert notify_headers(7, True)[:2] == [
        ("Event", "refer;id=7"), ("Subscription-State", "terminated;reason=noresource")]


def test_a_transfer_ends_once() -> None:
    assert _TRANSITIONS[TransferState.TRYING] == {TransferState.DONE, TransferState.FAILED}
    assert not _TRANSITIONS[TransferState.DONE] and not _TRANSITIONS[TransferState.FAILED]


# -- which call -------------------------------------------------------------------------

@dataclass(eq=False)
class FakeLeg:
    user: str
    state: LegState = LegState.CONFIRMED
    dialog: object = "dialog"


@dataclass(eq=False)
class FakeCall:
    caller: str
    state: CallState
    setup_time: float = 0.0
    answer_time: float | None = None
    ringing_users: set[str] = field(default_factory=set)
    planning: bool = True
    merged: bool = False
    a: FakeLeg | None = None
    winner: FakeLeg | None = None
    parked: str = ""


R, T = CallState.RINGING, CallState.TALKING


@pytest.mark.parametrize("calls, users, picker, expected", [
    ([FakeCall("100", R, 1.0, ringing_users={"101"})], {"101"}, "102", 0),
    ([FakeCall("100", R, 2.0, ringing_users={"101"}),
      FakeCall("103", R, 1.0, ringing_users={"101", "104"})], {"101"}, "102", 1),  # oldest
    ([FakeCall("100", R, ringing_users={"104"})], {"101"}, "102", None),  # not that user
    ([FakeCall("102", R, ringing_users={"101"})], {"101"}, "102", None),  # its own call
    ([FakeCall("100", T, ringing_users={"101"}, planning=False)], {"101"}, "102", None),
    ([FakeCall("100", CallState.ROUTING, ringing_users={"101"})], {"101", "105"}, "102", 0),
])
def test_pickup_takes_the_oldest_call_ringing_the_users(
        calls: list[FakeCall], users: set[str], picker: str, expected: int | None) -> None:
    found = ringing_call(calls, users, picker)  # type: ignore[arg-type]
    assert found is (calls[expected] if expected is not None else None)


@dataclass
class U:
    pickup_group_id: int = 0


def test_a_pickup_group_is_the_other_users_with_the_same_id() -> None:
    users = {"100": U(1), "101": U(1), "102": U(2), "103": U(0), "104": U(1)}
    assert pickup_group(users, "100") == {"101", "104"}  # type: ignore[arg-type]
    assert pickup_group(users, "103") == set()  # type: ignore[arg-type]


def test_join_and_break_in_act_on_the_users_latest_answered_call() -> None:
    me = FakeCall("0", R)
    old = FakeCall("100", T, answer_time=1.0, a=FakeLeg("100"), winner=FakeLeg("101"))
    new = FakeCall("102", T, answer_time=2.0, a=FakeLeg("102"), winner=FakeLeg("100"))
    ringing = FakeCall("100", R, a=FakeLeg("100"))
    gone = FakeCall("100", T, answer_time=3.0, a=FakeLeg("100", LegState.GONE))
    calls = [me, old, new, ringing, gone]
    assert answered_call(calls, "100", me) == (new, new.winner)  # type: ignore[arg-type]
    assert answered_call(calls, "101", me) == (old, old.winner)  # type: ignore[arg-type]
    assert answered_call(calls, "105", me) is None  # type: ignore[arg-type]


def test_park_slots() -> None:
    lot = ParkLot()
    a, b = FakeCall("100", T), FakeCall("101", T)
    assert lot.free_slot(3, 5) == "3"
    assert lot.park(a, "3") and a.parked == "3"  # type: ignore[arg-type]
    assert not lot.park(b, "3")  # type: ignore[arg-type]
    assert lot.free_slot(3, 5) == "4" and lot.free_slot(3, 3) is None
    assert lot.get("03") is a and lot.get("4") is None and lot.get("x") is None
    lot.remove(a)  # type: ignore[arg-type]
    assert a.parked == "" and lot.get("3") is None


def test_room_to_park() -> None:
    lot = ParkLot()
    lot.park(FakeCall("100", T), "3")  # type: ignore[arg-type]
    assert not lot.can_park("3", 3, 4) and lot.can_park("4", 3, 4) and lot.can_park("", 3, 4)
    lot.park(FakeCall("101", T), "4")  # type: ignore[arg-type]
    assert not lot.can_park("", 3, 4) and lot.can_park("5", 3, 4)
