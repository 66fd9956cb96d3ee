"""What a materialized view is: its table, and how to refresh it in part or in whole."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class View:
    """A view's SQL, kept together.

    `select` is the query computing the view's rows, with a `{scope}` placeholder
    that `refresh` fills with a join to the groups a batch touched and `rebuild`
    leaves empty. `groups` is a query of the touched groups' keys (from the
    fold's scope tables) and `match` the condition that ties a view row to one.
    `add`, for views whose rows are mergeable (counts, sums, min/max), merges the
    batch's new points into existing rows instead of recomputing their groups.
    `order`, if set, is the physical order a rebuild writes rows in, so that zone
    maps skip the row groups a read does not need (`runs`: by `last_seq`, as the fold).
    `narrow` fills an optional second placeholder, `{narrow}`, in a refresh: a
    join to the touched groups for a second input keyed otherwise, or one that
    cuts an input down early where the optimizer would not push `scope`.
    """

    name: str
    create: str
    select: str
    scope: str
    groups: str
    match: str
    add: str | None = None
    narrow: str = ""
    order: str = ""

    def refresh(self, con: duckdb.DuckDBPyConnection) -> None:
        """Recompute only the groups the current batch touched (then merge `add`)."""
        con.execute(f"CREATE OR REPLACE TEMP TABLE g AS {self.groups}")
        # fetchall: a result left half-read (fetchone) blocks the connection's next
        # register/unregister under DuckDB 2.0's streaming results.
        if con.execute("SELECT count(*) FROM g").fetchall() != [(0,)]:
            con.execute(f"DELETE FROM {self.name} v USING g WHERE {self.match}")
            con.execute(f"INSERT INTO {self.name} "
                        f"{self.select.format(scope=self.scope, narrow=self.narrow)}")
        if self.add is not None:
            con.execute(self.add)

    def rebuild(self, con: duckdb.DuckDBPyConnection) -> None:
        """Recompute every row from the base tables."""
        con.execute(f"DELETE FROM {self.name}")
        select = self.select.format(scope="", narrow="")
        if self.order:
            select = f"SELECT * FROM ({select}) ORDER BY {self.order}"
        con.execute(f"INSERT INTO {self.name} {select}")


def group_key(*cols: str) -> str:
    """One 128-bit integer standing for a group's key columns (md5 of an unambiguous
    encoding: each value length-prefixed, NULL apart from every string).

    Joins, windows and scans on it cost a fraction of those on four strings, two
    of them compared NULL-safe. md5 is fixed by its standard, so a key computed
    today matches one stored by an older DuckDB; a collision needs ~2^64 groups."""
    parts = ", ".join(f"coalesce(length({c}) || ':' || {c}, '-')" for c in cols)
    return f"md5_number(concat({parts}))"


# The only key columns that may be NULL in a view (a run may have no model).
NULLABLE_KEYS = frozenset({"model", "hardware"})


def same(a: str, b: str, *cols: str) -> str:
    """Join condition on key columns, NULL matching NULL where a key may be NULL.

    The others compare with `=`: DuckDB pushes the build side's min/max of an
    equality key into the other side's scan, so a MERGE of recent days reads only
    the row groups holding them instead of the whole table."""
    return " AND ".join(f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}" if c in NULLABLE_KEYS
                        else f"{a}.{c} = {b}.{c}" for c in cols)
