"""SQL over topics (issue #5): every topic is a table `lakestream.public.<topic>`, served over the
PostgreSQL wire protocol (psql, psycopg 3, asyncpg) and HTTP `POST /sql`, reading the hot log and
the cold Parquet objects as one table.

The seeds' scenario end to end: `lakestream gen iot` produces JSON sensor readings; per-device
aggregates over a time range (through psql and psycopg) match what a Kafka consumer reads back;
one window goes to a single Snappy Parquet file with CREATE TABLE ... AS, which DuckDB and
pyarrow read back to the same rows. Then: asyncpg's extended protocol (prepared statements with
parameters, typed columns), hot + cold exactly once, EXPLAIN showing pushed-down ranges and
pruned cold objects, latest-N from the tail, bad input, the HTTP formats, and a heavy query that
must not hold back Kafka clients.

Most tests share one broker (module scope) and its topics; the heavy-query tests get brokers of
their own, because the heavy query keeps the SQL engine busy."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

from conftest import Broker, lakestream_bin
from e2e_util import (consume_range, create_topic, http_sql, partition_status, pg_conninfo, produce_all, producer, psql,
                      read_all, thread_cpu_seconds, topic_status, wait_until)

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

IOT_RECORDS = 20_000
IOT_DEVICES = 8
IOT_PARTITIONS = 2
COLD_RECORDS = 20_000
COLD_PARTITIONS = 2
COLD_STEP_MS = 3        # record i of the cold topic has timestamp t0 + 3 i
BIG_RECORDS = 200_000   # the heavy query's topic
HEAVY_SQL = "SELECT count(*) FROM big a CROSS JOIN big b WHERE a.metric > b.metric"  # ~4e10 comparisons


# --------------------------------------------------------------------------- helpers
def gen_iot(broker, topic: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """`lakestream gen iot --topic TOPIC ARGS... --bootstrap ...`; fails unless it exits 0."""
    cmd = [lakestream_bin(), "gen", "iot", "--topic", topic, *args, "--bootstrap", broker.bootstrap]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{' '.join(cmd)} -> exit {r.returncode}\nstderr: {r.stderr}"
    return r


def ms_iso(ms: int) -> str:
    """A millisecond timestamp as an ISO 8601 literal in UTC, e.g. 2026-11-24T01:27:55.850Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def dt_ms(d: dt.datetime) -> int:
    return round(d.timestamp() * 1000)


def pg_connect(broker, **kw):
    return psycopg.connect(pg_conninfo(broker, **kw), autocommit=True)


def scan_line(plan_rows) -> str:
    """The TopicScanExec line of an EXPLAIN [ANALYZE] answer (rows of (plan_type, plan))."""
    lines = [line.strip() for row in plan_rows for line in str(row[-1]).splitlines() if "TopicScanExec" in line]
    assert len(lines) == 1, f"want one TopicScanExec line, got {lines}\nplan: {plan_rows}"
    return lines[0]


_SI = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def scan_metrics(line: str) -> dict[str, float]:
    """`metrics=[a=1, b=2.5 K, ...]` of an EXPLAIN ANALYZE line -> {a: 1, b: 2500}."""
    m = re.search(r"metrics=\[(.*)\]", line)
    assert m, f"no metrics in {line}"
    out = {}
    for part in m.group(1).split(", "):
        name, _, value = part.partition("=")
        vm = re.fullmatch(r"([\d.]+)\s*([KMGT]?)(?:B)?", value.strip())
        if vm:
            out[name.strip()] = float(vm.group(1)) * _SI[vm.group(2)]
    return out


def cold_objects(line: str) -> tuple[int, int]:
    m = re.search(r"cold_objects=(\d+)/(\d+)", line)
    assert m, f"no cold_objects=k/m in {line}"
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Reading:
    partition: int
    offset: int
    timestamp: int   # the record's CreateTime (ms)
    key: bytes
    value: bytes
    event_timestamp: int
    device: str
    metric: float


def per_device(readings) -> dict[str, tuple]:
    """device -> (count, min, max, sum) of metric."""
    out: dict[str, list] = {}
    for r in readings:
        a = out.setdefault(r.device, [0, float("inf"), float("-inf"), 0.0])
        a[0] += 1
        a[1] = min(a[1], r.metric)
        a[2] = max(a[2], r.metric)
        a[3] += r.metric
    return {d: tuple(a) for d, a in out.items()}


def check_aggregates(got_rows, expected: dict[str, tuple], where: str) -> None:
    """Rows (device, count, min, max, sum, avg) against expected (count, min, max, sum)."""
    got = {str(r[0]): r[1:] for r in got_rows}
    assert sorted(got) == sorted(expected), f"{where}: devices {sorted(got)}, want {sorted(expected)}"
    for device, (n, lo, hi, total) in expected.items():
        g = got[device]
        assert int(g[0]) == n, f"{where}: {device} count {g[0]}, want {n}"
        assert float(g[1]) == lo and float(g[2]) == hi, f"{where}: {device} min/max {g[1]}/{g[2]}, want {lo}/{hi}"
        assert float(g[3]) == pytest.approx(total, rel=1e-9, abs=1e-9), f"{where}: {device} sum {g[3]}, want {total}"
        assert float(g[4]) == pytest.approx(total / n, rel=1e-9, abs=1e-9), f"{where}: {device} avg {g[4]}"


AGG_SELECT = ("SELECT device_name, count(*) AS n, min(metric) AS lo, max(metric) AS hi, sum(metric) AS total, "
              "avg(metric) AS mean FROM iot")


# --------------------------------------------------------------------------- module fixtures
@pytest.fixture(scope="module")
def lake_broker(tmp_path_factory):
    """One broker for most tests: HTTP on, the cold tier visiting every 200 ms."""
    b = Broker(tmp_path_factory.mktemp("sql"), ["--tier-interval-ms", "200"], http=True)
    b.start()
    yield b
    b._check_unexpected_exit()
    problem = b.unexpected_exit
    b.stop()
    if problem:
        pytest.fail(f"{problem}\n{b.log_tail()}", pytrace=False)


@pytest.fixture
def lake(lake_broker, request):
    """The shared broker, with its log attached to a failing test's report."""
    request.node._lakestream_brokers = [lake_broker]
    return lake_broker


@dataclass
class Iot:
    readings: list[Reading]
    gen_stderr: str
    lo: int   # a time window [lo, hi) over the middle half of the readings
    hi: int

    def window(self) -> list[Reading]:
        return [r for r in self.readings if self.lo <= r.timestamp < self.hi]


@pytest.fixture(scope="module")
def iot(lake_broker) -> Iot:
    """`gen iot --topic iot --count 20000 --rate 0` (2 partitions, 8 devices, a seed), read back
    with confluent-kafka: what SQL must agree with."""
    r = gen_iot(lake_broker, "iot", "--count", str(IOT_RECORDS), "--rate", "0", "--partitions",
                str(IOT_PARTITIONS), "--devices", str(IOT_DEVICES), "--seed", "42")
    msgs = read_all(lake_broker.bootstrap, "iot", range(IOT_PARTITIONS))
    readings = []
    for p, ms in msgs.items():
        for m in ms:
            event = json.loads(m.value())
            readings.append(Reading(p, m.offset(), m.timestamp()[1], m.key(), m.value(), event["timestamp"],
                                    event["device_name"], event["metric"]))
    stamps = sorted(r.timestamp for r in readings)
    lo, hi = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    if lo == hi:  # all in one millisecond (a very fast machine): then the window is everything
        lo, hi = stamps[0], stamps[-1] + 1
    return Iot(readings, r.stderr, lo, hi)


@dataclass
class Cold:
    topic: str
    t0: int
    values: dict[tuple[int, int], bytes]   # (partition, offset) -> value
    timestamps: dict[tuple[int, int], int]
    status: dict

    def index(self, partition: int, offset: int) -> int:
        return offset * COLD_PARTITIONS + partition


