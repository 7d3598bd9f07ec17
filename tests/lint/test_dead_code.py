"""No dead code in `src/`: every function, method, class, attribute and field is used.

Regression: a review found a method kept only to satisfy an undeclared contract
(`LlamaCppCache.reserve`), a property nobody read (`MemoryStreamLog.total_bytes`) and framing
helpers only tests used. vulture finds such names; frameworks' conventions are listed in
`vulture_allowlist.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vulture_finds_nothing_unused_in_src() -> None:
    allowlist = Path(__file__).with_name("vulture_allowlist.py")
    found = subprocess.run(
        [sys.executable, "-m", "vulture", str(ROOT / "src"), str(allowlist), "--min-confidence", "60"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0 and not found.stdout, found.stdout + found.stderr
