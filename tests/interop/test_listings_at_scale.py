"""Every listing at the sizes of a real site: 10,000 users, 5,000 registered devices,
1,000 calls in progress (real sipp calls), 2,000 call records, 2,000 external lines.

The rows are paged over the control socket (a single frame would be past 1 MB) and
filtered by the server. Each command's exit status and row count are asserted.
"""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minisip.pbx.location import Binding, LocationService
from minisip.sip.peer import Peer
from tests.helpers import ServerProcess, Sipp, free_port, make_server, need, run_sipp, start_sipp

pytestmark = pytest.mark.interop

USERS = 10_000
REGISTERED = 5_000
CALLS = 1_000
LINES = 2_000
CALLEE = "10000"
FIRST = 10_000  # user names 10000 .. 19999


@dataclass
class Site:
    server: ServerProcess
    uac: Sipp
    uas: Sipp


def write_config(server: ServerProcess) -> None:
    big = "    max_concurrent_calls: 5000\n    call_waiting: true\n    no_answer_time: 60\n"
    users = ["users:"] + [f'  "{n}":\n    password: "pw{n}"\n' + (big if n == FIRST else "")
                          for n in range(FIRST, FIRST + USERS)]
    (server.config_dir / "users.yaml").write_text("\n".join(users) + "\n")
    lines = ["lines:"] + [f"  line{n}:\n    account: \"{n}\"\n    server: sip.example.com\n"
                          f"    do_not_register: true\n" for n in range(LINES)]
    (server.config_dir / "lines.yaml").write_text("".join(x + "\n" for x in lines))
    system = server.config_dir / "system.yaml"
    system.write_text(system.read_text().replace("relay_media: auto", "relay_media: never"))


def store_registrations(data_dir: Path) -> None:
    """REGISTERED - 1 devices, as the registrar would have stored them; the callee
    registers itself, for real."""
    loc = LocationService(data_dir / "registrations.db")
    now = time.time()
    for n in range(FIRST + 1, FIRST + REGISTERED):
        port = 20000 + n % 40000
        loc.put(Binding(str(n), f"sip:{n}@127.0.0.1:{port}", now + 3600, None, f"c{n}", 1,
                        Peer("udp", "127.0.0.1", port), "ScalePhone/1.0", "", now))
    loc.close()


def status(server: ServerProcess) -> dict[str, object]:
    out = server.cli("status", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need("sipp")
    tmp = tmp_path_factory.mktemp("scale")
    server = make_server(tmp)
    server.tls_port = 0
    write_config(server)
    store_registrations(server.data_dir)
    server.start(timeout=60)
    uas_port = free_port((socket.SOCK_DGRAM,))
    uas = start_sipp("uas_answer.xml", port=uas_port, calls=CALLS, timeout=120, workdir=tmp,
                     extra=("-d", "0"))
    uac = None
    try:
        reg = run_sipp("register_contact.xml", server.port, users=[(CALLEE, f"pw{CALLEE}")],
                       extra=("-key", "contact_port", str(uas_port)), workdir=tmp)
        assert reg.ok, reg.output
        callers = [(str(n), f"pw{n}", CALLEE) for n in range(FIRST + 1, FIRST + 1 + CALLS)]
        uac = start_sipp("uac_call.xml", remote=f"127.0.0.1:{server.port}", users=callers,
                         calls=CALLS, rate=200, timeout=120, workdir=tmp,
                         extra=("-d", "120000", "-l", str(CALLS)))
        deadline = time.monotonic() + 60
        while status(server).get("calls") != CALLS:
            assert time.monotonic() < deadline, f"calls up: {status(server).get('calls')}"
            assert uac.proc.poll() is None, uac.wait().output
            time.sleep(0.5)
        yield Site(server, uac, uas)
    finally:
        for sipp in (uac, uas):
            if sipp is not None:
                sipp.proc.kill()
                sipp.proc.wait()
        server.stop()


def rows(server: ServerProcess, *args: str) -> list[dict[str, object]]:
    out = server.cli(*args, "--json", timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_calls_list_1000_calls_and_filter_on_the_server(site: Site) -> None:
    calls = rows(site.server, "calls")
    assert len(calls) == CALLS and {c["state"] for c in calls} == {"talking"}
    assert {c["callee"] for c in calls} == {CALLEE}
    assert [c["caller"] for c in rows(site.server, "calls", "--user", "10007")] == ["10007"]
    assert len(rows(site.server, "calls", "--user", CALLEE)) == CALLS
    out = site.server.cli("calls", timeout=60)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == CALLS + 1


def test_registrations_list_5000_devices_and_filter_on_the_server(site: Site) -> None:
    regs = rows(site.server, "registrations")
    assert len(regs) == REGISTERED
    assert len({r["user"] for r in regs}) == REGISTERED
    mine = rows(site.server, "registrations", "--user", CALLEE)
    assert len(mine) == 1 and mine[0]["user_agent"] != "ScalePhone/1.0"
    out = site.server.cli("registrations", timeout=60)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == REGISTERED + 1


def test_user_list_shows_10000_users_with_their_live_state(site: Site) -> None:
    users = rows(site.server, "user", "list")
    assert len(users) == USERS
    states: dict[str, int] = {}
    for u in users:
        states[str(u["state"])] = states.get(str(u["state"]), 0) + 1
    # 1,000 callers and the callee talk; the other stored devices are online.
    assert states == {"talking": CALLS + 1, "online": REGISTERED - 1 - CALLS,
                      "offline": USERS - REGISTERED}
    shown = site.server.cli("user", "show", "10003", timeout=60)
    assert shown.returncode == 0 and "state: talking" in shown.stdout.splitlines()


def test_line_list_shows_2000_lines(site: Site) -> None:
    lines = rows(site.server, "line", "list")
    assert len(lines) == LINES and lines[-1]["name"] == f"line{LINES - 1}"


def test_cdr_lists_2000_records_once_the_calls_end(site: Site) -> None:
    # Runs last: stopping the server releases every call and writes its two halves.
    site.server.stop()
    records = rows(site.server, "cdr", "--limit", "0")
    assert len(records) == 2 * CALLS
    assert {r["kind"] for r in records} == {"O", "T"}
    assert len(rows(site.server, "cdr", "--limit", "0", "--user", "10007")) == 2
    out = site.server.cli("cdr", "--limit", "0", timeout=60)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2 * CALLS + 1
