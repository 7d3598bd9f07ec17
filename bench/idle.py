"""Wait for the machine to be idle before measuring a server.

Why: on 2 cores one other busy process (a test run, a build) halves a server's figures, and the
load average lags by minutes. /proc/stat sampled over a short window says how busy the CPUs are now.
"""

from __future__ import annotations

import time
from pathlib import Path


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(window: float = 2.0) -> float:
    """Share of all CPU time spent busy over the next ``window`` seconds (0.0 to 1.0)."""
    busy0, total0 = _cpu_times()
    time.sleep(window)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_for_idle(max_busy: float, timeout: float) -> float:
    """Sample until the CPUs are at most ``max_busy`` busy or ``timeout`` passes; the last sample."""
    deadline = time.monotonic() + timeout
    busy = busy_fraction()
    while busy > max_busy and time.monotonic() < deadline:
        busy = busy_fraction()
    return busy
