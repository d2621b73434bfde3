"""End-to-end with aiokafka 0.14 (asyncio client; cramjam for snappy/lz4/zstd)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from e2e_util import create_topic, unique


async def _roundtrip(bootstrap: str, topic: str, compression, n: int, partitions: int):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=compression,
                                linger_ms=5, request_timeout_ms=30000)
    await producer.start()
    try:
        # send_and_wait for a few (exact metadata), then a pipelined burst.
        metas = [await producer.send_and_wait(topic, key=b"first", value=f"first-{i}".encode(), partition=0)
                 for i in range(3)]
        assert [(m.partition, m.offset) for m in metas] == [(0, 0), (0, 1), (0, 2)]
        futs = [await producer.send(topic, key=f"k{i % 50}".encode(), value=f"k{i % 50}:{i // 50}".encode())
                for i in range(n)]
        await producer.flush()
        metas += [await f for f in futs]
    finally:
        await producer.stop()
    ends = {}
    for m in metas:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=30000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        assert await consumer.end_offsets(tps) == {tp: ends.get(tp.partition, 0) for tp in tps}
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(got) < n + 3 and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for recs in batches.values():
                got.extend(recs)
        return got
    finally:
        await consumer.stop()


@pytest.mark.parametrize("compression", [None, "gzip", "snappy", "lz4", "zstd"])
def test_aiokafka_produce_consume(broker, compression):
    t = unique("aio")
    create_topic(broker.bootstrap, t, 3)
    n = 2000
    got = asyncio.run(asyncio.wait_for(_roundtrip(broker.bootstrap, t, compression, n, 3), timeout=100))
    assert len(got) == n + 3, f"read {len(got)} of {n + 3}"
    first = [r for r in got if r.key == b"first"]
    assert [(r.partition, r.offset, r.value) for r in first] == [(0, i, f"first-{i}".encode()) for i in range(3)]
    per_key = {}
    for r in got:
        if r.key == b"first":
            continue
        k, seq = r.value.decode().split(":")
        assert k.encode() == r.key
        per_key.setdefault(k, []).append(int(seq))
    assert len(per_key) == 50
    assert all(v == list(range(n // 50)) for v in per_key.values()), "per-key order broken or records missing"
