"""A podyn-fast command run in the background by a test, that can neither block nor leak.

Its output goes to temporary files rather than pipes, so a chatty process never blocks on a full
pipe while the test waits on something else; the files are closed and the process is ended on
every way out of the ``with`` block.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], out: IO[bytes], err: IO[bytes]) -> None:
        self.proc, self._out, self._err = proc, out, err

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def stdout(self) -> str:
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``condition`` until it holds; fails if the process ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.alive(), f"exited ({self.proc.returncode}) before {what}:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"{what}: not after {timeout:g} s:\n{self.stderr()}"
            time.sleep(0.02)

    def finish(self, timeout: float) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout:g} s:\n{self.stderr()}") from None


@contextmanager
def running(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[Running]:
    """``cmd`` running, with ``env`` added to this process's environment."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        try:
            yield Running(proc, out, err)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
