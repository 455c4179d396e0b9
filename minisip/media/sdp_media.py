"""The media side of SDP: the relay's rewrite, hold detection, and offer/answer
for minisip's own endpoint (PCMU 0, PCMA 8, telephone-event 101). Sans-IO.

Parsing and line-preserving edits are ``minisip.sip.sdp``'s; this module adds
the media decisions on top and keeps every line it does not change verbatim.
Everything that reads a body from the wire may raise only ``BadMessage``
(``NotAcceptable``, status 488, when offer and answer share no codec).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..sip import sdp as sip_sdp
from ..sip.digits import is_digits
from ..sip.errors import BadMessage

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                     "recvonly": "sendonly", "inactive": "inactive"}
#: ICE would lead the peers around the relay: these attributes are dropped on rewrite
_ICE_ATTRIBUTES = frozenset(("candidate", "ice-ufrag", "ice-pwd", "ice-options",
                             "remote-candidates", "end-of-candidates", "ice-lite", "ice-mismatch"))
MAX_SDP = 65536
_EVENT_LIST = re.compile(r"[0-9]{1,3}(-[0-9]{1,3})?(,[0-9]{1,3}(-[0-9]{1,3})?)*")
#: our own codecs: name -> static payload type
STATIC_PT = {"PCMU": 0, "PCMA": 8}
TELEPHONE_EVENT = "telephone-event"


class NotAcceptable(BadMessage):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, 488)


def _is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def _is_unspecified(addr: str) -> bool:
    return addr in ("0.0.0.0", "::", "0:0:0:0:0:0:0:0")


def _addr_type(addr: str) -> str:
    return "IP6" if ":" in addr else "IP4"


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None   #: effective address (media c= or session c=)
    direction: str = "sendrecv"     #: effective (media attribute, else session, else sendrecv)
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  #: pt -> (name, rate)
    fmtp: dict[int, str] = field(default_factory=dict)
    rtcp_port: int | None = None
    rtcp_address: str | None = None
    rtcp_mux: bool = False
    ptime: int | None = None

    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if is_digits(f) and len(f) <= 3]

    def encoding(self, pt: int) -> tuple[str, int] | None:
        """(NAME, clock rate) from rtpmap, or the static table for 0 and 8."""
        if pt in self.rtpmap:
            name, rate = self.rtpmap[pt]
            return name.upper() if name.lower() != TELEPHONE_EVENT else TELEPHONE_EVENT, rate
        for name, spt in STATIC_PT.items():
            if pt == spt:
                return name, 8000
        return None

    @property
    def on_hold(self) -> bool:
        return (self.direction in ("sendonly", "inactive")
                or (self.connection is not None and _is_unspecified(self.connection)))

    @property
    def rtp_address(self) -> tuple[str, int] | None:
        """Where to send RTP, or None (stream rejected, c=0.0.0.0 hold, or not an IP literal:
        a host name here would cost a blocking DNS look-up per packet)."""
        if (self.port == 0 or self.connection is None or _is_unspecified(self.connection)
                or not _is_ip(self.connection)):
            return None
        return self.connection, self.port

    @property
    def rtcp_target(self) -> tuple[str, int] | None:
        rtp = self.rtp_address
        if rtp is None:
            return None
        if self.rtcp_mux:
            return rtp
        addr = self.rtcp_address if self.rtcp_address and _is_ip(self.rtcp_address) else rtp[0]
        return (addr, self.rtcp_port or rtp[1] + 1)


@dataclass
class SessionDescription:
    origin: str
    connection: str | None
    direction: str | None
    media: list[MediaDescription]

    def audio(self) -> MediaDescription | None:
        for m in self.media:
            if m.media == "audio" and m.port != 0:
                return m
        return None

    @property
    def on_hold(self) -> bool:
        a = self.audio()
        return a is not None and a.on_hold


def parse_sdp_untrusted(body: bytes) -> SessionDescription:
    """The media view of an SDP body (built on ``minisip.sip.sdp``)."""
    if len(body) > MAX_SDP:
        raise BadMessage("SDP body too large")
    sd = sip_sdp.parse_sdp_untrusted(bytes(body))
    sc = sd.connection
    media: list[MediaDescription] = []
    for m in sd.media:
        conn = m.effective_connection
        md = MediaDescription(m.kind, m.port, m.proto, m.formats,
                              connection=conn.address if conn else None,
                              direction=m.direction)
        for pt, enc in m.rtpmap.items():
            parts = enc.split("/")
            if is_digits(pt) and len(pt) <= 3 and len(parts) >= 2 and is_digits(parts[1]) \
                    and len(parts[1]) <= 9:
                md.rtpmap[int(pt)] = (parts[0], int(parts[1]))
        for pt, params in m.fmtp.items():
            if is_digits(pt) and len(pt) <= 3:
                md.fmtp[int(pt)] = params
        rtcp = m.rtcp
        if rtcp is not None and rtcp[0] <= 65535:
            md.rtcp_port = rtcp[0]
            md.rtcp_address = rtcp[1].address if rtcp[1] else None
        md.rtcp_mux = m.attribute("rtcp-mux") is not None
        ptime = m.attribute("ptime")
        if ptime and is_digits(ptime.strip()) and len(ptime.strip()) <= 4:
            md.ptime = int(ptime.strip())
        media.append(md)
    return SessionDescription(sd.origin or "", sc.address if sc else None, sd.direction, media)


def is_hold(body: bytes) -> bool:
    """True when the SDP puts its audio on hold (sendonly/inactive, or c=0.0.0.0)."""
    return parse_sdp_untrusted(body).on_hold


# ---- relay rewrite ------------------------------------------------------------------------

def rewrite_sdp(body: bytes, address: str, ports: list[int]) -> bytes:
    """Point an SDP at the relay: ``address`` in c= lines, ``ports[i]`` in the i-th m= line.

    Untrusted input (may raise only ``BadMessage``). What it keeps, on purpose:
    c=0.0.0.0 (old-style hold must still read as hold), m= port 0 (a rejected
    stream stays rejected), every other line byte for byte. m= lines beyond
    ``len(ports)`` get port 0: nothing would relay them. An existing a=rtcp
    becomes the relay's RTP+1 (with the address when the original named one);
    ICE attributes are dropped, since they would lead the peers around the
    relay. The o= line is left alone: its version moves when the party's does.
    """
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"relay address must be an IP address: {address!r}") from None
    if len(body) > MAX_SDP:
        raise BadMessage("SDP body too large")
    sd = sip_sdp.parse_sdp_untrusted(bytes(body))
    sc = sd.connection
    if sc is not None and not _is_unspecified(sc.address):
        sd.set_connection_address(address, media=False)
    sd.lines = [ln for ln in sd.lines if not _is_ice(ln)]
    for i, m in enumerate(sd.media):
        port = ports[i] if i < len(ports) and m.port != 0 else 0
        m.port = port
        mc = m.connection
        if mc is not None and not _is_unspecified(mc.address):
            m.set_connection_address(address)
        rtcp = m.rtcp
        if rtcp is not None:
            if port == 0:
                m.remove_attribute("rtcp")
            else:
                m.set_rtcp(port + 1, address if rtcp[1] is not None else None)
        m.lines = [ln for ln in m.lines if not _is_ice(ln)]
    return sd.to_bytes()


def _is_ice(line: sip_sdp.Line) -> bool:
    return line.type == "a" and line.value.partition(":")[0] in _ICE_ATTRIBUTES


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


def _choose(m: MediaDescription, codecs: tuple[str, ...]) -> tuple[int, str] | None:
    wanted = {c.upper() for c in codecs}
    for pt in m.payload_types():  # the offerer's order of preference
        enc = m.encoding(pt)
        if enc and enc[0] in wanted and enc[1] == 8000:
            return pt, enc[0]
    return None


def _telephone_event(m: MediaDescription) -> int | None:
    for pt in m.payload_types():
        enc = m.encoding(pt)
        if enc and enc[0] == TELEPHONE_EVENT and enc[1] == 8000:
            return pt
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
    chosen: tuple[int, MediaDescription, tuple[int, str]] | None = None
    for i, m in enumerate(desc.media):
        if m.media == "audio" and m.port != 0 and m.proto.upper().startswith("RTP/AVP"):
            c = _choose(m, codecs)
            if c is not None:
                chosen = (i, m, c)
                break
    if chosen is None:
        raise NotAcceptable("no common audio codec (we have PCMU, PCMA)")
    index, m, (pt, name) = chosen
    dtmf_pt = _telephone_event(m) if dtmf else None
    ours = _narrow(direction, _ANSWER_DIRECTION[m.direction])
    rejected = []
    for i, other in enumerate(desc.media):
        if i != index:
            line = f"m={other.media} 0 {other.proto} {' '.join(other.formats) or '0'}"
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
    return Negotiated(name, pt, _telephone_event(m), m.rtp_address, m.rtcp_target, ours,
                      m.ptime or 20)


def _narrow(a: str, b: str) -> str:
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly",
            (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]
