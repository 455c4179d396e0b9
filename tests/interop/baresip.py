"""A headless baresip softphone for media tests, and the audio helpers around it.

``Baresip`` runs one ``baresip -4 -f <dir>`` (baresip 1.0.0, Debian baresip-core)
with a generated config directory:

* SIP on 127.0.0.1 and a free port (``sip_listen``), IPv4 only (``-4``),
  ``net_interface 127.0.0.1`` (an interface *name* such as ``lo`` fails: libre
  skips loopback interfaces), ``dns_server 127.0.0.1:53``, no STUN/TURN/ICE
  modules: nothing leaves the loopback;
* one account ``<sip:USER@127.0.0.1:PORT;transport=udp>;auth_pass=PW;regint=600;
  answermode=auto;audio_codecs=PCMU,PCMA;ptime=20;outbound="sip:127.0.0.1:PROXY"``
  where PORT is minisip's and PROXY a ``SipProxy`` (see below);
* the microphone is ``aufile`` playing a WAV (``audio_source aufile,<wav>``); the
  loudspeaker is ``aubridge`` (no sound card needed: a bridge nobody reads; 1.0.0's
  aufile has no player), and the ``sndfile`` filter records what the phone hears
  (``dump-<time>-dec.wav``) and what it sends (``-enc.wav``) into ``snd_path``:
  these recordings are what the tests listen to;
* codecs: ``g711`` only (PCMU, PCMA);
* commands and events: ``ctrl_tcp`` (netstring-framed JSON ``{"command": "dial",
  "params": "101", "token": ...}``; events such as CALL_ESTABLISHED) on a free
  TCP port; ``menu`` provides the dial/hangup/accept/quit commands.

Every wait here is bounded; ``close()`` quits the phone and kills it if it lingers.

``SipProxy`` sits between one phone and minisip as its outbound proxy: it drops
the non-MD5 digest challenges that baresip 1.0.0 cannot take, and can play a
NAT without ALG (private address in Contact and SDP, public source address).
"""
from __future__ import annotations

import json
import math
import re
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from tests.helpers import free_port

MODULES = Path("/usr/lib/baresip/modules")
RATE = 8000


