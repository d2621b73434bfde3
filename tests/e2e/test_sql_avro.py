"""Avro values (`value.format=avro`): records produced with confluent-kafka, their values
written by fastavro, either in Confluent's wire format (0x00, a 4-byte big-endian schema id,
the datum: what Confluent's AvroSerializer writes) or as plain datums; read back over
PostgreSQL (psycopg) as typed columns, a bad value giving `_error`; and, once tiered, read by
DuckDB from the cold Parquet files as typed `fields`."""

from __future__ import annotations

import datetime as dt
import io
import json

import duckdb
import fastavro
import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from conftest import Broker
from e2e_util import admin, consume_range, create_topic, pg_conninfo, produce_all, producer, wait_tiered

SCHEMA = {
    "type": "record", "name": "Reading", "namespace": "iot",
    "fields": [
        {"name": "device", "type": "string"},
        {"name": "metric", "type": ["null", "double"], "default": None},
        {"name": "count", "type": "int"},
        {"name": "ok", "type": "boolean"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["GAUGE", "COUNTER"]}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "raw", "type": "bytes"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "place", "type": {"type": "record", "name": "Place", "fields": [
            {"name": "lat", "type": "double"}, {"name": "room", "type": ["null", "string"]}]}},
    ],
}
SCHEMA_TEXT = json.dumps(SCHEMA)
PARSED = fastavro.parse_schema(SCHEMA)
SCHEMA_ID = 42
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def reading(n: int) -> dict:
    return {
        "device": f"d{n % 5}",
        "metric": None if n % 7 == 0 else n / 4,
        "count": n,
        "ok": n % 2 == 0,
        "kind": "COUNTER" if n % 3 == 0 else "GAUGE",
        "at": T0 + dt.timedelta(milliseconds=1000 * n + 5),
        "raw": bytes([n % 256, 0xFF]),
        "tags": [f"t{n % 3}"] * (n % 3),
        "place": {"lat": 45.5 + n, "room": None if n % 2 else f"r{n}"},
    }


def datum(record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PARSED, record)
    return out.getvalue()


def confluent(record: dict, schema_id: int = SCHEMA_ID) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + datum(record)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("avro"), ["--tier-interval-ms", "200"], http=True)
    b.start()
    yield b
    b._check_unexpected_exit()
    problem = b.unexpected_exit
    b.stop()
    if problem:
        pytest.fail(f"{problem}\n{b.log_tail()}", pytrace=False)


def avro_topic(lake, name: str, partitions: int = 1, **config) -> str:
    create_topic(lake.bootstrap, name, partitions,
                 config={"value.format": "avro", "value.schema": SCHEMA_TEXT, **config})
    return name


def rows(lake, sql: str, *params):
    with psycopg.connect(pg_conninfo(lake), autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


def check_reading(row: tuple, n: int) -> None:
    """row: device, metric, count, ok, kind, at, raw, tags, lat, room"""
    want = reading(n)
    assert row == (want["device"], want["metric"], want["count"], want["ok"], want["kind"], want["at"],
                   want["raw"], len(want["tags"]), want["place"]["lat"], want["place"]["room"]), (n, row)


COLUMNS = ("device, metric, count, ok, kind, at, raw, array_length(tags), place['lat'], place['room']")


def test_a_bad_schema_is_refused_with_invalid_config(lake):
    adm = admin(lake.bootstrap)
    for config, says in [
        ({"value.format": "avro"}, "needs value.schema"),
        ({"value.format": "avro", "value.schema": "device STRING"}, "not JSON"),
        ({"value.format": "avro", "value.schema": '{"type": "array", "items": "long"}'}, "must be a record"),
        ({"value.format": "avro", "value.schema": json.dumps(
            {"type": "record", "name": "R", "fields": [{"name": "u", "type": ["long", "string"]}]})},
         "unions of several"),
        ({"value.format": "avro", "value.schema": SCHEMA_TEXT, "value.avro.framing": "magic"}, "confluent, none"),
    ]:
        with pytest.raises(KafkaException) as e:
            create_topic(lake.bootstrap, "refused", 1, config=config, adm=adm)
        error = e.value.args[0]
        assert error.code() == KafkaError.INVALID_CONFIG, (config, error)
        assert says in error.str(), (config, error.str())

    # AlterConfigs checks the config it would leave.
    topic = avro_topic(lake, "avro_altered")
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("value.schema", '{"type": "record"', incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        adm.incremental_alter_configs([resource])[resource].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "value.schema is not a usable Avro schema" in e.value.args[0].str()
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("value.avro.framing", "none", incremental_operation=AlterConfigOpType.SET)])
    adm.incremental_alter_configs([resource])[resource].result(timeout=30)


