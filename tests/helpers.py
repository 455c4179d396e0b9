"""Shared test helpers: a real minisip server process, free ports, sipp runs."""
from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SCENARIOS = REPO / "tests" / "interop" / "scenarios"
SHARED = REPO.parent / "shared"
T = TypeVar("T")


def _port_span() -> range:
    """Where free_port picks: outside the kernel's ephemeral range (every client socket
    takes its port from there, so a port picked there could be gone before the server
    binds it) and the RTP ranges (10000-50000), in a slice of its own per xdist worker
    (workers start servers at the same time; a worker runs one test at a time)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    span = range(high + 1, 65536) if high <= 63000 else range(20000, min(low, 32768))
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT", "1")
    if worker.startswith("gw") and int(count) > 1:
        size = len(span) // int(count)
        first = span.start + int(worker[2:]) * size
        span = range(first, first + size)
    return span


PORTS = _port_span()
_EVEN = range(PORTS.start + (PORTS.start & 1), PORTS.stop - 1, 2)
_FIRST = random.randrange(len(_EVEN))
#: The span's even ports in turn, from a random one: a port handed out is not handed out
#: again for hundreds of picks, and the odd one after it stays free (baresip's TLS port).
_next_ports = itertools.cycle([*_EVEN[_FIRST:], *_EVEN[:_FIRST]])


def free_port(kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """A port number free for UDP and TCP on 127.0.0.1 (SIP uses the same number)."""
    for _ in range(200):
        port = next(_next_ports)
        socks = []
        try:
            for kind in kinds:
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")


def poll(get: Callable[[], T], timeout: float = 5.0, every: float = 0.05) -> T:
    """``get()`` as soon as it is truthy, else its value at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def eventually(check: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether ``check()`` came true within ``timeout``."""
    return bool(poll(check, timeout))


def free_port_range(pairs: int, start: int = 20000) -> tuple[int, int]:
    """An even first port and the last of ``2 * pairs`` UDP ports all free on 0.0.0.0
    (an RTP range for a test server's relay)."""
    for base in range(start + 2 * (time.time_ns() // 1000 % 5000), 50000, 2 * pairs):
        socks = []
        try:
            for port in range(base, base + 2 * pairs):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("0.0.0.0", port))
            return base, base + 2 * pairs - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free RTP port range")


def options_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bytes | None:
    """Send one OPTIONS over UDP; the reply's bytes or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((host, 0))
        lport = s.getsockname()[1]
        hb = f"[{host}]" if ":" in host else host
        branch = f"z9hG4bK{random.getrandbits(48):x}"
        msg = (f"OPTIONS sip:{hb}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {hb}:{lport};branch={branch};rport\r\n"
               f"From: <sip:ping@{hb}>;tag=p{branch[-6:]}\r\nTo: <sip:{hb}>\r\n"
               f"Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
               f"Content-Length: 0\r\n\r\n").encode()
        s.sendto(msg, (host, port))
        try:
            return s.recv(65535)
        except OSError:
            return None


@dataclass
class ServerProcess:
    config_dir: Path
    data_dir: Path
    port: int
    tls_port: int
    hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    def env(self) -> dict[str, str]:
        return {**os.environ, "MINISIP_CONFIG_DIR": str(self.config_dir),
                "MINISIP_DATA_DIR": str(self.data_dir)}

    def start(self, timeout: float = 15.0) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        since = log.tell()  # a restart appends to the log of the run before
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minisip.cli.main", "serve",
             *[a for h in self.hosts for a in ("--host", h)], "--udp-port", str(self.port),
             "--tcp-port", str(self.port), "--tls-port", str(self.tls_port)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            # The banner comes once start-up is over (it serves SIP a little before: the
            # warnings of start-up are logged after that).
            if self._serving(since) and options_ping(self.port, timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log()}")

    def _serving(self, since: int) -> bool:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return b"minisip serving" in f.read()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "minisip.cli.main", *args],
                              env=self.env(), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)


def make_server(tmp_path: Path) -> ServerProcess:
    config_dir = tmp_path / "configs"
    shutil.copytree(CONFIGS, config_dir)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return ServerProcess(config_dir, data_dir, free_port(), free_port((socket.SOCK_STREAM,)))


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make test installs it)")
    return path


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    retransmissions: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0


@dataclass
class Sipp:
    """One sipp process: a client (``remote`` set) or a server waiting on ``port``."""
    proc: subprocess.Popen[str]
    stat: Path
    timeout: float

    def wait(self) -> SippResult:
        try:
            out, err = self.proc.communicate(timeout=self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        successful = failed = retrans = 0
        try:
            lines = self.stat.read_text().splitlines()
            row = dict(zip(lines[0].split(";"), lines[-1].split(";")))
            successful = int(row.get("SuccessfulCall(C)", 0))
            failed = int(row.get("FailedCall(C)", 0))
            retrans = int(row.get("Retransmissions(C)", 0))
        except (OSError, IndexError, ValueError):
            pass
        return SippResult(self.proc.returncode, successful, failed, (out or "") + (err or ""),
                          retrans)


def start_sipp(scenario: str, *, remote: str | None = None, port: int = 0,
               users: list[tuple[str, ...]] | None = None, calls: int = 1,
               transport: str = "u1", rate: int = 10, timeout: float = 30.0,
               extra: tuple[str, ...] = (), workdir: Path | None = None) -> Sipp:
    """Start sipp: a client towards ``remote`` or, without it, a server on ``port``.

    ``users`` rows are (user, password, more fields...): field0 is the user, field1
    the [authentication] keyword, field2 on the rest.
    """
    sipp = need("sipp")
    workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    tag = f"{os.getpid()}-{random.getrandbits(32):x}"
    stat = workdir / f"sipp-{tag}.csv"
    args = [sipp, *([remote] if remote else []), "-sf", str(SCENARIOS / scenario),
            "-m", str(calls), "-r", str(rate), "-t", transport, "-i", "127.0.0.1",
            "-p", str(port), "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-max_recv_loops", "1000", "-buff_size", "4194304", "-trace_stat", "-stf", str(stat),
            "-nostdin", *extra]
    if users:
        inf = workdir / f"users-{tag}.csv"
        # sipp takes no keywords inside [authentication ...]: the CSV carries it whole.
        inf.write_text("SEQUENTIAL\n" + "".join(
            f"{u[0]};[authentication username={u[0]} password={u[1]}];" + ";".join(u[2:]) + "\n"
            for u in users))
        args += ["-inf", str(inf)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=workdir)
    return Sipp(proc, stat, timeout)


def sipp_device(server: ServerProcess, user: str, scenario: str, workdir: Path, *,
                calls: int = 1, timeout: float = 30.0, extra: tuple[str, ...] = ()) -> Sipp:
    """A phone of ``user``: a sipp server on its own port, registered with that Contact."""
    port = free_port((socket.SOCK_DGRAM,))
    uas = start_sipp(scenario, port=port, calls=calls, timeout=timeout, workdir=workdir,
                     extra=extra)
    reg = run_sipp("register_contact.xml", server.port, users=[(user, user)],
                   extra=("-key", "contact_port", str(port)), workdir=workdir)
    assert reg.ok, reg.output + server.log()
    return uas


def run_sipp(scenario: str, port: int, *, remote: str = "127.0.0.1",
             **kw: object) -> SippResult:
    """Run one sipp client scenario against ``remote:port`` to its end."""
    return start_sipp(scenario, remote=f"{remote}:{port}", **kw).wait()  # type: ignore[arg-type]


# -- fail2ban: the shipped filter, with <HOST> expanded as fail2ban/server/failregex.py does --
_F2B_IP4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_F2B_IP6 = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)"
F2B_HOST = (rf"(?:\[?(?:(?:::f{{4,6}}:)?(?P<ip4>{_F2B_IP4})|(?P<ip6>{_F2B_IP6}))\]?"
            rf"|(?P<dns>[\w\-.^_]*\w))")


def failregex() -> re.Pattern[str]:
    """contrib/fail2ban's failregex (which the README shows word for word), compiled."""
    text = (REPO / "contrib" / "fail2ban" / "minisip-filter.conf").read_text()
    line = next(x for x in text.splitlines() if x.startswith("failregex = "))
    assert line in (REPO / "README.md").read_text()
    return re.compile(line.removeprefix("failregex = ").replace("<HOST>", F2B_HOST))


def banned_host(regex: re.Pattern[str], line: str) -> str | None:
    """The address fail2ban would ban for ``line``, or None when it does not match."""
    m = regex.search(line)
    return None if m is None else (m.group("ip4") or m.group("ip6") or m.group("dns"))
