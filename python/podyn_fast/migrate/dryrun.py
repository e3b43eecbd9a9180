"""The dry run: with no PostgreSQL URL, `migrate` prints the SQL a load would run, as Podyn did.

The output is a psql script: the DDL of each table, then per Scan page (or page of an export's
data file, with ``--export``) a text-format ``COPY … FROM STDIN;`` block ending in ``\\.`` (the
rows the Rust core encodes for migrate, rendered as text), an ``ALTER TABLE`` wherever new
attributes appear, and the indexes at the end.
``psql -f`` (or a pipe into psql) loads the same tables a direct migrate would, minus podyn-fast's
state schema: the script is not resumable and captures no stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from psycopg import sql

from podyn_fast import state
from podyn_fast._core import Layout
from podyn_fast.codec import Codec, Unknown
from podyn_fast.dynamo.client import RawDynamo, s3_client
from podyn_fast.dynamo.exports import ExportFileReader
from podyn_fast.dynamo.scan import PageReader, RateLimiter, SegmentReader
from podyn_fast.dynamo.tables import SourceTable, describe, list_tables
from podyn_fast.errors import MigrateError
from podyn_fast.migrate import snapshot
from podyn_fast.migrate.plan import index_statements, wanted_state
from podyn_fast.postgres import ddl
from podyn_fast.postgres.copy import copy_statement
from podyn_fast.settings import MigrateConfig

log = logging.getLogger("podyn_fast")


@dataclass
class DryRunReport:
    name: str
    items: int = 0
    pages: int = 0
    rejects: int = 0


class Script:
    """Writes statements and COPY blocks to a binary stream, as UTF-8."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def statement(self, stmt: sql.Composable) -> None:
        self.out.write(stmt.as_string(None).encode() + b";\n")

    def comment(self, text: str) -> None:
        for line in text.splitlines():
            self.out.write(b"-- " + line.encode() + b"\n")

    def copy(self, stmt: sql.Composable, text_rows: bytes) -> None:
        self.statement(stmt)
        self.out.write(text_rows)
        self.out.write(b"\\.\n")


def run(cfg: MigrateConfig, out: BinaryIO) -> list[DryRunReport]:
    """Print the script for every table of ``cfg`` (its PostgreSQL URL is not used)."""
    dynamo = RawDynamo.of(cfg.aws)
    export = snapshot.read_export(cfg, dynamo) if cfg.export else None
    names = [export.table_name] if export else list(cfg.tables) or list_tables(dynamo)
    if not names:
        raise MigrateError("no DynamoDB tables to migrate (ListTables returned none)")
    # Every table is described before anything is printed: a missing one stops the run untouched.
    sources = [describe(dynamo, name) for name in names]
    if export is not None:
        sources = [snapshot.from_export(cfg, sources[0], export)]
    script = Script(out)
    script.comment(
        "podyn-fast dry run: the SQL `podyn-fast migrate` would run, without its state schema.\n"
        "Load it with: psql -v ON_ERROR_STOP=1 -f this-file.sql"
    )
    out.write(b"SET client_encoding = 'UTF8';\n")
    return [_table(dynamo, cfg, source, script) for source in sources]


def _table(dynamo: RawDynamo, cfg: MigrateConfig, source: SourceTable, script: Script) -> DryRunReport:
    table, columns = wanted_state(cfg, source)
    layout = Layout(table.keys, columns, mode=cfg.mode, document=table.document_column, lower_case=table.lower_case)
    script.comment(f"\ntable {source.name}")
    script.statement(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.target_schema)))
    script.statement(ddl.create_table(table.target_schema, table.target_table, layout))
    if cfg.citus:
        script.statement(ddl.distribute(table.target_schema, table.target_table, layout))
    report = DryRunReport(source.name)
    if not cfg.load:
        return report
    codec = _PlannedCodec(table, layout, script, cfg.column_limit)
    for reader in _readers(dynamo, cfg, source, codec):
        reader.start()
        try:
            while (page := reader.next_page()) is not None:
                encoded = codec.complete(page)
                layout = reader.layout = codec.layout
                if encoded.row_count:
                    stmt = copy_statement(table.target_schema, table.target_table, layout.column_names, binary=False)
                    script.copy(stmt, layout.copy_text(encoded.rows))
                for reject in encoded.rejects:
                    key = reject.key.decode(errors="replace")
                    log.warning("%s: item %s cannot be represented, left out: %s", source.name, key, reject.reason)
                report.items += encoded.row_count
                report.rejects += len(encoded.rejects)
                report.pages += 1
        finally:
            reader.stop()
    for stmt in index_statements(table, codec.layout):
        script.statement(stmt)
    return report


def _readers(dynamo: RawDynamo, cfg: MigrateConfig, source: SourceTable, codec: Codec) -> Iterator[PageReader]:
    """The source's pages, in one pass: a Scan of the whole table, or each data file of its export
    in turn (made as it comes, with the layout the codec has by then)."""
    if source.export is None:
        yield SegmentReader(
            dynamo,
            source.name,
            segment=0,
            total_segments=1,
            start_key=None,
            layout=codec.layout,
            limiter=RateLimiter(cfg.scan_rate),
            consistent_read=cfg.consistent_read,
        )
        return
    s3 = s3_client(cfg.aws)
    for data in source.export.files:
        yield ExportFileReader(s3, source.export.location.bucket, data, start=None, layout=codec.layout)


class _PlannedCodec(Codec):
    """The dry run's codec: columns named as migrate's registry would name them, each addition
    printed as its ALTER TABLE."""

    def __init__(self, table: state.TableState, layout: Layout, script: Script, column_limit: int) -> None:
        super().__init__(table, layout)
        self.script, self.column_limit = script, column_limit

    def extend(self, unknown: Unknown) -> None:
        layout, table = self.layout, self.table
        added, document = state.plan_additions(layout, layout.document, unknown, self.column_limit)
        if not added and document == layout.document:
            raise MigrateError(f"table {table.table_name!r}: no column could be planned for {unknown!r}")
        new = list(added) + ([("", "jsonb", document)] if document != layout.document and document else [])
        self.script.statement(ddl.add_columns(table.target_schema, table.target_table, new))
        self.layout = layout.with_columns(added, document=document)
