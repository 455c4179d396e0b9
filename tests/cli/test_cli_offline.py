"""The real CLI entry point (``minisip.cli.main.main``) without a server: each item of
the newcomer's first hour, with its one-line output and its exit status."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

from minisip import __version__
from minisip.cli.main import main
from minisip.cli.tables import examples
from minisip.config.loader import ConfigError, load_snapshot
from minisip.config.schema import Line, Trunk, User
from minisip.pbx.cdr import CdrRecord, CdrStore
from minisip.pbx.location import Binding, LocationService
from minisip.sip.peer import Peer
from tests.helpers import CONFIGS

Run = tuple[int, str, str]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MINISIP_CONFIG_DIR", raising=False)
    monkeypatch.delenv("MINISIP_DATA_DIR", raising=False)

    def run(*args: str) -> Run:
        rc = main(list(args))
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the shipped configuration in site/configs (data_dir: ../data)."""
    shutil.copytree(CONFIGS, tmp_path / "site" / "configs")
    return tmp_path / "site"


def one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_version_prints_the_package_version(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("--version") == (0, f"minisip {__version__}\n", "")


@pytest.mark.parametrize("args, says", [
    (["user", "lst"], "No such command 'lst'"),
    (["status", "--bogus"], "No such option: --bogus"),
    (["trunk", "add", "t1", "--password", "x"], "No such option: --password"),
    (["user", "show"], "Missing argument"),
    (["cdr", "--limit", "many"], "Invalid value for '--limit'"),
])
def test_usage_errors_are_one_line_with_status_2(cli, args: list[str], says: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, err = cli(*args)
    assert rc == 2 and out == ""
    assert says in one_error(err) and "--help" in err


def test_global_options_stand_before_or_after_the_command(
        cli, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    configs = str(site / "configs")
    monkeypatch.chdir(tmp_path)  # not where the configuration is
    assert cli("--config-dir", configs, "user", "add", "555", "--password", "s3cret") == (
        0, "user 555 added\n", "")
    for args in (["--config-dir", configs, "user", "list", "--json"],
                 ["user", "list", "--json", "--config-dir", configs],
                 ["--config-dir", "/nonexistent", "user", "list", "--json", "--config-dir",
                  configs]):  # after the command wins
        rc, out, err = cli(*args)
        assert rc == 0, err
        assert "555" in [u["name"] for u in json.loads(out)]
    for command in (["user", "set", "555", "display_name=Z"], ["user", "remove", "555"],
                    ["user", "add", "555", "--password", "s3cret"]):  # same options everywhere
        assert cli(*command, "--config-dir", configs, "--data-dir", str(tmp_path))[0] == 0
    monkeypatch.setenv("MINISIP_CONFIG_DIR", configs)
    rc, out, _ = cli("user", "list", "--json")
    assert rc == 0 and "555" in out
    rc, _, err = cli("--config-dir", "/nonexistent", "user", "list")  # the option beats the env
    assert rc == 1 and one_error(err) == "error: /nonexistent: configuration directory not found"


def store_bindings(data_dir: Path, bindings: list[tuple[str, str, float]]) -> None:
    loc = LocationService(data_dir / "registrations.db")
    now = time.time()
    for aor, contact, expires_in in bindings:
        loc.put(Binding(aor, contact, now + expires_in, None, "cid", 1,
                        Peer("udp", "2001:db8::7" if aor == "101" else "192.0.2.7", 5062),
                        "TestPhone/1.0", "", now))
    loc.close()  # a clean stop: the WAL is folded in and removed


def test_data_dir_is_found_from_the_config_dir_wherever_the_command_runs(
        cli, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    store_bindings(site / "data", [("100", "sip:100@192.0.2.7:5062", 600)])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, _, err = cli("status", "--config-dir", "../site/configs")
    assert rc == 1
    assert one_error(err) == ("error: no minisip server is running (no control socket at "
                              "../site/data/control.sock)")
    rc, out, err = cli("--config-dir", "../site/configs", "registrations", "--json")
    assert rc == 0 and [r["user"] for r in json.loads(out)] == ["100"]
    assert err == "(no server running: devices as stored in ../site/data/registrations.db)\n"
    rc, out, _ = cli("--config-dir", "../site/configs", "--data-dir", str(tmp_path / "none"),
                     "registrations")
    assert rc == 1 and out == ""


def test_offline_registrations_list_the_stored_unexpired_devices(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    store_bindings(site / "data", [("100", "sip:100@192.0.2.7:5062", 600),
                                   ("101", "sip:101@[2001:db8::7]:5062", 300),
                                   ("102", "sip:102@192.0.2.9:5060", -5)])  # expired
    configs = str(site / "configs")
    rc, out, err = cli("registrations", "--config-dir", configs)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["USER", "CONTACT", "EXPIRES", "SOURCE", "USER", "AGENT"]
    assert [line.split()[0] for line in lines[1:]] == ["100", "101"]
    assert "udp:[2001:db8::7]:5062" in lines[2]  # the port stays apart from an IPv6 address
    rc, out, _ = cli("registrations", "--config-dir", configs, "--user", "101", "--json")
    assert rc == 0 and [r["source"] for r in json.loads(out)] == ["udp:[2001:db8::7]:5062"]
    rc, out, err = cli("registrations", "--config-dir", configs, "--user", "999")
    assert rc == 1 and out == ""
    assert one_error(err) == "error: no user '999' in users.yaml"


def test_entity_help_and_options_come_from_the_entity_schema(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    rc, line_help, _ = cli("line", "add", "--help")
    assert rc == 0 and "--account" in line_help and "account=2001" in line_help
    assert "display_name" not in line_help and "forward_busy" not in line_help
    rc, trunk_help, _ = cli("trunk", "add", "--help")
    assert rc == 0 and "--address" in trunk_help and "--password" not in trunk_help
    rc, user_help, _ = cli("user", "set", "--help")
    assert rc == 0 and "--password" in user_help and "--display-name" in user_help
    header = (CONFIGS / "users.yaml").read_text().split("# Reference")[0]
    suggested = set(re.findall(r"(?<![-\w])--[a-z][a-z-]*", header))
    assert {"--password", "--display-name"} <= suggested
    for option in suggested:
        assert option in user_help, f"users.yaml suggests {option}, which does not exist"
    configs = str(site / "configs")
    # The examples the help shows are accepted as they are shown.
    for entity, cls, name, extra in (("user", User, "300", ["--password", "s3cret"]),
                                     ("line", Line, "provider", []),
                                     ("trunk", Trunk, "carrier", [])):
        rc, out, err = cli(entity, "add", name, *extra, *shlex.split(examples(cls)),
                           "--config-dir", configs)
        assert rc == 0 and out.endswith(f"{name} added\n"), err


def test_user_show_prints_yaml_not_python(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    configs = str(site / "configs")
    assert cli("user", "add", "200", "--password", "s3cret", "--display-name", "Alice Smith",
               "--max-duration", "600", "forward_busy.number=300", "--allowed-ips",
               "192.0.2.0/24", "--config-dir", configs)[0] == 0
    rc, out, err = cli("user", "show", "200", "--config-dir", configs)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["name: 200", "display_name: Alice Smith", "no_answer_time: 0"]
    assert "max_duration: 600" in lines and "voicemail: false" in lines
    assert "forward_busy:\n  enabled: false\n  number: 300" in out
    assert "allowed_ips: [192.0.2.0/24]" in lines
    assert "mail_address: \"\"" in lines and "state: (no server)" in lines
    assert not any(t in out for t in ("{'", "True", "False", "None", "('"))
    assert "s3cret" not in out


@pytest.mark.parametrize("text", [
    'users:\n  "100":\n    password: "100"\n    display_name: [unclosed\n',
    'users:\n  "100":\n    password: "100\n',
    'users:\n  "100":\n    password: "100"\n  bad: : :\n',
    'users:\n  "100":\n    password: "100"\n  "100":\n    password: "1"\n',
    'users: {"100": {password: "100"}\n\n\n',
])
def test_yaml_mistakes_are_worded_as_the_server_words_them_within_the_file(
        cli, site: Path, text: str) -> None:  # type: ignore[no-untyped-def]
    configs = site / "configs"
    (configs / "users.yaml").write_text(text)
    with pytest.raises(ConfigError) as server_says:
        load_snapshot(configs)
    issue = server_says.value.errors[0]
    assert issue.line is not None and 1 <= issue.line <= len(text.rstrip().splitlines())
    for args in (["user", "list"], ["user", "set", "100", "display_name=x"]):
        rc, out, err = cli(*args, "--config-dir", str(configs))
        assert rc == 1 and out == ""
        assert one_error(err) == f"error: {issue}"


def test_cdr_names_the_originating_and_terminating_halves(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    configs = str(site / "configs")
    rc, _, err = cli("cdr", "--config-dir", configs)
    assert rc == 1 and "no CDRs" in one_error(err)
    store = CdrStore(site / "data")
    common = dict(call_id="c1", caller="100", dialed="101", final="101",
                  route="local_user:101", setup_time=time.time(), answer_time=time.time(),
                  end_time=time.time(), duration=3.0, status=200, cause="normal",
                  released_by="caller")
    store.write([CdrRecord(kind="O", **common), CdrRecord(kind="T", **common)])  # type: ignore[arg-type]
    store.close()
    rc, out, err = cli("cdr", "--config-dir", configs)
    assert rc == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["terminating", "originating"]
    rc, out, _ = cli("cdr", "--config-dir", configs, "--json", "--user", "100")
    assert rc == 0 and sorted(r["kind"] for r in json.loads(out)) == ["O", "T"]
    rc, _, err = cli("cdr", "--config-dir", configs, "--user", "999")
    assert rc == 1 and one_error(err) == "error: no user '999' in users.yaml"


def test_edit_mistakes_are_one_line(cli, site: Path) -> None:  # type: ignore[no-untyped-def]
    configs = str(site / "configs")
    for args, says in ((["user", "set", "100"], "nothing to set"),
                       (["user", "set", "100", "oops"], "'oops': expected key=value"),
                       (["user", "add", "100", "--password", "x"], "already exists"),
                       (["user", "set", "999", "display_name=x"], "no user '999'"),
                       (["user", "set", "100", "--max-duration", "long"],
                        "users.yaml line"),
                       (["trunk", "add", "t1"], "address is required")):
        rc, out, err = cli(*args, "--config-dir", configs)
        assert rc == 1 and out == "", args
        assert says in one_error(err), err
