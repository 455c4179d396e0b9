"""The relay on 127.0.0.1 with real UDP sockets: forwarding, latching, stats, ports."""
from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator

import pytest
import trio

from minisip.media.relay import MediaIO, PortPool, PortsExhausted, RelaySession
from minisip.media.rtp import make_rtp, parse_rtp_untrusted

HOST = "127.0.0.1"


@pytest.fixture(params=["epoll", "task-per-socket"])
async def io(request: pytest.FixtureRequest) -> AsyncIterator[MediaIO]:
    if request.param == "epoll" and not hasattr(__import__("select"), "epoll"):
        pytest.skip("no epoll here")
    media = MediaIO(use_epoll=request.param == "epoll")
    async with trio.open_nursery() as nursery:
        await nursery.start(media.run)
        yield media
        nursery.cancel_scope.cancel()


@pytest.fixture
def pool() -> PortPool:
    base = random.randrange(20000, 32000, 100)  # below the ephemeral range; busy ports are skipped
    return PortPool(base, base + 99)


class Party:
    """A fake phone: one UDP socket that sends RTP and collects what comes back."""

    def __init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.seq = 0
        self.ssrc = id(self) & 0xFFFFFFFF

    async def bind(self) -> Party:
        await self.sock.bind((HOST, 0))
        return self

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    async def send(self, port: int, n: int = 1, payload: bytes | None = None) -> list[bytes]:
        sent = []
        for _ in range(n):
            body = payload if payload is not None else bytes([self.seq & 0xFF]) * 160
            pkt = make_rtp(0, self.seq, self.seq * 160, self.ssrc, body)
            self.seq += 1
            await self.sock.sendto(pkt, (HOST, port))
            sent.append(pkt)
        return sent

    async def recv(self, n: int) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        for _ in range(n):
            data, addr = await self.sock.recvfrom(2048)
            out.append((data, addr))
        return out

    async def nothing_arrives(self, seconds: float = 0.1) -> bool:
        with trio.move_on_after(seconds):
            await self.sock.recvfrom(2048)
            return False
        return True


async def test_media_flows_both_ways_byte_identical_and_latches_despite_a_wrong_sdp_address(
        io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a, b = await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST, call_id="c1") as s:
            s.a.set_remote(a.addr)                   # A's SDP is right
            s.b.set_remote((HOST, 9))                # B's SDP is wrong (NAT): latching must fix it
            sent_b = await b.send(s.b.rtp_port, 5)   # B talks first: reaches A via its SDP address
            got_a = await a.recv(5)
            assert [d for d, _ in got_a] == sent_b
            assert {src for _, src in got_a} == {(HOST, s.a.rtp_port)}  # symmetric: from A's leg
            assert s.b.latched == b.addr
            sent_a = await a.send(s.a.rtp_port, 5)   # and A's media now reaches B's real address
            got_b = await b.recv(5)
            assert [d for d, _ in got_b] == sent_a
            assert {src for _, src in got_b} == {(HOST, s.b.rtp_port)}
            stats = s.stats()
            assert stats["a"]["rtp_packets"] == 5 and stats["b"]["rtp_packets"] == 5
            assert stats["a"]["rtp_bytes"] == 5 * 172
            assert stats["a"]["lost"] == 0 and stats["b"]["remote"] == f"{HOST}:{b.addr[1]}"


async def test_packets_for_a_party_with_no_address_yet_are_counted_not_sent(
        io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a = await Party().bind()
        with RelaySession(io, pool, HOST) as s:
            await a.send(s.a.rtp_port, 3)
            while s.a.snapshot().dropped_no_target < 3:
                await trio.sleep(0.005)


async def test_a_latched_leg_ignores_other_sources_until_the_quiet_time_passes(
        io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a, b, intruder = await Party().bind(), await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST, relatch_after=0.3) as s:
            s.a.set_remote(a.addr)
            s.b.set_remote(b.addr)
            await a.send(s.a.rtp_port, 2)
            await b.recv(2)
            await intruder.send(s.a.rtp_port, 3, payload=b"evil" * 40)  # hijack attempt
            assert await b.nothing_arrives(0.1)
            assert s.a.snapshot().dropped_foreign == 3
            assert s.a.latched == a.addr
            # A goes quiet (NAT rebinding): after the quiet time the new source is believed
            await trio.sleep(0.35)
            moved = await Party().bind()
            sent = await moved.send(s.a.rtp_port, 2)
            assert [d for d, _ in await b.recv(2)] == sent
            assert s.a.latched == moved.addr
            # and media toward A now goes to its new address
            sent_b = await b.send(s.b.rtp_port, 1)
            assert [d for d, _ in await moved.recv(1)] == sent_b


async def test_the_sdp_address_may_take_back_a_latch_from_a_stray_source(
        io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a, b, stray = await Party().bind(), await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST, relatch_after=10) as s:
            s.a.set_remote(a.addr)
            s.b.set_remote(b.addr)
            await stray.send(s.a.rtp_port, 1)  # arrives first and latches
            await b.recv(1)
            await a.send(s.a.rtp_port, 1)      # the real party, as its SDP says
            await b.recv(1)
            assert s.a.latched == a.addr


async def test_rtcp_is_relayed_on_the_odd_ports(io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a_rtcp, b_rtcp = await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST) as s:
            s.a.set_remote((HOST, 9), rtcp=a_rtcp.addr)
            s.b.set_remote((HOST, 9), rtcp=b_rtcp.addr)
            rr = bytes.fromhex("81c90007") + bytes(28)
            await a_rtcp.sock.sendto(rr, (HOST, s.a.rtcp_port))
            data, src = await b_rtcp.sock.recvfrom(2048)
            assert data == rr and src == (HOST, s.b.rtcp_port)
            assert s.a.snapshot().rtcp_packets == 1 and s.a.snapshot().rtp_packets == 0


async def test_loss_and_jitter_are_measured_per_leg(io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a, b = await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST) as s:
            s.a.set_remote(a.addr)
            s.b.set_remote(b.addr)
            for seq in [0, 1, 2, 4, 5, 7, 8, 9]:  # 3 and 6 never sent
                a.seq = seq
                await a.send(s.a.rtp_port, 1)
                await trio.sleep(0.02)
            got = await b.recv(8)
            assert [parse_rtp_untrusted(d).sequence for d, _ in got] == [0, 1, 2, 4, 5, 7, 8, 9]
            leg = s.a.snapshot()
            assert (leg.expected, leg.lost) == (10, 2)
            assert 0 <= leg.jitter_ms < 20  # real clock: bounded, not exact
            assert s.b.snapshot().rtp_packets == 0


async def test_ports_return_to_the_pool_and_can_be_bound_again(io: MediaIO, pool: PortPool) -> None:
    free = pool.available
    s = RelaySession(io, pool, HOST)
    ports = [s.a.rtp_port, s.a.rtcp_port, s.b.rtp_port, s.b.rtcp_port]
    assert pool.available == free - 2 and pool.in_use == 2
    assert all(p % 2 == 0 for p in ports[::2])
    s.close()
    s.close()  # idempotent
    assert pool.available == free and pool.in_use == 0
    for p in ports:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((HOST, p))
        probe.close()
    assert io.sockets == 0


async def test_pool_exhaustion_raises_and_skips_ports_taken_by_others(io: MediaIO) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind((HOST, 0))
    port = taken.getsockname()[1] & ~1
    taken.close()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, port))
    try:
        small = PortPool(port, port + 5)  # three pairs, the first one occupied
        s = RelaySession(io, small, HOST)
        assert port not in (s.a.rtp_port, s.b.rtp_port)
        with pytest.raises(PortsExhausted):
            RelaySession(io, small, HOST)
        s.close()
        assert small.available == 3 and small.in_use == 0
    finally:
        squatter.close()


