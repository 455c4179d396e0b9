"""RTP packets, RTCP detection, RFC 3550 reception statistics, the sending stream."""
from __future__ import annotations

import struct

import pytest

from minisip.media.rtp import (RtpPacket, RtpStream, StreamStats, is_rtcp, make_rtp,
                               parse_rtp_untrusted)
from minisip.sip.errors import BadMessage

GOOD = [
    # (description, packet)
    ("plain PCMU", RtpPacket(0, 1234, 160000, 0xDEADBEEF, b"\xff" * 160)),
    ("marker, PCMA", RtpPacket(8, 65535, 0xFFFFFFFF, 1, b"\xd5" * 160, marker=True)),
    ("two CSRCs", RtpPacket(0, 7, 8, 9, b"abc", csrc=(1, 0xFFFFFFFF))),
    ("extension", RtpPacket(96, 1, 2, 3, b"payload", extension=(0xBEDE, b"\x10\x01\x00\x00"))),
    ("empty extension", RtpPacket(96, 1, 2, 3, b"x", extension=(0x1000, b""))),
    ("padding 4", RtpPacket(101, 1, 2, 3, b"\x05\x0a\x00\xa0", padding=4)),
    ("padding 1", RtpPacket(0, 1, 2, 3, b"zz", padding=1)),
    ("everything", RtpPacket(127, 2, 3, 4, b"p", marker=True, csrc=(5,),
                             extension=(1, b"abcdefgh"), padding=3)),
    ("no payload", RtpPacket(13, 1, 2, 3, b"")),
]


@pytest.mark.parametrize("desc,packet", GOOD, ids=[g[0] for g in GOOD])
def test_packets_round_trip_through_the_wire_format(desc: str, packet: RtpPacket) -> None:
    wire = packet.to_bytes()
    assert parse_rtp_untrusted(wire) == packet
    assert parse_rtp_untrusted(memoryview(bytearray(wire))) == packet


def test_known_header_bytes() -> None:
    wire = make_rtp(0, 0x1234, 0x01020304, 0xCAFEBABE, b"\xff\xfe", marker=True)
    assert wire == bytes.fromhex("80 80 1234 01020304 cafebabe fffe".replace(" ", ""))
    assert wire == RtpPacket(0, 0x1234, 0x01020304, 0xCAFEBABE, b"\xff\xfe", marker=True).to_bytes()


BAD = [
    ("empty", b""),
    ("11 bytes", bytes.fromhex("80" + "00" * 10)),
    ("version 1", bytes.fromhex("40" + "00" * 11)),
    ("version 0", bytes(12)),
    ("CSRC count past the end", bytes.fromhex("82" + "00" * 11) + b"\0\0\0\0"),
    ("extension header missing", bytes.fromhex("90" + "00" * 11)),
    ("extension length past the end", bytes.fromhex("90" + "00" * 11) + b"\x00\x01\x00\x02abcd"),
    ("padding count zero", bytes.fromhex("a0" + "00" * 11) + b"ab\x00"),
    ("padding count past the header", bytes.fromhex("a0" + "00" * 11) + b"a\x09"),
    ("RTCP receiver report", bytes.fromhex("81c90007") + bytes(28)),
    ("RTCP sender report", bytes.fromhex("80c80006") + bytes(24)),
]


@pytest.mark.parametrize("desc,data", BAD, ids=[b[0] for b in BAD])
def test_bad_packets_raise_only_bad_message(desc: str, data: bytes) -> None:
    with pytest.raises(BadMessage) as info:
        parse_rtp_untrusted(data)
    assert info.value.status is None  # media is dropped, never answered


def test_parse_never_raises_anything_but_bad_message_on_any_prefix() -> None:
    wire = GOOD[-3][1].to_bytes() + GOOD[0][1].to_bytes()
    for i in range(len(wire) + 1):
        for data in (wire[:i], bytes(b ^ 0x5A for b in wire[:i])):
            try:
                parse_rtp_untrusted(data)
            except BadMessage:
                pass


@pytest.mark.parametrize("first_two,expected", [
    (b"\x80\xc8", True), (b"\x81\xc9", True), (b"\x81\xca", True), (b"\x81\xcb", True),
    (b"\x80\xcc", True), (b"\x80\xcd", True), (b"\x80\xce", True), (b"\x80\xcf", True),
    (b"\x80\x00", False), (b"\x80\x08", False), (b"\x80\x65", False), (b"\x80\xe5", False),
    (b"\x80\xe0", False), (b"\x00\xc8", False), (b"\x80", False),
])
def test_rtcp_is_told_apart_by_rfc_5761_rule(first_two: bytes, expected: bool) -> None:
    data = first_two + bytes(10) if len(first_two) == 2 else first_two
    assert is_rtcp(data) is expected