@pytest.fixture(scope="module")
def cold(lake_broker) -> Cold:
    """A JSON topic of 20,000 records (partition i % 2, timestamp t0 + 3 i) with 32 KiB segments and
    no local retention: everything but the active segments moves to Parquet objects."""
    topic = "coldt"
    create_topic(lake_broker.bootstrap, topic, COLD_PARTITIONS,
                 config={"segment.bytes": "32768", "local.retention.bytes": "0", "value.format": "json",
                         "value.schema": "i BIGINT, s STRING"})
    t0 = int(time.time() * 1000) - 10 * 60_000
    records = [dict(key=b"k%d" % (i % 7), value=json.dumps({"i": i, "s": "x" * 50}).encode(),
                    partition=i % COLD_PARTITIONS, timestamp=t0 + COLD_STEP_MS * i) for i in range(COLD_RECORDS)]
    d = produce_all(producer(lake_broker.bootstrap, **{"linger.ms": 5, "batch.num.messages": 200}), topic, records)
    assert not d.errors, d.errors[:3]
    values = {(m.partition(), m.offset()): m.value() for m in d.ok}
    timestamps = {(m.partition(), m.offset()): m.timestamp()[1] for m in d.ok}
    assert len(values) == COLD_RECORDS

    def tiered():
        parts = partition_status(topic_status(lake_broker, topic))
        for s in parts.values():
            c = s.get("cold") or {}
            if not (c.get("objects", 0) >= 10 and c["end_offset"] >= s["local_start_offset"]
                    and s["local_start_offset"] >= 0.8 * s["high_watermark"]):
                return None
        return parts

    status = wait_until(tiered, timeout=60, interval=0.2, what=f"most of {topic} in the cold tier")
    return Cold(topic, t0, values, timestamps, status)


BAD_VALUES = [
    b'{"device_name":"a","metric":1.5}',
    b"not json",
    b'{"device_name":"b","metric":',
    b'{"device_name":"c","metric":"high"}',
    None,  # a tombstone: no value, no error
    b'{"device_name":"d","metric":2}',
]


@pytest.fixture(scope="module")
def badjson(lake_broker) -> str:
    topic = "badjson"
    create_topic(lake_broker.bootstrap, topic, 1,
                 config={"value.format": "json", "value.schema": "device_name STRING, metric DOUBLE"})
    d = produce_all(producer(lake_broker.bootstrap, **{"linger.ms": 50}), topic,
                    [dict(key=b"k%d" % n, value=v, partition=0) for n, v in enumerate(BAD_VALUES)])
    assert not d.errors and len(d.ok) == len(BAD_VALUES)
    return topic


# --------------------------------------------------------------------------- gen + the seeds' scenario
def test_gen_iot_makes_a_typed_json_topic(lake, iot):
    """`gen iot` created the topic (2 partitions) and sent 20,000 JSON readings keyed by device
    whose CreateTime is the event's timestamp; SQL sees typed columns and no decode errors."""
    assert f"produced {IOT_RECORDS} records to iot" in iot.gen_stderr, iot.gen_stderr
    assert "created topic iot with 2 partitions" in iot.gen_stderr, iot.gen_stderr
    assert len(iot.readings) == IOT_RECORDS
    for r in iot.readings:
        assert r.key == r.device.encode() and r.timestamp == r.event_timestamp, r
        assert re.fullmatch(rb'\{"timestamp":\d+,"device_name":"sensor-\d+","metric":-?\d+(\.\d+)?\}', r.value), r
    assert {r.device for r in iot.readings} == {f"sensor-{k}" for k in range(1, IOT_DEVICES + 1)}

    rows = psql(lake, "SELECT count(*), count(DISTINCT device_name), count(_error), count(metric), "
                      "min(_partition), max(_partition) FROM iot")
    assert rows == [[str(IOT_RECORDS), str(IOT_DEVICES), "0", str(IOT_RECORDS), "0", "1"]]
    with pg_connect(lake) as conn:
        cur = conn.execute("SELECT _partition, _offset, _timestamp, _key, _key_text, _value, timestamp, "
                           "device_name, metric, _error FROM iot LIMIT 1")
        types = [c.type_code for c in cur.description]
        # int4, int8, timestamptz, bytea, text, bytea, int8, text, float8, text
        assert types == [23, 20, 1184, 17, 25, 17, 20, 25, 701, 25], cur.description
        cols = conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_name = 'iot' ORDER BY ordinal_position").fetchall()
        names = [c[0] for c in cols]
        assert names[:7] == ["_partition", "_offset", "_timestamp", "_key", "_key_text", "_headers", "_value"]
        assert names[7:] == ["timestamp", "device_name", "metric", "_error"], cols


def test_seed_scenario_time_window_aggregates_and_ctas_to_parquet(lake, iot, tmp_path):
    """Per-device count/min/max/sum/avg of `metric` over [lo, hi) of `_timestamp`, through psql
    (simple protocol, literal bounds) and psycopg (extended protocol, datetime parameters), equal
    what was produced. Then CREATE TABLE ... WITH (format='parquet', compression='snappy',
    bucket_count=1) AS the window writes exactly one Snappy Parquet file, which pyarrow and DuckDB
    read back to the very rows of the window (and the same aggregates)."""
    import duckdb
    import pyarrow.parquet as pq

    window = iot.window()
    assert 0 < len(window) < IOT_RECORDS
    expected = per_device(window)
    where = f"_timestamp >= '{ms_iso(iot.lo)}' AND _timestamp < '{ms_iso(iot.hi)}'"

    rows = psql(lake, f"{AGG_SELECT} WHERE {where} GROUP BY device_name ORDER BY device_name")
    check_aggregates(rows, expected, "psql")

    with pg_connect(lake) as conn:
        rows = conn.execute(f"{AGG_SELECT} WHERE _timestamp >= %s AND _timestamp < %s "
                            "GROUP BY device_name ORDER BY device_name", (ms_dt(iot.lo), ms_dt(iot.hi))).fetchall()
        check_aggregates(rows, expected, "psycopg")

        # CTAS: one window, one Snappy Parquet file.
        location = tmp_path / "iot_window"
        cur = conn.execute(f"CREATE TABLE iot_window WITH (format='parquet', compression='snappy', bucket_count=1, "
                           f"location='{location}') AS SELECT _partition, _offset, _timestamp, device_name, metric "
                           f"FROM iot WHERE {where}")
        assert cur.statusmessage == f"SELECT {len(window)}", cur.statusmessage
        files = sorted(p.name for p in location.iterdir())
        assert files == ["part-00000.parquet"], files
        sql_rows = conn.execute(f"SELECT _partition, _offset, _timestamp, device_name, metric FROM iot "
                                f"WHERE {where} ORDER BY _partition, _offset").fetchall()
        registered = conn.execute("SELECT count(*), sum(metric) FROM iot_window").fetchone()

    want = sorted((r.partition, r.offset, r.timestamp, r.device, r.metric) for r in window)
    assert [(p, o, dt_ms(t), d, m) for p, o, t, d, m in sql_rows] == want, "SQL rows of the window"
    assert registered[0] == len(window) and registered[1] == pytest.approx(sum(r.metric for r in window))

    path = location / "part-00000.parquet"
    meta = pq.ParquetFile(path).metadata
    codecs = {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups)
              for c in range(meta.num_columns)}
    assert codecs == {"SNAPPY"}, codecs
    assert meta.num_rows == len(window)
    table = pq.read_table(path)
    assert table.column_names == ["_partition", "_offset", "_timestamp", "device_name", "metric"]
    import pyarrow as pa
    ts = table.column("_timestamp").cast(pa.int64()).to_pylist()
    arrow_rows = sorted(zip(table.column("_partition").to_pylist(), table.column("_offset").to_pylist(), ts,
                            table.column("device_name").to_pylist(), table.column("metric").to_pylist()))
    assert arrow_rows == want, "pyarrow rows of the CTAS file"

    con = duckdb.connect()
    duck_rows = con.execute("SELECT _partition, _offset, epoch_ms(_timestamp), device_name, metric "
                            "FROM read_parquet(?) ORDER BY _partition, _offset", [str(path)]).fetchall()
    assert [tuple(r) for r in duck_rows] == want, "DuckDB rows of the CTAS file"
    duck_agg = con.execute("SELECT device_name, count(*), min(metric), max(metric), sum(metric), avg(metric) "
                           "FROM read_parquet(?) GROUP BY device_name ORDER BY device_name", [str(path)]).fetchall()
    check_aggregates(duck_agg, expected, "DuckDB")


def test_ctas_default_location_is_under_the_cold_store(lake, iot):
    """Without `location`, CTAS writes `<data-dir>/cold/tables/<name>/part-00000.parquet`, and the
    table answers queries."""
    import pyarrow.parquet as pq
    with pg_connect(lake) as conn:
        conn.execute("CREATE TABLE device_counts WITH (format='parquet', compression='snappy', bucket_count=1) "
                     "AS SELECT device_name, count(*) AS n FROM iot GROUP BY device_name")
        rows = conn.execute("SELECT device_name, n FROM device_counts ORDER BY device_name").fetchall()
    expected = {d: a[0] for d, a in per_device(iot.readings).items()}
    assert dict(rows) == expected
    folder = lake.data_dir / "cold" / "tables" / "device_counts"
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet"]
    table = pq.read_table(folder / "part-00000.parquet")
    assert dict(zip(table.column("device_name").to_pylist(), table.column("n").to_pylist())) == expected


