"""Every system.yaml key that is not start-only takes effect on reload, on the wire.

One running server per key group; each test edits system.yaml as an administrator
would, reloads (``minisip reload``: in force when it returns) and watches the next
requests. Calls already up keep the settings they started with.
"""
from __future__ import annotations

import json
import random
import re
import signal
import socket
import ssl
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from minisip.media import g711
from minisip.sip.digest import authorization_for
from minisip.transport import tls
from tests.helpers import ServerProcess, make_server
from tests.interop.pyphone import PyPhone
from tests.interop.test_media_services import free_port_range, relay_address, start_server

pytestmark = pytest.mark.interop


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def edit_system(server: ServerProcess, **keys: object) -> None:
    """Set top-level or ``group__key`` (nested) keys in system.yaml, then reload."""
    path = server.config_dir / "system.yaml"
    text = path.read_text()
    for name, value in keys.items():
        group, _, key = name.rpartition("__")
        pattern = rf"(?m)^  {key}:.*$" if group else rf"(?m)^{key}:.*$"
        if group:  # only inside that group's block
            head, block = text.split(f"\n{group}:\n", 1)
            body, sep, rest = block.partition("\n\n")
            body, n = re.subn(pattern, f"  {key}: {value}", body)
            text = f"{head}\n{group}:\n{body}{sep}{rest}"
        else:
            text, n = re.subn(pattern, f"{key}: {value}", text)
        assert n == 1, name
    path.write_text(text)
    out = server.cli("reload")
    assert out.returncode == 0, out.stderr + server.log()


