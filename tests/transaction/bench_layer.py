"""Benchmark: 100,000 REGISTER transactions through the layer (not collected by pytest).

    .venv/bin/python tests/transaction/bench_layer.py [count]

Each transaction: the REGISTER arrives (``receive`` + ``next_events``), the TU
answers 200 (``send_response`` + ``data_to_send``), and Timer J later ends it
(``handle_timer``: a settled NIST ends quietly). Requests arrive at
5,000/s of fake time, so with Timer J = 32 s every NIST is still alive when the
last request arrives: the heap and the tables are at full size.

Messages are fakes: subclasses of the real Request/Response whose header views
(branch, top Via, Call-ID, CSeq, tags) are plain slots set up front and whose
``to_bytes()`` returns prepared bytes, so the figure is the layer's own cost,
not the parser's or the serializer's. The garbage collector runs (``--no-gc``
turns it off) but skips the prepared messages (``gc.freeze()``), so what it
costs is what the layer's own allocations cost with 100,000 NISTs alive. A
second run uses real messages with their views already parsed once (what the
driver hands over after ``stamp_via``), serialization of the 200 included.
"""
from __future__ import annotations

import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minisip.sip.message import Request, Response, make_response  # noqa: E402
from minisip.sip.peer import Peer  # noqa: E402
from minisip.sip.uri import Via  # noqa: E402
from minisip.transaction.layer import TransactionLayer  # noqa: E402

NO_GC = "--no-gc" in sys.argv


class FakeRequest(Request):
    __slots__ = ("call_id", "cseq", "top_via", "branch", "from_tag", "to_tag", "wire")

    def to_bytes(self) -> bytes:
        return self.wire


class FakeResponse(Response):
    __slots__ = ("call_id", "cseq", "top_via", "branch", "from_tag", "to_tag", "wire")

    def to_bytes(self) -> bytes:
        return self.wire

    def unechoed(self) -> bytes:
        return self.wire


def fake_pair(i: int) -> tuple[FakeRequest, FakeResponse, Peer]:
    host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    branch = f"z9hG4bK{i:012x}"
    via = Via("UDP", host, 5060, {"branch": branch, "rport": "5060"})
    req = FakeRequest.__new__(FakeRequest)
    req.method, req.uri = "REGISTER", "sip:pbx.example.com"
    resp = FakeResponse.__new__(FakeResponse)
    resp.status, resp.reason = 200, "OK"
    for m in (req, resp):
        m.call_id, m.cseq, m.top_via, m.branch = f"c{i}", (1, "REGISTER"), via, branch
        m.from_tag = f"f{i}"
    req.to_tag, resp.to_tag = None, "t"
    req.wire, resp.wire = b"REGISTER ...", b"SIP/2.0 200 OK ..."
    return req, resp, Peer("udp", host, 5060)


def real_pair(i: int) -> tuple[Request, Response, Peer]:
    host = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    req = Request("REGISTER", "sip:pbx.example.com", [
        ("Via", f"SIP/2.0/UDP {host}:5060;branch=z9hG4bK{i:012x};rport=5060"),
        ("Max-Forwards", "70"), ("From", f"<sip:{i}@pbx.example.com>;tag=f{i}"),
        ("To", f"<sip:{i}@pbx.example.com>"), ("Call-ID", f"c{i}"),
        ("CSeq", "1 REGISTER"), ("Contact", f"<sip:{i}@{host}:5060>"), ("Expires", "3600")])
    for view in ("branch", "top_via", "call_id", "cseq", "from_tag", "to_tag"):
        getattr(req, view)  # parsed once, as the driver's stamp_via and the TU would
    resp = make_response(req, 200, to_tag="t", headers=[("Expires", "3600")])
    for view in ("branch", "top_via", "cseq", "call_id", "from_tag"):
        getattr(resp, view)
    return req, resp, Peer("udp", host, 5060)


def run(count: int, make) -> None:  # type: ignore[no-untyped-def]
    pairs = [make(i) for i in range(count)]
    layer = TransactionLayer()
    rate = 5000.0
    gc.collect()
    gc.freeze()  # the prepared messages are the bench's, not the layer's: GC skips them
    if NO_GC:
        gc.disable()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    t_recv = t_send = 0.0
    for i, (req, resp, peer) in enumerate(pairs):
        now = i / rate
        a = time.perf_counter()
        layer.receive(req, peer, now)
        layer.next_events()
        b = time.perf_counter()
        layer.send_response(resp, now)
        layer.data_to_send()
        c = time.perf_counter()
        t_recv += b - a
        t_send += c - b
        if layer.get_timer() is not None and layer.get_timer() <= now:  # never: J = 32 s
            layer.handle_timer(now)
    alive = layer.counters.nist
    heap = len(layer._heap)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    d = time.perf_counter()
    layer.handle_timer(count / rate + 64.0)
    ended = alive - layer.counters.nist
    e = time.perf_counter()
    gc.enable()
    gc.unfreeze()
    total = e - t0
    assert ended == count and layer.counters.nist == 0
    print(f"  {count} transactions in {total:.3f} s: {total / count * 1e6:.2f} us/transaction"
          f" (receive {t_recv / count * 1e6:.2f}, respond {t_send / count * 1e6:.2f},"
          f" Timer J {(e - d) / count * 1e6:.2f});"
          f" peak {alive} NISTs alive, heap {heap}, max RSS +{(rss1 - rss0) / 1024:.0f} MiB")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 100_000
    print("fake messages (layer only):")
    run(count, fake_pair)
    print("real messages, header views pre-parsed, 200 serialized by to_bytes():")
    run(count, real_pair)


if __name__ == "__main__":
    main()
