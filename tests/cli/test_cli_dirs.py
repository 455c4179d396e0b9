"""Every command takes --config-dir and --data-dir, as options or environment variables
(a script passes both to each command)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_server

COMMANDS = [["user", "add", "150", "--password", "x1"], ["user", "set", "150", "display_name=A"],
            ["user", "show", "150"], ["user", "list"], ["user", "remove", "150"],
            ["line", "list"], ["trunk", "list"], ["cdr"], ["status"], ["reload"],
            ["registrations"], ["calls"], ["trace", "--count", "1"], ["serve", "--help"]]
#: these fail without a running server (or its CDRs) and say so
NEED_SERVER = ("status", "reload", "registrations", "calls", "trace", "cdr")


@pytest.mark.parametrize("by_env", [False, True], ids=["options", "environment"])
def test_every_command_takes_config_dir_and_data_dir(tmp_path: Path, by_env: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from minisip.cli.main import app

    srv = make_server(tmp_path)  # no server runs: commands that need one say so
    dirs = ["--config-dir", str(srv.config_dir), "--data-dir", str(srv.data_dir)]
    if by_env:
        monkeypatch.setenv("MINISIP_CONFIG_DIR", str(srv.config_dir))
        monkeypatch.setenv("MINISIP_DATA_DIR", str(srv.data_dir))
    for args in COMMANDS:
        out = CliRunner().invoke(app, args if by_env else [*args, *dirs])
        assert "No such option" not in out.output, (args, out.output)
        assert out.exit_code == (1 if args[0] in NEED_SERVER else 0), (args, out.output)
