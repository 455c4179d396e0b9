"""Offer/answer for minisip's own media endpoint (PCMU 0, PCMA 8, telephone-event 101).

SDP itself (parsing, the typed views, the relay's rewrite) is ``minisip.sip.sdp``,
the one SDP model; this module only decides what minisip's endpoint offers and
answers. Everything that reads a body from the wire may raise only
``BadMessage`` (``NotAcceptable``, status 488, when offer and answer share no codec).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..sip.digits import is_digits
from ..sip.errors import BadMessage
from ..sip.sdp import DIRECTIONS, Media, parse_sdp_untrusted

_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                     "recvonly": "sendonly", "inactive": "inactive"}
_EVENT_LIST = re.compile(r"[0-9]{1,3}(-[0-9]{1,3})?(,[0-9]{1,3}(-[0-9]{1,3})?)*")
#: our own codecs: name -> static payload type
STATIC_PT = {"PCMU": 0, "PCMA": 8}


class NotAcceptable(BadMessage):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, 488)


def _addr_type(addr: str) -> str:
    return "IP6" if ":" in addr else "IP4"


# ---- our own endpoint ---------------------------------------------------------------------

@dataclass(frozen=True)
class Negotiated:
    """What our media endpoint does after offer/answer."""
    codec: str                      #: "PCMU" or "PCMA"
    payload_type: int
    dtmf_payload_type: int | None   #: telephone-event, when both sides have it
    remote: tuple[str, int] | None  #: where to send RTP (None: held with 0.0.0.0, or rejected)
    remote_rtcp: tuple[str, int] | None
    direction: str                  #: ours: sendrecv, sendonly, recvonly or inactive
    ptime: int = 20

    @property
    def can_send(self) -> bool:
        return self.remote is not None and self.direction in ("sendrecv", "sendonly")

    @property
    def can_receive(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _sdp(address: str, port: int, session_id: int, version: int,
         media_pts: list[tuple[int, str]], dtmf_pt: int | None, direction: str,
         ptime: int, extra_rejected: list[str], dtmf_fmtp: str = "0-16") -> bytes:
    at = _addr_type(address)
    fmts = [str(pt) for pt, _ in media_pts] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    lines = ["v=0", f"o=minisip {session_id} {version} IN {at} {address}", "s=minisip",
             f"c=IN {at} {address}", "t=0 0", f"m=audio {port} RTP/AVP {' '.join(fmts)}"]
    for pt, name in media_pts:
        lines.append(f"a=rtpmap:{pt} {name}/8000")
    if dtmf_pt is not None:
        lines.append(f"a=rtpmap:{dtmf_pt} telephone-event/8000")
        lines.append(f"a=fmtp:{dtmf_pt} {dtmf_fmtp}")
    lines.append(f"a=ptime:{ptime}")
    lines.append(f"a={direction}")
    lines.extend(extra_rejected)
    return ("\r\n".join(lines) + "\r\n").encode()


def make_offer(address: str, port: int, *, session_id: int, version: int = 1,
               codecs: tuple[str, ...] = ("PCMU", "PCMA"), dtmf_payload_type: int | None = 101,
               direction: str = "sendrecv", ptime: int = 20) -> bytes:
    """An SDP offer for minisip's own endpoint (RTP on ``address``:``port``, RTCP on port+1)."""
    if direction not in DIRECTIONS:
        raise ValueError(direction)
    pts = [(STATIC_PT[c.upper()], c.upper()) for c in codecs]
    return _sdp(address, port, session_id, version, pts, dtmf_payload_type, direction, ptime, [])


def _choose(m: Media, codecs: tuple[str, ...]) -> tuple[int, str] | None:
    wanted = {c.upper() for c in codecs}
    for pt in m.payload_types():  # the offerer's order of preference
        enc = m.encoding(pt)
        if enc and enc[0] in wanted and enc[1] == 8000:
            return pt, enc[0]
    return None


