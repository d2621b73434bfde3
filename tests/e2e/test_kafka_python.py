"""End-to-end with kafka-python 3.0.12 (pure Python client; its own protocol code)."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from e2e_util import unique

TIMEOUT_MS = 30_000


@pytest.fixture
def kadmin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    yield a
    a.close()


def _consumer(broker, **kw):
    return KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                         request_timeout_ms=TIMEOUT_MS + 5000, **kw)


def _wait_partitions(broker, topic, n, timeout=30):
    c = _consumer(broker)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c.topics()  # always a fresh metadata request
            parts = c.partitions_for_topic(topic)
            if parts and len(parts) == n:
                return sorted(parts)
            time.sleep(0.2)
        raise AssertionError(f"topic {topic} did not show {n} partitions")
    finally:
        c.close()


def test_admin_create_topic(broker, kadmin):
    t = unique("kp")
    kadmin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)], timeout_ms=TIMEOUT_MS)
    assert _wait_partitions(broker, t, 3) == [0, 1, 2]
    assert t in kadmin.list_topics()


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_produce_and_consume_all(broker, kadmin, compression):
    t = unique("kp")
    kadmin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)], timeout_ms=TIMEOUT_MS)
    _wait_partitions(broker, t, 3)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=compression,
                      linger_ms=5, request_timeout_ms=TIMEOUT_MS)
    n = 3000
    futures = [p.send(t, key=f"k{i % 30}".encode(), value=f"k{i % 30}:{i // 30}".encode()) for i in range(n)]
    p.flush(timeout=60)
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    ends = {}
    for m in metas:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    assert sum(ends.values()) == n

    c = _consumer(broker)
    try:
        tps = [TopicPartition(t, i) for i in range(3)]
        c.assign(tps)
        c.seek_to_beginning()
        assert c.end_offsets(tps) == {tp: ends.get(tp.partition, 0) for tp in tps}
        assert c.beginning_offsets(tps) == {tp: 0 for tp in tps}
        got = []
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            for _tp, recs in c.poll(timeout_ms=500, max_records=5000).items():
                got.extend(recs)
        assert len(got) == n, f"read {len(got)} of {n}"
        extra = c.poll(timeout_ms=500)
        assert not extra, f"unexpected extra records: {sum(len(v) for v in extra.values())}"
    finally:
        c.close()
    per_key = {}
    for r in got:
        k, seq = r.value.decode().split(":")
        assert k.encode() == r.key
        per_key.setdefault(k, []).append(int(seq))
    assert all(v == list(range(n // 30)) for v in per_key.values()), "per-key order broken"
    assert len(per_key) == 30


def test_offsets_for_times(broker, kadmin):
    t = unique("kp")
    kadmin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)], timeout_ms=TIMEOUT_MS)
    _wait_partitions(broker, t, 1)
    t0 = int(time.time() * 1000) - 600_000
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", request_timeout_ms=TIMEOUT_MS)
    for i in range(20):
        p.send(t, value=f"v{i}".encode(), partition=0, timestamp_ms=t0 + i * 100)
    p.flush(timeout=30)
    p.close(timeout=10)
    c = _consumer(broker)
    try:
        tp = TopicPartition(t, 0)
        res = c.offsets_for_times({tp: t0 + 450})
        assert res[tp] is not None and res[tp].offset == 5 and res[tp].timestamp == t0 + 500, res
        res = c.offsets_for_times({tp: t0})
        assert res[tp].offset == 0 and res[tp].timestamp == t0, res
        res = c.offsets_for_times({tp: t0 + 100_000})
        assert res[tp] is None, res
        assert c.end_offsets([tp]) == {tp: 20}
        assert c.beginning_offsets([tp]) == {tp: 0}
        # seek to the offset found, read from there
        c.assign([tp])
        c.seek(tp, 5)
        recs = []
        deadline = time.monotonic() + 30
        while len(recs) < 15 and time.monotonic() < deadline:
            for _tp, rs in c.poll(timeout_ms=500).items():
                recs.extend(rs)
        assert [(r.offset, r.value, r.timestamp) for r in recs] == \
            [(i, f"v{i}".encode(), t0 + i * 100) for i in range(5, 20)]
    finally:
        c.close()
