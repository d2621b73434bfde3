"""Crash safety (issue #2): SIGKILL the broker at random moments during acks=all production,
restart it, and check that every acknowledged record is readable at exactly the partition and
offset it was acknowledged at, and that offsets are dense. A clean restart keeps everything.

LAKESTREAM_CRASH_CYCLES (default 20) and LAKESTREAM_CRASH_SEED make runs repeatable."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING

from e2e_util import (AckLog, admin, consume_range, create_topic, produce_all, producer, read_all, topic_partitions, unique,
                      watermarks)

PARTITIONS = 3
CYCLES = max(20, int(os.environ.get("LAKESTREAM_CRASH_CYCLES", "20")))


def _produce_until(p, topic, cycle, stop: threading.Event, acks: AckLog, errors: list):
    seq = 0
    try:
        while not stop.is_set():
            for _ in range(50):
                value = f"c{cycle:03d}-s{seq:08d}".encode()
                try:
                    p.produce(topic, value=value, partition=seq % PARTITIONS, on_delivery=acks.callback)
                except BufferError:
                    p.poll(0.05)
                    continue
                seq += 1
            p.poll(0.001)
    except Exception as e:  # noqa: BLE001 - surfaced by the test
        errors.append(e)


def _verify_range(bootstrap, topic, start: dict[int, int], end: dict[int, int], acked: dict, where: str):
    """Records [start[p], end[p]) of each partition: dense offsets and acked values in place."""
    got = consume_range(bootstrap, topic, dict(start), dict(end), timeout=120)
    for p in range(PARTITIONS):
        offsets = [m.offset() for m in got[p]]
        assert offsets == list(range(start[p], end[p])), \
            f"{where}: partition {p} offsets not dense in [{start[p]}, {end[p]}): " \
            f"got {len(offsets)} records, first gaps at {_first_gap(offsets, start[p])}"
        for m in got[p]:
            want = acked.get((p, m.offset()))
            assert want is None or m.value() == want, \
                f"{where}: partition {p} offset {m.offset()} holds {m.value()!r}, acknowledged {want!r}"


def _first_gap(offsets, start):
    for i, o in enumerate(offsets):
        if o != start + i:
            return start + i
    return None


@pytest.mark.timeout(1200)
def test_kill9_during_acks_all_production(broker):
    seed = int(os.environ.get("LAKESTREAM_CRASH_SEED", str(time.time_ns() % 1_000_000_007)))
    rng = random.Random(seed)
    print(f"crash test seed={seed} cycles={CYCLES} (LAKESTREAM_CRASH_SEED to repeat)")
    t = unique("crash")
    create_topic(broker.bootstrap, t, PARTITIONS)
    acks = AckLog()
    verified = {p: 0 for p in range(PARTITIONS)}
    prev_high = {p: 0 for p in range(PARTITIONS)}
    cycles_with_acks = 0

    for cycle in range(CYCLES):
        before = len(acks.acked)
        p = producer(broker.bootstrap, **{"acks": "all", "linger.ms": 2, "queue.buffering.max.messages": 20000,
                                          "message.timeout.ms": 30000, "retry.backoff.ms": 50})
        stop = threading.Event()
        errors: list = []
        th = threading.Thread(target=_produce_until, args=(p, t, cycle, stop, acks, errors), daemon=True)
        th.start()
        delay = rng.uniform(0.05, 1.5)
        time.sleep(delay)
        broker.kill9()
        stop.set()
        th.join(30)
        assert not th.is_alive(), "producer thread did not stop"
        assert not errors, errors
        # Whatever was not acknowledged by now never will be: drop it.
        p.purge(in_queue=True, in_flight=True, blocking=False)
        p.flush(10)
        del p

        broker.start()
        new_acks = len(acks.acked) - before
        cycles_with_acks += new_acks > 0
        print(f"cycle {cycle}: killed after {delay:.2f}s, {new_acks} newly acked")
        assert not acks.duplicate_acks, f"two records acknowledged at the same offset: {acks.duplicate_acks[:3]}"

        wm = watermarks(broker.bootstrap, t, range(PARTITIONS))
        where = f"cycle {cycle} (seed {seed}, kill after {delay:.2f}s)"
        with acks.lock:
            acked = dict(acks.acked)
        for part in range(PARTITIONS):
            lo, hi = wm[part]
            assert lo == 0, f"{where}: partition {part} log start offset {lo}"
            assert hi >= prev_high[part], f"{where}: partition {part} high watermark went back {prev_high[part]} -> {hi}"
            top = max((o for (pp, o) in acked if pp == part), default=-1)
            assert hi > top, f"{where}: partition {part} high watermark {hi} but offset {top} was acknowledged"
        _verify_range(broker.bootstrap, t, verified, {q: wm[q][1] for q in range(PARTITIONS)}, acked, where)
        verified = {q: wm[q][1] for q in range(PARTITIONS)}
        prev_high = dict(verified)

    assert acks.acked, "no record was ever acknowledged: the test proved nothing"
    assert cycles_with_acks >= CYCLES // 4, f"only {cycles_with_acks} of {CYCLES} cycles had acknowledged records"

    # Final: everything from offset 0, after one more (clean) restart.
    broker.restart()
    wm = watermarks(broker.bootstrap, t, range(PARTITIONS))
    assert {q: wm[q][1] for q in range(PARTITIONS)} == verified, f"watermarks changed over a clean restart: {wm}"
    _verify_range(broker.bootstrap, t, {q: 0 for q in range(PARTITIONS)}, verified, acks.acked, "final")
    got_offsets = {(m.partition(), m.offset()) for msgs in read_all(broker.bootstrap, t, range(PARTITIONS)).values()
                   for m in msgs}
    missing = [k for k in acks.acked if k not in got_offsets]
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {missing[:5]}"
    print(f"total acknowledged: {len(acks.acked)}, failed/purged: {acks.failed}, high watermarks {verified}")


def test_clean_restart_keeps_everything(broker):
    t = unique("clean")
    adm = admin(broker.bootstrap)
    create_topic(broker.bootstrap, t, PARTITIONS, config={"retention.ms": "123456789"}, adm=adm)
    p = producer(broker.bootstrap, **{"acks": "all"})
    n = 6000
    d = produce_all(p, t, ({"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % PARTITIONS,
                            "headers": [("h", f"{i}".encode())]} for i in range(n)))
    assert not d.errors
    acked = {(m.partition(), m.offset()): m.value() for m in d.ok}
    wm_before = watermarks(broker.bootstrap, t, range(PARTITIONS))

    for round_ in range(2):
        info = broker.restart()
        assert not info["killed"], "broker did not exit within 15 s of SIGTERM"
        assert topic_partitions(admin(broker.bootstrap), t) == list(range(PARTITIONS))
        assert watermarks(broker.bootstrap, t, range(PARTITIONS)) == wm_before
        got = consume_range(broker.bootstrap, t, {q: OFFSET_BEGINNING for q in range(PARTITIONS)},
                            {q: wm_before[q][1] for q in range(PARTITIONS)})
        seen = {}
        for part, msgs in got.items():
            assert [m.offset() for m in msgs] == list(range(wm_before[part][1]))
            for m in msgs:
                seen[(part, m.offset())] = m.value()
                i = int(m.value()[1:])
                assert m.key() == f"k{i}".encode() and m.headers() == [("h", f"{i}".encode())]
        assert seen == acked, f"round {round_}: records differ after a clean restart"

    # Offsets continue where they were; the topic config survived.
    d = produce_all(producer(broker.bootstrap), t, [{"value": b"after", "partition": 0}])
    assert d.ok[0].offset() == wm_before[0][1]
    from confluent_kafka.admin import ConfigResource, ResourceType
    res = ConfigResource(ResourceType.TOPIC, t)
    adm = admin(broker.bootstrap)  # keep the handle alive until the future resolves
    cfg = adm.describe_configs([res], request_timeout=30)[res].result(timeout=30)
    assert cfg["retention.ms"].value == "123456789"
