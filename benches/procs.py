"""Process measurements for benchmarks: CPU seconds of a process tree, and its peak RSS."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        # The command name may hold spaces: fields start after the last ')'.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds_with_reaped_children(pid: int) -> float | None:
    """User + system CPU of ``pid`` and of its children it has reaped (a postmaster reaps every
    backend, so this counts every finished connection's work)."""
    f = _stat(pid)
    if f is None:
        return None
    # utime, stime, cutime, cstime are fields 14-17 (1-based), 11-14 after the ')' split.
    return sum(int(x) for x in f[11:15]) / _TICK


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat(int(entry.name))
            if f is not None and int(f[1]) == pid:
                out.append(int(entry.name))
    return out


class PeakRss:
    """Samples the resident set size of a process and its descendants every 50 ms, keeping the
    largest single process's peak (VmHWM) and the largest sum seen at one moment."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.largest_kib = 0
        self.total_kib = 0
        self.peaks_kib: dict[int, int] = {}
        """Each process's own peak (VmHWM), by pid."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def children_peak_kib(self) -> int:
        """The largest peak of any process but the root (a pool's workers)."""
        return max((kib for pid, kib in self.peaks_kib.items() if pid != self.pid), default=0)

    def _tree(self) -> list[int]:
        todo, seen = [self.pid], []
        while todo:
            p = todo.pop()
            seen.append(p)
            todo += _children(p)
        return seen

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self._tree():
                try:
                    status = Path(f"/proc/{p}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1])
                        self.peaks_kib[p] = max(self.peaks_kib.get(p, 0), peak)
                        self.largest_kib = max(self.largest_kib, peak)
                    elif line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            self.total_kib = max(self.total_kib, total)
            self._stop.wait(0.05)
