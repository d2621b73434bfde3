"""End-to-end with confluent-kafka (librdkafka 2.16) against the real binary (issue #2).

Consumers use manual assign() with explicit offsets and never commit: consumer groups
are a later issue (confluent-kafka requires a group.id, but it is never joined)."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME,
                             KafkaError, KafkaException, TopicPartition)
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, ResourceType)

from e2e_util import (TIMEOUT, admin, consume_range, consumer, create_topic, err_code, produce_all, producer,
                      read_all, topic_partitions, unique, wait_until, watermarks)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
N_RECORDS = 100_000
N_KEYS = 1000


def test_admin_creates_topic_with_6_partitions(broker):
    adm = admin(broker.bootstrap)
    t = unique()
    create_topic(broker.bootstrap, t, 6, adm=adm)
    md = adm.list_topics(topic=t, timeout=10)
    tm = md.topics[t]
    assert tm.error is None
    assert sorted(tm.partitions) == list(range(6))
    for p in tm.partitions.values():
        assert p.error is None
        assert p.leader == 0, f"partition {p.id} leader {p.leader}"
        assert list(p.replicas) == [0] and list(p.isrs) == [0]
    assert list(md.brokers) == [0]
    assert f"{md.brokers[0].host}:{md.brokers[0].port}" == broker.bootstrap
    # Creating it again is TOPIC_ALREADY_EXISTS.
    from confluent_kafka.admin import NewTopic
    fs = adm.create_topics([NewTopic(t, 6, 1)], request_timeout=TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        fs[t].result(timeout=TIMEOUT)
    assert err_code(ei.value) == KafkaError.TOPIC_ALREADY_EXISTS


@pytest.mark.timeout(600)
@pytest.mark.parametrize("codec", CODECS)
def test_100k_keyed_records_roundtrip(broker, codec):
    t = unique(f"codec-{codec}")
    create_topic(broker.bootstrap, t, 6)
    p = producer(broker.bootstrap, **{"compression.type": codec, "linger.ms": 20, "acks": "all"})
    # value = key + per-key sequence number; records interleave keys round-robin.
    records = ({"key": f"key-{i % N_KEYS:04d}".encode(), "value": f"key-{i % N_KEYS:04d}:{i // N_KEYS}".encode()}
               for i in range(N_RECORDS))
    d = produce_all(p, t, records)
    assert not d.errors, f"{len(d.errors)} delivery errors, first: {d.errors[0][0]}"
    assert len(d.ok) == N_RECORDS

    wm = watermarks(broker.bootstrap, t, range(6))
    assert all(lo == 0 for lo, _ in wm.values()), wm
    assert sum(hi for _, hi in wm.values()) == N_RECORDS, f"watermarks {wm} do not add up to {N_RECORDS}"

    got = read_all(broker.bootstrap, t, range(6), timeout=300)
    seqs: dict[bytes, list[int]] = {}
    key_partition: dict[bytes, int] = {}
    total = 0
    for part, msgs in got.items():
        offsets = [m.offset() for m in msgs]
        assert offsets == list(range(wm[part][1])), f"partition {part}: offsets not dense 0..{wm[part][1]}"
        for m in msgs:
            k, v = m.key(), m.value()
            kk, seq = v.decode().rsplit(":", 1)
            assert kk.encode() == k, f"value {v!r} under key {k!r}"
            assert key_partition.setdefault(k, part) == part, f"key {k!r} in partitions {key_partition[k]} and {part}"
            seqs.setdefault(k, []).append(int(seq))
            total += 1
    assert total == N_RECORDS
    assert len(seqs) == N_KEYS
    per_key = N_RECORDS // N_KEYS
    bad = {k: s[:10] for k, s in seqs.items() if s != list(range(per_key))}
    assert not bad, f"{len(bad)} keys out of order or incomplete, e.g. {list(bad.items())[:3]}"


def _produce_to_partition(bootstrap, topic, partition, n, start=0, **extra):
    p = producer(bootstrap, **extra)
    d = produce_all(p, topic, ({"value": f"v{i}".encode(), "partition": partition} for i in range(start, start + n)))
    assert not d.errors, d.errors[:3]
    return d


def test_seek_to_offset(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 1)
    _produce_to_partition(broker.bootstrap, t, 0, 50)
    # assign at offset N: the first record has offset N
    got = consume_range(broker.bootstrap, t, {0: 17}, {0: 50})
    assert [m.offset() for m in got[0]] == list(range(17, 50))
    assert got[0][0].value() == b"v17"
    # seek() on an assigned partition
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(t, 0, 40)])
        first = _next_message(c)
        assert first.offset() == 40 and first.value() == b"v40"
        c.seek(TopicPartition(t, 0, 5))
        after = _next_message(c)
        assert after.offset() == 5 and after.value() == b"v5"
    finally:
        c.close()


def _next_message(c, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise AssertionError(f"consumer error: {m.error()}")
        return m
    raise AssertionError("no message within timeout")


def test_offsets_for_times(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 1)
    t0 = int(time.time() * 1000) - 3_600_000
    # 100 records, timestamps t0, t0, t0+10, t0+10, ... (pairs share a timestamp); several batches.
    p = producer(broker.bootstrap, **{"linger.ms": 50})
    for half in (range(0, 50), range(50, 100)):
        d = produce_all(p, t, ({"value": f"v{i}".encode(), "partition": 0, "timestamp": t0 + (i // 2) * 10}
                               for i in half))
        assert not d.errors
    got = consume_range(broker.bootstrap, t, {0: OFFSET_BEGINNING}, {0: 100})
    for m in got[0]:
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, t0 + (m.offset() // 2) * 10), (m.offset(), m.timestamp())

    c = consumer(broker.bootstrap)
    try:
        def q(ts):
            (r,) = c.offsets_for_times([TopicPartition(t, 0, ts)], timeout=10)
            assert r.error is None, r.error
            return r.offset
        assert q(t0 - 1000) == 0
        assert q(t0) == 0
        assert q(t0 + 1) == 2
        assert q(t0 + 55) == 12       # first timestamp >= t0+55 is t0+60 at offset 12
        assert q(t0 + 60) == 12
        assert q(t0 + 490) == 98      # last timestamp
        assert q(t0 + 491) == -1      # nothing at or after: offset -1 (OFFSET_END)
    finally:
        c.close()


def test_watermarks_exact(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 4)
    counts = {0: 37, 1: 0, 2: 1, 3: 250}
    for part, n in counts.items():
        if n:
            _produce_to_partition(broker.bootstrap, t, part, n)
    assert watermarks(broker.bootstrap, t, range(4)) == {p: (0, n) for p, n in counts.items()}
    _produce_to_partition(broker.bootstrap, t, 1, 5)
    assert watermarks(broker.bootstrap, t, [1]) == {1: (0, 5)}


def test_consumer_at_latest_sees_only_new_records(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 1)
    _produce_to_partition(broker.bootstrap, t, 0, 10)
    c = consumer(broker.bootstrap, **{"enable.partition.eof": True})
    try:
        c.assign([TopicPartition(t, 0, OFFSET_END)])
        # Wait until the consumer has resolved "latest" and reached the end (PARTITION_EOF).
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert time.monotonic() < deadline, "consumer at OFFSET_END never reported partition EOF"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                assert m.offset() == 10, f"EOF at offset {m.offset()}, expected 10"
                break
            raise AssertionError(f"unexpected message/error before any new record: {m.error() or (m.offset(), m.value())}")
        _produce_to_partition(broker.bootstrap, t, 0, 5, start=100)
        seen = []
        while len(seen) < 5:
            assert time.monotonic() < deadline + TIMEOUT, f"only got {seen}"
            m = c.poll(0.5)
            if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
                continue
            assert not m.error(), m.error()
            seen.append((m.offset(), m.value()))
        assert seen == [(10 + i, f"v{100 + i}".encode()) for i in range(5)]
    finally:
        c.close()


def test_idempotent_producer_no_duplicates(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 3)
    p = producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 5})
    n = 20_000
    d = produce_all(p, t, ({"key": f"k{i % 100}".encode(), "value": f"{i}".encode()} for i in range(n)))
    assert not d.errors, d.errors[:3]
    got = read_all(broker.bootstrap, t, range(3))
    values = [int(m.value()) for msgs in got.values() for m in msgs]
    assert len(values) == n and sorted(values) == list(range(n)), \
        f"{len(values)} records, {len(values) - len(set(values))} duplicates, {n - len(set(values))} missing"
    acked = {(m.partition(), m.offset()): m.value() for m in d.ok}
    for part, msgs in got.items():
        for m in msgs:
            assert acked[(part, m.offset())] == m.value()


def test_idempotent_producer_across_clean_restart(broker):
    """Restart the broker in the middle of idempotent production: librdkafka retries in-flight
    batches, and the broker must deduplicate them (exactly-once per partition)."""
    t = unique()
    create_topic(broker.bootstrap, t, 2)
    p = producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 2, "message.timeout.ms": 60000})
    from e2e_util import Deliveries
    d = Deliveries()
    n = 30_000
    for i in range(n):
        if i == n // 2:
            p.poll(0)
            broker.restart()
        while True:
            try:
                p.produce(t, key=f"k{i % 10}".encode(), value=str(i).encode(), on_delivery=d)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(90) == 0
    assert not d.errors, f"{len(d.errors)} delivery errors, first {d.errors[0][0]}"
    got = read_all(broker.bootstrap, t, range(2))
    values = [int(m.value()) for msgs in got.values() for m in msgs]
    dups = len(values) - len(set(values))
    assert dups == 0, f"{dups} duplicate records after restart"
    assert sorted(values) == list(range(n))


def test_create_partitions(broker):
    adm = admin(broker.bootstrap)
    t = unique()
    create_topic(broker.bootstrap, t, 2, adm=adm)
    fs = adm.create_partitions([NewPartitions(t, 5)], request_timeout=TIMEOUT)
    fs[t].result(timeout=TIMEOUT)
    wait_until(lambda: topic_partitions(adm, t) == [0, 1, 2, 3, 4], what="5 partitions in metadata")
    _produce_to_partition(broker.bootstrap, t, 4, 3)
    got = consume_range(broker.bootstrap, t, {4: OFFSET_BEGINNING}, {4: 3})
    assert [m.value() for m in got[4]] == [b"v0", b"v1", b"v2"]
    # Shrinking is INVALID_PARTITIONS.
    fs = adm.create_partitions([NewPartitions(t, 3)], request_timeout=TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        fs[t].result(timeout=TIMEOUT)
    assert err_code(ei.value) == KafkaError.INVALID_PARTITIONS
    # Survives a restart.
    broker.restart()
    assert topic_partitions(admin(broker.bootstrap), t) == [0, 1, 2, 3, 4]


def _describe(adm, t) -> dict:
    res = ConfigResource(ResourceType.TOPIC, t)
    fs = adm.describe_configs([res], request_timeout=TIMEOUT)
    return fs[res].result(timeout=TIMEOUT)


def test_describe_and_alter_configs(broker):
    adm = admin(broker.bootstrap)
    t = unique()
    create_topic(broker.bootstrap, t, 1, config={"retention.ms": "3600000"}, adm=adm)
    cfg = _describe(adm, t)
    for k in ("retention.ms", "segment.bytes", "max.message.bytes", "cleanup.policy"):
        assert k in cfg, f"describe_configs lacks {k}; got {sorted(cfg)}"
    assert cfg["retention.ms"].value == "3600000"
    assert not cfg["retention.ms"].is_default
    assert cfg["cleanup.policy"].value == "delete"
    assert int(cfg["segment.bytes"].value) > 0
    assert int(cfg["max.message.bytes"].value) > 0

    changes = {"retention.ms": "86400000", "segment.bytes": "1048576", "max.message.bytes": "2000000",
               "cleanup.policy": "compact"}
    res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in changes.items()])
    fs = adm.incremental_alter_configs([res], request_timeout=TIMEOUT)
    fs[res].result(timeout=TIMEOUT)
    cfg = _describe(adm, t)
    assert {k: cfg[k].value for k in changes} == changes

    # DELETE reverts retention.ms to the default (what a topic without overrides shows).
    plain = unique()
    create_topic(broker.bootstrap, plain, 1, adm=adm)
    default_retention = _describe(adm, plain)["retention.ms"]
    assert default_retention.is_default
    res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    adm.incremental_alter_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)
    cfg = _describe(adm, t)
    assert cfg["retention.ms"].value == default_retention.value, cfg["retention.ms"]
    assert cfg["retention.ms"].is_default

    # An invalid value is rejected (INVALID_CONFIG) and changes nothing.
    res = ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
        ConfigEntry("cleanup.policy", "bogus", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        adm.incremental_alter_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)
    assert err_code(ei.value) == KafkaError.INVALID_CONFIG
    assert _describe(adm, t)["cleanup.policy"].value == "compact"

    # Round-trips through a restart.
    broker.restart()
    cfg = _describe(admin(broker.bootstrap), t)
    assert {k: cfg[k].value for k in ("segment.bytes", "max.message.bytes", "cleanup.policy")} == \
        {"segment.bytes": "1048576", "max.message.bytes": "2000000", "cleanup.policy": "compact"}
    assert cfg["retention.ms"].value == default_retention.value


def test_delete_topic(broker):
    adm = admin(broker.bootstrap)
    t = unique()
    create_topic(broker.bootstrap, t, 2, adm=adm)
    _produce_to_partition(broker.bootstrap, t, 0, 10)
    adm.delete_topics([t], operation_timeout=TIMEOUT, request_timeout=TIMEOUT)[t].result(timeout=TIMEOUT)

    def gone():
        md = adm.list_topics(topic=t, timeout=10)
        tm = md.topics.get(t)
        return tm is None or (tm.error is not None and tm.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
    wait_until(gone, what=f"topic {t} gone from metadata")
    assert t not in adm.list_topics(timeout=10).topics
    # Deleting again: UNKNOWN_TOPIC_OR_PART.
    with pytest.raises(KafkaException) as ei:
        adm.delete_topics([t], request_timeout=TIMEOUT)[t].result(timeout=TIMEOUT)
    assert err_code(ei.value) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Re-creating the name gives a fresh, empty topic, and the deletion survives a restart.
    broker.restart()
    adm = admin(broker.bootstrap)
    assert t not in adm.list_topics(timeout=10).topics
    create_topic(broker.bootstrap, t, 3, adm=adm)
    assert watermarks(broker.bootstrap, t, range(3)) == {0: (0, 0), 1: (0, 0), 2: (0, 0)}


def test_produce_to_missing_topic_fails(broker):
    """auto-create is off by default: UNKNOWN_TOPIC_OR_PART, and the topic is not created."""
    t = unique("missing")
    p = producer(broker.bootstrap, **{"topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 10000})
    d = produce_all(p, t, [{"value": b"x"}], flush_timeout=30)
    assert not d.ok
    assert len(d.errors) == 1
    code = d.errors[0][0].code()
    assert code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), d.errors[0][0]
    md = admin(broker.bootstrap).list_topics(timeout=10)
    assert t not in md.topics, "topic was auto-created although auto-create is off"


@pytest.mark.broker_args("--auto-create-topics")
def test_produce_to_missing_topic_auto_creates_when_enabled(broker):
    t = unique("auto")
    p = producer(broker.bootstrap)
    d = produce_all(p, t, [{"value": b"x"}], flush_timeout=60)
    assert not d.errors, d.errors
    assert topic_partitions(admin(broker.bootstrap), t), "topic not visible after auto-create"


def test_record_over_max_message_bytes(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 1, config={"max.message.bytes": "10000"})
    p = producer(broker.bootstrap, **{"compression.type": "none", "linger.ms": 0})
    big = os.urandom(20_000)
    d = produce_all(p, t, [{"value": big, "partition": 0}])
    assert not d.ok, "a 20 kB record was accepted by a topic with max.message.bytes=10000"
    assert d.errors[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, d.errors[0][0]
    d = produce_all(p, t, [{"value": b"small", "partition": 0}])
    assert not d.errors and d.ok[0].offset() == 0
    assert watermarks(broker.bootstrap, t, [0]) == {0: (0, 1)}


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks_0_and_1(broker, acks):
    t = unique()
    create_topic(broker.bootstrap, t, 2)
    p = producer(broker.bootstrap, acks=acks)
    n = 2000
    d = produce_all(p, t, ({"value": str(i).encode(), "partition": i % 2} for i in range(n)))
    assert not d.errors
    if acks == "1":
        assert sorted((m.partition(), m.offset()) for m in d.ok) == \
            sorted([(0, i) for i in range(n // 2)] + [(1, i) for i in range(n // 2)])
    # acks=0 has no response; a healthy broker still stores everything.
    want = {0: (0, n // 2), 1: (0, n // 2)}
    wait_until(lambda: (lambda wm: wm == want or None)(watermarks(broker.bootstrap, t, range(2))),
               what=f"watermarks {want}")
    assert watermarks(broker.bootstrap, t, range(2)) == want
    got = read_all(broker.bootstrap, t, range(2))
    assert [int(m.value()) for m in got[0]] == list(range(0, n, 2))
    assert [int(m.value()) for m in got[1]] == list(range(1, n, 2))


def test_log_append_time_topic(broker):
    t = unique()
    create_topic(broker.bootstrap, t, 1, config={"message.timestamp.type": "LogAppendTime"})
    client_ts = 1_000_000  # 1970: must be replaced by the broker's clock
    before = int(time.time() * 1000)
    p = producer(broker.bootstrap)
    d = produce_all(p, t, ({"value": f"v{i}".encode(), "partition": 0, "timestamp": client_ts} for i in range(10)))
    after = int(time.time() * 1000)
    assert not d.errors
    ts_type, ts = d.ok[0].timestamp()
    assert ts_type == TIMESTAMP_LOG_APPEND_TIME and before - 1000 <= ts <= after + 1000, (ts_type, ts, before, after)
    got = consume_range(broker.bootstrap, t, {0: OFFSET_BEGINNING}, {0: 10})
    for m in got[0]:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, (m.offset(), m.timestamp())
        assert before - 1000 <= ts <= after + 1000, f"timestamp {ts} not the broker's append time ({before}..{after})"


def test_transactional_producer_fails_fast_with_a_reason(broker):
    """Transactions are not implemented: init_transactions() must fail at once with a fatal error
    that says so, not retry until its timeout."""
    from confluent_kafka import KafkaException, Producer
    from e2e_util import base_conf
    p = Producer(base_conf(broker.bootstrap, **{"transactional.id": unique("txn")}))
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        p.init_transactions(30)
    error = raised.value.args[0]
    assert time.monotonic() - started < 10, "init_transactions retried instead of failing"
    assert error.fatal() and "not supported" in error.str(), error


@pytest.mark.broker_args("--retention-check-interval-ms", "200")
def test_retention_deletes_old_segments_and_moves_the_log_start(broker):
    """retention.bytes on a topic with small segments: the broker deletes whole old segments, the
    log start offset (low watermark) moves up, a fetch below it is out of range, and everything
    from the new start on is intact. Unlimited retention (the default) deletes nothing."""
    from confluent_kafka import TopicPartition
    t, keep = unique("retention"), unique("forever")
    create_topic(broker.bootstrap, t, 1, config={"segment.bytes": "4096", "retention.bytes": "8192"})
    create_topic(broker.bootstrap, keep, 1, config={"segment.bytes": "4096"})
    p = producer(broker.bootstrap, **{"linger.ms": 0, "batch.num.messages": 1})
    for topic in (t, keep):
        d = produce_all(p, topic, [{"value": f"{i:04d}".encode() * 50} for i in range(200)])
        assert not d.errors
    wait_until(lambda: watermarks(broker.bootstrap, t, [0])[0][0] > 0, what="retention to delete segments")
    low, high = watermarks(broker.bootstrap, t, [0])[0]
    assert high == 200 and 0 < low < 200, (low, high)
    got = consume_range(broker.bootstrap, t, {0: low}, {0: high})[0]
    assert [m.offset() for m in got] == list(range(low, high))
    assert all(m.value() == f"{m.offset():04d}".encode() * 50 for m in got)
    # Reading below the log start: the consumer is told the offset is out of range.
    c = consumer(broker.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(t, 0, 0)])
        msg = None
        deadline = time.monotonic() + TIMEOUT
        while msg is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
        assert msg is not None and msg.error() is not None, msg
        from confluent_kafka import KafkaError
        assert msg.error().code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE), msg.error()
    finally:
        c.close()
    assert watermarks(broker.bootstrap, keep, [0])[0] == (0, 200)
