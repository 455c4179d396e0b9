"""Who rings: forwarding, feature codes, follow-me, ring and hunt groups, the
multi-device flag, the black/white list and DND, against a running server with
sipp phones (pyphone where a test measures when a device starts ringing)."""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, Sipp, make_server, need, run_sipp, sipp_device, start_sipp
from tests.interop.pyphone import PyPhone

pytestmark = pytest.mark.interop


def configure(server: ServerProcess, users: dict[str, str], services: str = "") -> None:
    """users.yaml with these users (name -> YAML flow items), services.yaml extended."""
    lines = ["users:"]
    for name, extra in users.items():
        lines.append(f'  "{name}": {{password: "{name}"{", " + extra if extra else ""}}}')
    (server.config_dir / "users.yaml").write_text("\n".join(lines) + "\n")
    if services:
        path = server.config_dir / "services.yaml"
        path.write_text(path.read_text().replace("ring_groups: {}\n", "")
                        .replace("hunt_groups: {}\n", "")
                        .replace("black_white_list: []\n", "") + services)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    need("sipp")
    srv = make_server(tmp_path)
    yield srv
    srv.stop()


def device(server: ServerProcess, user: str, scenario: str, tmp_path: Path,
           calls: int = 1) -> Sipp:
    return sipp_device(server, user, scenario, tmp_path, calls=calls)


def dial(server: ServerProcess, caller: str, number: str, scenario: str,
         tmp_path: Path) -> None:
    r = run_sipp(scenario, server.port, users=[(caller, caller, number)],
                 extra=("-d", "300"), timeout=30, workdir=tmp_path)
    assert r.ok, r.output + server.log()


def done(*devices: Sipp) -> None:
    for d in devices:
        r = d.wait()
        assert r.ok, r.output


def untouched(d: Sipp) -> None:
    """A device the plan must not ring: its sipp saw no call."""
    d.proc.terminate()
    r = d.wait()
    assert r.successful == 0 and r.failed == 0, r.output


def cdr(server: ServerProcess) -> dict[str, object]:
    """The last O-CDR."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sqlite3.connect(server.data_dir / "cdr.db") as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM cdr WHERE kind = 'O' ORDER BY id DESC").fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.1)
    raise AssertionError("no CDR")


def generation(server: ServerProcess) -> int:
    """The running server's configuration generation (bumped by every reload)."""
    return int(json.loads(server.cli("status", "--json").stdout)["config"]["generation"])


