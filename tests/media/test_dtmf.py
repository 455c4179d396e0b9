"""RFC 4733 events sent and received exactly once; SIP INFO bodies; conversion."""
from __future__ import annotations

import pytest

from minisip.media.dtmf import (DTMF_PLAIN, DTMF_RELAY, DtmfDigit, DtmfReceiver, TelephoneEvent,
                                digit_to_info, event_packets, info_to_events, make_info,
                                parse_event_untrusted, parse_info_untrusted)
from minisip.media.rtp import RtpPacket, RtpStream, parse_rtp_untrusted
from minisip.sip.errors import BadMessage

DIGITS = "0123456789*#"


def wire_packets(digits: str, stream: RtpStream, duration_ms: int = 100) -> list[RtpPacket]:
    out = []
    ts = stream.timestamp
    for d in digits:
        for p in event_packets(d, ts, duration_ms):
            out.append(parse_rtp_untrusted(stream.packet(101, p.payload, p.timestamp, p.marker)))
        ts += 8 * duration_ms + 800  # a gap between key presses
    return out


def test_event_payload_layout() -> None:
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert ev.to_bytes() == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert parse_event_untrusted(ev.to_bytes()) == ev


def test_one_key_press_is_start_updates_and_three_ends_on_one_timestamp() -> None:
    packets = event_packets("5", 12345, 100)
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert {p.timestamp for p in packets} == {12345}
    events = [parse_event_untrusted(p.payload) for p in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5}
    offsets = [round(p.offset, 3) for p in packets]
    assert offsets == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12]


def test_all_digits_are_detected_exactly_once_despite_redundant_ends() -> None:
    rx = DtmfReceiver(101)
    got = []
    for p in wire_packets(DIGITS, RtpStream(ssrc=9)):
        got += rx.feed(p)
    assert "".join(d.digit for d in got) == DIGITS
    assert all(d.duration_ms == 100 for d in got)


def test_a_reordered_update_after_the_end_does_not_repeat_the_digit() -> None:
    packets = wire_packets(DIGITS, RtpStream(ssrc=9))
    # move each event's second update behind its first end packet
    reordered = []
    for i in range(0, len(packets), 7):
        ev = packets[i:i + 7]
        reordered += [ev[0], ev[1], ev[3], ev[4], ev[2], ev[5], ev[6]]
    rx = DtmfReceiver(101)
    got = [d.digit for p in reordered for d in rx.feed(p)]
    assert "".join(got) == DIGITS


def test_next_event_starting_before_the_previous_ends_reports_both_once() -> None:
    packets = wire_packets("12", RtpStream(ssrc=9))
    first, second = packets[:7], packets[7:]
    order = first[:4] + second[:1] + first[4:] + second[1:]  # 2 starts before 1's ends arrive
    rx = DtmfReceiver(101)
    assert "".join(d.digit for p in order for d in rx.feed(p)) == "12"


def test_event_whose_ends_were_all_lost_is_reported_when_the_next_starts_or_on_expiry() -> None:
    packets = wire_packets("34", RtpStream(ssrc=9))
    rx = DtmfReceiver(101)
    got = [d.digit for p in packets[:4] for d in rx.feed(p, now=1.0)]  # "3" never ends
    assert got == []
    got += [d.digit for p in packets[7:11] for d in rx.feed(p, now=1.1)]
    assert got == ["3"]
    assert rx.expire(1.5) == []
    assert rx.get_timer() == pytest.approx(2.1)
    assert [d.digit for d in rx.expire(2.2)] == ["4"]
    assert [d.digit for p in packets[11:] for d in rx.feed(p)] == []  # late ends: ignored


def test_audio_and_other_payload_types_are_ignored() -> None:
    rx = DtmfReceiver(101)
    assert rx.feed(RtpPacket(0, 1, 2, 3, b"\xff" * 160)) == []
    assert rx.feed(RtpPacket(101, 1, 2, 3, b"\x01")) == []  # short: dropped, no exception


@pytest.mark.parametrize("ctype,body,digit,duration", [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5", 160),
    ("application/dtmf-relay", b"Signal=*\r\nDuration=250\r\n", "*", 250),
    ("Application/DTMF-Relay; charset=x", b"Signal= #\nDuration= 100\n", "#", 100),
    ("application/dtmf-relay", b"Signal=11\r\nDuration=100\r\n", "#", 100),
    ("application/dtmf-relay", b"Signal=a\r\n", "A", 250),
    ("application/dtmf", b"7", "7", 250),
    ("application/dtmf", b"10\r\n", "*", 250),
])
def test_info_bodies_parse(ctype: str, body: bytes, digit: str, duration: int) -> None:
    assert parse_info_untrusted(ctype, body) == DtmfDigit(digit, duration)


@pytest.mark.parametrize("ctype,body", [
    ("application/dtmf-relay", b"Signal=X\r\nDuration=160\r\n"),
    ("application/dtmf-relay", b"Duration=160\r\n"),
    ("application/dtmf-relay", b"Signal=5\r\nDuration=-3\r\n"),
    ("application/dtmf-relay", b"Signal=5\r\nDuration=99999999999\r\n"),
    ("application/dtmf-relay", b"Signal=\xff\r\n"),
    ("application/dtmf", b"99"),
    ("text/plain", b"Signal=5"),
])
def test_bad_info_bodies_raise_bad_message(ctype: str, body: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_info_untrusted(ctype, body)


def test_make_info_bodies() -> None:
    assert make_info("5", 160) == (DTMF_RELAY, b"Signal=5\r\nDuration=160\r\n")
    assert make_info("#", content_type=DTMF_PLAIN) == (DTMF_PLAIN, b"#\r\n")
    with pytest.raises(ValueError):
        make_info("x")


def test_info_converts_to_rfc_4733_and_back() -> None:
    packets = info_to_events(DTMF_RELAY, b"Signal=9\r\nDuration=200\r\n", timestamp=5000)
    st = RtpStream(ssrc=1)
    rx = DtmfReceiver(101)
    got = [d for p in packets for d in rx.feed(
        parse_rtp_untrusted(st.packet(101, p.payload, p.timestamp, p.marker)))]
    assert got == [DtmfDigit("9", 200)]
    assert digit_to_info(got[0]) == (DTMF_RELAY, b"Signal=9\r\nDuration=200\r\n")
