"""What the benches share: the system under test (minisip or Kamailio), its CPU and
memory from /proc, sipp's response times, and the machine's load.

CPU is the server's own (utime + stime of every process or thread of it, from
/proc), so a figure per unit holds on a machine other work shares; wall-clock
rates and latencies do not, so every bench prints the load average next to them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import ServerProcess, free_port  # noqa: E402

SCENARIOS = REPO / "bench" / "scenarios"
KAMAILIO_CFG = REPO / "bench" / "kamailio" / "kamailio.cfg"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    return sum(cpu_split(pid))


def verdict(ok: bool, *outputs: str, why: str = "") -> int:
    """A bench's exit status: 0, or 1 after FAIL (and ``why``) with the tail of each
    peer's output."""
    if ok:
        return 0
    print("\n".join([f"FAIL: {why}" if why else "FAIL", *(o[-2000:] for o in outputs if o)]))
    return 1


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process (all its threads), in seconds: our code and the
    kernel's (the socket calls)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def response_times(workdir: Path) -> list[float]:
    """sipp's -trace_rtt samples (ms) of response time 1, from every *_rtt.csv in workdir."""
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue
    return out


RTT_ARGS = ("-trace_rtt", "-rtt_freq", "1")


class Minisip:
    """A minisip server process on a copy of configs/ with generated users."""

    name = "minisip"

    def __init__(self, tmp: Path, users_yaml: str, *, system: dict[str, str] | None = None
                 ) -> None:
        config_dir = tmp / "configs"
        shutil.copytree(REPO / "configs", config_dir)
        (config_dir / "users.yaml").write_text(users_yaml)
        if system:
            sys_path = config_dir / "system.yaml"
            text = sys_path.read_text()
            for key, value in system.items():
                lines = [f"{key}: {value}" if ln.startswith(f"{key}:") else ln
                         for ln in text.splitlines()]
                text = "\n".join(lines) + "\n"
            sys_path.write_text(text)
        (tmp / "data").mkdir()
        self.config_dir = config_dir
        self.srv = ServerProcess(config_dir, tmp / "data", free_port(), 0)
        self.srv.start(timeout=60)
        assert self.srv.proc is not None
        self.port = self.srv.port
        self.pid = self.srv.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def status(self) -> dict[str, Any]:
        st = self.srv.cli("status", "--json")
        return json.loads(st.stdout) if st.returncode == 0 else {}

    def stop(self) -> None:
        self.srv.stop()


def minisip_users(rows: list[tuple[str, str]], extra: str = "") -> str:
    """users.yaml text: each (user, password), with ``extra`` (indented YAML) each."""
    return "users:\n" + "".join(f'  "{u}":\n    password: "{p}"\n{extra}' for u, p in rows)


class Kamailio:
    """Kamailio 5.6 as an authenticating registrar/proxy (bench/kamailio/kamailio.cfg)."""

    name = "kamailio"

    def __init__(self, tmp: Path, rows: list[tuple[str, str]], *, children: int = 2,
                 shm_mb: int = 256) -> None:
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        if not Path(exe).exists():
            raise SystemExit("kamailio is not installed (apt-get install kamailio)")
        modules = next(Path("/usr/lib").glob("*/kamailio/modules"))
        self.dir = tmp / "kamailio"
        db = self.dir / "db"
        db.mkdir(parents=True)
        (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
        (db / "subscriber").write_text(
            "id(int,auto) username(string) domain(string) password(string) ha1(string,null) "
            "ha1b(string,null)\n" + "".join(f"{i + 1}:{u}:minisip:{p}:::\n"
                                       for i, (u, p) in enumerate(rows)))
        self.port = free_port((socket.SOCK_DGRAM,))
        cfg = KAMAILIO_CFG.read_text()
        for key, value in (("PORT", self.port), ("MPATH", f"{modules}/"), ("DBDIR", db),
                           ("CHILDREN", children), ("SHM", shm_mb), ("REALM", "minisip")):
            cfg = cfg.replace(f"@{key}@", str(value))
        (self.dir / "kamailio.cfg").write_text(cfg)
        self.log_path = self.dir / "kamailio.log"
        self.proc = subprocess.Popen(
            [exe, "-f", "kamailio.cfg", "-DD", "-E", "-m", str(shm_mb), "-M", "16",
             "-Y", str(self.dir), "-w", str(self.dir)],
            cwd=self.dir, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kamailio exited:\n" + self.log_path.read_text())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", self.port))
                except OSError:
                    time.sleep(0.3)  # bound: let the workers finish forking
                    return
            time.sleep(0.05)
        raise RuntimeError("kamailio did not start:\n" + self.log_path.read_text())

    def _pids(self) -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.pid:  # process group
                    out.append(int(d.name))
        return out

    def cpu(self) -> float:
        total = 0.0
        for pid in self._pids():
            try:
                total += cpu_seconds(pid)
            except OSError:
                continue
        return total

    def rss_kb(self) -> int:
        """Proportional set size of every process (their shared memory counted once)."""
        total = 0
        for pid in self._pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def status(self) -> dict[str, Any]:
        return {}

    def stop(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server at 200 Hz (needs py-spy on PATH)."""
    spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-f", "raw", "-o", str(out),
                            "-r", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return spy


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(10)


def summarize_profile(path: Path, top: int = 18) -> None:
    """Self and inclusive time per function from py-spy's raw (collapsed) output.

    Only the trio thread counts: the config watcher's worker thread waits in
    blocking calls that py-spy would otherwise report as busy.
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "_thread_cache" in stack or "anyio" in stack:
            continue
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f
                  for f in stack.split(";")]  # per function, not per line
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            if "minisip/" in f:
                inclusive[f] = inclusive.get(f, 0) + n
    print(f"profile: {total} samples of the server's trio thread")
    print("  top self time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    print("  top inclusive time in minisip:")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
