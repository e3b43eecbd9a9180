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


def create_table(schema: str, table: str, layout: Layout) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` with the layout's columns and the key as primary key."""
    key_types = {name: column_type(ty) for name, ty in layout.keys}
    key_cols = {attr: col for attr, ty, col in layout.columns if key_types.get(attr) == ty}
    defs = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(col),
            column_type_sql(ty),
            sql.SQL(" NOT NULL") if key_cols.get(attr) == col else sql.SQL(""),
        )
        for attr, ty, col in layout.columns
    ]
    if layout.document is not None:
        defs.append(sql.SQL("{} jsonb").format(sql.Identifier(layout.document)))
    defs.append(
        sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(sql.Identifier(key_cols[name]) for name, _ in layout.keys)
        )
    )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({})").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(defs)
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