def test_confluent_framed_values_are_typed_columns_and_bad_ones_get_errors(lake):
    topic = avro_topic(lake, "avro_confluent")
    values = [confluent(reading(n)) for n in range(20)]
    values[5] = datum(reading(5))                     # no Confluent header
    values[6] = confluent(reading(6))[:-3]            # truncated
    values[7] = confluent(reading(7)) + b"\x00"       # a byte after the datum
    values[8] = None                                  # a tombstone: no error
    d = produce_all(producer(lake.bootstrap), topic, [dict(key=b"k%d" % n, value=v) for n, v in enumerate(values)])
    assert not d.errors and len(d.ok) == len(values)

    got = rows(lake, f"SELECT _offset, {COLUMNS}, _error FROM {topic} ORDER BY _offset")
    assert len(got) == len(values)
    for row in got:
        n, error = row[0], row[-1]
        if n in (5, 6, 7):
            assert error and all(cell is None for cell in row[1:-1]), row
        elif n == 8:
            assert error is None and all(cell is None for cell in row[1:-1]), row
        else:
            assert error is None, row
            check_reading(row[1:-1], n)
    errors = dict(rows(lake, f"SELECT _offset, _error FROM {topic} WHERE _error IS NOT NULL"))
    assert "Confluent's wire format" in errors[5] and "value.avro.framing=none" in errors[5], errors
    assert errors[7] == "bytes are left after the Avro datum", errors

    # The columns' PostgreSQL types.
    with psycopg.connect(pg_conninfo(lake), autocommit=True) as conn:
        cur = conn.execute(f"SELECT device, metric, count, ok, kind, at, raw FROM {topic} LIMIT 1")
        types = [conn.adapters.types.get(c.type_code).name for c in cur.description]
    assert types == ["text", "float8", "int4", "bool", "text", "timestamptz", "bytea"], types

    # One schema id only, when value.avro.schema.id says so.
    other = avro_topic(lake, "avro_one_id", **{"value.avro.schema.id": str(SCHEMA_ID)})
    d = produce_all(producer(lake.bootstrap), other,
                    [dict(value=confluent(reading(1))), dict(value=confluent(reading(2), schema_id=7))])
    assert not d.errors
    got = rows(lake, f"SELECT count, _error FROM {other} ORDER BY _offset")
    assert got == [(1, None), (None, f"the value was written with schema id 7, but value.avro.schema.id is {SCHEMA_ID}")]


