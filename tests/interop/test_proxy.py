"""minisip behind a record-routing edge proxy: a real Kamailio (tests/interop/kamailio.cfg).

The caller (sipp) sends to the proxy's port K1; the proxy record-routes with its
other port K2 and relays to minisip, always from K1. So minisip hears the caller's
side from K1 while the route set says K2, and the proxy's log says which port each
request arrived on: an in-dialog request minisip sends to the peer it last heard
from reaches K1, one sent by the route set (RFC 3261 12.2.1.1) reaches K2. The
proxy refuses in-dialog requests without its Route, so a caller whose route set is
empty (no Record-Route copied into minisip's 200, RFC 3261 12.1.1) cannot even ACK.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, ServerProcess, free_port, run_sipp, start_sipp
from tests.interop.test_calls_midcall import TRACE, both_ok, cdrs, device, make  # noqa: F401

pytestmark = pytest.mark.interop

MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")


def _kamailio() -> str:
    path = shutil.which("kamailio") or ("/usr/sbin/kamailio"
                                        if Path("/usr/sbin/kamailio").exists() else None)
    if path is None:
        pytest.skip("kamailio is not installed (make test installs it)")
    return path


class Kamailio:
    def __init__(self, tmp_path: Path, minisip_port: int) -> None:
        self.k1 = free_port((socket.SOCK_DGRAM,))
        self.k2 = free_port((socket.SOCK_DGRAM,))
        modules = MODULES if MODULES.exists() else next(Path("/usr/lib").glob("*/kamailio/modules"))
        cfg = (REPO / "tests" / "interop" / "kamailio.cfg").read_text()
        for key, value in (("K1", self.k1), ("K2", self.k2), ("MINISIP", minisip_port),
                           ("MPATH", f"{modules}/")):
            cfg = cfg.replace(f"@{key}@", str(value))
        self.dir = tmp_path / "kamailio"
        self.dir.mkdir()
        (self.dir / "kamailio.cfg").write_text(cfg)
        self.log_path = self.dir / "kamailio.log"
        self.proc = subprocess.Popen(
            [_kamailio(), "-f", "kamailio.cfg", "-DD", "-E", "-m", "32", "-M", "8",
             "-Y", str(self.dir), "-w", str(self.dir)],
            cwd=self.dir, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "ready" not in self._listening() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited:\n{self.log()}")
            time.sleep(0.05)

    def _listening(self) -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", self.k2))
            except OSError:
                return "ready"
        return ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def proxied(self) -> list[tuple[str, int, int]]:
        """(method, source port, port it arrived on) of every request the proxy saw."""
        return [(m, int(src), int(on)) for m, src, on in
                re.findall(r"proxied (\w+) from 127\.0\.0\.1:(\d+) on (\d+)", self.log())]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def proxied(make: Callable[..., ServerProcess],  # noqa: F811
            tmp_path: Path) -> Iterator[tuple[ServerProcess, Kamailio]]:
    server = make()
    kam = Kamailio(tmp_path, server.port)
    yield server, kam
    server.stop()  # first: its shutdown's BYE goes through the proxy
    kam.stop()


def test_call_through_a_record_routing_proxy_keeps_it_in_the_dialog(
        proxied: tuple[ServerProcess, Kamailio], tmp_path: Path) -> None:
    """The caller's ACK and BYE pass the proxy along its Route (minisip's 200 copied the
    Record-Route); when the callee hangs up, minisip's BYE to the caller follows the
    route set to the record-routed port K2, not the port K1 it heard the caller from."""
    server, kam = proxied
    # 1. the callee hangs up: minisip sends the BYE towards the caller
    uas = device(server, "101", "mid_uas_hangs_up.xml", tmp_path)
    caller = run_sipp("mid_uac_callee_hangs_up.xml", kam.k1, users=[("100", "100", "101")],
                      extra=TRACE, timeout=15, workdir=tmp_path)
    both_ok(server, tmp_path, caller, "mid_uac_callee_hangs_up.xml", uas, "mid_uas_hangs_up.xml")
    seen = kam.proxied()
    assert any(m == "ACK" and on == kam.k1 for m, _, on in seen), kam.log()
    assert ("BYE", server.port, kam.k2) in seen, (seen, kam.log(), server.log())
    assert ("BYE", server.port, kam.k1) not in seen, seen
    # 2. the caller hangs up: its BYE passes the proxy and reaches the callee
    uas = device(server, "101", "uas_answer.xml", tmp_path)
    caller = run_sipp("uac_call.xml", kam.k1, users=[("100", "100", "101")], extra=TRACE,
                      timeout=15, workdir=tmp_path)
    both_ok(server, tmp_path, caller, "uac_call.xml", uas, "uas_answer.xml")
    assert "refused" not in kam.log(), kam.log()
    assert [r["cause"] for r in cdrs(server, 4) if r["kind"] == "O"] == ["normal", "normal"]


def test_a_phone_registered_through_the_proxy_is_called_through_it(
        proxied: tuple[ServerProcess, Kamailio], tmp_path: Path) -> None:
    """RFC 3327: the proxy adds a Path to the phone's REGISTER; minisip's INVITE to that
    phone carries it as a Route and goes to the proxy, which passes it on (without Path
    support it went to the proxy as a new request, which the proxy relayed back)."""
    server, kam = proxied
    port = free_port((socket.SOCK_DGRAM,))
    uas = start_sipp("uas_answer.xml", port=port, timeout=15, workdir=tmp_path, extra=TRACE)
    reg = run_sipp("register_contact.xml", kam.k1, users=[("101", "101")],
                   extra=("-key", "contact_port", str(port)), workdir=tmp_path)
    assert reg.ok, reg.output + kam.log() + server.log()
    caller = run_sipp("uac_call.xml", server.port, users=[("100", "100", "101")], extra=TRACE,
                      timeout=15, workdir=tmp_path)
    both_ok(server, tmp_path, caller, "uac_call.xml", uas, "uas_answer.xml")
    assert ("INVITE", server.port, kam.k1) in kam.proxied(), kam.log()
    assert "pathed INVITE to sip:101@127.0.0.1:" in kam.log(), kam.log()