def register_from(server: ServerProcess, host: str, user: str, password: str,
                  expires: int = 300) -> tuple[int, list[str]]:
    """REGISTER from ``host`` (any 127/8 address), answering one 401: (status, challenges)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind((host, 0))
        port = s.getsockname()[1]
        call_id, auth, challenges = f"r{random.getrandbits(48):x}", "", []
        status = 0
        for cseq in (1, 2):
            branch = f"z9hG4bK{random.getrandbits(48):x}"
            msg = (f"REGISTER sip:minisip SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};"
                   f"branch={branch};rport\r\nFrom: <sip:{user}@minisip>;tag=t{cseq}\r\n"
                   f"To: <sip:{user}@minisip>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER"
                   f"\r\nContact: <sip:{user}@{host}:{port}>\r\nExpires: {expires}\r\n{auth}"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), ("127.0.0.1", server.port))
            text = s.recv(65535).decode()
            status = int(text.split(" ", 2)[1])
            if status != 401:
                return status, challenges
            challenges = re.findall(r"(?mi)^WWW-Authenticate:\s*(.*?)\r?$", text)
            md5 = [c for c in challenges if "algorithm=MD5" in c] or challenges
            auth = "Authorization: " + authorization_for(md5[0], "REGISTER", "sip:minisip",
                                                         user, password) + "\r\n"
        return status, challenges


def test_realm_digest_algorithms_and_registration_limits_change_on_reload(
        tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        status, challenges = register_from(server, "127.0.0.1", "100", "100")
        assert status == 200 and len(challenges) == 1
        assert 'realm="minisip"' in challenges[0] and "algorithm=MD5" in challenges[0]
        edit_system(server, realm="office", digest_algorithms="[SHA-256, MD5]")
        status, challenges = register_from(server, "127.0.0.1", "100", "100")
        assert status == 200, server.log()
        assert [re.search(r"algorithm=([\w-]+)", c).group(1)  # type: ignore[union-attr]
                for c in challenges] == ["SHA-256", "MD5"]
        assert all('realm="office"' in c for c in challenges)
        with PyPhone(server.port, "101", "101") as phone:
            assert phone.register(algorithm="SHA-256").status == 200, server.log()
            edit_system(server, registration__min_expires=120)
            assert phone.register(expires=60).status == 423
            assert phone.register(expires=120).status == 200
    finally:
        server.stop()


def test_security_limits_change_on_reload(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        for _ in range(3):  # the defaults: 10 failures before a block
            assert register_from(server, "127.0.0.2", "100", "wrong")[0] == 401
        assert register_from(server, "127.0.0.2", "100", "100")[0] == 200
        edit_system(server, security__auth_failures_before_block=2,
                    security__block_seconds=2, security__max_users_per_source=3)
        for _ in range(2):
            assert register_from(server, "127.0.0.3", "100", "wrong")[0] == 401
        assert register_from(server, "127.0.0.3", "100", "100")[0] == 403  # pair blocked
        assert register_from(server, "127.0.0.3", "101", "101")[0] == 200  # other user: fine
        for user in ("200", "201", "202"):  # a scanner walking extensions
            register_from(server, "127.0.0.4", user, "guess")
        assert register_from(server, "127.0.0.4", "101", "101")[0] == 403  # address blocked
        time.sleep(2.2)  # block_seconds
        assert register_from(server, "127.0.0.3", "100", "100")[0] == 200
        assert register_from(server, "127.0.0.4", "101", "101")[0] == 200
        edit_system(server, security__failure_window=1)
        assert register_from(server, "127.0.0.5", "100", "wrong")[0] == 401
        time.sleep(1.3)  # the first failure is forgotten
        assert register_from(server, "127.0.0.5", "100", "wrong")[0] == 401
        assert register_from(server, "127.0.0.5", "100", "100")[0] == 200
        st = json.loads(server.cli("status", "--json").stdout)
        assert st["security"]["refused_while_blocked"] == 2
    finally:
        server.stop()


class RecordingPhone(PyPhone):
    """Notes when each INVITE (first or retransmitted) arrives, by Call-ID."""

    def __init__(self, *args: object, **kw: object) -> None:
        self.invites_at: dict[str, list[float]] = {}
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        m = re.search(rb"(?mi)^Call-ID:\s*(\S+)", data)
        if data.startswith(b"INVITE ") and m:
            self.invites_at.setdefault(m.group(1).decode(), []).append(time.monotonic())
        super()._on_sip(data, addr)


def test_sip_timers_and_no_answer_time_change_on_reload(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    text = (server.config_dir / "system.yaml").read_text()
    text = text.replace("  t1: 0.5", "  t1: 0.1").replace("shutdown_grace: 5",
                                                          "shutdown_grace: 0")
    (server.config_dir / "system.yaml").write_text(text.replace("no_answer_time: 30",
                                                                "no_answer_time: 2"))
    server.start()
    try:
        with RecordingPhone(server.port, "101", "101") as callee, \
                PyPhone(server.port, "100", "100") as caller:
            assert callee.register().status == 200
            gaps = []
            for t1 in (None, 1.5):
                if t1 is not None:
                    edit_system(server, timers__t1=t1, timers__t2=4.0, no_answer_time=3)
                seen = set(callee.invites_at)  # earlier calls' INVITEs may still come
                t0 = time.monotonic()
                resp = caller.call("101", timeout=15)  # the callee never answers
                assert resp.status == 480, server.log()
                (new,) = [cid for cid in callee.invites_at if cid not in seen]
                at = callee.invites_at[new]
                gaps.append(at[1] - at[0])
                rang = time.monotonic() - t0
                assert (1.8 if t1 is None else 2.8) < rang < 10
            assert gaps[0] < 1.0 and gaps[1] >= 1.45, gaps
    finally:
        server.stop()


def tone_wav(path: Path, freq: float = 1000.0, seconds: float = 1.0) -> Path:
    import math
    samples = [int(8000 * math.sin(2 * math.pi * freq * i / 8000))
               for i in range(int(8000 * seconds))]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
    return path


def call(stack: ExitStack, server: ServerProcess, caller: str, callee: str) -> tuple[
        PyPhone, PyPhone]:
    a = stack.enter_context(PyPhone(server.port, caller, caller))
    b = stack.enter_context(PyPhone(server.port, callee, callee))
    assert a.register().status == 200 and b.register().status == 200, server.log()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(a.call(callee)))
    t.start()
    b.answer_incoming()
    t.join(10)
    assert result and result[0].status == 200, server.log()  # type: ignore[attr-defined]
    return a, b


def wait_bye(phone: PyPhone, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if phone.dialog is None:
            return True
        time.sleep(0.05)
    return False


def test_media_keys_change_on_reload_and_calls_keep_their_snapshot(
        tmp_path: Path, stack: ExitStack) -> None:
    server = start_server(tmp_path, stack)
    assert server.cli("user", "add", "103", "--password", "103").returncode == 0
    lo, hi = map(int, re.findall(r"(?m)^rtp_port_(?:min|max): (\d+)",
                                 (server.config_dir / "system.yaml").read_text()))
    a, b = call(stack, server, "100", "101")  # media_timeout 0: this call is never timed out
    assert lo <= relay_address(b)[1] <= hi
    lo2, hi2 = free_port_range()
    edit_system(server, rtp_port_min=lo2, rtp_port_max=hi2, media_timeout=1)
    c, d = call(stack, server, "102", "103")
    assert lo2 <= relay_address(d)[1] <= hi2  # the new range
    assert wait_bye(c, 6) and wait_bye(d, 1), server.log()  # no media for 1 s: released
    assert a.dialog is not None and b.dialog is not None  # still up: its snapshot said 0
    assert a.bye().status == 200

    tone = tone_wav(server.config_dir / "tone.wav")
    (server.config_dir / "services.yaml").write_text(
        (server.config_dir / "services.yaml").read_text().replace(
            'music_on_hold_file: ""', "music_on_hold_file: tone.wav"))
    edit_system(server, media_timeout=0)
    for phone in (a, b):
        assert phone.register().status == 200
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(a.call("101")))
    t.start()
    b.answer_incoming()
    t.join(10)
    assert a.reinvite("sendonly").status == 200, server.log()
    held = b.received_rtp(1.0)
    assert held, server.log()
    (pt,) = {r.packet.payload_type for r in held}
    with wave.open(str(tone)) as w:
        pcm = w.readframes(w.getnframes())
    music = (g711.ulaw_encode if pt == 0 else g711.alaw_encode)(pcm)
    assert all(r.packet.payload in music for r in held[1:]), "not the configured file"
    assert a.bye().status == 200

    edit_system(server, relay_media="never")
    result.clear()
    t = threading.Thread(target=lambda: result.append(a.call("101")))
    t.start()
    b.answer_incoming()
    t.join(10)
    assert result and result[0].status == 200, server.log()  # type: ignore[attr-defined]
    assert relay_address(b) == ("127.0.0.1", a.rtp_port)  # direct: the caller's own port
    assert a.bye().status == 200


def test_a_changed_start_only_key_shows_in_status_and_is_logged_once(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        edit_system(server, udp_port=5999)
        edit_system(server, nonce_ttl=600)  # another reload: no second warning
        st = json.loads(server.cli("status", "--json").stdout)
        assert st["config"]["restart_pending"] == {
            "udp_port": {"running": 5060, "configured": 5999}}
        assert "udp_port: 5060 -> 5999 takes effect after restart" in server.cli(
            "status").stdout
        assert server.log().count("udp_port changed to 5999") == 1
        edit_system(server, udp_port=5060)
        st = json.loads(server.cli("status", "--json").stdout)
        assert st["config"]["restart_pending"] == {}
    finally:
        server.stop()


def served_fingerprint(server: ServerProcess) -> str:
    """The SHA-256 fingerprint of the certificate a new TLS connection is served."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return tls.fingerprint_der(der)