def test_gen_keeps_its_rate_and_shows_progress(lake):
    """`--rate 400 --count 800` takes at least ~2 s, prints plain progress lines every second on
    a non-terminal stderr, then the summary; the records are there."""
    started = time.monotonic()
    r = gen_iot(lake, "paced", "--rate", "400", "--count", "800", "--devices", "3")
    elapsed = time.monotonic() - started
    assert elapsed >= 1.8, f"800 records at 400/s took only {elapsed:.2f}s"
    lines = r.stderr.splitlines()
    progress = [line for line in lines if re.fullmatch(r"sent \d+ records?, \d+/s", line)]
    assert progress, r.stderr
    assert "\r" not in r.stderr
    assert lines[-1] == "produced 800 records to paced: partition 0 offsets 0..=799", r.stderr
    status, _, body = http_sql(lake, "SELECT count(*) AS n, count(DISTINCT device_name) AS d FROM paced")
    assert status == 200, body
    assert json.loads(body)["rows"] == [{"n": 800, "d": 3}]


# --------------------------------------------------------------------------- asyncpg (extended protocol)
def test_asyncpg_prepared_statement_and_typed_columns(lake, iot):
    """A prepared statement with a parameter (`_offset >= $1`) gives the right count for several
    values; `fetch` with parameters returns typed values equal to what was produced."""
    by_partition = {p: sorted((r for r in iot.readings if r.partition == p), key=lambda r: r.offset)
                    for p in range(IOT_PARTITIONS)}

    async def run():
        conn = await asyncpg.connect(host=lake.host, port=lake.pg_port, user="anyone", database="lakestream",
                                     timeout=10)
        try:
            st = await conn.prepare("SELECT count(*) FROM iot WHERE _offset >= $1")
            counts = {n: await st.fetchval(n) for n in (0, 1, 5000, 9000, 10**9)}
            rows = await conn.fetch(
                "SELECT _partition, _offset, _timestamp, _key, _key_text, _value, timestamp, device_name, metric, "
                "_error FROM iot WHERE _partition = $1 AND _offset >= $2 AND _offset < $3 ORDER BY _offset", 1, 100, 110)
            return counts, rows
        finally:
            await conn.close()

    counts, rows = asyncio.run(run())
    for n, got in counts.items():
        assert got == sum(1 for r in iot.readings if r.offset >= n), f"count(*) WHERE _offset >= {n}"
    want = by_partition[1][100:110]
    assert len(rows) == len(want) == 10
    for row, r in zip(rows, want):
        assert (row["_partition"], row["_offset"]) == (1, r.offset)
        assert isinstance(row["_timestamp"], dt.datetime) and row["_timestamp"].utcoffset() == dt.timedelta(0)
        assert dt_ms(row["_timestamp"]) == r.timestamp
        assert row["_key"] == r.key and row["_key_text"] == r.device and row["_value"] == r.value
        assert row["timestamp"] == r.event_timestamp and isinstance(row["timestamp"], int)
        assert row["device_name"] == r.device
        assert row["metric"] == r.metric and isinstance(row["metric"], float)
        assert row["_error"] is None


def test_asyncpg_select_star(lake, iot):
    """`SELECT *` (which includes `_headers`) through asyncpg."""
    async def run():
        conn = await asyncpg.connect(host=lake.host, port=lake.pg_port, user="anyone", database="lakestream",
                                     timeout=10)
        try:
            return await conn.fetch("SELECT * FROM iot WHERE _partition = 0 AND _offset < 3 ORDER BY _offset")
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert [r["_offset"] for r in rows] == [0, 1, 2]
    assert all(r["_headers"] == [] for r in rows)


def test_asyncpg_headers_and_arrays(lake):
    """asyncpg decodes `_headers` (record[]: key text, value bytea) with their values, and
    arrays of other element types, through a prepared statement with parameters."""
    topic = "withheaders"
    create_topic(lake.bootstrap, topic, 1)
    records = [dict(key=b"k0", value=b"v0", headers=[("trace", b"t-0"), ("empty", b"")]),
               dict(key=b"k1", value=b"v1", headers=[("trace", b"t-1")]),
               dict(key=b"k2", value=b"v2")]
    d = produce_all(producer(lake.bootstrap), topic, records)
    assert not d.errors

    async def run():
        conn = await asyncpg.connect(host=lake.host, port=lake.pg_port, user="anyone", database="lakestream",
                                     timeout=10)
        try:
            rows = await conn.fetch(f"SELECT _offset, _headers FROM {topic} WHERE _offset >= $1 ORDER BY _offset", 0)
            arrays = await conn.fetchrow(f"SELECT array_agg(_offset) AS offsets, array_agg(_key_text) AS keys, "
                                         f"array_agg(_partition) AS partitions FROM {topic} WHERE _partition = $1", 0)
            return rows, arrays
        finally:
            await conn.close()

    rows, arrays = asyncio.run(run())
    got = [[tuple(h) for h in r["_headers"]] for r in rows]  # anonymous records: (key, value) tuples
    assert got == [[("trace", b"t-0"), ("empty", b"")], [("trace", b"t-1")], []], got
    assert sorted(arrays["offsets"]) == [0, 1, 2]
    assert sorted(arrays["keys"]) == ["k0", "k1", "k2"]
    assert arrays["partitions"] == [0, 0, 0]


# --------------------------------------------------------------------------- hot + cold
def test_hot_and_cold_read_as_one_table_exactly_once(lake, cold):
    """Most of the topic is in Parquet objects and the rest in the hot log; a scan returns every
    record exactly once, with the produced value, and ranges across the cold/hot boundary too."""
    for p, s in cold.status.items():
        assert s["cold"]["end_offset"] >= 0.8 * s["high_watermark"] and s["local_start_offset"] > 0, s

    with pg_connect(lake) as conn:
        rows = conn.execute(f"SELECT _partition, _offset, _value FROM {cold.topic}").fetchall()
        got = {}
        for p, o, v in rows:
            assert (p, o) not in got, f"({p}, {o}) returned twice"
            got[(p, o)] = v
        assert len(rows) == COLD_RECORDS
        assert got == cold.values

        # decoded columns and timestamps agree with the record index, cold and hot alike
        bad = conn.execute(f"SELECT count(*) FROM {cold.topic} WHERE i <> _offset * {COLD_PARTITIONS} + _partition "
                           f"OR _error IS NOT NULL").fetchone()[0]
        assert bad == 0

        # a range straddling where the hot log takes over from the cold tier
        status = partition_status(topic_status(lake, cold.topic))
        for p in range(COLD_PARTITIONS):
            boundary = status[p]["local_start_offset"]
            lo, hi = boundary - 150, boundary + 50
            rows = conn.execute(f"SELECT _offset, _value, _timestamp FROM {cold.topic} WHERE _partition = %s "
                                "AND _offset >= %s AND _offset < %s ORDER BY _offset", (p, lo, hi)).fetchall()
            assert [r[0] for r in rows] == list(range(lo, hi)), f"p{p} around {boundary}"
            assert all(v == cold.values[(p, o)] and dt_ms(t) == cold.timestamps[(p, o)] for o, v, t in rows)

    assert psql(lake, f"SELECT count(*), count(DISTINCT _partition * 1000000 + _offset) FROM {cold.topic}") == \
        [[str(COLD_RECORDS), str(COLD_RECORDS)]]