async def test_idle_seconds_measures_time_since_the_last_packet(io: MediaIO,
                                                                pool: PortPool) -> None:
    with trio.fail_after(5):
        a = await Party().bind()
        with RelaySession(io, pool, HOST) as s:
            await trio.sleep(0.05)
            assert s.idle_seconds() >= 0.05
            await a.send(s.a.rtp_port, 1)
            while s.a.snapshot().rtp_packets == 0:
                await trio.sleep(0.005)
            assert s.idle_seconds() < 0.05


async def test_re_invite_with_a_new_address_drops_the_latch(io: MediaIO, pool: PortPool) -> None:
    with trio.fail_after(5):
        a, b, a2 = await Party().bind(), await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST, relatch_after=10) as s:
            s.a.set_remote(a.addr)
            s.b.set_remote(b.addr)
            await a.send(s.a.rtp_port, 1)
            await b.recv(1)
            s.a.set_remote(a.addr)   # same address (hold/resume): latch kept
            assert s.a.latched == a.addr
            s.a.set_remote(a2.addr)  # the phone moved: latch dropped, the new source accepted
            assert s.a.latched is None
            sent = await a2.send(s.a.rtp_port, 1)
            assert [d for d, _ in await b.recv(1)] == sent


def test_port_pool_hands_out_even_ports_fifo() -> None:
    p = PortPool(10001, 10010)  # even RTP ports whose RTP+1 fits: 10002..10008
    assert p.capacity == 4
    first = p.allocate()
    assert first == 10002
    p.release(first)
    assert [p.allocate() for _ in range(4)] == [10004, 10006, 10008, 10002]
    with pytest.raises(PortsExhausted):
        p.allocate()
    with pytest.raises(ValueError):
        PortPool(5000, 5000)


async def test_media_timeout_fires_only_after_the_media_stops(io: MediaIO, pool: PortPool) -> None:
    from minisip.media.relay import wait_media_timeout
    with trio.fail_after(5):
        a = await Party().bind()
        with RelaySession(io, pool, HOST) as s:
            start = trio.current_time()
            async with trio.open_nursery() as n:
                async def talk() -> None:
                    for _ in range(10):
                        await a.send(s.a.rtp_port, 1)
                        await trio.sleep(0.03)
                n.start_soon(talk)
                idle = await wait_media_timeout(s, 0.15)
            elapsed = trio.current_time() - start
            assert idle >= 0.15
            assert elapsed >= 0.3 + 0.15 - 0.05  # talked for ~0.3 s, then 0.15 s of silence


async def test_a_failing_handler_drops_its_packet_but_the_loop_serves_on(io: MediaIO,
                                                                       pool: PortPool) -> None:
    with trio.fail_after(5):
        a, b = await Party().bind(), await Party().bind()
        with RelaySession(io, pool, HOST) as s:
            s.a.set_remote(a.addr)
            s.b.set_remote(b.addr)

            def broken(data: memoryview, now: float) -> None:
                raise RuntimeError("bug in a tap")
            s.a.set_tap(broken)
            await a.send(s.a.rtp_port, 1)
            while io.handler_errors == 0:
                await trio.sleep(0.005)
            s.a.set_tap(None)
            sent = await a.send(s.a.rtp_port, 1)
            assert [d for d, _ in await b.recv(1)] == sent


def test_sdp_addresses_must_be_ip_literals() -> None:
    from minisip.media.relay import RelayLeg
    leg = RelayLeg.__new__(RelayLeg)  # set_remote validates before touching the sockets
    with pytest.raises(ValueError):
        RelayLeg.set_remote(leg, ("media.example.com", 4000))
