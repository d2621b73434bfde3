"""Cold tier (issue #4): sealed segments move to object storage as Parquet; Kafka fetches and
ListOffsets span hot + cold transparently; the Parquet is readable by others (DuckDB).

Stores: the default local folder (`<data-dir>/cold`) and a real S3 server (SeaweedFS `weed mini`,
the `seaweedfs` fixture). The broker is watched through its HTTP admin endpoint
(`GET /v1/topics/{name}`, `GET /metrics`) and the store through pyarrow.fs.

Knobs: LAKESTREAM_COLD_RECORDS (default 1,000,000: the issue's number) for the round-trip tests,
LAKESTREAM_COLD_CRASH_CYCLES (default 6) and LAKESTREAM_COLD_CRASH_SEED for the kill -9 test."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from conftest import lakestream_bin
from e2e_util import (AckLog, ColdStore, check_tiling, consume_range, consumer, create_topic, http_sql, local_segments,
                      metrics, partition_status, produce_stream, producer, RecordStream,
                      tier_metrics, TimeIndex, topic_status, unique, verify_stream, wait_tiered, wait_until, watermarks)

MiB = 1 << 20
N_RECORDS = int(os.environ.get("LAKESTREAM_COLD_RECORDS", "1000000"))
CRASH_CYCLES = int(os.environ.get("LAKESTREAM_COLD_CRASH_CYCLES", "6"))
TIER_INTERVAL_MS = "200"


class Steps:
    """Prints each step with its duration (pytest shows it for failing tests), and prefixes
    assertion messages with the step they failed in."""

    def __init__(self, name: str):
        self.name, self.t0, self.current, self.started = name, time.monotonic(), None, None

    def __call__(self, what: str) -> str:
        now = time.monotonic()
        if self.current:
            print(f"[{self.name}] done: {self.current} ({now - self.started:.1f}s)", flush=True)
        print(f"[{self.name}] +{now - self.t0:.1f}s step: {what}", flush=True)
        self.current, self.started = what, now
        return f"[{self.name}: {what}] "


def cold_broker(kind: str, request, prefix: str, *extra, tier_interval_ms: str = TIER_INTERVAL_MS):
    """A broker (HTTP admin on) whose cold store is the default local folder ("local") or a
    SeaweedFS bucket under `prefix` ("s3"), and that store as a ColdStore. (Fixtures come from
    `request` so that SeaweedFS is set up before, and stopped after, the brokers.)"""
    if kind == "local":  # the default: <data-dir>/cold
        b = request.getfixturevalue("make_broker")("--tier-interval-ms", tier_interval_ms, *extra, http=True)
        return b, ColdStore.local(b.data_dir / "cold")
    if kind == "file":  # a folder of its own, as a file:// URL
        path = request.getfixturevalue("tmp_path") / "coldstore" / prefix
        b = request.getfixturevalue("make_broker")("--cold-store", f"file://{path}", "--tier-interval-ms",
                                                   tier_interval_ms, *extra, http=True)
        return b, ColdStore.local(path)
    sw = request.getfixturevalue("seaweedfs")
    make_broker = request.getfixturevalue("make_broker")
    b = make_broker("--cold-store", sw.url(prefix), "--tier-interval-ms", tier_interval_ms, *extra,
                    env=sw.env, http=True)
    return b, ColdStore.s3(sw, prefix)


class LocalBytesSampler:
    """Polls /v1/topics/{topic} in the background and keeps the peak local_bytes per partition
    (for the report: during a burst the hot log may grow until uploads catch up)."""

    def __init__(self, broker, topic: str):
        self.broker, self.topic, self.peak, self.errors = broker, topic, {}, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.5):
            try:
                for p, s in partition_status(topic_status(self.broker, self.topic)).items():
                    self.peak[p] = max(self.peak.get(p, 0), s["local_bytes"])
            except Exception:  # noqa: BLE001 - only a report
                self.errors += 1

    def close(self) -> dict[int, int]:
        self.stop.set()
        self.thread.join(5)
        return self.peak


# --------------------------------------------------------------------- the fixture itself
def test_seaweedfs_fixture_serves_s3(seaweedfs):
    """The S3 server the other tests use: write, list and read an object with pyarrow.fs, and
    keep it over a stop/start (what the outage test does). Run this first when S3 tests fail."""
    import pyarrow.fs as pafs
    fs = seaweedfs.filesystem()
    key = f"{seaweedfs.bucket}/probe/{unique('obj')}/0/00000000000000000000-00000000000000000010-x.parquet"
    with fs.open_output_stream(key) as f:
        f.write(b"hello cold tier")
    listed = {i.path: i.size for i in fs.get_file_info(pafs.FileSelector(f"{seaweedfs.bucket}/probe", recursive=True))
              if i.type == pafs.FileType.File}
    assert listed == {key: 15}, listed
    store = ColdStore.s3(seaweedfs, "probe")
    assert store.list() == {key[len(seaweedfs.bucket) + len("/probe/"):]: 15}
    print(f"{seaweedfs}: started in {seaweedfs.start_seconds:.1f}s")

    seaweedfs.stop()
    assert not seaweedfs.running
    seaweedfs.start()
    with fs.open_input_stream(key) as f:
        assert f.read() == b"hello cold tier", "object lost over a SeaweedFS stop/start"
    print(f"restarted in {seaweedfs.start_seconds:.1f}s")


# --------------------------------------------------------------------- a million records through the cold tier
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind,compression", [("local", "zstd"), ("s3", "none")], ids=["local-zstd", "s3-uncompressed"])
def test_million_records_round_trip_through_cold_tier(kind, compression, request, tmp_path):
    """Produce N records (keys, 50-200 B values, headers, jittered CreateTime), let the cold tier
    take all sealed segments with a 3 MiB hot window, then: the objects are in the store and the
    manifest names exactly a contiguous cover of the cold range; consuming from earliest returns
    every record exactly; offsets_for_times finds exact offsets in cold data; DuckDB reads the
    same records straight from the Parquet objects; local_bytes stays bounded."""
    P, SEG, LOCAL_RET = 3, MiB, 3 * MiB
    step = Steps(f"{kind}")
    where = step("start broker")
    broker, store = cold_broker(kind, request, "lake/cold")
    t = unique("cold")
    create_topic(broker.bootstrap, t, P, config={"segment.bytes": str(SEG), "local.retention.bytes": str(LOCAL_RET)})
    now_ms = int(time.time() * 1000)
    stream = RecordStream(P, now_ms - (N_RECORDS // P) * 2 - 60_000, seed=len(kind))

    where = step(f"produce {N_RECORDS} records (compression {compression})")
    sampler = LocalBytesSampler(broker, t)
    request.addfinalizer(sampler.close)
    produce_stream(broker.bootstrap, t, stream, 0, N_RECORDS, **{"compression.type": compression})
    wm = watermarks(broker.bootstrap, t, range(P))
    want_hw = {p: len(range(p, N_RECORDS, P)) for p in range(P)}
    assert {p: wm[p] for p in range(P)} == {p: (0, want_hw[p]) for p in range(P)}, f"{where}watermarks {wm}"

    for p, s in partition_status(topic_status(broker, t)).items():
        assert s["log_start_offset"] == 0 and s["high_watermark"] == want_hw[p], f"{where}p{p}: {s}"
        # (local retention can only delete once the log is past LOCAL_RET + one segment)
        assert s["local_bytes"] > LOCAL_RET + SEG or s["local_start_offset"] > 0, \
            f"{where}p{p}: only {s['local_bytes']} bytes of log: too few records to exercise the cold tier " \
            f"(raise LAKESTREAM_COLD_RECORDS)"

    where = step("wait until every sealed segment is cold and the hot log is trimmed")
    status = wait_tiered(broker, t, range(P), timeout=300, what=where, min_cold_fraction=0.75,
                         max_local_bytes=LOCAL_RET + 2 * SEG)
    peak = sampler.close()
    parts = partition_status(status)
    print(f"status: {status}\npeak local_bytes during produce/upload: {peak}\ntier metrics: {tier_metrics(broker)}")

    where = step("the local disk agrees: old segments are gone, the hot log is small")
    for p in range(P):
        segs = local_segments(broker, t, p)
        assert segs, f"{where}p{p}: no segment files under {broker.data_dir / 'topics' / t / str(p)}"
        assert min(segs) == parts[p]["local_start_offset"], \
            f"{where}p{p}: first local segment starts at {min(segs)}, status says local_start_offset " \
            f"{parts[p]['local_start_offset']}"
        assert sum(segs.values()) <= LOCAL_RET + 2 * SEG, f"{where}p{p}: {sum(segs.values())} bytes of .log files"

    where = step("cold objects exist in the store and tile the cold range")
    named_objects = {}
    for p in range(P):
        cold = parts[p]["cold"]
        manifest, objs = store.manifest_objects(t, p)
        missing = [o.path for o in objs if o.size < 0]
        assert not missing, f"{where}p{p}: {manifest} names objects missing from {store.description}: {missing[:5]}"
        start, end = check_tiling(objs, f"{where}p{p} objects of {manifest}")
        assert (start, end) == (cold["start_offset"], cold["end_offset"]), \
            f"{where}p{p}: manifest covers [{start}, {end}), /v1/topics says cold [{cold['start_offset']}, " \
            f"{cold['end_offset']})"
        assert len(objs) == cold["objects"], f"{where}p{p}: manifest names {len(objs)} objects, status says {cold}"
        assert sum(o.size for o in objs) == cold["bytes"], \
            f"{where}p{p}: objects hold {sum(o.size for o in objs)} bytes in the store, status says {cold}"
        stored = store.data_objects(t, p)
        orphans = sorted({o.path for o in stored} - {o.path for o in objs})
        print(f"p{p}: {len(objs)} objects, {cold['bytes']} bytes, cold [{start}, {end}), hot from "
              f"{parts[p]['local_start_offset']}, {len(orphans)} unnamed objects in the store")
        named_objects[p] = objs

    where = step("consume everything from earliest and compare exactly")
    n = verify_stream(broker.bootstrap, t, stream, {p: OFFSET_BEGINNING for p in range(P)}, want_hw,
                      timeout=600, where=where)
    assert n == N_RECORDS

    where = step("offsets_for_times on cold (and one hot) timestamps")
    rng = random.Random(7)
    c = consumer(broker.bootstrap)
    try:
        for p in range(P):
            ts = stream.partition_timestamps(p, want_hw[p])
            index = TimeIndex(ts)
            cold_only_end = parts[p]["local_start_offset"]
            offs = [rng.randrange(0, cold_only_end) for _ in range(6)] + [cold_only_end - 1, 0]
            targets = [stream.t0 - 10_000] + [ts[o] + d for o in offs for d in (-1, 0, 1)]
            targets.append(ts[rng.randrange(cold_only_end, want_hw[p])])  # one in hot data
            for target in targets:
                want = index.first_at_or_after(target)
                (r,) = c.offsets_for_times([TopicPartition(t, p, target)], timeout=30)
                assert r.error is None, f"{where}p{p} timestamp {target}: {r.error}"
                assert r.offset == want, \
                    f"{where}p{p} timestamp {target}: got offset {r.offset}, want {want} (first offset with " \
                    f"timestamp >= target; cold holds [0, {parts[p]['cold']['end_offset']}), hot from {cold_only_end})"
    finally:
        c.close()

    where = step("DuckDB reads the cold Parquet objects directly")
    check_parquet_with_duckdb(store, t, stream, named_objects, tmp_path / "parquet", where)

    where = step("SQL over hot and cold (ranged reads of the objects) gives every record once")
    check_sql_over_topic(broker, t, stream, want_hw, where)

    where = step("hot log still bounded after reading everything back")
    for p, s in partition_status(topic_status(broker, t)).items():
        assert s["local_bytes"] <= LOCAL_RET + 2 * SEG, f"{where}p{p}: local_bytes {s['local_bytes']}"
        on_disk = sum(local_segments(broker, t, p).values())
        assert on_disk <= LOCAL_RET + 2 * SEG, f"{where}p{p}: {on_disk} bytes of .log files"

    where = step("lakestream topics describe shows the cold tier")
    out = subprocess.run([lakestream_bin(), "topics", "describe", t, "--bootstrap", broker.bootstrap,
                          "--http-addr", broker.http_addr], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{where}exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    # The format is not fixed: only that it talks about the cold tier and shows each object count.
    assert "cold" in out.stdout.lower(), f"{where}nothing about the cold tier:\n{out.stdout}"
    now = partition_status(topic_status(broker, t))
    for p in range(P):
        n_obj = now[p]["cold"]["objects"]
        assert re.search(rf"(?<![\w.]){n_obj}(?![\w.])", out.stdout), \
            f"{where}no object count {n_obj} for p{p}:\n{out.stdout}"
    step("done")


def check_sql_over_topic(broker, topic: str, stream: RecordStream, counts: dict, where: str):
    """Per partition: rows, distinct offsets, value and key bytes over the whole topic; then the
    rows of a narrow CreateTime window (jittered, so out of order) — against what was produced."""
    want, stamps = {}, []
    for p, n in counts.items():
        rows = value_bytes = key_bytes = 0
        for off in range(n):
            _, key, value, ts, _ = stream.fields(stream.index(p, off))
            rows += 1
            value_bytes += len(value or b"")
            key_bytes += len(key or b"")
            stamps.append(ts)
        want[p] = {"p": p, "n": rows, "offsets": rows, "vb": value_bytes, "kb": key_bytes}
    status, _, body = http_sql(broker, f"SELECT _partition AS p, count(*) AS n, count(DISTINCT _offset) AS offsets, "
                                       f"sum(coalesce(length(encode(_value, 'hex')), 0)) / 2 AS vb, sum(coalesce(length(encode(_key, 'hex')), 0)) / 2 AS kb "
                                       f"FROM \"{topic}\" GROUP BY _partition ORDER BY p", timeout=300)
    assert status == 200, f"{where}{body[:500]!r}"
    assert json.loads(body)["rows"] == [want[p] for p in sorted(want)], f"{where}{body[:1000]!r}"
    stamps.sort()
    lo, hi = stamps[len(stamps) // 3], stamps[len(stamps) // 3 + len(stamps) // 100]
    expected = sum(1 for ts in stamps if lo <= ts < hi)
    status, _, body = http_sql(broker, f"SELECT count(*) AS n FROM \"{topic}\" WHERE _timestamp >= to_timestamp_millis({lo}) "
                                       f"AND _timestamp < to_timestamp_millis({hi})", timeout=300)
    assert status == 200, f"{where}{body[:500]!r}"
    assert json.loads(body)["rows"] == [{"n": expected}], f"{where}window [{lo}, {hi}): {body[:500]!r}"


PARQUET_TYPES = {"offset": "BIGINT", "timestamp": "TIMESTAMP WITH TIME ZONE", "key": "BLOB", "value": "BLOB",
                 "headers": "STRUCT(\"key\" BLOB, \"value\" BLOB)[]"}


def check_parquet_with_duckdb(store: ColdStore, topic: str, stream: RecordStream, named_objects: dict, tmp, where):
    """DuckDB over the objects the manifests name (S3 objects downloaded first: DuckDB's httpfs
    extension cannot be installed here): the schema, per-object row counts and offset ranges as
    the file names say, and every row equal to what was produced."""
    import duckdb
    con = duckdb.connect()
    for p, objs in named_objects.items():
        paths = store.local_copies([o.path for o in objs], tmp)
        lst = "[" + ", ".join("'" + x.replace("'", "''") + "'" for x in paths) + "]"
        schema = {r[0]: r[1] for r in con.execute(f"describe select * from read_parquet({lst})").fetchall()}
        for col, typ in PARQUET_TYPES.items():
            assert col in schema, f"{where}column {col} missing from the Parquet schema {schema}"
            norm = schema[col].replace('"', "").upper()
            assert norm == typ.replace('"', "").upper(), f"{where}column {col} is {schema[col]}, want {typ}"
        per_file = con.execute(f'select filename, count(*), min("offset"), max("offset") '
                               f"from read_parquet({lst}, filename=true) group by filename").fetchall()
        by_path = {pth: o for pth, o in zip(paths, objs)}
        for fname, count, lo, hi in per_file:
            o = by_path[fname]
            assert (count, lo, hi) == (o.next_offset - o.base_offset, o.base_offset, o.next_offset - 1), \
                f"{where}{o.path}: {count} rows, offsets [{lo}, {hi}]; the name says [{o.base_offset}, {o.next_offset})"
        assert len(per_file) == len(objs), f"{where}p{p}: DuckDB read {len(per_file)} of {len(objs)} files"
        cur = con.execute(f'select "offset", epoch_ms("timestamp"), key, value, headers '
                          f'from read_parquet({lst}) order by "offset"')
        expect_next = objs[0].base_offset
        while True:
            rows = cur.fetchmany(50_000)
            if not rows:
                break
            for off, ts, key, value, headers in rows:
                assert off == expect_next, f"{where}p{p}: offset {off} after {expect_next - 1}"
                expect_next += 1
                i = stream.index(p, off)
                _, wkey, wvalue, wts, wheaders = stream.fields(i)
                got_h = [(h["key"].decode(), h["value"]) for h in headers] if headers else None
                got = (ts, key, value, got_h)
                want = (wts, wkey, wvalue, wheaders)
                assert got == want, f"{where}p{p} offset {off} (record {i}): Parquet row {got!r:.300}\n" \
                                    f"  produced {want!r:.300}"
        assert expect_next == objs[-1].next_offset, f"{where}p{p}: rows end at {expect_next}"
        print(f"duckdb p{p}: {expect_next - objs[0].base_offset} rows in {len(objs)} files match")


# --------------------------------------------------------------------- S3 outage
@pytest.mark.timeout(420)
def test_s3_outage_keeps_data_local_and_recovers(seaweedfs, request):
    """SeaweedFS goes down mid-stream: acks=all production goes on, uploads fail (counted in
    /metrics), nothing that is not cold leaves the local log and hot reads still work; once S3 is
    back, the uploads catch up, local retention resumes, and every record reads back exactly."""
    P, SEG, LOCAL_RET = 2, MiB, MiB
    n1 = n2 = 40_000  # ~3.8 MB per partition per phase: several sealed segments each time
    step = Steps("outage")
    where = step("start broker, produce the first part")
    broker, store = cold_broker("s3", request, "outage")
    t = unique("outage")
    create_topic(broker.bootstrap, t, P, config={"segment.bytes": str(SEG), "local.retention.bytes": str(LOCAL_RET)})
    stream = RecordStream(P, int(time.time() * 1000) - 600_000, seed=3)
    produce_stream(broker.bootstrap, t, stream, 0, n1)
    before = partition_status(wait_tiered(broker, t, range(P), timeout=180, what=where + "uploads before the outage",
                                          max_local_bytes=LOCAL_RET + 2 * SEG))
    errors_before = metrics(broker).get("lakestream_tier_upload_errors_total")
    assert errors_before is not None, f"{where}/metrics has no lakestream_tier_upload_errors_total"
    hw1 = {p: s["high_watermark"] for p, s in before.items()}

    where = step("stop SeaweedFS; acks=all production must go on")
    seaweedfs.stop()
    t0 = time.monotonic()
    produce_stream(broker.bootstrap, t, stream, n1, n1 + n2, flush_timeout=120)
    print(f"produced {n2} records during the outage in {time.monotonic() - t0:.1f}s")

    where = step("upload errors show in /metrics; data stays local")
    wait_until(lambda: metrics(broker).get("lakestream_tier_upload_errors_total", 0) > errors_before, timeout=120,
               interval=0.5, what=where + "lakestream_tier_upload_errors_total to grow")
    during = partition_status(topic_status(broker, t))
    for p in range(P):
        s, b = during[p], before[p]
        assert s["cold"]["end_offset"] == b["cold"]["end_offset"], f"{where}p{p}: cold grew while S3 was down? {s}"
        assert s["local_start_offset"] <= s["cold"]["end_offset"], \
            f"{where}p{p}: local log starts at {s['local_start_offset']} but cold ends at {s['cold']['end_offset']}: " \
            f"records deleted locally before they were uploaded"
        assert s["local_start_offset"] <= hw1[p], f"{where}p{p}: records produced during the outage left the local log"
        assert s["local_bytes"] > LOCAL_RET + SEG, \
            f"{where}p{p}: local_bytes {s['local_bytes']}: expected the unuploaded segments to be kept past " \
            f"local.retention.bytes"
    wait_until(lambda: tier_metrics(broker).get("lakestream_tier_pending_segments", 0) > 0, timeout=30, interval=0.2,
               what=where + "lakestream_tier_pending_segments > 0 while S3 is down (sealed segments wait for upload)")
    tm = tier_metrics(broker)
    hw2 = watermarks(broker.bootstrap, t, range(P))
    want_hw = {p: len(range(p, n1 + n2, P)) for p in range(P)}
    assert {p: hw2[p][1] for p in range(P)} == want_hw, f"{where}watermarks {hw2}"
    where = step("records not yet in S3 are readable during the outage")
    # (from the cold end: older local segments, already uploaded, may be trimmed meanwhile)
    verify_stream(broker.bootstrap, t, stream, {p: during[p]["cold"]["end_offset"] for p in range(P)}, want_hw,
                  timeout=120, where=where)
    print(f"during the outage: {during}\ntier metrics: {tm}")

    where = step("restart SeaweedFS; uploads catch up")
    seaweedfs.start()
    after = wait_tiered(broker, t, range(P), timeout=180, what=where, cold_end_at_least=hw1,
                        max_local_bytes=LOCAL_RET + 2 * SEG)
    for p, s in partition_status(after).items():
        objs = store.manifest_objects(t, p)[1]
        assert check_tiling(objs, f"{where}p{p}") == (s["cold"]["start_offset"], s["cold"]["end_offset"])
        assert all(o.size >= 0 for o in objs), f"{where}p{p}: manifest names missing objects"

    where = step("consume everything from earliest")
    verify_stream(broker.bootstrap, t, stream, {p: OFFSET_BEGINNING for p in range(P)}, want_hw, timeout=180,
                  where=where)
    step("done")


# --------------------------------------------------------------------- kill -9 during uploads
def _produce_paced(p, topic, partitions, cycle, stop: threading.Event, acks: AckLog, errors: list, rate: int):
    """acks=all production at about `rate` records/s (values ~150 B, unique per cycle/seq)."""
    seq = 0
    pad = b"." * 130
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            for _ in range(100):
                value = b"c%03d-s%08d-" % (cycle, seq) + pad
                try:
                    p.produce(topic, value=value, partition=seq % partitions, on_delivery=acks.callback)
                except BufferError:
                    p.poll(0.05)
                    continue
                seq += 1
            p.poll(0)
            ahead = seq / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    except Exception as e:  # noqa: BLE001 - surfaced by the test
        errors.append(e)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_kill9_during_uploads_loses_nothing(kind, request):
    """SIGKILL the broker while segments are being uploaded (S3, or a file:// folder), several
    times, restarting it each time: every acknowledged record is still there at its offset, offsets are dense from 0,
    the cold range has no hole, and the manifest names no object that does not exist."""
    P, SEG, LOCAL_RET = 2, 256 * 1024, 512 * 1024
    seed = int(os.environ.get("LAKESTREAM_COLD_CRASH_SEED", str(time.time_ns() % 1_000_000_007)))
    rng = random.Random(seed)
    step = Steps(f"kill9-{kind}")
    print(f"seed={seed} cycles={CRASH_CYCLES} (LAKESTREAM_COLD_CRASH_SEED to repeat)")
    broker, store = cold_broker(kind, request, "crash", tier_interval_ms="100")
    t = unique("crash")
    create_topic(broker.bootstrap, t, P, config={"segment.bytes": str(SEG), "local.retention.bytes": str(LOCAL_RET)})
    acks = AckLog()

    for cycle in range(CRASH_CYCLES):
        where = step(f"cycle {cycle}: produce, kill -9 during uploads")
        if cycle:
            broker.start()
        uploaded0 = tier_metrics(broker).get("lakestream_tier_uploaded_bytes_total")
        assert uploaded0 is not None, f"{where}/metrics has no lakestream_tier_uploaded_bytes_total"
        p = producer(broker.bootstrap, **{"acks": "all", "linger.ms": 5, "message.timeout.ms": 30000,
                                          "queue.buffering.max.messages": 50000})
        stop = threading.Event()
        errors: list = []
        th = threading.Thread(target=_produce_paced, args=(p, t, P, cycle, stop, acks, errors, 20_000), daemon=True)
        th.start()
        try:
            wait_until(lambda: tier_metrics(broker).get("lakestream_tier_uploaded_bytes_total", 0) > uploaded0,
                       timeout=60, interval=0.02, what=where + "an upload in this cycle")
            # Right after an upload (manifest write, local deletion, the next upload) or later.
            delay = rng.uniform(0.0, 0.05) if cycle % 2 == 0 else rng.uniform(0.05, 1.0)
            time.sleep(delay)
            broker.kill9()
        finally:
            stop.set()
            th.join(30)
        assert not th.is_alive(), "producer thread did not stop"
        assert not errors, errors
        p.purge(in_queue=True, in_flight=True, blocking=False)
        p.flush(10)
        del p
        print(f"cycle {cycle}: killed {delay:.2f}s after an upload was seen; {len(acks.acked)} acked so far")
        assert not acks.duplicate_acks, f"{where}two records acknowledged at one offset: {acks.duplicate_acks[:3]}"

    where = step("restart; tiering settles")
    broker.start()
    acked = acks.snapshot()
    assert acked, "no record was ever acknowledged: the test proved nothing"
    status = wait_tiered(broker, t, range(P), timeout=180, what=where, cold_only_prefix=False,
                         max_local_bytes=LOCAL_RET + 2 * SEG)
    parts = partition_status(status)
    for p in range(P):
        top = max((o for (pp, o) in acked if pp == p), default=-1)
        assert parts[p]["high_watermark"] > top, f"{where}p{p}: high watermark {parts[p]} but offset {top} was acked"
        assert parts[p]["log_start_offset"] == 0, f"{where}p{p}: {parts[p]}"

    where = step("manifests name only objects that exist, covering the cold range")
    for p in range(P):
        manifest, objs = store.manifest_objects(t, p)
        missing = [o.path for o in objs if o.size < 0]
        assert not missing, f"{where}p{p}: {manifest} names objects that do not exist: {missing[:5]}"
        cold = parts[p]["cold"]
        assert check_tiling(objs, f"{where}p{p}") == (cold["start_offset"], cold["end_offset"]), \
            f"{where}p{p}: {manifest} vs {cold}"
        orphans = sorted({o.path for o in store.data_objects(t, p)} - {o.path for o in objs})
        print(f"p{p}: {len(objs)} objects, cold [{cold['start_offset']}, {cold['end_offset']}), hot from "
              f"{parts[p]['local_start_offset']}; {len(orphans)} objects not in the manifest")

    where = step("every acknowledged record is there, offsets dense from 0")
    ends = {p: parts[p]["high_watermark"] for p in range(P)}
    got = consume_range(broker.bootstrap, t, {p: OFFSET_BEGINNING for p in range(P)}, ends, timeout=180)
    for p in range(P):
        offsets = [m.offset() for m in got[p]]
        assert offsets == list(range(ends[p])), \
            f"{where}p{p}: offsets not dense in [0, {ends[p]}) ({len(offsets)} records)"
        for m in got[p]:
            want = acked.get((p, m.offset()))
            assert want is None or m.value() == want, \
                f"{where}p{p} offset {m.offset()}: {m.value()[:30]!r}, acknowledged {want[:30]!r}"
    seen = {(p, m.offset()) for p in range(P) for m in got[p]}
    lost = [k for k in acked if k not in seen]
    assert not lost, f"{where}{len(lost)} acknowledged records missing, e.g. {sorted(lost)[:5]}"
    print(f"acknowledged {len(acked)}, failed/purged {acks.failed}, high watermarks {ends}")
    step("done")
