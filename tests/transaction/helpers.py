"""Builders for the transaction tests: requests, responses, a fake clock's worth of timers.

Time is a float we pass in; ``run_timers`` walks ``get_timer()`` deadlines one by
one, the way the driver's timer loop does, and records what left at each.
"""
from __future__ import annotations

from minisip.sip.message import Request, Response, make_response
from minisip.sip.peer import Peer
from minisip.transaction.layer import TransactionLayer

UDP = Peer("udp", "192.0.2.10", 5060)
UDP2 = Peer("udp", "192.0.2.20", 5060)
TCP = Peer("tcp", "192.0.2.10", 40000)

PBX_VIA = "SIP/2.0/UDP 198.51.100.1:5060"


def request(method: str = "REGISTER", *, branch: str = "z9hG4bK-1", via_host: str = "192.0.2.10",
            via_port: int | None = 5060, transport: str = "UDP", call_id: str = "call-1",
            from_tag: str = "ft1", to_tag: str | None = None, cseq: int = 1,
            cseq_method: str | None = None, uri: str = "sip:100@pbx.example.com",
            routes: tuple[str, ...] = (), extra: tuple[tuple[str, str], ...] = ()) -> Request:
    sent_by = via_host if via_port is None else f"{via_host}:{via_port}"
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:100@pbx.example.com>" + (f";tag={to_tag}" if to_tag else "")
    headers = [("Via", via)]
    headers += [("Route", r) for r in routes]
    headers += [("Max-Forwards", "70"), ("From", f"<sip:200@pbx.example.com>;tag={from_tag}"),
                ("To", to), ("Call-ID", call_id),
                ("CSeq", f"{cseq} {cseq_method or method}"), *extra]
    return Request(method, uri, headers)


def response(req: Request, status: int, *, to_tag: str | None = "tt1") -> Response:
    """The response ``req``'s receiver would send (To tag on everything but 100)."""
    return make_response(req, status, to_tag=None if status == 100 else to_tag)


def start_lines(out: list[tuple[bytes, Peer]]) -> list[str]:
    return [data.split(b"\r\n", 1)[0].decode() for data, _ in out]


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, list[str]]]:
    """Fire deadlines up to ``until`` in order: [(deadline, start lines sent then)]."""
    sent = []
    while (t := layer.get_timer()) is not None and t <= until:
        layer.handle_timer(t)
        lines = start_lines(layer.data_to_send())
        if lines:
            sent.append((t, lines))
    return sent


def event_names(layer: TransactionLayer) -> list[str]:
    return [type(e).__name__ for e in layer.next_events()]