def test_explain_shows_pushdown_and_pruned_cold_objects(lake, cold):
    """EXPLAIN of a timestamp-range query shows the exact millisecond range handed to the scan and
    that most cold objects were pruned (cold_objects=k/m, 0 < k < m); EXPLAIN ANALYZE shows that
    only those were read (row groups read <= k, or some pruned by statistics) and the count is
    right. Offset and partition filters are pushed down too."""
    lo_i, hi_i = 10_000, 12_000
    lo, hi = cold.t0 + COLD_STEP_MS * lo_i, cold.t0 + COLD_STEP_MS * hi_i
    query = f"SELECT count(*) FROM {cold.topic} WHERE _timestamp >= '{ms_iso(lo)}' AND _timestamp < '{ms_iso(hi)}'"
    with pg_connect(lake) as conn:
        line = scan_line(conn.execute("EXPLAIN " + query).fetchall())
        assert f"timestamps=[{lo}, {hi})" in line, line
        k, m = cold_objects(line)
        assert 0 < k < m, line
        assert m >= 20, line

        analyzed = scan_line(conn.execute("EXPLAIN ANALYZE " + query).fetchall())
        k2, m2 = cold_objects(analyzed)
        assert 0 < k2 < m2, analyzed
        metrics = scan_metrics(analyzed)
        assert metrics.get("row_groups_pruned", 0) > 0 or 0 < metrics["row_groups_read"] <= k2, analyzed
        assert metrics["rows_kept"] == hi_i - lo_i, analyzed
        total_cold_bytes = sum(s["cold"]["bytes"] for s in cold.status.values())
        assert metrics["cold_bytes_read"] < total_cold_bytes / 2, (analyzed, total_cold_bytes)

        assert conn.execute(query).fetchone()[0] == hi_i - lo_i

        line = scan_line(conn.execute(f"EXPLAIN SELECT _value FROM {cold.topic} WHERE _partition = 1 "
                                      "AND _offset >= 100 AND _offset < 200").fetchall())
        assert "partitions=[1]" in line and "offsets=[100, 200)" in line, line
        k, m = cold_objects(line)
        assert 0 < k < m, line