# -- audio ---------------------------------------------------------------------------------
def write_tone(path: Path, freq: float, seconds: float, *, rate: int = RATE,
               amplitude: float = 0.5) -> Path:
    """An 8 kHz mono 16-bit WAV of one sine tone."""
    n = int(seconds * rate)
    step = 2 * math.pi * freq / rate
    frames = struct.pack(f"<{n}h", *(int(amplitude * 32767 * math.sin(step * i))
                                     for i in range(n)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


def read_wav(path: Path) -> tuple[list[int], int]:
    """Samples (first channel) and rate of a 16-bit WAV."""
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    assert width == 2, f"{path}: {8 * width}-bit samples"
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)[::ch]
    return list(samples), rate


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def tone_power(samples: list[int], rate: int, freq: float) -> float:
    """Goertzel: the power of ``freq`` in ``samples``, normalised by their length."""
    if not samples:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / len(samples)


def dominant_frequency(samples: list[int], rate: int, lo: int = 100, hi: int = 2000,
                       step: int = 10) -> float:
    """The strongest frequency between ``lo`` and ``hi`` Hz (a coarse DFT scan)."""
    return max(range(lo, hi + 1, step), key=lambda f: tone_power(samples, rate, f))


def loud_part(samples: list[int], rate: int, *, frame_ms: int = 20,
              threshold: float = 1000.0) -> list[int]:
    """The samples of the frames whose RMS is over ``threshold`` (silence dropped)."""
    n = rate * frame_ms // 1000
    out: list[int] = []
    for i in range(0, len(samples) - n + 1, n):
        frame = samples[i:i + n]
        if rms(frame) > threshold:
            out += frame
    return out


def heard(path: Path) -> tuple[float, float]:
    """(seconds of sound, dominant frequency of that sound) in a recording."""
    samples, rate = read_wav(path)
    loud = loud_part(samples, rate)
    if len(loud) < rate // 10:
        return len(loud) / rate, 0.0
    middle = loud[len(loud) // 4: len(loud) // 4 + rate // 2]  # half a second, past the start
    return len(loud) / rate, dominant_frequency(middle, rate)


# -- baresip -------------------------------------------------------------------------------
class BaresipError(AssertionError):
    pass


def _netstrings(buf: bytearray) -> list[bytes]:
    out: list[bytes] = []
    while True:
        colon = buf.find(b":")
        if colon < 0:
            return out
        length = int(buf[:colon])
        end = colon + 1 + length
        if len(buf) < end + 1:
            return out
        out.append(bytes(buf[colon + 1:end]))
        del buf[:end + 1]  # the trailing comma


class Baresip:
    """One baresip process registered (or registering) as ``user``."""

    def __init__(self, workdir: Path, user: str, password: str, registrar: tuple[str, int], *,
                 source_wav: Path, rtp_ports: tuple[int, int] = (46000, 46999),
                 proxy_port: int = 0, modules: tuple[str, ...] = (),
                 contacts: tuple[str, ...] = (), text_ui: bool = False,
                 account_params: str = "") -> None:
        self.user = user
        self.dir = workdir / f"baresip-{user}"
        self.rec_dir = self.dir / "rec"
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port((socket.SOCK_DGRAM, socket.SOCK_STREAM))
        self.ctrl_port = free_port((socket.SOCK_STREAM,))
        host, port = registrar
        self.aor = f"sip:{user}@{host}:{port}"
        outbound = f';outbound="sip:127.0.0.1:{proxy_port}"' if proxy_port else ""
        (self.dir / "accounts").write_text(
            f"<{self.aor};transport=udp>;auth_pass={password};regint=600;answermode=auto"
            f";audio_codecs=PCMU,PCMA;ptime=20{outbound}{account_params}\n")
        (self.dir / "contacts").write_text("".join(c + "\n" for c in contacts))
        # text_ui: the stdio UI prints what reaches the user (messages) to the log; it
        # needs a stdin it can poll, so the phone then gets a pipe that stays open.
        self.text_ui = text_ui
        apps = "".join(f"module_app\t\t{m}\n" for m in
                       (("stdio.so",) if text_ui else ()) + modules)
        (self.dir / "config").write_text(f"""\
poll_method		epoll
sip_listen		127.0.0.1:{self.sip_port}
call_local_timeout	120
call_max_calls		4
audio_path		/usr/share/baresip
audio_source		aufile,{source_wav}
audio_player		aubridge,speaker-{user}
audio_alert		aubridge,alert-{user}
audio_level		no
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
audio_buffer		20-160
rtp_tos			0
rtp_ports		{rtp_ports[0]}-{rtp_ports[1]}
rtcp_mux		no
jitter_buffer_delay	2-10
rtp_stats		no
net_interface		127.0.0.1
dns_server		127.0.0.1:53
module_path		{MODULES}
module			g711.so
module			aufile.so
module			aubridge.so
module			sndfile.so
{apps}module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{self.ctrl_port}
snd_path		{self.rec_dir}
ringback_disabled	yes
statmode_default	off
""")
        self.log_path = self.dir / "baresip.log"
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._token = 0
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process ------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Self:
        exe = shutil.which("baresip")
        assert exe, "baresip is not installed"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([exe, "-4", "-f", str(self.dir)], cwd=self.dir,
                                         stdin=subprocess.PIPE if self.text_ui
                                         else subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BaresipError(f"baresip {self.user} exited: {self.log()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), 0.2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(f"baresip {self.user}: no ctrl_tcp: {self.log()}")
                time.sleep(0.05)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        buf = bytearray()
        self._sock.settimeout(None)
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += data
            for raw in _netstrings(buf):
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.command("quit", timeout=2)
            except (BaresipError, OSError):
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._reader is not None:
            self._reader.join(2)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands and events --------------------------------------------------------
    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a baresip command (``dial``, ``accept``, ``hangup``, ``quit``...)."""
        assert self._sock is not None
        with self._cond:
            self._token += 1
            token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))
        if command == "quit":
            return {}
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout):
                raise BaresipError(f"baresip {self.user}: no response to {command}: {self.log()}")
            return self._responses.pop(token)

    def wait_event(self, kind: str, timeout: float = 10.0, since: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` (e.g. CALL_ESTABLISHED) from ``events[since:]``."""
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events[since:] if e.get("type") == kind), None)
        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                raise BaresipError(f"baresip {self.user}: no {kind} in {timeout}s; events "
                                   f"{[e.get('type') for e in self.events]}: {self.log()}")
            found = find()
            assert found is not None
            return found

    def _must(self, command: str, params: str = "") -> None:
        r = self.command(command, params)
        if not r.get("ok"):
            raise BaresipError(f"baresip {self.user}: {command} {params}: {r}: {self.log()}")

    def dial(self, number: str) -> None:
        self._must("dial", number)

    def hangup(self) -> None:
        self._must("hangup")

    def recordings(self) -> tuple[Path, Path]:
        """(what the phone heard, what it sent) in its latest call."""
        dec = sorted(self.rec_dir.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
        enc = sorted(self.rec_dir.glob("dump-*-enc.wav"), key=lambda p: p.stat().st_mtime)
        if not dec or not enc:
            raise BaresipError(f"baresip {self.user}: no recordings in {self.rec_dir}: "
                               f"{sorted(p.name for p in self.rec_dir.iterdir())}")
        return dec[-1], enc[-1]


def wait_online(cli: Callable[..., subprocess.CompletedProcess[str]], users: list[str],
                timeout: float = 10.0) -> None:
    """Poll ``minisip user list --json`` until every one of ``users`` is online."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = cli("user", "list", "--json")
        if out.returncode == 0:
            states = {u["name"]: u.get("state", "") for u in json.loads(out.stdout)}
            if all(states.get(u) == "online" for u in users):
                return
        time.sleep(0.2)
    raise BaresipError(f"not online in {timeout}s: {states}")


# -- the phone's access network -------------------------------------------------------------
_LINES = re.MULTILINE
_HEADERS = re.MULTILINE | re.IGNORECASE
_SDP_C = re.compile(rb"^c=IN IP4 [0-9.]+", _LINES)
_SDP_O = re.compile(rb"^(o=\S+ \S+ \S+ IN IP4 )[0-9.]+", _LINES)
_SDP_M = re.compile(rb"^m=audio \d+", _LINES)
_CONTACT = re.compile(rb"^((?:Contact|m)[ \t]*:[^\r\n]*?@)127\.0\.0\.1(:\d+)", _HEADERS)
_CLEN = re.compile(rb"^(Content-Length|l)[ \t]*:[ \t]*\d+", _HEADERS)
_NOT_MD5_CHALLENGE = re.compile(
    rb"^(?:WWW|Proxy)-Authenticate[ \t]*:[^\r\n]*algorithm=(?!MD5\b)[^\r\n]*\r\n", _HEADERS)


def _first_line(msg: bytes) -> str:
    return msg.split(b"\r\n", 1)[0].decode(errors="replace")


class SipProxy:
    """A UDP relay for one phone's SIP to minisip, the phone's outbound proxy.

    The phone sends to ``port`` (127.0.0.1); its messages leave from another
    socket to minisip, and what minisip sends to that socket goes back to the
    phone. On the way:

    * to the phone: digest challenges other than MD5 are removed. baresip 1.0.0's
      libre aborts authentication with ENOSYS ("Register: Function not
      implemented") on *any* challenge it cannot compute, even when an MD5 one
      is offered too, and minisip offers MD5 and SHA-256 (RFC 8760);
    * to minisip, with ``nat`` set (e.g. "127.0.0.9"): a NAT without ALG. The
      Contact and the SDP (``c=``, ``o=``) name the private address ``nat``, and
      the SDP's audio port is a socket this proxy holds on it (``blackhole``),
      which drains and counts what lands there. The phone's media really comes
      from 127.0.0.1 and its own port: only latching can find it.
    """

    def __init__(self, server: tuple[str, int], nat: str | None = None) -> None:
        self.server = server
        self.nat = nat
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind(("127.0.0.1", 0))
        self.outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.outside.bind(("127.0.0.1", 0))
        self.blackhole: socket.socket | None = None
        self.blackhole_port = 0
        if nat is not None:
            self.blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.blackhole.bind((nat, 0))
            self.blackhole_port = self.blackhole.getsockname()[1]
        self.blackholed = 0  #: datagrams sent to the private SDP address
        self.rewritten = 0  #: SDP bodies rewritten
        self.sdp_seen: list[tuple[str, int]] = []  #: (c= address, audio port) the phone sent
        self.challenges_removed = 0
        self.phone: tuple[str, int] | None = None
        self.trace: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def port(self) -> int:
        return int(self.inside.getsockname()[1])

    @property
    def public(self) -> tuple[str, int]:
        """The phone's address as minisip sees it."""
        host, port = self.outside.getsockname()
        return str(host), int(port)

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s in (self.inside, self.outside, self.blackhole):
            if s is not None:
                s.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_server(self, msg: bytes) -> bytes:
        head, sep, body = msg.partition(b"\r\n\r\n")
        if sep and body.startswith(b"v=0"):
            c, m = _SDP_C.search(body), _SDP_M.search(body)
            if c and m:
                self.sdp_seen.append((c.group(0).split()[-1].decode(),
                                      int(m.group(0).split()[-1])))
        if self.nat is None:
            return msg
        priv = self.nat.encode()
        head = _CONTACT.sub(lambda m: m.group(1) + priv + m.group(2), head)
        if sep and body.startswith(b"v=0"):
            body = _SDP_C.sub(b"c=IN IP4 " + priv, body)
            body = _SDP_O.sub(lambda m: m.group(1) + priv, body)
            body = _SDP_M.sub(b"m=audio %d" % self.blackhole_port, body)
            head = _CLEN.sub(lambda m: m.group(1) + b": %d" % len(body), head)
            self.rewritten += 1
        return head + sep + body

    def to_phone(self, msg: bytes) -> bytes:
        out, n = _NOT_MD5_CHALLENGE.subn(b"", msg)
        self.challenges_removed += n
        return out

    def _run(self) -> None:
        socks = [s for s in (self.inside, self.outside, self.blackhole) if s is not None]
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(socks, [], [], 0.1)
            except (OSError, ValueError):
                return
            for s in ready:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.blackhole:
                    self.blackholed += 1
                elif s is self.inside:
                    self.phone = addr
                    self.trace.append(">> " + _first_line(data))
                    self.outside.sendto(self.to_server(data), self.server)
                elif self.phone is not None and addr == self.server:
                    self.trace.append("<< " + _first_line(data))
                    self.inside.sendto(self.to_phone(data), self.phone)
