"""A follower in a thread of its own, for `follow` and `migrate --follow`: stopped by SIGTERM or
SIGINT (after its batch in flight), telling every STATUS_EVERY seconds where each table stands."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import replace

from podyn_fast import report
from podyn_fast.follow.follower import Follower, FollowReport
from podyn_fast.settings import FollowConfig

# Seconds between the status lines a follower prints.
STATUS_EVERY = 10.0


class FollowerThread:
    def __init__(self, cfg: FollowConfig, reporter: report.Reporter) -> None:
        self.cfg, self.reporter = cfg, reporter
        self.stop = threading.Event()
        self.reports: list[FollowReport] = []
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.follower: Follower | None = None

    def start(self, tables: list[str] | None = None) -> None:
        cfg = replace(self.cfg, tables=tuple(tables)) if tables is not None else self.cfg
        follower = self.follower = Follower(cfg, self.stop)

        def run() -> None:
            try:
                self.reports = follower.run()
            except BaseException as e:  # raised by wait(), in the main thread
                self.error = e
                self.stop.set()

        self.thread = threading.Thread(target=run, name="follower", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        """Until the follower ends (idle, or every table stopped) or a signal asks it to."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        assert self.thread is not None
        last = time.monotonic()
        seen: dict[str, int] = {}
        while self.thread.is_alive():
            self.thread.join(0.5)
            if time.monotonic() - last >= STATUS_EVERY and self.follower is not None:
                seen = self._status(seen, time.monotonic() - last)
                last = time.monotonic()
        if self.error is not None:
            raise self.error
        report.follow_summary(self.reporter, self.reports)

    def _status(self, seen: dict[str, int], seconds: float) -> dict[str, int]:
        assert self.follower is not None
        now: dict[str, int] = {}
        for name, f in list(self.follower.followed.items()):
            now[name] = f.applied
            state = f"stopped: {f.stopped}" if f.stopped else f.phase
            report.follow_line(
                self.reporter, name, f.applied, (f.applied - seen.get(name, 0)) / seconds, f.lag(), state
            )
        return now

    @property
    def rejects(self) -> int:
        """Changes rejected: the items they leave are in the rejects, and have no row."""
        return sum(r.rejects for r in self.reports)

    def failure(self) -> BaseException | None:
        """The error that ended the follower, if one did (it then follows nothing more)."""
        return self.error

    @property
    def failed(self) -> bool:
        """A table stopped following, or a change was rejected."""
        return any(r.stopped for r in self.reports) or self.rejects > 0
