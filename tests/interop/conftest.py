"""A running minisip with the shipped configuration, for interop tests with sipp."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, make_server, need


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    need("sipp")
    srv = make_server(tmp_path)
    srv.start()
    yield srv
    srv.stop()