def test_plain_datums_and_strict_decoding(lake):
    topic = avro_topic(lake, "avro_plain", **{"value.avro.framing": "none"})
    values = [datum(reading(n)) for n in range(10)] + [confluent(reading(10))]
    d = produce_all(producer(lake.bootstrap), topic, [dict(value=v) for v in values])
    assert not d.errors
    got = rows(lake, f"SELECT _offset, {COLUMNS}, _error FROM {topic} ORDER BY _offset")
    for row in got[:10]:
        assert row[-1] is None, row
        check_reading(row[1:-1], row[0])
    # A Confluent-framed value in a plain topic is an error, not a misread record.
    assert got[10][-1] is not None and all(cell is None for cell in got[10][1:-1]), got[10]

    strict = avro_topic(lake, "avro_strict", **{"value.avro.framing": "none", "value.decode.strict": "true"})
    d = produce_all(producer(lake.bootstrap), strict, [dict(value=datum(reading(1))), dict(value=b"\x02")])
    assert not d.errors
    with psycopg.connect(pg_conninfo(lake), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(f"SELECT device FROM {strict}").fetchall()
        assert "value.decode.strict=true" in str(e.value)
        assert conn.execute(f"SELECT _offset FROM {strict} ORDER BY 1").fetchall() == [(0,), (1,)]


def test_insert_encodes_value_columns_that_fastavro_reads_back(lake):
    """INSERT ... SELECT of value columns into an Avro topic writes datums of its schema: a Kafka
    consumer gets values that fastavro decodes to the records first written, in the topic's
    framing (Confluent with its schema id, or plain)."""
    source = avro_topic(lake, "avro_insert_source", **{"value.avro.framing": "none"})
    d = produce_all(producer(lake.bootstrap), source, [dict(value=datum(reading(n))) for n in range(30)])
    assert not d.errors
    fields = "device, metric, count, ok, kind, at, raw, tags, place"
    for name, config, header in (
            ("avro_insert_confluent", {"value.avro.schema.id": str(SCHEMA_ID)},
             b"\x00" + SCHEMA_ID.to_bytes(4, "big")),
            ("avro_insert_plain", {"value.avro.framing": "none"}, b"")):
        target = avro_topic(lake, name, **config)
        with psycopg.connect(pg_conninfo(lake), autocommit=True) as conn:
            cur = conn.execute(f"INSERT INTO {target} (_key, {fields}) "
                               f"SELECT CAST(_offset AS VARCHAR), {fields} FROM {source}")
            assert cur.statusmessage == "INSERT 0 30", cur.statusmessage
        got = consume_range(lake.bootstrap, target, {0: 0}, {0: 30})[0]
        for m in got:
            n = int(m.key())
            assert m.value().startswith(header), (name, n, m.value()[:8])
            record = fastavro.schemaless_reader(io.BytesIO(m.value()[len(header):]), PARSED)
            assert record == reading(n), (name, n, record)
        # The topic reads its own values back as columns.
        for row in rows(lake, f"SELECT CAST(_key_text AS INT), {COLUMNS}, _error FROM {target}"):
            assert row[-1] is None, row
            check_reading(row[1:-1], row[0])


def test_cold_parquet_files_carry_the_avro_fields_for_duckdb(lake):
    """Tiered, the files hold `fields` (a struct of the typed columns) and `fields_error`
    beside the raw value; SQL answers the same from them."""
    topic = avro_topic(lake, "avro_cold", 2, **{"segment.bytes": "16384", "local.retention.bytes": "0"})
    count = 3000
    values = {n: confluent(reading(n)) for n in range(count)}
    values[100] = b"\x00\x00\x00\x00\x2a\xff"    # Confluent header, no datum of the schema
    d = produce_all(producer(lake.bootstrap, **{"linger.ms": 5, "batch.num.messages": 100}), topic,
                    [dict(key=b"%d" % n, value=v, partition=n % 2) for n, v in values.items()])
    assert not d.errors and len(d.ok) == count
    wait_tiered(lake, topic, [0, 1], what=f"{topic} in the cold tier")

    files = sorted(str(p) for p in (lake.data_dir / "cold" / topic).glob("*/*.parquet"))
    assert files, "no cold files"
    con = duckdb.connect()
    schema = {r[0]: r[1] for r in
              con.execute("DESCRIBE SELECT fields, fields_error FROM read_parquet(?)", [files]).fetchall()}
    assert schema == {"fields": "STRUCT(device VARCHAR, metric DOUBLE, count INTEGER, ok BOOLEAN, kind VARCHAR, "
                                '"at" TIMESTAMP WITH TIME ZONE, raw BLOB, tags VARCHAR[], '
                                "place STRUCT(lat DOUBLE, room VARCHAR))",
                      "fields_error": "VARCHAR"}, schema
    cold = con.execute(
        # (epoch_ms: DuckDB would need pytz to hand out TIMESTAMP WITH TIME ZONE values)
        "SELECT CAST(key AS VARCHAR), fields.device, fields.metric, fields.count, fields.ok, fields.kind, "
        "epoch_ms(fields.at), "
        "fields.raw, len(fields.tags), fields.place.lat, fields.place.room, fields_error FROM read_parquet(?)",
        [files]).fetchall()
    assert len(cold) > count // 2, f"only {len(cold)} of {count} records in cold files"
    for row in cold:
        n = int(row[0])
        if n == 100:
            assert row[-1] and all(cell is None for cell in row[1:-1]), row
            continue
        assert row[-1] is None, row
        at = dt.datetime.fromtimestamp(row[6] / 1000, dt.timezone.utc)
        check_reading(tuple(row[1:6]) + (at,) + tuple(row[7:-1]), n)

    # SQL over hot and cold together agrees, record by record.
    got = rows(lake, f"SELECT CAST(_key_text AS BIGINT), {COLUMNS}, _error FROM {topic}")
    assert len(got) == count
    for row in got:
        if row[0] == 100:
            assert row[-1] is not None, row
        else:
            check_reading(row[1:-1], row[0])
