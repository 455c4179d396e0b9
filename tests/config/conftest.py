from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A private copy of the shipped configs/."""
    d = tmp_path / "configs"
    shutil.copytree(CONFIGS, d)
    return d