def test_hot_time_range_reads_only_the_zones_that_can_match(lake):
    """A timestamp range over hot data reads only the runs of batches (zones) whose least and
    greatest record timestamps meet it: both bounds, with CreateTime out of order inside
    batches, and with a compressed batch (whose least timestamp is unknown) read but not
    missed. The count is exact and far fewer hot bytes are read than the partition holds."""
    topic = "hotzones"
    create_topic(lake.bootstrap, topic, 1, config={"remote.storage.enable": "false"})
    t0 = int(time.time() * 1000) - 3_600_000
    n = 40_000
    # Each batch of 100 records runs backwards in time; batches go forwards.
    stamps = [t0 + 100 * (i // 100) + (99 - i % 100) for i in range(n)]
    records = [dict(value=b"v%06d" % i + b"." * 60, partition=0, timestamp=stamps[i]) for i in range(n)]
    d = produce_all(producer(lake.bootstrap, **{"linger.ms": 20, "batch.num.messages": 100}), topic, records)
    assert not d.errors, d.errors[:3]
    # One late compressed batch with old timestamps: it may hold anything up to its max.
    late = [dict(value=b"late%d" % i, partition=0, timestamp=t0 + 20_050 + i) for i in range(5)]
    d = produce_all(producer(lake.bootstrap, **{"compression.type": "lz4"}), topic, late)
    assert not d.errors, d.errors[:3]
    stamps += [r["timestamp"] for r in late]
    lo, hi = t0 + 20_000, t0 + 20_400
    want = sum(1 for t in stamps if lo <= t < hi)
    query = f"SELECT count(*) FROM {topic} WHERE _timestamp >= '{ms_iso(lo)}' AND _timestamp < '{ms_iso(hi)}'"
    with pg_connect(lake) as conn:
        assert conn.execute(query).fetchone()[0] == want
        analyzed = scan_line(conn.execute("EXPLAIN ANALYZE " + query).fetchall())
        metrics = scan_metrics(analyzed)
        assert metrics["rows_kept"] == want, analyzed
        total = conn.execute(f"SELECT sum(length(_value)) FROM {topic}").fetchone()[0]
        assert metrics["hot_bytes_read"] < total / 4, (analyzed, total)
        # The upper bound alone prunes too: the first 1% of the topic.
        early = f"SELECT count(*) FROM {topic} WHERE _timestamp < '{ms_iso(t0 + 400)}'"
        assert conn.execute(early).fetchone()[0] == sum(1 for t in stamps if t < t0 + 400)
        metrics = scan_metrics(scan_line(conn.execute("EXPLAIN ANALYZE " + early).fetchall()))
        assert metrics["hot_bytes_read"] < total / 4, metrics


def test_latest_n_reads_only_the_tail(lake, cold):
    """`ORDER BY _offset DESC LIMIT 5` returns the 5 newest records (of the topic, or of one
    partition); over the whole topic EXPLAIN shows tail=5 and the scan keeps only a few rows
    rather than the whole topic."""
    with pg_connect(lake) as conn:
        q = f"SELECT _partition, _offset FROM {cold.topic} ORDER BY _offset DESC LIMIT 5"
        rows = conn.execute(q).fetchall()
        newest = sorted(cold.values, key=lambda po: po[1], reverse=True)
        assert [o for _, o in rows] == [o for _, o in newest[:5]]
        line = scan_line(conn.execute("EXPLAIN " + q).fetchall())
        assert "tail=5" in line, line
        analyzed = scan_line(conn.execute("EXPLAIN ANALYZE " + q).fetchall())
        assert "tail=5" in analyzed, analyzed
        assert scan_metrics(analyzed)["rows_kept"] < COLD_RECORDS / 10, analyzed

        p1 = sorted(o for (p, o) in cold.values if p == 1)
        q = f"SELECT _partition, _offset, _value FROM {cold.topic} WHERE _partition = 1 ORDER BY _offset DESC LIMIT 5"
        rows = conn.execute(q).fetchall()
        assert [(p, o) for p, o, _ in rows] == [(1, o) for o in reversed(p1[-5:])]
        assert all(v == cold.values[(1, o)] for _, o, v in rows)


def test_latest_n_of_one_partition_reads_only_the_tail(lake, cold, badjson):
    """Latest-N of one partition (`WHERE _partition = 1`, or a topic of one partition) reads only
    the tail too."""
    with pg_connect(lake) as conn:
        for q in [f"SELECT _offset, _value FROM {cold.topic} WHERE _partition = 1 ORDER BY _offset DESC LIMIT 5",
                  f"SELECT _offset, metric FROM {badjson} ORDER BY _offset DESC LIMIT 5"]:
            analyzed = scan_line(conn.execute("EXPLAIN ANALYZE " + q).fetchall())
            assert "tail=5" in analyzed, analyzed
            assert scan_metrics(analyzed)["rows_kept"] < 600, analyzed


# --------------------------------------------------------------------------- bad input
def test_bad_input_gets_errors_not_crashes(lake, iot, badjson):
    """Bad SQL raises in psycopg with the parser's message (the connection stays usable); an
    unknown table names itself; HTTP answers 400 with JSON `error` for bad SQL, and its unknown-
    table error lists the topics (HINT); values that do not decode give NULL columns and an
    `_error` text; a tombstone gives neither."""
    with pg_connect(lake) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELEC device_name FROM iot")
        assert "SELEC" in str(e.value), str(e.value)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM no_such_topic")
        assert "no_such_topic" in str(e.value), str(e.value)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT no_such_column FROM iot")
        assert "no_such_column" in str(e.value), str(e.value)
        assert conn.execute("SELECT count(*) FROM iot").fetchone()[0] == IOT_RECORDS

        rows = conn.execute(f"SELECT _offset, _value, device_name, metric, _error FROM {badjson} "
                            "ORDER BY _offset").fetchall()
    assert [r[0] for r in rows] == list(range(len(BAD_VALUES)))
    assert [r[1] for r in rows] == BAD_VALUES
    good = {0: ("a", 1.5), 5: ("d", 2.0)}
    for offset, value, device, metric, error in rows:
        if offset in good:
            assert (device, metric, error) == (*good[offset], None), rows[offset]
        elif value is None:
            assert (device, metric, error) == (None, None, None), rows[offset]
        else:
            assert device is None and metric is None, rows[offset]
            assert isinstance(error, str) and error, rows[offset]

    r = psql(lake, "SELECT FROM WHERE", check=False)
    assert r.returncode != 0 and "ERROR" in r.stderr, r

    status, ctype, body = http_sql(lake, "SELEC 1")
    assert status == 400 and "json" in ctype, (status, ctype, body)
    assert "SELEC" in json.loads(body)["error"]
    status, _, body = http_sql(lake, "SELECT * FROM no_such_topic")
    assert status == 400, body
    error = json.loads(body)["error"]
    assert "no_such_topic" in error and "HINT" in error and "iot" in error, error
    status, _, body = http_sql(lake, "SELECT 1", fmt="xml")
    assert status == 400 and "format" in json.loads(body)["error"], body


def test_statements_and_values_nested_too_deep_are_errors_not_crashes(lake, iot):
    """A chain of operators becomes a tree as deep as it is long, which DataFusion walks
    recursively: a statement that may nest deeper than 2000 is refused with SQLSTATE 54001 (over
    PostgreSQL, both protocols, and HTTP) before it is parsed, and one at the limit runs. A JSON
    value nested 300,000 deep is a bad record (NULL fields, an `_error`), not a crash of the
    thread decoding it. The broker serves on after each."""
    too_deep = "SELECT " + " + ".join(["1"] * 5000)
    with pg_connect(lake) as conn:
        for prepare in (False, True):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(too_deep, prepare=prepare).fetchall()
            assert e.value.sqlstate == "54001", (prepare, e.value.sqlstate, str(e.value))
            assert "too complex" in e.value.diag.message_primary, str(e.value)
            assert "IN (" in (e.value.diag.message_hint or ""), e.value.diag.message_hint
            # Where the 2000th link passed the limit: "SELECT " then "1 + " per link.
            assert 7990 <= int(e.value.diag.statement_position) <= 8010, e.value.diag.statement_position
        # At the limit: 1999 operators under one SELECT, and 900 alternatives of a column.
        at_limit = "SELECT " + " + ".join(["1"] * 2000)
        assert conn.execute(at_limit).fetchone() == (2000,)
        alternatives = " OR ".join(f"_offset = {n}" for n in range(900))
        assert conn.execute(f"SELECT count(*) FROM iot WHERE {alternatives}").fetchone()[0] > 0
    status, _, body = http_sql(lake, "SELECT " + " + ".join(["1"] * 100_000))
    assert status == 400 and "too complex" in json.loads(body)["error"], (status, body[:300])

    topic = "deepjson"
    create_topic(lake.bootstrap, topic, 1,
                 config={"value.format": "json", "value.schema": "a BIGINT, s STRING"})
    # A text field holding nested arrays, which arrow's decoder walks recursively (600 kB).
    deep = b'{"s":' + b"[" * 300_000 + b"1" + b"]" * 300_000 + b"}"
    d = produce_all(producer(lake.bootstrap), topic,
                    [dict(value=b'{"a": 1}', partition=0), dict(value=deep, partition=0),
                     dict(value=b'{"a": 3}', partition=0)])
    assert not d.errors, d.errors
    with pg_connect(lake) as conn:
        rows = conn.execute(f"SELECT _offset, a, _error FROM {topic} ORDER BY _offset").fetchall()
        assert conn.execute(f"SELECT count(s) FROM {topic}").fetchone() == (0,)
        assert [(r[0], r[1]) for r in rows] == [(0, 1), (1, None), (2, 3)], rows
        assert rows[0][2] is None and rows[2][2] is None, rows
        assert "nests deeper than 1000" in rows[1][2], rows[1][2]
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_statements_too_large_to_plan_are_refused_before_planning(lake, iot):
    """Planning cost can grow much faster than a statement's text: common table expressions (or
    views) that each use the one before twice stand for 2^n scans (16 of them took 30 s and
    2.9 GiB to plan), and joins cost about n^3 to plan. A statement that reads more than 1000
    tables once its common table expressions and views are expanded is refused before it is
    planned, a view whose plan has more than 2000 nodes when it is created, and a plan with
    more than 64 joins and subqueries before the optimizer sees it: SQLSTATE 54001 on both
    PostgreSQL protocols and over HTTP. 64 joins still run."""
    ctes = ["c0 AS (SELECT _offset FROM iot)"] + [
        f"c{i} AS (SELECT _offset FROM c{i - 1} UNION ALL SELECT _offset FROM c{i - 1})"
        for i in range(1, 41)]
    doubling = "WITH " + ", ".join(ctes) + " SELECT count(*) FROM c40"

    def joins(n):
        return "SELECT count(*) FROM iot t0" + "".join(
            f" JOIN iot t{i} ON t{i - 1}._partition = t{i}._partition AND t{i - 1}._offset = t{i}._offset"
            for i in range(1, n + 1)) + " WHERE t0._offset < 100"

    subqueries = "SELECT count(*) FROM iot WHERE " + " AND ".join(
        f"_offset IN (SELECT _offset FROM iot WHERE _offset >= {i})" for i in range(65))
    with pg_connect(lake) as conn:
        for sql, what in ((doubling, "tables"), (joins(65), "joins"), (subqueries, "joins")):
            for prepare in (False, True):
                with pytest.raises(psycopg.Error) as e:
                    conn.execute(sql, prepare=prepare).fetchall()
                assert e.value.sqlstate == "54001", (prepare, e.value.sqlstate, str(e.value))
                message = e.value.diag.message_primary
                assert "too complex to plan" in message and what in message, message
                assert "CREATE TABLE" in (e.value.diag.message_hint or ""), e.value.diag.message_hint
        # EXPLAIN plans the statement too.
        with pytest.raises(psycopg.Error) as e:
            conn.execute("EXPLAIN " + doubling).fetchall()
        assert e.value.sqlstate == "54001", str(e.value)
        first = conn.execute("SELECT count(*) FROM iot WHERE _offset < 100").fetchone()
        assert first[0] > 0 and conn.execute(joins(64)).fetchone() == first
        total = conn.execute("SELECT count(*) FROM iot").fetchone()
        assert conn.execute(f"WITH {ctes[0]}, {ctes[1]} SELECT count(*) FROM c1").fetchone() == (2 * total[0],)
        # Views: each reads the one before twice; the ninth's plan is too large to keep.
        conn.execute("CREATE VIEW v0 AS SELECT _offset FROM iot")
        for i in range(1, 9):
            conn.execute(f"CREATE VIEW v{i} AS SELECT _offset FROM v{i - 1} UNION ALL SELECT _offset FROM v{i - 1}")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("CREATE VIEW v9 AS SELECT _offset FROM v8 UNION ALL SELECT _offset FROM v8")
        assert e.value.sqlstate == "54001" and "plan steps" in e.value.diag.message_primary, str(e.value)
        # Replacing a view with one too large keeps the old one, in both protocols.
        for prepare in (False, True):
            with pytest.raises(psycopg.Error) as e:
                conn.execute("CREATE OR REPLACE VIEW v2 AS SELECT _offset FROM v8 UNION ALL SELECT _offset FROM v8",
                             prepare=prepare)
            assert e.value.sqlstate == "54001", (prepare, str(e.value))
        assert conn.execute("SELECT count(*) FROM v2").fetchone() == (4 * total[0],)
        # Four uses of v8 read 4 * 256 tables.
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT count(*) FROM v8, v8 a, v8 b, v8 c").fetchall()
        assert e.value.sqlstate == "54001" and "tables" in e.value.diag.message_primary, str(e.value)
    # A schema of its own (whose views the checks would not see) or other parser settings
    # would let a client around the checks: refused for everyone.
    with pg_connect(lake) as conn:
        for sql, sqlstate in (("CREATE SCHEMA s", "0A000"),
                              ("SET datafusion.sql_parser.recursion_limit = 500", "42501")):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql)
            assert e.value.sqlstate == sqlstate, (sql, e.value.sqlstate, str(e.value))
    status, _, body = http_sql(lake, "SET datafusion.sql_parser.dialect = 'MySQL'")
    assert status == 400 and "sql_parser" in json.loads(body)["error"], (status, body[:300])
    status, _, body = http_sql(lake, doubling)
    error = json.loads(body)["error"]
    assert status == 400 and "too complex to plan" in error and "caused by" not in error, (status, error)
    status, _, body = http_sql(lake, "CREATE TABLE big WITH (format = 'parquet') AS " + joins(65))
    assert status == 400 and "too complex to plan" in json.loads(body)["error"], (status, body[:300])
    with pg_connect(lake) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_checks_hold_for_every_statement_the_endpoint_runs(lake, iot):
    """The PostgreSQL endpoint parses (and rewrites) a client's text itself: each statement it
    runs is checked as it runs, including beside one only it parses (`ABORT`), in a
    multi-statement query after the statements before it, and at each execution of a prepared
    one. A CTAS table is never replaced by a view or an in-memory table, and the shared schemas
    cannot be dropped."""
    with pg_connect(lake) as conn:
        def refused(sql, sqlstate, **kw):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, **kw)
            assert e.value.sqlstate == sqlstate, (sql, e.value.sqlstate, str(e.value))
            return e.value.diag.message_primary or ""

        refused("SET datafusion.runtime.memory_limit = '1T'; ABORT", "42501")
        refused("RESET datafusion.runtime.memory_limit; ABORT", "42501")
        refused("DROP SCHEMA public CASCADE; ABORT", "0A000")
        refused("DROP SCHEMA pg_catalog CASCADE", "0A000")
        limit = conn.execute(SETTING, ("datafusion.runtime.memory_limit",)).fetchone()
        assert limit is None or "T" not in (limit[0] or ""), limit

        conn.execute("CREATE TABLE kept WITH (format = 'parquet') AS SELECT 1 AS a")
        for sql in ("CREATE OR REPLACE VIEW kept AS SELECT 2 AS a; ABORT",
                    "CREATE OR REPLACE VIEW kept AS SELECT 2 AS a",
                    "CREATE OR REPLACE TABLE kept AS SELECT 3 AS a"):
            message = refused(sql, "42809")
            assert "kept is a table" in message, (sql, message)
        # The second statement is checked after the first has run.
        message = refused("CREATE TABLE later WITH (format = 'parquet') AS SELECT 4 AS a; "
                          "CREATE OR REPLACE VIEW later AS SELECT 5 AS a", "42809")
        assert "later is a table, not a view" in message, message
        # Prepared while the name was a view, executed after it became a CTAS table.
        replace = "CREATE OR REPLACE VIEW swapped AS SELECT 6 AS a"
        conn.execute(replace, prepare=True)
        conn.execute("DROP VIEW swapped")
        conn.execute("CREATE TABLE swapped WITH (format = 'parquet') AS SELECT 7 AS a")
        message = refused(replace, "42809", prepare=True)
        assert "swapped is a table, not a view" in message, message
        for table, want in (("kept", 1), ("later", 4), ("swapped", 7)):
            assert conn.execute(f"SELECT a FROM {table}").fetchall() == [(want,)], table
        assert conn.execute("SELECT count(*) FROM iot").fetchone()[0] > 0


