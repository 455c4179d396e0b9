"""How the suite is shared out between pytest-xdist workers (``make test`` runs ``-n 4``).

Most of the suite's time is spent waiting for real processes (servers, sipp, baresip,
prompts played in real time), so it runs on more workers than the machine has cores.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

#: Modules whose tests share one module-scoped server and build on what the earlier tests
#: did to it (test_faults counts the bad messages they sent): each runs whole on one worker.
ONE_WORKER = frozenset({
    "tests/e2e/test_bad_input.py",
    "tests/e2e/test_faults.py",
    "tests/e2e/test_torture.py",
    "tests/interop/test_listings_at_scale.py",  # a site of 1,000 calls, set up once
})

#: Directories of tests that run real processes: they go first, so the long ones start
#: early and the quick in-process tests fill the workers' ends.
SLOW_FIRST = ("tests/interop/", "tests/e2e/")


def pytest_configure(config: pytest.Config) -> None:
    """The tests start hundreds of server and CLI processes: they share compiled modules,
    kept outside the tree (so even where PYTHONDONTWRITEBYTECODE is set, which made each
    process compile minisip again: a tenth or more of the CPU time)."""
    if "PYTHONPYCACHEPREFIX" not in os.environ:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(
            Path(tempfile.gettempdir()) / f"minisip-tests-pycache-{os.getuid()}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))  # stable


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist load`` (the default with ``-n``), test by test, except ONE_WORKER modules.

    (xdist's own ``loadgroup`` would do this with marks, but it renames node ids, which
    pytest 9 no longer lets a plugin do.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid

    return Scheduler(config, log)
