"""What to export, read from the database's own catalog inside the backup's snapshot:
the tables of the ``public`` schema in foreign-key dependency order, their columns, the
identity/serial sequences, the migration version and the server version.

Tables are discovered, not listed, so a table added by a later migration is backed up
without touching this job. Left out: the tables named in the exclusions (the cache and
rate-limit windows by default: disposable, rebuilt by use) and yoyo's bookkeeping, whose
content is recorded as the manifest's migration version instead (a restore re-applies
the migrations up to it, which recreates yoyo's tables itself).
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import Any

#: yoyo-migrations' own tables.
YOYO_TABLES = frozenset({"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"})

# Plain and partitioned tables (not the partitions themselves: a partitioned table is
# exported whole through its parent), with their size on disk (heap and TOAST, a
# partitioned table's over its partitions): the largest are started first, so the
# parallel export does not end waiting on one big table started last.
TABLES = """
SELECT c.relname AS name, c.relkind = 'p' AS partitioned,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_table_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p)::bigint
            ELSE pg_table_size(c.oid) END AS size
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace
   AND c.relkind IN ('r', 'p')
   AND NOT c.relispartition
 ORDER BY c.relname
"""

# Generated columns are left out: COPY cannot write them and a restore recomputes them.
COLUMNS = """
SELECT c.relname AS table_name, a.attname AS name, a.attnotnull AS not_null,
       t.typname AS type_name, t.typcategory AS category
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE c.relnamespace = 'public'::regnamespace
   AND c.relkind IN ('r', 'p')
   AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY c.relname, a.attnum
"""

FOREIGN_KEYS = """
SELECT DISTINCT child.relname AS child, parent.relname AS parent
  FROM pg_constraint k
  JOIN pg_class child ON child.oid = k.conrelid
  JOIN pg_class parent ON parent.oid = k.confrelid
 WHERE k.contype = 'f' AND k.connamespace = 'public'::regnamespace
"""

# Sequences owned by a column (identity and serial columns). Read inside the snapshot,
# but sequences are not transactional: the value is at least every id in the snapshot.
SEQUENCES = """
SELECT c.relname AS table_name, a.attname AS column_name, s.last_value
  FROM pg_depend d
  JOIN pg_class c ON c.oid = d.refobjid
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
  JOIN pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
  JOIN pg_sequences s ON s.schemaname = 'public' AND s.sequencename = sc.relname
 WHERE c.relnamespace = 'public'::regnamespace AND d.deptype IN ('a', 'i')
 ORDER BY 1, 2
"""

MIGRATIONS = """
SELECT migration_id FROM _yoyo_migration ORDER BY migration_id
"""

HAS_MIGRATION_TABLE = "SELECT to_regclass('public._yoyo_migration') IS NOT NULL AS present"

SERVER = """
SELECT current_setting('server_version') AS version, current_setting('server_version_num')::int AS num
"""


@dataclass(frozen=True)
class Column:
    name: str
    not_null: bool
    type_name: str
    category: str  # pg_type.typcategory: 'S' string, 'U' user (json/jsonb are 'U'), ...


@dataclass
class Table:
    name: str
    partitioned: bool
    columns: list[Column]
    depends_on: list[str] = field(default_factory=list)
    size: int = 0  # bytes on disk: an estimate of the work, for scheduling only


@dataclass(frozen=True)
class Schema:
    tables: list[Table]  # dependency order: parents before children
    sequences: dict[str, int]  # "table.column" -> last value
    migrations: list[str]
    server_version: str
    server_version_num: int

    @property
    def migration_version(self) -> str | None:
        return self.migrations[-1] if self.migrations else None


def read(conn: Any, *, exclude: frozenset[str]) -> Schema:
    """The schema to export, read on ``conn`` (inside the snapshot transaction)."""
    cur = conn.cursor()
    skip = exclude | YOYO_TABLES
    columns: dict[str, list[Column]] = {}
    for row in cur.execute(COLUMNS):
        columns.setdefault(row["table_name"], []).append(
            Column(row["name"], row["not_null"], row["type_name"], row["category"]))
    tables = {row["name"]: Table(row["name"], row["partitioned"], columns.get(row["name"], []),
                                 size=row["size"])
              for row in cur.execute(TABLES) if row["name"] not in skip}
    for row in cur.execute(FOREIGN_KEYS):
        if row["child"] in tables and row["parent"] in tables and row["child"] != row["parent"]:
            tables[row["child"]].depends_on.append(row["parent"])
    sequences = {f"{row['table_name']}.{row['column_name']}": row["last_value"]
                 for row in cur.execute(SEQUENCES)
                 if row["table_name"] in tables and row["last_value"] is not None}
    migrations = ([row["migration_id"] for row in cur.execute(MIGRATIONS)]
                  if cur.execute(HAS_MIGRATION_TABLE).fetchone()["present"] else [])
    server = cur.execute(SERVER).fetchone()
    return Schema(tables=dependency_order(tables), sequences=sequences, migrations=migrations,
                  server_version=server["version"], server_version_num=server["num"])


def dependency_order(tables: dict[str, Table]) -> list[Table]:
    """Parents before children (by name where the order is free). A foreign-key cycle,
    which the schema doesn't have, falls back to name order (the restore adds foreign
    keys after loading, so it still loads)."""
    for table in tables.values():
        table.depends_on.sort()
    sorter = graphlib.TopologicalSorter({name: tables[name].depends_on for name in tables})
    order: list[str] = []
    try:
        sorter.prepare()
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            order.extend(ready)
            sorter.done(*ready)
    except graphlib.CycleError:
        order = sorted(tables)
    return [tables[name] for name in order]
