"""ARCHITECTURE.md rule 1: the transaction layer never imports trio."""
from __future__ import annotations

import subprocess
import sys


def test_transaction_layer_imports_without_trio() -> None:
    code = ("import sys; import minisip.transaction.layer, minisip.transaction.events; "
            "print('trio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