SETTING = "SELECT value FROM information_schema.df_settings WHERE name = %s"


def test_settings_hold_per_connection_and_the_servers_are_refused(make_broker):
    """A PostgreSQL connection's SET holds for it alone; the server's settings (the memory limit
    above all) are refused for every client, so a query over the limit still fails with 53200;
    HTTP requests have no session and refuse SET."""
    broker = make_broker("--sql-memory-limit", str(4 << 20), http=True)
    # A hash join's build side (a million rows) does not spill: over 4 MiB it fails.
    join = ("SELECT count(*) FROM generate_series(1, 1000000) a "
            "JOIN generate_series(1, 1000000) b ON a.value = b.value")
    with pg_connect(broker) as a, pg_connect(broker) as b:
        a.execute("SET datafusion.explain.format = 'tree'")
        a.execute("SET datafusion.optimizer.max_passes = 2")
        assert a.execute(SETTING, ("datafusion.explain.format",)).fetchone() == ("tree",)
        assert a.execute(SETTING, ("datafusion.optimizer.max_passes",)).fetchone() == ("2",)
        assert b.execute(SETTING, ("datafusion.explain.format",)).fetchone() == ("indent",)
        assert b.execute(SETTING, ("datafusion.optimizer.max_passes",)).fetchone() == ("3",)
        a.execute("RESET datafusion.explain.format")
        assert a.execute(SETTING, ("datafusion.explain.format",)).fetchone() == ("indent",)
        for sql in ("SET datafusion.runtime.memory_limit = '10G'",
                    "SET \"datafusion\".\"runtime\".memory_limit TO '10G'",
                    "RESET datafusion.runtime.memory_limit",
                    "SET datafusion.runtime.temp_directory = '/tmp'",
                    "SET datafusion.execution.target_partitions = 512",
                    "SET datafusion.catalog.information_schema = false"):
            with pytest.raises(psycopg.Error) as e:
                a.execute(sql)
            assert e.value.sqlstate == "42501", (sql, e.value.sqlstate, str(e.value))
            assert "permission denied" in e.value.diag.message_primary and e.value.diag.message_hint, sql
        for conn in (a, b):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(join).fetchall()
            assert e.value.sqlstate == "53200", (e.value.sqlstate, str(e.value))
        # Drivers' own settings are still accepted.
        a.execute("SET client_encoding = 'UTF8'")
        a.execute("SET application_name = 'settings-test'")
        assert a.execute("SELECT 1").fetchone() == (1,)
    for sql in ("SET datafusion.optimizer.max_passes = 2", "PREPARE p AS SELECT 1"):
        status, _, body = http_sql(broker, sql)
        error = json.loads(body)["error"]
        assert status == 400 and "an HTTP request has none" in error, (sql, status, error)
    status, _, body = http_sql(broker, "SET datafusion.runtime.memory_limit = '10G'")
    error = json.loads(body)["error"]
    assert status == 400 and "permission denied" in error and "HINT" in error, (status, error)
    status, _, body = http_sql(broker, join)
    assert status == 400 and "Resources exhausted" in json.loads(body)["error"], (status, body[:300])


def test_strict_decoding_fails_the_query(lake):
    """With value.decode.strict=true a value that does not decode fails the query instead."""
    topic = "strictjson"
    create_topic(lake.bootstrap, topic, 1, config={"value.format": "json", "value.schema": "a BIGINT",
                                                   "value.decode.strict": "true"})
    d = produce_all(producer(lake.bootstrap), topic, [dict(value=b'{"a": 1}'), dict(value=b"{oops")])
    assert not d.errors
    with pg_connect(lake) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute(f"SELECT a FROM {topic}").fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unknown_table_hint_over_postgres(lake, iot, cold):
    with pg_connect(lake) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM no_such_topic")
    text = f"{e.value} {e.value.diag.message_hint or ''}"
    assert "iot" in text and cold.topic in text, text
    assert e.value.sqlstate == "42P01", e.value.sqlstate
    assert e.value.diag.statement_position == "15"
    assert "no_such_topic" in e.value.diag.message_primary


@pytest.mark.parametrize("sql, sqlstate, position", [
    ("SELEC 1", "42601", 1),                                              # syntax error
    ("SELECT _offset FROM iot WHERE", "42601", 30),                       # at the end of the input
    ("SELECT _offset\nFROM iot\nWHERE )", "42601", 31),                   # on line 3
    ("SELECT * FROM public.nope", "42P01", 15),                           # undefined table
    ("select _offset,\n  nope from iot", "42703", 19),                    # undefined column
    ("SELECT flor(metric) FROM iot", "42883", 8),                         # undefined function
    ("SELECT 1 / (_offset - _offset) FROM iot WHERE _partition = 0", "22012", None),  # division by zero
    ("SELECT CAST(device_name AS INT) FROM iot", "22P02", None),          # invalid text for a type
])
def test_postgres_errors_have_sqlstate_and_position(lake, iot, sql, sqlstate, position):
    """Errors over PostgreSQL carry the SQLSTATE PostgreSQL would give and, where a place in the
    statement is to blame, its 1-based character position."""
    with pg_connect(lake) as conn:
        for prepare in (False, True):  # the simple and the extended protocol
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, prepare=prepare).fetchall()
            assert (e.value.sqlstate, e.value.diag.statement_position) == \
                (sqlstate, None if position is None else str(position)), (prepare, str(e.value))
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection still works
    if sqlstate == "42703":
        assert "_offset" in (e.value.diag.message_hint or ""), e.value.diag.message_hint


def test_psql_shows_where_the_error_is(lake, iot):
    """psql prints the statement's line with a caret under the error's position, and the HINT."""
    r = psql(lake, "SELECT _offset\nFROM nope", check=False)
    assert r.returncode != 0
    assert 'relation "nope" does not exist' in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    at = lines.index("LINE 2: FROM nope")
    assert lines[at + 1] == " " * len("LINE 2: FROM ") + "^", r.stderr
    assert any(line.startswith("HINT:") and "iot" in line for line in lines), r.stderr


def test_psql_describes_a_topic_with_types_tools_can_use(lake, iot):
    """psql's `\\d` (pg_catalog's pg_attribute and format_type, as JDBC and BI tools read them):
    `_timestamp` is a date and time, not text, and the decoded fields have their own types."""
    rows = psql(lake, "\\d iot")
    types = {row[0]: (row[1], row[3]) for row in rows}
    assert types["_timestamp"] == ("timestamp without time zone", "not null"), rows
    assert types["_partition"] == ("integer", "not null") and types["_offset"] == ("bigint", "not null"), rows
    assert types["_key"][0] == "bytea" and types["_value"][0] == "bytea", rows
    assert types["timestamp"][0] == "bigint" and types["metric"][0] == "double precision", rows
    assert types["device_name"][0] == "text" and types["_error"][0] == "text", rows


