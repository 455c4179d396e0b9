"""The conference mixer: each party hears the sum of the others, 20 ms at a time."""
from __future__ import annotations

import struct

import trio

from minisip.media.mixer import FRAME, MAX_FRAMES, Mixer, run_mixer


def pcm(*values: int, n: int = FRAME) -> bytes:
    samples = [values[i % len(values)] for i in range(n)]
    return struct.pack(f"<{n}h", *samples)


def first(data: bytes) -> int:
    return int(struct.unpack_from("<h", data)[0])


def test_each_party_hears_the_others_added() -> None:
    m = Mixer("ABC")
    m.push("A", pcm(100))
    m.push("B", pcm(20))
    m.push("C", pcm(3))
    out = m.mix()
    assert {p: first(v) for p, v in out.items()} == {"A": 23, "B": 103, "C": 120}
    assert all(len(v) == 2 * FRAME for v in out.values())


def test_silence_for_a_party_that_sent_nothing() -> None:
    m = Mixer("ABC")
    m.push("A", pcm(1000))
    assert {p: first(v) for p, v in m.mix().items()} == {"A": 0, "B": 1000, "C": 1000}
    assert {first(v) for v in m.mix().values()} == {0}


def test_the_sum_is_clipped() -> None:
    m = Mixer("ABC")
    m.push("A", pcm(30000))
    m.push("B", pcm(30000))
    m.push("C", pcm(-30000))
    out = m.mix()
    assert (first(out["C"]), first(out["A"]), first(out["B"])) == (32767, 0, 0)
    m.push("A", pcm(-30000))
    m.push("B", pcm(-30000))
    assert first(m.mix()["C"]) == -32768


def test_packets_of_any_size_are_cut_into_frames() -> None:
    m = Mixer("AB")
    m.push("A", pcm(5, n=240))  # 30 ms
    assert first(m.mix()["B"]) == 5
    assert first(m.mix()["B"]) == 0  # only 10 ms left over: not a frame yet
    m.push("A", pcm(7, n=80))
    assert first(m.mix()["B"]) == 5  # the leftover, completed


def test_a_party_too_far_ahead_loses_its_oldest_audio() -> None:
    m = Mixer("AB")
    for i in range(MAX_FRAMES + 3):
        m.push("A", pcm(i))
    assert m.dropped == 3
    assert first(m.mix()["B"]) == 3


async def test_run_mixer_paces_by_deadline(autojump_clock: trio.testing.MockClock) -> None:
    m = Mixer("AB")
    got: list[float] = []
    with trio.move_on_after(0.1):
        await run_mixer(m, {"A": lambda data, due: got.append(due)})
    assert [round(t, 3) for t in got] == [0.02, 0.04, 0.06, 0.08]
