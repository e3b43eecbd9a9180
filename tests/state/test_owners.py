"""Lease owners: an identity no two processes share, and "gone at once" only when provably gone."""

from __future__ import annotations

import os
import subprocess
import sys

from podyn_fast.state import owners


def test_an_owner_names_its_boot_pid_namespace_and_start() -> None:
    me = owners.me()
    text = str(me)
    assert owners.Owner.parse(text) == me and me.pid == os.getpid() and me.machine != "-"
    assert not owners.gone(text), "this very process runs"


def test_only_a_process_of_this_machine_that_ended_is_gone_at_once() -> None:
    me = owners.me()
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    pid = int(child.stdout)
    assert owners.gone(str(owners.Owner(me.host, pid, me.machine, me.started, "t")))
    # This pid, but another start time: a later process took the pid of the holder, which is gone.
    assert owners.gone(str(owners.Owner(me.host, me.pid, me.machine, "1", "t")))
    # Another boot or PID namespace (a container, a cloned VM with the same hostname), /proc not
    # telling, or an owner written by an older version (hostname:pid): the lease's expiry decides.
    assert not owners.gone(str(owners.Owner(me.host, pid, "other-boot/4026531836", me.started, "t")))
    assert not owners.gone(str(owners.Owner(me.host, pid, "-", "-", "t")))
    assert not owners.gone(f"{me.host}:{pid}")
    assert owners.Owner.parse("a:b") is None and owners.Owner.parse("host:x:m:s:t") is None