def feed(stats: StreamStats, seqs: list[int], ssrc: int = 1) -> None:
    for i, seq in enumerate(seqs):
        stats.update(seq, seq * 160, i * 0.02, ssrc, 0, 172)


@pytest.mark.parametrize("seqs,expected,lost", [
    ([100, 101, 102, 103, 104], 5, 0),
    ([100, 101, 102, 104, 105, 107, 108, 109], 10, 2),     # 103, 106 lost
    ([1, 2, 4, 3, 5], 5, 0),                               # reordered: nothing lost
    ([65533, 65534, 65535, 0, 1, 2], 6, 0),                # wrap-around
    ([65534, 0, 1], 4, 1),                                 # 65535 lost across the wrap
    ([10, 11, 11, 12], 3, 0),                              # duplicate: lost clamped at 0
    ([10, 11, 5000, 12, 13], 4, 0),                        # one stray far jump is ignored
])
def test_expected_and_lost_follow_extended_sequence_numbers(seqs: list[int], expected: int,
                                                           lost: int) -> None:
    s = StreamStats()
    feed(s, seqs)
    assert (s.expected, s.lost) == (expected, lost)
    assert s.packets == len(seqs)
    assert s.bytes == 172 * len(seqs)


def test_a_sequence_jump_confirmed_by_the_next_packet_resyncs() -> None:
    s = StreamStats()
    feed(s, [10, 11, 12, 20000, 20001, 20002])
    assert s.restarts == 1
    assert (s.expected, s.lost) == (3 + 2, 0)  # the first jumped packet itself is not counted


def test_wrap_counts_cycles() -> None:
    s = StreamStats()
    feed(s, [65535, 0])
    assert s.extended_max_seq == 65536


def test_new_ssrc_starts_a_new_source_but_keeps_call_totals() -> None:
    s = StreamStats()
    feed(s, [1, 2, 4], ssrc=1)           # 1 lost
    feed(s, [500, 501, 502, 504], ssrc=2)  # 1 lost
    assert (s.expected, s.lost) == (4 + 5, 2)


def test_jitter_matches_hand_computed_rfc_3550_a8_value() -> None:
    s = StreamStats(clock_rate=8000)
    # arrivals every 20 ms except the third, 5 ms (40 timestamp units) late
    for seq, arrival in [(0, 0.000), (1, 0.020), (2, 0.045), (3, 0.060)]:
        s.update(seq, seq * 160, arrival, 7, 0, 172)
    # transit 0, 0, 40, 0 -> J = 0, 0, 40/16 = 2.5, 2.5 + (40 - 2.5)/16 = 4.84375
    assert s.jitter == pytest.approx(4.84375, abs=1e-6)
    assert s.jitter_ms == pytest.approx(4.84375 / 8, abs=1e-6)


def test_perfectly_paced_stream_has_no_jitter_and_dtmf_repeats_are_skipped() -> None:
    s = StreamStats()
    for i in range(50):
        s.update(i, i * 160, i * 0.02, 1, 0, 172)
    # an RFC 4733 event: same timestamp, new payload type, 20 ms apart
    for k in range(5):
        s.update(50 + k, 50 * 160, (50 + k) * 0.02, 1, 101, 16)
    assert s.jitter == pytest.approx(0.0, abs=1e-6)


def test_stream_numbers_packets_and_marks_talk_spurts() -> None:
    st = RtpStream(ssrc=42, sequence=65535, timestamp=1000)
    p1 = parse_rtp_untrusted(st.audio(0, b"\xff" * 160, now=10.0))
    p2 = parse_rtp_untrusted(st.audio(0, b"\xff" * 160, now=10.02))
    assert (p1.sequence, p1.timestamp, p1.marker, p1.ssrc) == (65535, 1000, True, 42)
    assert (p2.sequence, p2.timestamp, p2.marker) == (0, 1160, False)
    # one second of silence later: the clock moved on, and the marker is set again
    st.start_talkspurt(11.04)
    p3 = parse_rtp_untrusted(st.audio(0, b"\xff" * 160, now=11.04))
    assert p3.marker and p3.timestamp == 1320 + 8000
    assert p3.sequence == 1


def test_header_struct_is_twelve_bytes() -> None:
    assert struct.calcsize("!BBHII") == 12
