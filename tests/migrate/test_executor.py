"""The worker pool: forked when this process holds nothing a child must not inherit, else spawned."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_PROGRAM = textwrap.dedent(
    """
    import os, signal, sys, threading
    from podyn_fast.migrate.coordinator import make_executor

    if sys.argv[1] == "thread":  # another thread runs: forking now is not safe
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: None)  # as the command's own handler is
    pool = make_executor(2, fork=True)
    try:
        print(pool._mp_context.get_start_method(), all(
            pool.submit(signal.getsignal, signal.SIGTERM).result() == signal.SIG_DFL for _ in range(4)
        ))
    finally:
        pool.shutdown()
    """
)


@pytest.mark.parametrize(("others", "method"), [("none", "fork"), ("thread", "spawn")])
def test_workers_are_forked_only_where_it_is_safe(others: str, method: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, others], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    # Either way a SIGTERM from the coordinator ends a worker at once, whatever this process's handler.
    assert done.stdout.split() == [method, "True"], done.stderr
