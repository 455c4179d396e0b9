"""Optional: the sans-IO core compiled with mypyc (``MINISIP_MYPYC=1``).

Everything is in pyproject.toml; this file only adds the compiled modules when
asked, for a server that needs the CPU (bench figures in the README):

    pip install mypy && MINISIP_MYPYC=1 pip install --no-build-isolation .
    make compiled    # the same, in place, for a development checkout

Without ``MINISIP_MYPYC`` (or without mypy or a C compiler: the build says so
and goes on) the package is pure Python, the same code that the compiled
modules are built from, so either install behaves the same.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

#: the sans-IO layers mypyc compiles (strictly typed), but for status.py (an IntEnum
#: with its own __new__, which mypyc does not take) and errors.py (BadMessage has
#: subclasses elsewhere, and a compiled class has none written in Python)
COMPILED = [str(p) for d in ("minisip/sip", "minisip/transaction", "minisip/dialog")
            for p in sorted(Path(d).glob("*.py"))
            if p.name not in ("__init__.py", "status.py", "errors.py")]


def ext_modules() -> list[object]:
    if not os.environ.get("MINISIP_MYPYC"):
        return []
    try:
        from mypyc.build import mypycify
        return list(mypycify(COMPILED, opt_level="3", strip_asserts=False))
    except Exception as exc:  # no mypy, no compiler: the pure-Python package still works
        print(f"minisip: not compiling the sans-IO core ({exc}); pure Python", file=sys.stderr)
        return []


setup(ext_modules=ext_modules())