# --------------------------------------------------------------------------- HTTP formats
def _norm(partition, offset, ts_ms, key, key_text, device, metric, error):
    return (int(partition), int(offset), int(ts_ms), key, key_text or None, device or None,
            None if metric in (None, "") else float(metric), error or None)


def _iso_ms(text: str) -> int:
    return dt_ms(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


@pytest.mark.parametrize("source", ["iot", "badjson"])
def test_http_formats_give_the_same_rows(lake, iot, badjson, source):
    """/sql?format=json, csv and arrow (an Arrow IPC stream) give the same rows as psycopg."""
    import pyarrow as pa
    import pyarrow.ipc

    sql = (f"SELECT _partition, _offset, _timestamp, _key, _key_text, device_name, metric, _error FROM {source} "
           "WHERE _offset < 300 ORDER BY _partition, _offset")
    with pg_connect(lake) as conn:
        want = [_norm(p, o, dt_ms(t), k, kt, d, m, e) for p, o, t, k, kt, d, m, e in conn.execute(sql).fetchall()]
    assert len(want) == (600 if source == "iot" else len(BAD_VALUES))

    status, ctype, body = http_sql(lake, sql, "json")
    assert status == 200 and "json" in ctype, body[:500]
    doc = json.loads(body)
    assert [c["name"] for c in doc["columns"]] == ["_partition", "_offset", "_timestamp", "_key", "_key_text",
                                                   "device_name", "metric", "_error"]
    assert doc["row_count"] == len(want)
    got = [_norm(r["_partition"], r["_offset"], _iso_ms(r["_timestamp"]),
                 bytes.fromhex(r["_key"]) if r.get("_key") is not None else None, r.get("_key_text"),
                 r.get("device_name"), r.get("metric"), r.get("_error")) for r in doc["rows"]]
    assert got == want, "json"

    status, ctype, body = http_sql(lake, sql, "csv")
    assert status == 200 and "csv" in ctype, body[:500]
    reader = csv.DictReader(io.StringIO(body.decode()))
    got = [_norm(r["_partition"], r["_offset"], _iso_ms(r["_timestamp"]), bytes.fromhex(r["_key"]) if r["_key"] else None,
                 r["_key_text"], r["device_name"], r["metric"], r["_error"]) for r in reader]
    assert got == want, "csv"

    status, ctype, body = http_sql(lake, sql, "arrow")
    assert status == 200 and "arrow" in ctype, body[:500]
    table = pa.ipc.open_stream(body).read_all()
    assert table.num_rows == len(want)
    cols = {name: table.column(name) for name in table.column_names}
    cols["_timestamp"] = cols["_timestamp"].cast(pa.int64())
    lists = {name: c.to_pylist() for name, c in cols.items()}
    got = [_norm(*(lists[name][i] for name in ("_partition", "_offset", "_timestamp", "_key", "_key_text",
                                               "device_name", "metric", "_error"))) for i in range(table.num_rows)]
    assert got == want, "arrow"


def test_http_csv_of_select_star(lake, iot):
    import http.client

    status, _, body = http_sql(lake, "SELECT * FROM iot LIMIT 3", "csv")
    assert status == 200, body
    assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 3
    # An answer that fits its first piece goes out whole, with its length (not chunked, whose
    # last chunk could wait on a kept-alive connection); a larger one streams in chunks.
    conn = http.client.HTTPConnection(lake.host, lake.http_port, timeout=60)
    try:
        for sql, whole in (("SELECT * FROM iot LIMIT 3", True), ("SELECT * FROM iot", False)):
            conn.request("POST", "/sql?format=csv", body=sql.encode())
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body[:300]
            assert (r.getheader("Content-Length") == str(len(body))) == whole, (sql, r.getheaders())
            assert (r.getheader("Transfer-Encoding") == "chunked") != whole, (sql, r.getheaders())
            assert body.count(b"\n") == (3 if whole else IOT_RECORDS) + 1, sql
    finally:
        conn.close()


def test_cli_sql_prints_a_table_with_timing_csv_and_json(lake, iot):
    """`lakestream sql`: a readable table with the row count and time, or CSV / JSON as the server
    sends it; a bad statement exits non-zero with the server's message."""
    def cli(*args):
        return subprocess.run([lakestream_bin(), "sql", "--http-addr", lake.http_addr, *args],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    sql = "SELECT device_name, count(*) AS n FROM iot GROUP BY device_name ORDER BY device_name"
    r = cli(sql)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\|\s*device_name\s*\|\s*n\s*\|", r.stdout), r.stdout
    assert re.search(rf"\({IOT_DEVICES} rows, [0-9.]+ ms\)", r.stdout), r.stdout
    r = cli("--format", "csv", sql)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == IOT_DEVICES and sum(int(row["n"]) for row in rows) == IOT_RECORDS, r.stdout
    r = cli("--format", "json", sql)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["row_count"] == IOT_DEVICES and sum(row["n"] for row in doc["rows"]) == IOT_RECORDS, doc
    r = cli("SELECT * FROM no_such_topic")
    assert r.returncode != 0 and "no_such_topic" in r.stderr and "iot" in r.stderr, r.stderr


def test_http_failure_after_the_answer_started_cuts_it_short(lake):
    """An HTTP answer streams: a query that fails before its first MiB of rows gets a 400 with
    the error; one that fails after rows went out has its transfer cut short, never a complete
    looking answer. The server keeps serving."""
    import http.client

    topic = "strictlong"
    create_topic(lake.bootstrap, topic, 1, config={"value.format": "json", "value.schema": "a BIGINT, s STRING",
                                                   "value.decode.strict": "true"})
    # The bad value comes after more than one 4 MiB read of the log, whose rows go out first.
    good = [dict(value=json.dumps({"a": i, "s": "x" * 100}).encode()) for i in range(80_000)]
    d = produce_all(producer(lake.bootstrap), topic, good + [dict(value=b"{oops")])
    assert not d.errors, d.errors[:3]
    status, _, body = http_sql(lake, f"SELECT a, s FROM {topic} WHERE _offset >= 79990", "csv")
    assert status == 400 and "Json error" in json.loads(body)["error"], body[:300]
    for fmt in ("csv", "json", "arrow"):
        conn = http.client.HTTPConnection(lake.host, lake.http_port, timeout=60)
        try:
            conn.request("POST", f"/sql?format={fmt}", body=f"SELECT a, s FROM {topic}".encode())
            r = conn.getresponse()
            assert r.status == 200, fmt
            with pytest.raises(http.client.IncompleteRead) as cut:
                r.read()
            assert len(cut.value.partial) > 1 << 20, fmt
        finally:
            conn.close()
    status, _, body = http_sql(lake, f"SELECT count(*) AS n FROM {topic}", "json")
    assert status == 200 and json.loads(body)["rows"] == [{"n": 80_001}], body


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.timeout(180)
def test_closing_an_http_request_cancels_its_heavy_query(make_broker):
    """A heavy query over HTTP that has not answered yet stops when its client goes away; the
    server keeps serving."""
    broker = big_broker(make_broker)
    cpu_before = thread_cpu_seconds(broker.pid, "lakestream-sql")
    body = HEAVY_SQL.encode()
    s = socket.create_connection((broker.host, broker.http_port), timeout=10)
    try:
        s.sendall(b"POST /sql HTTP/1.1\r\nHost: lakestream\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: thread_cpu_seconds(broker.pid, "lakestream-sql") - cpu_before >= 1.0, timeout=30,
                   interval=0.2, what="the heavy query to be running")
    finally:
        s.close()

    def idle():
        before = thread_cpu_seconds(broker.pid, "lakestream-sql")
        time.sleep(1.0)
        return thread_cpu_seconds(broker.pid, "lakestream-sql") - before < 0.3
    wait_until(idle, timeout=12, interval=0.1, what="the SQL threads to go idle after the client left")
    status, _, answer = http_sql(broker, "SELECT count(*) AS n FROM big", "json")
    assert status == 200 and json.loads(answer)["rows"] == [{"n": BIG_RECORDS}], answer


@pytest.mark.timeout(180)
def test_http_answer_streams_and_a_slow_client_holds_the_query_back(make_broker):
    """A large HTTP answer (over 150 MB of CSV) goes out as it is made: the server holds a
    bounded part of it (its buffers and a few MiB of encoded rows), not all of it; a client that stops reading holds the query back, and one that
    leaves stops it, while the server goes on serving."""
    import http.client

    broker = big_broker(make_broker)
    # About 1 kB of CSV per record (each copy of the value is 160 hex digits).
    sql = "SELECT *, _value AS v1, _value AS v2, _value AS v3, _value AS v4, _value AS v5 FROM big"

    def request():
        conn = http.client.HTTPConnection(broker.host, broker.http_port, timeout=120)
        conn.request("POST", "/sql?format=csv", body=sql.encode())
        r = conn.getresponse()
        assert r.status == 200
        return conn, r

    def sql_cpu_in(seconds):
        before = thread_cpu_seconds(broker.pid, "lakestream-sql")
        time.sleep(seconds)
        return thread_cpu_seconds(broker.pid, "lakestream-sql") - before

    # The same scan with a small answer first, so that what the engine keeps after any query
    # (thread caches, buffers it reuses) is in the baseline.
    status, _, body = http_sql(broker, "SELECT count(device_name), max(metric), max(length(_value)), "
                                       "max(_key_text), count(_headers) FROM big", "json")
    assert status == 200, body
    rss_before = rss_mib(broker.pid)
    conn, r = request()
    try:
        head = r.read(64 << 10)
        # The client stops reading: once the socket's buffers are full, the query waits.
        wait_until(lambda: sql_cpu_in(1.0) < 0.1, timeout=30, interval=0.1,
                   what="the SQL threads to wait for the client")
        received, lines, peak = len(head), head.count(b"\n"), rss_mib(broker.pid)
        while chunk := r.read(1 << 20):
            received += len(chunk)
            lines += chunk.count(b"\n")
            peak = max(peak, rss_mib(broker.pid))
    finally:
        conn.close()
    assert lines == BIG_RECORDS + 1, lines  # the header line and a line per record
    assert received > 150 << 20, received
    grew = peak - rss_before
    assert grew < (received >> 20) / 2, f"the server's RSS grew by {grew:.0f} MiB for a {received >> 20} MiB answer"

    # A client that leaves in the middle stops the query.
    conn, r = request()
    r.read(64 << 10)
    conn.close()
    wait_until(lambda: sql_cpu_in(1.0) < 0.1, timeout=15, interval=0.1, what="the SQL threads to go idle")
    status, _, body = http_sql(broker, "SELECT count(*) AS n FROM big", "json")
    assert status == 200 and json.loads(body)["rows"] == [{"n": BIG_RECORDS}], body


# --------------------------------------------------------------------------- a heavy query
class HeavyQuery:
    """HEAVY_SQL through psycopg in a thread, on the broker's PostgreSQL endpoint."""

    def __init__(self, broker):
        self.broker = broker
        self.conn = pg_connect(broker)
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.cpu_before = thread_cpu_seconds(broker.pid, "lakestream-sql")
        self.thread.start()

    def _run(self):
        try:
            self.result = self.conn.execute(HEAVY_SQL).fetchall()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def wait_running(self, cpu_seconds: float = 1.0, timeout: float = 30.0):
        """Until the SQL engine's threads have spent `cpu_seconds` on it (and it has not ended)."""
        def busy():
            assert self.thread.is_alive(), f"the heavy query ended: {self.result or self.error!r}"
            return thread_cpu_seconds(self.broker.pid, "lakestream-sql") - self.cpu_before >= cpu_seconds
        wait_until(busy, timeout=timeout, interval=0.2, what="the heavy query to be running")

    def close_connection(self):
        """Closes the query's connection under it (shutdown of its socket, as when a client dies)."""
        s = socket.socket(fileno=os.dup(self.conn.pgconn.socket))
        try:
            s.shutdown(socket.SHUT_RDWR)
        finally:
            s.close()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the query's thread did not notice its connection closing"
        assert self.error is not None, f"the heavy query ended with {self.result}"


def big_broker(make_broker):
    b = make_broker(http=True)
    gen_iot(b, "big", "--count", str(BIG_RECORDS), "--rate", "0", "--partitions", "2", "--seed", "1")
    return b


@pytest.mark.timeout(180)
def test_heavy_query_does_not_hold_back_kafka(make_broker):
    """While a cross join over a 200k-record topic runs (psycopg, in a thread), a confluent-kafka
    producer with acks=all gets every delivery acknowledged and a consumer reads them all back;
    the admin endpoint answers too. (Completion is asserted, not timing.)"""
    broker = big_broker(make_broker)
    create_topic(broker.bootstrap, "live", 1)
    heavy = HeavyQuery(broker)
    try:
        heavy.wait_running()
        d = produce_all(producer(broker.bootstrap), "live",
                        [dict(key=b"k%d" % i, value=b"v%d" % i) for i in range(2000)], flush_timeout=90)
        assert not d.errors, d.errors[:3]
        assert sorted(m.offset() for m in d.ok) == list(range(2000))
        msgs = consume_range(broker.bootstrap, "live", {0: 0}, {0: 2000}, timeout=90)[0]
        assert [m.value() for m in msgs[:2000]] == [b"v%d" % i for i in range(2000)]
        assert topic_status(broker, "live")["partitions"][0]["high_watermark"] == 2000
        assert heavy.thread.is_alive(), "the heavy query ended before the Kafka traffic did: nothing was shown"
        heavy.close_connection()
    finally:
        # The heavy query may keep the SQL engine busy (see the next test): do not wait for it.
        broker.kill9()


@pytest.mark.timeout(180)
def test_cancel_request_cancels_the_statement(make_broker):
    """A CancelRequest (psycopg's `conn.cancel()`, psql's Ctrl-C) ends the running statement with
    57014; the SQL threads go idle and the same connection runs the next statement."""
    broker = big_broker(make_broker)
    heavy = HeavyQuery(broker)
    try:
        heavy.wait_running()
        heavy.conn.cancel()
        heavy.thread.join(15)
        assert not heavy.thread.is_alive(), "the heavy query did not end after the cancel request"
        assert isinstance(heavy.error, psycopg.errors.QueryCanceled), repr(heavy.error)

        def idle():
            before = thread_cpu_seconds(broker.pid, "lakestream-sql")
            time.sleep(1.0)
            return thread_cpu_seconds(broker.pid, "lakestream-sql") - before < 0.3
        wait_until(idle, timeout=12, interval=0.1, what="the SQL threads to go idle after the cancel")
        assert heavy.conn.execute("SELECT count(*) FROM big WHERE _partition = 0").fetchone()[0] > 0

        # psql's Ctrl-C sends a CancelRequest too
        cpu_before = thread_cpu_seconds(broker.pid, "lakestream-sql")
        proc = subprocess.Popen(["psql", "-h", broker.host, "-p", str(broker.pg_port), "-U", "anyone",
                                 "-d", "lakestream", "-X", "-c", HEAVY_SQL],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: thread_cpu_seconds(broker.pid, "lakestream-sql") - cpu_before >= 1.0, timeout=30,
                   interval=0.2, what="psql's heavy query to be running")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
        assert "canceling statement due to user request" in stderr, stderr
        wait_until(idle, timeout=12, interval=0.1, what="the SQL threads to go idle after psql's Ctrl-C")
    finally:
        broker.kill9()


@pytest.mark.timeout(180)
def test_closing_the_connection_cancels_a_heavy_query(make_broker):
    """After the heavy query's connection is closed, the server cancels it (the SQL threads go
    idle) and keeps serving: a new connection's query answers correctly."""
    broker = big_broker(make_broker)
    p0 = psql(broker, "SELECT count(*) FROM big WHERE _partition = 0")[0][0]
    heavy = HeavyQuery(broker)
    try:
        heavy.wait_running()
        heavy.close_connection()
        last = {}

        def serving_and_idle():
            before = thread_cpu_seconds(broker.pid, "lakestream-sql")
            time.sleep(1.0)
            last["sql_cpu_seconds_per_second"] = round(thread_cpu_seconds(broker.pid, "lakestream-sql") - before, 2)
            try:
                with pg_connect(broker, connect_timeout=3) as conn:
                    last["count"] = conn.execute("SELECT count(*) FROM big WHERE _partition = 0").fetchone()[0]
            except Exception as e:  # noqa: BLE001
                last["count"] = repr(e)
            return str(last["count"]) == p0 and last["sql_cpu_seconds_per_second"] < 0.3

        deadline = time.monotonic() + 12
        while not serving_and_idle():
            assert time.monotonic() < deadline, f"not cancelled / not serving 12 s after the close: {last}"
    finally:
        broker.kill9()