def test_a_renewed_tls_certificate_serves_new_connections_after_a_reload(
        tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        cert = Path(server.data_dir) / "tls" / "cert.pem"
        key = cert.with_name("key.pem")
        before = served_fingerprint(server)
        assert before == tls.fingerprint(cert)
        up = ssl.create_default_context()
        up.check_hostname, up.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as raw, \
                up.wrap_socket(raw) as kept:
            # certbot renews: new files in place, then the reload hook (SIGHUP)
            renewed = tmp_path / "renewed"
            tls._generate_self_signed(renewed / "cert.pem", renewed / "key.pem", ["renewed"])
            (renewed / "cert.pem").replace(cert)
            (renewed / "key.pem").replace(key)
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: served_fingerprint(server) != before, server)
            assert served_fingerprint(server) == tls.fingerprint(cert)
            assert "TLS certificate" in server.log() and "loaded for new connections" \
                in server.log()
            kept.sendall(b"\r\n\r\n")  # the connection up before keeps its certificate
            assert kept.recv(16) == b"\r\n"
        # a broken pair named in system.yaml: reported, the renewed one stays
        (tmp_path / "bad.pem").write_text("not a certificate")
        edit_system(server, tls_certificate=f'"{tmp_path / "bad.pem"}"')
        wait_until(lambda: "bad.pem not loaded" in server.log(), server)
        assert served_fingerprint(server) == tls.fingerprint(cert)
        st = json.loads(server.cli("status", "--json").stdout)
        assert st["tls_fingerprint"] == tls.fingerprint(cert)
        assert st["config"]["restart_pending"] == {}  # TLS files are live now
    finally:
        server.stop()


def wait_until(ok: Callable[[], bool], server: ServerProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