def answer_offer_untrusted(offer: bytes, address: str, port: int, *, session_id: int,
                           version: int = 1, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
                           dtmf: bool = True, direction: str = "sendrecv",
                           ) -> tuple[bytes, Negotiated]:
    """Answer a party's offer for our endpoint: the first audio stream with a codec we have.

    ``direction`` is what we would like; the answer narrows it by the offer's
    (RFC 3264 6.1: sendonly answers recvonly, inactive answers inactive).
    Other streams are rejected with port 0, keeping the m= line count.
    """
    desc = parse_sdp_untrusted(offer)
    chosen: tuple[int, Media, tuple[int, str]] | None = None
    for i, m in enumerate(desc.media):
        if m.kind == "audio" and m.port != 0 and m.proto.upper().startswith("RTP/AVP"):
            c = _choose(m, codecs)
            if c is not None:
                chosen = (i, m, c)
                break
    if chosen is None:
        raise NotAcceptable("no common audio codec (we have PCMU, PCMA)")
    index, m, (pt, name) = chosen
    dtmf_pt = m.event_payload_type() if dtmf else None
    ours = _narrow(direction, _ANSWER_DIRECTION[m.direction])
    rejected = []
    for i, other in enumerate(desc.media):
        if i != index:
            line = f"m={other.kind} 0 {other.proto} {' '.join(other.formats) or '0'}"
            if not (line.isascii() and line.isprintable()):
                raise BadMessage("bad SDP m= line")
            rejected.append(line)
    # echo the offerer's event list (0-15, 0-16 ...): we understand 0-16 and ignore the rest
    fmtp = m.fmtp.get(dtmf_pt, "0-15") if dtmf_pt is not None else ""
    if not _EVENT_LIST.fullmatch(fmtp):
        fmtp = "0-15"
    body = _sdp(address, port, session_id, version, [(pt, name)], dtmf_pt, ours,
                m.ptime or 20, [], fmtp or "0-15")
    if rejected:  # keep the offer's order of m= lines
        head, _, tail = body.partition(b"m=audio")
        media_block = b"m=audio" + tail
        before = [r.encode() + b"\r\n" for r in rejected[:index]]
        after = [r.encode() + b"\r\n" for r in rejected[index:]]
        body = head + b"".join(before) + media_block + b"".join(after)
    neg = Negotiated(name, pt, dtmf_pt, m.rtp_address, m.rtcp_target, ours, m.ptime or 20)
    return body, neg


def negotiated_from_answer_untrusted(answer: bytes, *, offered_direction: str = "sendrecv",
                                     codecs: tuple[str, ...] = ("PCMU", "PCMA")) -> Negotiated:
    """Read the answer to an offer we made (``make_offer``)."""
    desc = parse_sdp_untrusted(answer)
    m = desc.audio()
    if m is None:
        raise NotAcceptable("audio stream rejected in the answer")
    c = _choose(m, codecs)
    if c is None:
        raise NotAcceptable("the answer has none of the codecs we offered")
    pt, name = c
    ours = _narrow(offered_direction, _ANSWER_DIRECTION[m.direction])
    return Negotiated(name, pt, m.event_payload_type(), m.rtp_address, m.rtcp_target, ours,
                      m.ptime or 20)


def _narrow(a: str, b: str) -> str:
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly",
            (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]


# ---- moving a party from one call to another ------------------------------------------------

def g711_codecs_untrusted(body: bytes) -> list[str]:
    """The G.711 codecs of an SDP's audio stream, in its order ("PCMU", "PCMA")."""
    m = parse_sdp_untrusted(body).audio() if body else None
    out: list[str] = []
    for pt in m.payload_types() if m is not None else ():
        enc = m.encoding(pt) if m is not None else None
        if enc and enc[0] in STATIC_PT and enc[1] == 8000 and enc[0] not in out:
            out.append(enc[0])
    return out


def event_payload_type_untrusted(body: bytes) -> int | None:
    """The telephone-event payload type of an SDP's audio stream, or None."""
    m = parse_sdp_untrusted(body).audio() if body else None
    return m.event_payload_type() if m is not None else None


def session_codec_untrusted(theirs: bytes, ours: bytes) -> str | None:
    """The G.711 codec a party uses: the first of its SDP (``theirs``) that the other
    side of the exchange (``ours``) has too; either may be the answer, which narrows."""
    mine = g711_codecs_untrusted(ours)
    return next((c for c in g711_codecs_untrusted(theirs) if not mine or c in mine), None)


def with_origin(body: bytes, previous: bytes) -> bytes:
    """``body`` with the o= line continuing ``previous``'s (same user, session id and
    address, version + 1): RFC 3264 8 wants one origin per session, whoever speaks."""
    if not previous:
        return body
    try:
        prev, sd = parse_sdp_untrusted(previous), parse_sdp_untrusted(body)
    except BadMessage:
        return body
    old = (prev.origin or "").split()
    if len(old) != 6 or not is_digits(old[2]) or len(old[2]) > 20:
        return body
    old[2] = str(int(old[2]) + 1)
    for ln in sd.lines:
        if ln.type == "o":
            ln.value = " ".join(old)
    return sd.to_bytes()
