"""The media side of SDP: the relay's rewrite, hold detection, and offer/answer
for minisip's own endpoint (PCMU 0, PCMA 8, telephone-event 101). Sans-IO.

No SDP module of the SIP layer existed when this was written, so this works on
plain text lines and keeps every line it does not need to change verbatim.
Everything that reads a body from the wire may raise only ``BadMessage``
(``NotAcceptable``, status 488, when offer and answer share no codec).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..sip.errors import BadMessage

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                     "recvonly": "sendonly", "inactive": "inactive"}
#: ICE would lead the peers around the relay: these attributes are dropped on rewrite
_ICE_ATTRIBUTES = (b"a=candidate:", b"a=ice-ufrag:", b"a=ice-pwd:", b"a=ice-options:",
                   b"a=remote-candidates:", b"a=end-of-candidates", b"a=ice-lite")
MAX_SDP = 65536
#: our own codecs: name -> static payload type
STATIC_PT = {"PCMU": 0, "PCMA": 8}
TELEPHONE_EVENT = "telephone-event"


class NotAcceptable(BadMessage):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, 488)


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
        return [int(f) for f in self.formats if f.isdigit()]

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
        """Where to send RTP, or None (stream rejected, or c=0.0.0.0 hold)."""
        if self.port == 0 or self.connection is None or _is_unspecified(self.connection):
            return None
        return self.connection, self.port

    @property
    def rtcp_target(self) -> tuple[str, int] | None:
        rtp = self.rtp_address
        if rtp is None:
            return None
        if self.rtcp_mux:
            return rtp
        return (self.rtcp_address or rtp[0], self.rtcp_port or rtp[1] + 1)


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


def _lines(body: bytes) -> list[bytes]:
    if len(body) > MAX_SDP:
        raise BadMessage("SDP body too large")
    return [ln for ln in body.replace(b"\r\n", b"\n").split(b"\n") if ln.strip()]


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise BadMessage(f"bad SDP c= line {value!r}")
    return parts[2].split("/", 1)[0]


def parse_sdp_untrusted(body: bytes) -> SessionDescription:
    try:
        text_lines = [ln.decode("utf-8") for ln in _lines(bytes(body))]
    except UnicodeDecodeError:
        raise BadMessage("SDP is not UTF-8") from None
    origin = ""
    session_conn: str | None = None
    session_dir: str | None = None
    media: list[MediaDescription] = []
    media_conn: list[str | None] = []
    media_dir: list[str | None] = []
    for line in text_lines:
        if len(line) < 2 or line[1] != "=":
            raise BadMessage(f"bad SDP line {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        cur = media[-1] if media else None
        if kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise BadMessage(f"bad SDP m= line {value!r}")
            port_s = parts[1].split("/", 1)[0]
            if not port_s.isdigit() or int(port_s) > 65535:
                raise BadMessage(f"bad SDP m= port {parts[1]!r}")
            media.append(MediaDescription(parts[0], int(port_s), parts[2], parts[3:]))
            media_conn.append(None)
            media_dir.append(None)
        elif kind == "o":
            origin = value
        elif kind == "c":
            if cur is None:
                session_conn = _parse_connection(value)
            else:
                media_conn[-1] = _parse_connection(value)
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if cur is None:
                    session_dir = name
                else:
                    media_dir[-1] = name
            elif cur is None:
                continue
            elif name == "rtpmap":
                pt_s, _, enc = arg.partition(" ")
                enc_parts = enc.strip().split("/")
                if pt_s.isdigit() and len(enc_parts) >= 2 and enc_parts[1].isdigit():
                    cur.rtpmap[int(pt_s)] = (enc_parts[0], int(enc_parts[1]))
            elif name == "fmtp":
                pt_s, _, params = arg.partition(" ")
                if pt_s.isdigit():
                    cur.fmtp[int(pt_s)] = params.strip()
            elif name == "rtcp":
                parts = arg.split()
                if parts and parts[0].isdigit() and int(parts[0]) <= 65535:
                    cur.rtcp_port = int(parts[0])
                    if len(parts) >= 4 and parts[1] == "IN":
                        cur.rtcp_address = parts[3]
            elif name == "rtcp-mux":
                cur.rtcp_mux = True
            elif name == "ptime":
                if arg.strip().isdigit():
                    cur.ptime = int(arg.strip())
    for m, conn, direction in zip(media, media_conn, media_dir):
        m.connection = conn or session_conn
        m.direction = direction or session_dir or "sendrecv"
    return SessionDescription(origin, session_conn, session_dir, media)


def is_hold(body: bytes) -> bool:
    """True when the SDP puts its audio on hold (sendonly/inactive, or c=0.0.0.0)."""
    return parse_sdp_untrusted(body).on_hold


# ---- relay rewrite ------------------------------------------------------------------------

def rewrite_sdp(body: bytes, address: str, ports: list[int]) -> bytes:
    """Point an SDP at the relay: ``address`` in c= lines, ``ports[i]`` in the i-th m= line.

    Untrusted input (may raise only ``BadMessage``). What it keeps, on purpose:
    c=0.0.0.0 (old-style hold must still read as hold), m= port 0 (a rejected
    stream stays rejected), every other line byte for byte. m= lines beyond
    ``len(ports)`` get port 0: nothing would relay them. a=rtcp becomes the
    relay's RTP+1 (with the address when the original named one); ICE
    candidates are dropped, since they would lead the peers around the relay.
    The o= line is left alone: its version moves when the party's does.
    """
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"relay address must be an IP address: {address!r}") from None
    new_conn = f"c=IN {_addr_type(address)} {address}".encode()
    out: list[bytes] = []
    index = -1
    port = 0
    for raw in _lines(bytes(body)):
        line = raw.rstrip(b"\r")
        if len(line) < 2 or line[1:2] != b"=":
            raise BadMessage("bad SDP line")
        if line.startswith(_ICE_ATTRIBUTES):
            continue
        if line.startswith(b"m="):
            index += 1
            parts = line.split(b" ")
            if len(parts) < 3:
                raise BadMessage("bad SDP m= line")
            old = parts[1].split(b"/", 1)[0]
            if not old.isdigit():
                raise BadMessage("bad SDP m= port")
            if int(old) == 0 or index >= len(ports):
                port = 0
            else:
                port = ports[index]
            parts[1] = str(port).encode()
            line = b" ".join(parts)
        elif line.startswith(b"c="):
            try:
                addr = _parse_connection(line[2:].decode("ascii"))
            except UnicodeDecodeError:
                raise BadMessage("bad SDP c= line") from None
            if not _is_unspecified(addr):
                line = new_conn
        elif line.startswith(b"a=rtcp:") and index >= 0:
            parts = line[7:].split()
            if port == 0 or not parts or not parts[0].isdigit():
                continue  # rejected stream or nonsense: the default (RTP+1) is right
            rtcp = f"a=rtcp:{port + 1}"
            if len(parts) >= 4:
                rtcp += f" IN {_addr_type(address)} {address}"
            line = rtcp.encode()
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


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
         ptime: int, extra_rejected: list[str]) -> bytes:
    at = _addr_type(address)
    fmts = [str(pt) for pt, _ in media_pts] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    lines = ["v=0", f"o=minisip {session_id} {version} IN {at} {address}", "s=minisip",
             f"c=IN {at} {address}", "t=0 0", f"m=audio {port} RTP/AVP {' '.join(fmts)}"]
    for pt, name in media_pts:
        lines.append(f"a=rtpmap:{pt} {name}/8000")
    if dtmf_pt is not None:
        lines.append(f"a=rtpmap:{dtmf_pt} telephone-event/8000")
        lines.append(f"a=fmtp:{dtmf_pt} 0-16")
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
            rejected.append(f"m={other.media} 0 {other.proto} {' '.join(other.formats) or '0'}")
    body = _sdp(address, port, session_id, version, [(pt, name)], dtmf_pt, ours,
                m.ptime or 20, [])
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
