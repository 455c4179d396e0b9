"""The shared pacer: one task sends every track's frames on one 20 ms grid."""
from __future__ import annotations

import pytest
import trio
import trio.testing

from minisip.media.pacer import FRAME, Pacer
from minisip.media.player import Player
from minisip.media.rtp import RtpStream, parse_rtp_untrusted


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> bool:
        self.sent.append((trio.current_time(), data))
        return True

    def packets(self) -> list[tuple[float, object]]:
        return [(t, parse_rtp_untrusted(d)) for t, d in self.sent]


async def test_tracks_share_one_grid_and_a_prompt_ends_while_music_loops(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    prompt, music = Wire(), Wire()
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run)
        loop = pacer.start(music, RtpStream(), 8, bytes(range(200)), loop=True)
        frames = await pacer.play(prompt, RtpStream(), 0, b"\x01" * (2 * FRAME + 10))
        assert frames == 3  # the last one padded with silence
        await trio.sleep(0.1)
        pacer.stop(loop)
        nursery.cancel_scope.cancel()
    sent = prompt.packets()
    assert [p.payload for _, p in sent] == [b"\x01" * FRAME] * 2 + [b"\x01" * 10 + b"\xff" * 150]
    assert [p.marker for _, p in sent] == [True, False, False]
    ts = [p.timestamp for _, p in sent]
    assert [b - a for a, b in zip(ts, ts[1:])] == [FRAME, FRAME]
    times = [t for t, _ in sent]
    assert [round(b - a, 6) for a, b in zip(times, times[1:])] == [0.02, 0.02]
    # the music shares the ticks and wraps around its 200 octets without a gap
    looped = b"".join(p.payload for _, p in music.packets())
    assert looped == (bytes(range(200)) * 10)[:len(looped)] and len(looped) >= 8 * FRAME
    assert set(times) <= {t for t, _ in music.sent}


async def test_an_idle_pacer_does_not_tick_and_many_tracks_cost_no_tasks(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run)
        await trio.sleep(1)
        assert pacer.ticks == 0
        tasks = trio.lowlevel.current_statistics().tasks_living
        wires = [Wire() for _ in range(300)]
        tracks = [pacer.start(w, RtpStream(), 0, b"\x05" * 800, loop=True) for w in wires]
        await trio.sleep(1.0)
        assert trio.lowlevel.current_statistics().tasks_living == tasks
        assert all(49 <= len(w.sent) <= 51 for w in wires)
        assert pacer.packets == sum(len(w.sent) for w in wires)
        for t in tracks:
            pacer.stop(t)
        ticks = pacer.ticks
        await trio.sleep(1)
        assert pacer.ticks <= ticks + 1 and len(pacer) == 0
        nursery.cancel_scope.cancel()


async def test_a_late_pacer_catches_up_a_little_and_rebases_when_far_behind() -> None:
    pacer = Pacer()
    wire = Wire()
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run)
        pacer.start(wire, RtpStream(), 0, b"\x05" * 1600, loop=True)
        await trio.sleep(0.05)
        n = len(wire.sent)
        import time
        time.sleep(0.1)  # the process stalls five frames: they go out at once, then on time
        await trio.sleep(0.05)
        assert len(wire.sent) >= n + 6
        time.sleep(0.5)  # far behind: no burst of 25 frames
        before = len(wire.sent)
        await trio.sleep(0.001)
        assert len(wire.sent) - before <= 2 and pacer.rebases == 1
        nursery.cancel_scope.cancel()


async def test_a_player_with_a_pacer_plays_through_it(autojump_clock: trio.testing.MockClock
                                                      ) -> None:
    pacer = Pacer()
    wire = Wire()
    player = Player(wire, codec="PCMA", pacer=pacer)
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run)
        assert await player.play(b"\x55" * 480) == 3
        with trio.move_on_after(0.2):
            await player.play(b"\x66" * 160, loop=True)
        nursery.cancel_scope.cancel()
    assert 3 + 10 <= len(wire.sent) <= 3 + 11  # 0.2 s of the loop: ten ticks, or eleven
    assert pacer.packets == len(wire.sent) and len(pacer) == 0
    assert {p.payload_type for _, p in wire.packets()} == {8}  # type: ignore[attr-defined]


@pytest.mark.parametrize("audio, loop, frames", [(b"", False, 0), (b"\x01" * 10, True, 5)])
async def test_edge_tracks(autojump_clock: trio.testing.MockClock, audio: bytes, loop: bool,
                           frames: int) -> None:
    pacer = Pacer()
    wire = Wire()
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run)
        track = pacer.start(wire, RtpStream(), 0, audio, loop=loop)
        await trio.sleep(0.09)
        pacer.stop(track)
        nursery.cancel_scope.cancel()
    assert len(wire.sent) == frames
