"""CREATE and ALTER statements for target tables, rendered with psycopg.sql (identifiers quoted)."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from podyn_fast._core import Layout, column_type

# Column types the layout may name; rendered from this fixed set, never from input text.
_SQL_TYPES = {t: sql.SQL(t) for t in ("text", "numeric", "bytea", "boolean", "text[]", "numeric[]", "bytea[]", "jsonb")}


def column_type_sql(ty: str) -> sql.SQL:
    """The SQL of a column type from the layout's fixed set."""
    try:
        return _SQL_TYPES[ty]
    except KeyError:
        raise ValueError(f"unsupported column type {ty!r}") from None


def key_column_names(layout: Layout) -> list[str]:
    """The columns of the key attributes (partition key first), as the layout names them."""
    key_types = {name: column_type(ty) for name, ty in layout.keys}
    by_attr = {attr: col for attr, ty, col in layout.columns if key_types.get(attr) == ty}
    return [by_attr[name] for name, _ in layout.keys]


def create_table(schema: str, table: str, layout: Layout, *, primary_key: bool = True) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` with the layout's columns, the key columns NOT NULL and, unless
    deferred to after the load, the key as primary key."""
    keys = set(key_column_names(layout))
    defs = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(col), column_type_sql(ty), sql.SQL(" NOT NULL") if col in keys else sql.SQL("")
        )
        for _, ty, col in layout.columns
    ]
    if layout.document is not None:
        defs.append(sql.SQL("{} jsonb").format(sql.Identifier(layout.document)))
    if primary_key:
        defs.append(primary_key_sql(layout))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({})").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(defs)
    )


def distribute(schema: str, table: str, layout: Layout) -> sql.Composed:
    """Citus: distribute the table by its partition key column (before it holds any row)."""
    return sql.SQL("SELECT create_distributed_table({}::regclass, {})").format(
        sql.Literal(sql.Identifier(schema, table).as_string(None)), sql.Literal(key_column_names(layout)[0])
    )


def primary_key_sql(layout: Layout) -> sql.Composed:
    """``PRIMARY KEY (partition key column[, sort key column])``."""
    return sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key_column_names(layout))))


def add_primary_key(schema: str, table: str, layout: Layout) -> sql.Composed:
    """Add the primary key after a load that deferred it."""
    return sql.SQL("ALTER TABLE {}.{} ADD {}").format(
        sql.Identifier(schema), sql.Identifier(table), primary_key_sql(layout)
    )


def create_index(schema: str, table: str, name: str, columns: Sequence[str]) -> sql.Composed:
    """``CREATE INDEX IF NOT EXISTS`` on a secondary index's key columns."""
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
        sql.Identifier(name),
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
    )


def add_columns(schema: str, table: str, columns: Sequence[tuple[str, str, str]]) -> sql.Composed:
    """``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` for registry entries (attribute, type, column)."""
    return sql.SQL("ALTER TABLE {}.{} {}").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(col), column_type_sql(ty))
            for _, ty, col in columns
        ),
    )
