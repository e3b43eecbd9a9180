"""Who holds a lease: an identity no two processes share, on one host or many, and the one case in
which a holder is known to be gone without waiting for its lease to run out.

A process id alone names a process only inside one PID namespace of one boot of one kernel:
containers that share a hostname, cloned VMs and pods of the same name all reuse the same small
pids. An owner therefore carries the boot id and the PID namespace it was taken in, the process's
start time (a pid reused by a later process starts later) and a random token. A holder is gone at
once only when it was taken on this very boot and PID namespace and that process (pid and start
time) no longer runs; in every other case the lease's expiry decides.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from functools import cache

SEPARATOR = ":"


@dataclass(frozen=True)
class Owner:
    host: str
    """For people reading the state: hosts may share a name, so nothing is decided on it."""
    pid: int
    machine: str
    """``boot id/PID namespace``, or ``-`` where /proc does not tell (then never "gone at once")."""
    started: str
    """The process's start time in clock ticks after boot (/proc/PID/stat), or ``-``."""
    token: str

    def __str__(self) -> str:
        return SEPARATOR.join((self.host, str(self.pid), self.machine, self.started, self.token))

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner ``text`` names; None for what this version did not write (an older one's
        ``host:pid``), whose holder is then never taken for gone before its lease runs out."""
        parts = text.rsplit(SEPARATOR, 4)
        if len(parts) != 5 or not parts[1].isdigit():
            return None
        host, pid, machine, started, token = parts
        return cls(host, int(pid), machine, started, token)


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace").strip()
    except OSError:
        return None


def _machine() -> str:
    """This boot of this kernel and this PID namespace: where pids mean the same processes."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "-"
    return f"{boot}/{namespace}" if boot else "-"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) of process ``pid`` from /proc/PID/stat
    (fields 3 and 22), or None when it cannot be read."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) is in parentheses and may hold anything: split after it.
    fields = stat.rsplit(")", 1)[-1].split()
    return (fields[0], fields[19]) if len(fields) >= 20 else None


def _runs(pid: int, started: str) -> bool:
    """Whether the process that had ``pid`` and started at ``started`` still runs. A zombie does
    not: an orphaned worker that exited stays one where nothing reaps it, and must not keep its
    segment for a whole lease. What cannot be told (another user's process, /proc hidden) runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True
    state, start = stat
    return start == started and state not in ("Z", "X")


@cache
def _me(pid: int) -> Owner:
    stat = _stat(pid)
    return Owner(socket.gethostname(), pid, _machine(), stat[1] if stat else "-", secrets.token_hex(6))


def me() -> Owner:
    """This process's identity (a new one in a forked child, whose pid differs)."""
    return _me(os.getpid())


def gone(text: str) -> bool:
    """True only when the owner ``text`` is provably a process of this boot and PID namespace that
    no longer runs: its pid has no process, or a later one (another start time)."""
    owner, here = Owner.parse(text), me()
    if owner is None or owner.machine == "-" or owner.machine != here.machine or owner.started == "-":
        return False
    return not _runs(owner.pid, owner.started)