def user_field(server: ServerProcess, user: str, key: str, value: str, since: int,
               timeout: float = 10.0) -> None:
    """Wait until `minisip user show` reports ``key: value`` for ``user`` and the server
    has reloaded since generation ``since`` (so the next call sees the change)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = server.cli("user", "show", user, "--json").stdout
        if (f'"{key}": {value}' in out.replace("\n", " ").replace("  ", " ")
                and generation(server) > since):
            return
        time.sleep(0.2)
    raise AssertionError(f"{user} {key} != {value}: {out}")


FWD = '{enabled: true, number: "%s"}'


# -- forwarding ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, first, extra", [
    ("forward_busy", "uas_busy.xml", ""),
    ("forward_no_answer", "uas_ring_cancelled.xml", "no_answer_time: 2"),
    ("forward_unreachable", None, ""),
    ("forward_unconditional", "uas_answer.xml", ""),
])
def test_forwarding_reaches_the_forward_number(server: ServerProcess, tmp_path: Path,
                                               kind: str, first: str | None,
                                               extra: str) -> None:
    configure(server, {"100": "", "101": f"{kind}: {FWD % '102'}" + (", " + extra
                                                                     if extra else ""),
                       "102": ""})
    server.start()
    d101 = device(server, "101", first, tmp_path) if first else None
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d102)
    if d101 is not None:
        if kind == "forward_unconditional":
            untouched(d101)
        else:
            done(d101)
    row = cdr(server)
    assert row["final"] == "102" and row["status"] == 200
    assert f"[{kind} 101] 102" in str(row["steps"])


def test_feature_codes_set_and_clear_busy_forwarding(server: ServerProcess,
                                                     tmp_path: Path) -> None:
    configure(server, {"100": "", "101": f"forward_busy: {FWD % ''}", "102": ""})
    server.start()
    gen = generation(server)
    dial(server, "101", "*90*102%23", "uac_feature_code.xml", tmp_path)
    user_field(server, "101", "number", '"102"', gen)
    d101 = device(server, "101", "uas_busy.xml", tmp_path, calls=2)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d102)
    gen = generation(server)
    dial(server, "101", "*90%23", "uac_feature_code.xml", tmp_path)
    user_field(server, "101", "number", '""', gen)
    dial(server, "100", "101", "uac_expect_486.xml", tmp_path)
    done(d101)


def test_a_feature_code_needs_its_right(server: ServerProcess, tmp_path: Path) -> None:
    configure(server, {"100": "", "101": ""})
    server.start()
    r = run_sipp("mid_uac_expect_403.xml", server.port, users=[("101", "101", "*90*102%23")],
                 timeout=20, workdir=tmp_path)
    assert r.ok, r.output + server.log()


def test_a_forwarding_loop_stops_at_the_user_it_would_return_from(server: ServerProcess,
                                                                  tmp_path: Path) -> None:
    configure(server, {"100": "", "101": f"forward_unconditional: {FWD % '102'}",
                       "102": f"forward_unconditional: {FWD % '101'}"})
    server.start()
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d102)
    assert cdr(server)["final"] == "102"


# -- follow-me -------------------------------------------------------------------------

FOLLOW = 'follow_me: {strategy: %d, interval: 1, destinations: {a: "102"}}'


def test_follow_me_0_rings_the_destination_with_the_user(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    configure(server, {"100": "", "101": FOLLOW % 0, "102": ""})
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d101, d102)


def test_follow_me_1_rings_the_destination_when_the_user_fails(server: ServerProcess,
                                                               tmp_path: Path) -> None:
    configure(server, {"100": "", "101": FOLLOW % 1, "102": ""})
    server.start()
    d101 = device(server, "101", "uas_busy.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d101, d102)
    assert "follow_me 101 a: user:102" in str(cdr(server)["steps"])


@pytest.mark.parametrize("strategy, earliest, latest", [(0, 0.0, 0.8), (2, 0.9, 3.0)])
def test_follow_me_timing(server: ServerProcess, tmp_path: Path, strategy: int,
                          earliest: float, latest: float) -> None:
    """Strategy 2 starts the destination `interval` (1 s) after the user; 0 at once."""
    configure(server, {"100": "", "101": FOLLOW % strategy, "102": ""})
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    with PyPhone(server.port, "102", "102") as p102:
        assert p102.register().status == 200
        caller = start_sipp("uac_call.xml", remote=f"127.0.0.1:{server.port}",
                            users=[("100", "100", "101")], extra=("-d", "300"), timeout=30,
                            workdir=tmp_path)
        t0 = time.monotonic()
        p102.answer_incoming(timeout=10)
        waited = time.monotonic() - t0
        r = caller.wait()
        assert r.ok, r.output + server.log()
    done(d101)
    assert earliest <= waited <= latest


# -- groups ----------------------------------------------------------------------------

def test_a_direct_call_rings_the_ring_group(server: ServerProcess, tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "ringing_group_id: 1", "102": "ringing_group_id: 1"})
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d101, d102)
    assert cdr(server)["final"] == "102"


def test_suppress_ring_group_rings_only_the_user(server: ServerProcess,
                                                 tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "ringing_group_id: 1, suppress_ring_group: true",
                       "102": "ringing_group_id: 1"})
    server.start()
    d101 = device(server, "101", "uas_answer.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d101)
    untouched(d102)


def test_the_ring_group_pilot_rings_every_member(server: ServerProcess,
                                                 tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "ringing_group_id: 3", "102": "ringing_group_id: 3"},
              'ring_groups:\n  3: {number: "600"}\n')
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "600", "uac_call.xml", tmp_path)
    done(d101, d102)


HUNT = ('hunt_groups:\n  sales: {number: "700", members: ["101", "102"], ring_time: 2,'
        ' strategy: %s}\n')


def test_linear_hunting_passes_a_busy_member(server: ServerProcess, tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "", "102": ""}, HUNT % "linear")
    server.start()
    d101 = device(server, "101", "uas_busy.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "700", "uac_call.xml", tmp_path)
    done(d101, d102)
    assert cdr(server)["final"] == "102"


def test_circular_hunting_starts_after_the_last_member(server: ServerProcess,
                                                       tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "", "102": ""}, HUNT % "circular")
    server.start()
    d101 = device(server, "101", "uas_answer.xml", tmp_path)
    dial(server, "100", "700", "uac_call.xml", tmp_path)
    done(d101)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "700", "uac_call.xml", tmp_path)
    done(d102)
    assert cdr(server)["final"] == "102"


def test_hunting_moves_on_after_ring_time(server: ServerProcess, tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "", "102": ""}, HUNT % "linear")
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    d102 = device(server, "102", "uas_answer.xml", tmp_path)
    dial(server, "100", "700", "uac_call.xml", tmp_path)
    done(d101, d102)


# -- devices, lists, DND ---------------------------------------------------------------

@pytest.mark.parametrize("multi", [True, False])
def test_one_number_multi_devices(server: ServerProcess, tmp_path: Path, multi: bool) -> None:
    configure(server, {"100": "", "101": f"one_number_multi_devices: {str(multi).lower()}"})
    server.start()
    older = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    time.sleep(0.05)
    latest = device(server, "101", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(latest)
    if multi:
        done(older)
    else:
        untouched(older)


LIST = """black_white_list:
  - {caller_prefix: "10", called_prefix: "*", rate: 100}
  - {caller_prefix: "102", called_prefix: "*", rate: 0}
