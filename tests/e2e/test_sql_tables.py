"""CTAS tables outlive a restart (issue #5, writes): CREATE TABLE ... AS writes Parquet and records
the table in `DATA_DIR/sql/tables.json`; after the broker restarts (SIGTERM or kill -9) the table
answers SELECT again. Tables at s3:// locations (SeaweedFS) are registered through the same store
settings the write used, before and after a restart."""

from __future__ import annotations

import json
import socket

import pytest

from e2e_util import create_topic, pg_conninfo, wait_until

psycopg = pytest.importorskip("psycopg")

ROWS = [(n, n * 0.5, "d%d" % (n % 3)) for n in range(1, 41)]


def fill(broker, topic: str) -> None:
    with psycopg.connect(pg_conninfo(broker), autocommit=True) as conn:
        values = ", ".join("('%s')" % json.dumps({"n": n, "x": x, "d": d}) for n, x, d in ROWS)
        conn.execute(f"INSERT INTO {topic} (_value) VALUES {values}")


def select(broker, sql: str) -> list[tuple]:
    with psycopg.connect(pg_conninfo(broker), autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def restart(broker, stop: str = "sigterm") -> None:
    """Stops (SIGTERM or kill -9) and starts the broker, then waits for its PostgreSQL port
    (start() waits for the Kafka and HTTP ones)."""
    if stop == "kill9":
        broker.kill9()
    else:
        broker.stop()
    broker.start()

    def accepts():
        try:
            with socket.create_connection((broker.host, broker.pg_port), timeout=1):
                return True
        except OSError:
            return False
    wait_until(accepts, timeout=30, interval=0.05, what="the PostgreSQL port after the restart")


def run(broker, sql: str) -> str:
    """A statement without rows (CTAS answers over PostgreSQL with its status only)."""
    with psycopg.connect(pg_conninfo(broker), autocommit=True) as conn:
        return conn.execute(sql).statusmessage


def by_device(rows) -> list[tuple]:
    out = {}
    for n, x, d in rows:
        c, s = out.get(d, (0, 0.0))
        out[d] = (c + 1, s + x)
    return sorted((d, c, s) for d, (c, s) in out.items())


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_ctas_tables_are_there_after_a_restart(make_broker, tmp_path, stop):
    b = make_broker(http=True)
    create_topic(b.bootstrap, "nums", 1, config={"value.format": "json", "value.schema": "n BIGINT, x DOUBLE, d STRING"})
    fill(b, "nums")
    location = tmp_path / "summary_table"
    run(b, "CREATE TABLE summary WITH (format = 'parquet', compression = 'zstd') AS "
              "SELECT d, count(*) AS c, sum(x) AS s FROM nums GROUP BY d")
    run(b, f"CREATE TABLE evens WITH (format = 'parquet', bucket_count = 3, location = '{location}') AS "
              "SELECT n, x FROM nums WHERE n % 2 = 0")
    want_summary = by_device(ROWS)
    want_evens = [(n, x) for n, x, _ in ROWS if n % 2 == 0]
    assert select(b, "SELECT d, c, s FROM summary ORDER BY d") == want_summary
    assert select(b, "SELECT n, x FROM evens ORDER BY n") == want_evens
    catalog = json.loads((b.data_dir / "sql" / "tables.json").read_text())
    assert sorted(t["name"] for t in catalog["tables"]) == ["evens", "summary"]

    restart(b, stop)
    assert select(b, "SELECT d, c, s FROM summary ORDER BY d") == want_summary
    assert select(b, "SELECT n, x FROM evens ORDER BY n") == want_evens
    names = {r[0] for r in select(b, "SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = 'public'")}
    assert {"summary", "evens", "nums"} <= names, names


def test_ctas_to_s3_is_queryable_and_survives_a_restart(make_broker, seaweedfs):
    b = make_broker("--cold-store", seaweedfs.url("cold"), env=seaweedfs.env, http=True)
    create_topic(b.bootstrap, "nums", 1, config={"value.format": "json", "value.schema": "n BIGINT, x DOUBLE, d STRING"})
    fill(b, "nums")
    explicit = seaweedfs.url("elsewhere/odds")
    run(b, f"CREATE TABLE odds WITH (format = 'parquet', bucket_count = 2, location = '{explicit}') AS "
              "SELECT n, x FROM nums WHERE n % 2 = 1")
    run(b, "CREATE TABLE summary WITH (format = 'parquet') AS SELECT d, count(*) AS c, sum(x) AS s FROM nums GROUP BY d")
    want_odds = [(n, x) for n, x, _ in ROWS if n % 2 == 1]
    want_summary = by_device(ROWS)
    assert select(b, "SELECT n, x FROM odds ORDER BY n") == want_odds
    assert select(b, "SELECT d, c, s FROM summary ORDER BY d") == want_summary
    stored = seaweedfs.filesystem().get_file_info(f"{seaweedfs.bucket}/elsewhere/odds/part-00001.parquet")
    assert stored.size > 0
    restart(b)
    assert select(b, "SELECT n, x FROM odds ORDER BY n") == want_odds
    assert select(b, "SELECT d, c, s FROM summary ORDER BY d") == want_summary
