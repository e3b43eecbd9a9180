"""What the commands tell a person (or, with ``--log-format json``, a log collector): messages,
summaries, the status table, follow's status lines and verify's lines.

Nothing here imports botocore or psycopg: ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from podyn_fast import logs

if TYPE_CHECKING:
    from podyn_fast.follow.follower import FollowReport
    from podyn_fast.migrate.coordinator import TableReport
    from podyn_fast.state.status import TableStatus
    from podyn_fast.verify import TableVerdict

log = logging.getLogger("podyn_fast")


class Reporter:
    """Messages on stderr (stdout is for data: the dry run's SQL, status --json): rich text for
    people, or with JSON logs one JSON line each, with the same facts as fields."""

    def __init__(self, *, json_logs: bool, verbose: bool) -> None:
        logs.configure(json=json_logs, verbose=verbose)
        self.json_logs, self.verbose = json_logs, verbose
        # With JSON logs, what the library prints for people is silenced: say() logs it instead.
        self.console = Console(stderr=True, quiet=json_logs)

    def say(self, text: str, shown: RenderableType | None = None, **fields: object) -> None:
        """``shown`` (or ``text``) on the console, or with JSON logs ``text`` and ``fields``."""
        if self.json_logs:
            log.info("%s", text, extra={"fields": fields})
        else:
            self.console.print(shown if shown is not None else text)

    def warn(self, text: str, **fields: object) -> None:
        self.say(text, Text(text, style="yellow"), **fields)

    def error(self, message: str) -> None:
        if self.json_logs:
            log.error("%s", message)
            return
        # Messages quote data (table and attribute names): never read them as rich markup.
        self.console.print(Text("error: ", style="red") + Text(message))

    def traceback(self, text: str) -> None:
        self.console.print(Text(text))


def migrate_summary(reporter: Reporter, reports: Sequence[TableReport]) -> None:
    t = Table(title="podyn-fast migrate")
    t.add_column("table", overflow="fold")
    for col in ("items", "rejects", "MB", "seconds", "items/s"):
        t.add_column(col, justify="right")
    t.add_column("state")
    for r in reports:
        # The rate of this run's own work; a rerun that found everything loaded has none.
        rate = f"{r.loaded_now / r.seconds:,.0f}" if r.loaded_now and r.seconds > 0 else "-"
        t.add_row(
            r.name,
            f"{r.items:,}",
            f"{r.rejects:,}",
            f"{r.nbytes / 1e6:.1f}",
            f"{r.seconds:.1f}",
            rate,
            "loaded" if r.loaded else "INCOMPLETE",
        )
    reporter.say("migrate summary", t, tables=[dataclasses.asdict(r) for r in reports])


def follow_summary(reporter: Reporter, reports: Sequence[FollowReport]) -> None:
    table = Table(title="podyn-fast follow")
    for col in ("table", "changes applied", "rejects", "lag", "state"):
        table.add_column(col)
    for r in reports:
        lag = f"{r.lag_seconds:.1f} s" if r.lag_seconds is not None else "-"
        state = "stopped: " + r.stopped if r.stopped else "ok"
        table.add_row(r.name, f"{r.applied:,}", f"{r.rejects:,}", lag, state)
    reporter.say("follow summary", table, tables=[dataclasses.asdict(r) for r in reports])


def rejects_line(reporter: Reporter, rejects: int, state_schema: str) -> None:
    """Where the items that could not be stored are, when there are any."""
    if rejects:
        reporter.warn(
            f"{rejects:,} item(s) could not be represented; they are in {state_schema}.rejects with the reason",
            rejects=rejects,
        )


def follow_line(reporter: Reporter, name: str, applied: int, rate: float, lag: float | None, state: str) -> None:
    """A followed table's status: changes applied, their rate since the last line, and the lag."""
    shown = f"{lag:.1f} s" if lag is not None else "-"
    reporter.say(
        f"{name}: {applied:,} changes applied, {rate:,.0f}/s, lag {shown} ({state})",
        table=name,
        applied=applied,
        rate=rate,
        lag_seconds=lag,
        state=state,
    )


def status_table(tables: Sequence[TableStatus]) -> None:
    """The status of each table, on stdout."""
    out = Console()
    view = Table(title="podyn-fast status")
    for col in ("table", "phase", "segments", "items", "rejects", "shards", "changes", "lag"):
        view.add_column(col, justify="left" if col in ("table", "phase") else "right")
    for t in tables:
        estimate = f" of ~{t.item_count_estimate:,}" if t.item_count_estimate and t.phase == "loading" else ""
        view.add_row(
            t.table,
            t.phase,
            f"{t.segments_done}/{t.segments_total}",
            f"{t.items:,}{estimate}",
            f"{t.rejects:,}",
            f"{t.shards_open} open, {t.shards_finished} done" if t.shards_open or t.shards_finished else "-",
            f"{t.changes_applied:,}",
            _lag(t),
        )
    out.print(view)
    for t in tables:
        if t.source:
            out.print(Text(f"{t.table}: snapshot from the export {t.source} (a segment per data file)"))
        if t.last_error:
            when = f" ({t.last_error_at})" if t.last_error_at else ""
            out.print(Text(f"{t.table}: last error{when}: {t.last_error}"))


def status_json(tables: Sequence[TableStatus]) -> dict[str, Any]:
    return {"tables": [dataclasses.asdict(t) for t in tables]}


def _lag(t: TableStatus) -> str:
    if t.lag_seconds is not None:
        return f"{t.lag_seconds:.1f} s"
    if t.follower_seen_seconds_ago is not None:
        return f"no follower (seen {t.follower_seen_seconds_ago:.0f} s ago)"
    return "-"


def verify_lines(verdicts: Sequence[TableVerdict]) -> list[str]:
    """What a person reads: one line per table, then examples of each difference."""
    lines = []
    for v in verdicts:
        extra = "not checked (--sample)" if v.extra is None else f"{v.extra:,}"
        verdict = "EQUAL" if v.equal else "DIFFERENT"
        lines.append(
            f"{v.table}: {verdict}: {v.source_items:,} source items compared, {v.target_rows:,} target rows; "
            f"missing {v.missing:,}, extra {extra}, differing {v.differing:,}, rejected {v.rejects:,}"
        )
        if v.no_column:
            lines.append(f"  source attributes with no column in the target: {', '.join(sorted(v.no_column))}")
        for kind in ("missing", "extra", "differing"):
            for d in v.examples[kind]:
                detail = f" (columns {', '.join(d.columns)})" if d.columns else ""
                lines.append(f"  {kind}: {d.key}{detail}")
    return lines
