"""What a level cost a server in memory, and whether anything else was using the CPUs meanwhile.

Why from outside: every server is measured the same way, whatever it is written in; the process
and its children count (a server may run its engine in a child). Why the others' CPU: on a shared
2-core machine one busy neighbour halves a server's figures (llama.cpp's threads wait on each other
when one is descheduled), and the harness's idle check only looks before a server starts.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import psutil

from bench.idle import _cpu_times

MB = 2**20
_TICK = os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def rss_mb(pid: int) -> float:
    """RSS of `pid` and its children, in MiB (0 once it is gone)."""
    total = 0
    for p in _family(pid):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / MB


def _cpu_seconds(pid: int | None, also: tuple[int, ...] = ()) -> float:
    """CPU time used so far by `pid` and its children, by the processes `also` names (and theirs),
    and by this harness."""
    total = sum(os.times()[:2])
    for root in ([pid] if pid is not None else []) + list(also):
        for p in _family(root):
            with contextlib.suppress(psutil.Error):
                total += sum(p.cpu_times()[:2])
    return total


class PeakRss:
    """The highest RSS seen every `interval` seconds while the block runs, and `others_busy`: the
    share of all CPUs that processes other than the server and this harness used meanwhile.

    `also`: processes that serve the measured requests beside the server (a Redis it writes to),
    whose CPU is not counted as others'; their memory is not in `peak`.
    """

    def __init__(self, pid: int | None, interval: float = 0.1, also: tuple[int, ...] = ()) -> None:
        self.pid = pid
        self.also = also
        self.interval = interval
        self.peak = 0.0
        self.others_busy = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._start = (time.monotonic(), _cpu_times(), _cpu_seconds(self.pid, self.also))
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        wall0, (busy0, _), ours0 = self._start
        busy1, _ = _cpu_times()
        wall = time.monotonic() - wall0
        others = (busy1 - busy0) / _TICK - (_cpu_seconds(self.pid, self.also) - ours0)
        self.others_busy = max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))  # type: ignore[arg-type]
            self._stop.wait(self.interval)