"""


def test_black_list_refuses_and_white_list_lets_through(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "", "102": ""}, LIST)
    server.start()
    dial(server, "100", "101", "uac_expect_603.xml", tmp_path)
    row = cdr(server)
    assert (row["status"], row["cause"]) == (603, "black list")
    d101 = device(server, "101", "uas_answer.xml", tmp_path)
    dial(server, "102", "101", "uac_call.xml", tmp_path)
    done(d101)


def test_dnd_from_the_phone_gives_busy_until_turned_off(server: ServerProcess,
                                                        tmp_path: Path) -> None:
    configure(server, {"100": "", "101": ""})
    server.start()
    gen = generation(server)
    dial(server, "101", "*78", "uac_feature_code.xml", tmp_path)
    user_field(server, "101", "do_not_disturb", "true", gen)
    d101 = device(server, "101", "uas_answer.xml", tmp_path)
    dial(server, "100", "101", "uac_expect_486.xml", tmp_path)
    gen = generation(server)
    dial(server, "101", "*79", "uac_feature_code.xml", tmp_path)
    user_field(server, "101", "do_not_disturb", "false", gen)
    dial(server, "100", "101", "uac_call.xml", tmp_path)
    done(d101)


def test_calls_shows_who_rings_and_the_plan_step(server: ServerProcess,
                                                 tmp_path: Path) -> None:
    configure(server, {"100": "", "101": FOLLOW % 0 + ", no_answer_time: 3", "102": ""})
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    d102 = device(server, "102", "uas_ring_cancelled.xml", tmp_path)
    caller = start_sipp("uac_expect_480.xml", remote=f"127.0.0.1:{server.port}",
                        users=[("100", "100", "101")], timeout=30, workdir=tmp_path)
    deadline = time.monotonic() + 5
    shown: list[dict[str, object]] = []
    while time.monotonic() < deadline and not (shown and shown[0].get("ringing")):
        out = server.cli("calls", "--json")
        shown = json.loads(out.stdout or "[]")
        time.sleep(0.1)
    assert shown and shown[0]["ringing"] == ["101", "102"], shown
    assert shown[0]["step"] == "101: user:101, user:102"
    table = server.cli("calls").stdout
    assert "101 102" in table and "101: user:101, user:102" in table, table
    r = caller.wait()
    assert r.ok, r.output + server.log()
    done(d101, d102)
    assert cdr(server)["steps"] == "101: user:101, user:102"


def test_the_ring_group_no_answer_time_ends_a_pilot_call(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    configure(server, {"100": "", "101": "ringing_group_id: 3, no_answer_time: 30"},
              'ring_groups:\n  3: {number: "600", no_answer_time: 2}\n')
    server.start()
    d101 = device(server, "101", "uas_ring_cancelled.xml", tmp_path)
    t0 = time.monotonic()
    dial(server, "100", "600", "uac_expect_480.xml", tmp_path)
    assert 1.5 <= time.monotonic() - t0 <= 6
    done(d101)
