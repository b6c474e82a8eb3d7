"""Versioned migrations: numbered .sql files in sitewatch/migrations.

`migrate` is idempotent and safe when several processes run it at once: it
holds a transaction-level advisory lock while it reads the version and applies
what is missing, all in one transaction.
"""

from importlib import resources

from ..errors import SchemaTooNew

# Arbitrary constant shared by every sitewatch process: "the migration lock".
MIGRATION_LOCK_KEY = 0x5173_7761_7463_68


def migrations() -> list[tuple[int, str, str]]:
    """[(version, filename, sql)] in order."""
    found = []
    for item in resources.files("sitewatch.db.migrations").iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.name, item.read_text(encoding="utf-8")))
    return sorted(found)


LATEST_VERSION = migrations()[-1][0]


def _too_new(version: int) -> SchemaTooNew:
    return SchemaTooNew(f"the database schema is at version {version}, newer than this sitewatch "
                        f"understands ({LATEST_VERSION}); upgrade sitewatch")


def current_version(cur) -> int:
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    return cur.fetchone()[0]


def migrate(conn) -> list[str]:
    """Bring the database to LATEST_VERSION; return the names of the migrations applied."""
    applied = []
    with conn:  # one transaction: all or nothing
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                        " version integer PRIMARY KEY, name text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())")
            version = current_version(cur)
            if version > LATEST_VERSION:
                raise _too_new(version)
            for number, name, sql in migrations():
                if number > version:
                    cur.execute(sql)
                    cur.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (number, name))
                    applied.append(name)
    return applied


def check_version(conn) -> int:
    """Raise SchemaTooNew if a newer sitewatch migrated this database."""
    with conn, conn.cursor() as cur:
        version = current_version(cur)
    if version > LATEST_VERSION:
        raise _too_new(version)
    return version
