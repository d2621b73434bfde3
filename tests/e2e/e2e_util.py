"""Shared helpers for the e2e tests: confluent-kafka admin/produce/consume wrappers,
a pure-Python CRC-32C, and a tiny hand-written Kafka wire codec for raw-socket tests."""

from __future__ import annotations

import logging
import socket
import struct
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30.0
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(pred, timeout: float = TIMEOUT, interval: float = 0.1, what: str = "condition"):
    """Poll `pred()` until it returns a truthy value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    v = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - report the last one
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value {v!r})"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


# --------------------------------------------------------------------- confluent-kafka
def base_conf(bootstrap: str, **extra) -> dict:
    # librdkafka logs go to Python logging (pytest shows them for failing tests only) instead of
    # stderr, where clients still reconnecting to a dead broker would flood the output.
    conf = {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "socket.timeout.ms": 10000,
            "logger": LIBRDKAFKA_LOG}
    conf.update(extra)
    return conf


def admin(bootstrap: str) -> AdminClient:
    return AdminClient(base_conf(bootstrap))


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None,
                 adm: AdminClient | None = None) -> None:
    adm = adm or admin(bootstrap)
    fs = adm.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
                           request_timeout=TIMEOUT)
    fs[name].result(timeout=TIMEOUT)
    # The topic must be visible with all its partitions before we go on.
    wait_until(lambda: len(topic_partitions(adm, name)) == partitions, what=f"topic {name} with {partitions} partitions in metadata")


def topic_partitions(adm_or_client, name: str) -> list[int]:
    md = adm_or_client.list_topics(topic=name, timeout=10)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return []
    return sorted(t.partitions)


def producer(bootstrap: str, **extra) -> Producer:
    conf = base_conf(bootstrap, **{"acks": "all", "linger.ms": 5, "message.timeout.ms": 30000})
    conf.update(extra)
    return Producer(conf)


def consumer(bootstrap: str, **extra) -> Consumer:
    """A consumer for manual assign() only. confluent-kafka insists on a group.id, but
    with assign() + explicit offsets + no commits the group is never joined."""
    conf = base_conf(bootstrap, **{"group.id": unique("nogroup"), "enable.auto.commit": False,
                                   "enable.auto.offset.store": False, "auto.offset.reset": "error",
                                   "enable.partition.eof": False, "fetch.wait.max.ms": 100})
    conf.update(extra)
    return Consumer(conf)


class Deliveries:
    """Delivery-report collector: `produce(..., on_delivery=d)`."""

    def __init__(self):
        self.ok = []      # Message objects
        self.errors = []  # (KafkaError, Message)

    def __call__(self, err, msg):
        if err is None:
            self.ok.append(msg)
        else:
            self.errors.append((err, msg))


def produce_all(p: Producer, topic: str, records, flush_timeout: float = 120.0, **kw) -> Deliveries:
    """records: iterable of dicts with produce() kwargs (key, value, partition, timestamp, headers)."""
    d = Deliveries()
    for r in records:
        while True:
            try:
                p.produce(topic, on_delivery=d, **kw, **r)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} messages still undelivered after flush({flush_timeout})"
    return d


def consume_range(bootstrap: str, topic: str, starts: dict[int, int], ends: dict[int, int],
                  timeout: float = 120.0, **conf) -> dict[int, list]:
    """Read partitions p from starts[p] (offset or logical) until the record at ends[p]-1 has been
    seen (ends[p] is an exclusive end offset). Returns {p: [Message, ...]}. Fails on timeout and
    on consumer errors."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        out = {p: [] for p in starts}
        pending = {p for p in starts if ends.get(p, 0) > (starts[p] if starts[p] >= 0 else 0)}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                got = {p: (len(out[p]), out[p][-1].offset() if out[p] else None) for p in out}
                raise AssertionError(f"timed out reading {topic}: want ends {ends}, got (count, last offset) {got}")
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"consumer error: {m.error()}")
                p = m.partition()
                out[p].append(m)
                if m.offset() >= ends[p] - 1:
                    pending.discard(p)
        return out
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partitions) -> dict[int, tuple[int, int]]:
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in partitions}
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, partitions, timeout: float = 120.0) -> dict[int, list]:
    """Everything from the beginning up to the current high watermark of each partition."""
    wm = watermarks(bootstrap, topic, partitions)
    return consume_range(bootstrap, topic, {p: OFFSET_BEGINNING for p in partitions},
                         {p: wm[p][1] for p in partitions}, timeout=timeout)


def err_code(e) -> int:
    """KafkaError code from a KafkaError or a KafkaException."""
    if isinstance(e, KafkaException):
        e = e.args[0]
    assert isinstance(e, KafkaError), f"not a KafkaError: {e!r}"
    return e.code()


# --------------------------------------------------------------------- CRC-32C (Castagnoli)
def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # reflected 0x1EDC6F41
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------- Kafka wire codec
def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag (works for varint and varlong)
    z &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def record_batch(records: list[tuple[bytes | None, bytes | None]], base_timestamp: int | None = None,
                 corrupt_crc: bool = False) -> bytes:
    """A v2 record batch (magic 2, no compression, no producer id) with `records` as (key, value)."""
    ts = int(time.time() * 1000) if base_timestamp is None else base_timestamp
    recs = bytearray()
    for i, (k, v) in enumerate(records):
        body = bytearray()
        body += struct.pack(">b", 0)        # attributes
        body += varint(0)                   # timestamp delta
        body += varint(i)                   # offset delta
        body += varint(-1) if k is None else varint(len(k)) + k
        body += varint(-1) if v is None else varint(len(v)) + v
        body += varint(0)                   # headers
        recs += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, ts, ts, -1, -1, -1, len(records)) + bytes(recs)
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_len = struct.pack(">ibI", -1, 2, crc) + after_crc   # partition leader epoch, magic, crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def request(api_key: int, api_version: int, correlation_id: int, body: bytes, client_id: str | None = "e2e-raw",
            flexible_header: bool = False) -> bytes:
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)
    if flexible_header:
        header += uvarint(0)  # empty tagged fields (request header v2)
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def produce_request_v7(correlation_id: int, topic: str, partition: int, batch: bytes, acks: int = -1,
                       timeout_ms: int = 10000) -> bytes:
    body = kstring(None) + struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(batch)) + batch
    return request(0, 7, correlation_id, body)


class Reader:
    def __init__(self, data: bytes):
        self.d, self.i = data, 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            raise ValueError(f"short read: need {n} bytes at {self.i}, have {len(self.d) - self.i}")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def unpack(self, fmt: str):
        v = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return v[0] if len(v) == 1 else v

    def string(self) -> str | None:
        n = self.unpack(">h")
        return None if n < 0 else self.take(n).decode()

    def remaining(self) -> int:
        return len(self.d) - self.i


def parse_produce_response_v7(body: bytes) -> list[tuple[str, int, int, int]]:
    """-> [(topic, partition, error_code, base_offset)] (the body after the correlation id)."""
    r = Reader(body)
    out = []
    for _ in range(r.unpack(">i")):
        name = r.string()
        for _ in range(r.unpack(">i")):
            part, err, base_offset, _log_append_time, _log_start = r.unpack(">ihqqq")
            out.append((name, part, err, base_offset))
    r.unpack(">i")  # throttle_time_ms
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in ProduceResponse v7"
    return out


def parse_api_versions_v0(body: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersions response v0 body -> (error_code, {api_key: (min, max)})."""
    r = Reader(body)
    err = r.unpack(">h")
    keys = {}
    for _ in range(r.unpack(">i")):
        k, lo, hi = r.unpack(">hhh")
        keys[k] = (lo, hi)
    return err, keys


class RawConn:
    """A raw Kafka connection: send frames, read size-prefixed responses."""

    def __init__(self, bootstrap: str, timeout: float = 10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(timeout)
        self.cid = 0

    def next_cid(self) -> int:
        self.cid += 1
        return self.cid

    def send(self, data: bytes, peer_may_close: bool = False) -> bool:
        """Send everything. With peer_may_close, a connection the broker already dropped is
        not an error: returns False instead."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            if peer_may_close:
                return False
            raise

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # already disconnected by the peer
            pass

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> tuple[int, bytes]:
        """-> (correlation_id, rest of the response after the v0 response header)."""
        (size,) = struct.unpack(">i", self.recv_exact(4))
        assert 4 <= size < 64 << 20, f"bad response size {size}"
        data = self.recv_exact(size)
        (cid,) = struct.unpack(">i", data[:4])
        return cid, data[4:]

    def api_versions_v0(self) -> tuple[int, dict[int, tuple[int, int]]]:
        cid = self.next_cid()
        self.send(request(18, 0, cid, b""))
        got_cid, body = self.recv_frame()
        assert got_cid == cid, f"correlation id {got_cid} != {cid}"
        return parse_api_versions_v0(body)

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Wait until the peer closes; returns whatever bytes arrived before the close.
        Raises AssertionError if the connection is still open after `timeout`."""
        self.sock.settimeout(0.5)
        got = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:  # reset / not connected: closed
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk
        raise AssertionError(f"connection still open after {timeout}s (received {len(got)} bytes)")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------- consumer-group wire codec
# Non-flexible (v0/v2) group requests, hand-encoded for raw-socket tests of the coordinator.
def kbytes(b: bytes | None) -> bytes:
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def consumer_subscription_v0(topics: list[str], user_data: bytes = b"") -> bytes:
    """ConsumerProtocolSubscription v0 (the metadata of a "consumer" protocol in JoinGroup)."""
    return struct.pack(">hi", 0, len(topics)) + b"".join(kstring(t) for t in topics) + kbytes(user_data)


def consumer_assignment_v0(assignment: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0 (what the leader hands each member in SyncGroup)."""
    out = struct.pack(">hi", 0, len(assignment))
    for t, parts in assignment.items():
        out += kstring(t) + struct.pack(">i", len(parts)) + b"".join(struct.pack(">i", p) for p in parts)
    return out + kbytes(b"")


def join_group_request_v0(correlation_id: int, group: str, member_id: str = "", session_timeout_ms: int = 30000,
                          protocol_type: str = "consumer",
                          protocols: list[tuple[str, bytes]] | None = None) -> bytes:
    protocols = [] if protocols is None else protocols
    body = kstring(group) + struct.pack(">i", session_timeout_ms) + kstring(member_id) + kstring(protocol_type)
    body += struct.pack(">i", len(protocols)) + b"".join(kstring(n) + kbytes(m) for n, m in protocols)
    return request(11, 0, correlation_id, body)


def parse_join_group_response_v0(body: bytes) -> dict:
    r = Reader(body)
    err, generation = r.unpack(">hi")
    out = {"error_code": err, "generation_id": generation, "protocol_name": r.string(),
           "leader": r.string(), "member_id": r.string(), "members": []}
    for _ in range(r.unpack(">i")):
        mid = r.string()
        n = r.unpack(">i")
        out["members"].append((mid, None if n < 0 else r.take(n)))
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in JoinGroupResponse v0"
    return out


def sync_group_request_v0(correlation_id: int, group: str, generation_id: int, member_id: str,
                          assignments: list[tuple[str, bytes]]) -> bytes:
    body = kstring(group) + struct.pack(">i", generation_id) + kstring(member_id)
    body += struct.pack(">i", len(assignments)) + b"".join(kstring(m) + kbytes(a) for m, a in assignments)
    return request(14, 0, correlation_id, body)


def parse_sync_group_response_v0(body: bytes) -> tuple[int, bytes | None]:
    r = Reader(body)
    err = r.unpack(">h")
    n = r.unpack(">i")
    assignment = None if n < 0 else r.take(n)
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in SyncGroupResponse v0"
    return err, assignment


def heartbeat_request_v0(correlation_id: int, group: str, generation_id: int, member_id: str) -> bytes:
    return request(12, 0, correlation_id, kstring(group) + struct.pack(">i", generation_id) + kstring(member_id))


def parse_heartbeat_response_v0(body: bytes) -> int:
    r = Reader(body)
    err = r.unpack(">h")
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in HeartbeatResponse v0"
    return err


def offset_commit_request_v2(correlation_id: int, group: str, generation_id: int, member_id: str,
                             offsets: dict[str, dict[int, int]], retention_time_ms: int = -1) -> bytes:
    body = kstring(group) + struct.pack(">i", generation_id) + kstring(member_id) + struct.pack(">q", retention_time_ms)
    body += struct.pack(">i", len(offsets))
    for t, parts in offsets.items():
        body += kstring(t) + struct.pack(">i", len(parts))
        for p, o in parts.items():
            body += struct.pack(">iq", p, o) + kstring("")
    return request(8, 2, correlation_id, body)


def parse_offset_commit_response_v2(body: bytes) -> dict[tuple[str, int], int]:
    """-> {(topic, partition): error_code}"""
    r = Reader(body)
    out = {}
    for _ in range(r.unpack(">i")):
        t = r.string()
        for _ in range(r.unpack(">i")):
            p, err = r.unpack(">ih")
            out[(t, p)] = err
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes in OffsetCommitResponse v2"
    return out


def raw_call(conn: "RawConn", frame_fn, *args, **kw) -> bytes:
    """Send `frame_fn(cid, *args, **kw)` on `conn` and return the response body (after the cid)."""
    cid = conn.next_cid()
    conn.send(frame_fn(cid, *args, **kw))
    got_cid, body = conn.recv_frame()
    assert got_cid == cid, f"correlation id {got_cid} != {cid}"
    return body


# --------------------------------------------------------------------- cold tier (issue #4)
# The broker's HTTP admin endpoint (`serve --http-addr`), the cold store as seen from outside
# (a local folder or an S3 prefix, through pyarrow.fs), and deterministic record streams that
# can be checked after a million records without keeping them in memory.
import bisect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from confluent_kafka import TIMESTAMP_CREATE_TIME  # noqa: E402


def http_get(base_url: str, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET base_url+path -> (status, body text); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(base_url + path, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def topic_status(broker, topic: str) -> dict:
    """`GET /v1/topics/{topic}` on the broker's HTTP admin endpoint, as JSON."""
    status, body = http_get(broker.http_url, f"/v1/topics/{topic}")
    assert status == 200, f"GET /v1/topics/{topic} -> HTTP {status}: {body[:500]}"
    return json.loads(body)


def partition_status(status: dict) -> dict[int, dict]:
    return {p["partition"]: p for p in status["partitions"]}


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value summed over all its label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if m:
            try:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
            except ValueError:
                pass
    return out


def metrics(broker) -> dict[str, float]:
    """`GET /metrics`, summed per metric name (see parse_metrics)."""
    status, body = http_get(broker.http_url, "/metrics")
    assert status == 200, f"GET /metrics -> HTTP {status}: {body[:500]}"
    return parse_metrics(body)


def tier_metrics(broker) -> dict[str, float]:
    return {k: v for k, v in metrics(broker).items() if k.startswith("lakestream_tier_")}


def tiering_problems(status: dict, partitions, *, cold_end_at_least: dict[int, int] | None = None,
                     min_cold_fraction: float | None = None, max_local_bytes: int | None = None,
                     cold_only_prefix: bool = True) -> list[str]:
    """What keeps a topic's partitions from being "tiered" (empty list: all good):
    - every partition has a cold range starting at its log start offset,
    - no hole between cold and hot (cold end_offset >= local_start_offset),
    - with cold_only_prefix, something lives only in the cold tier (local_start_offset > log start),
    - cold end_offset >= cold_end_at_least[p], and >= min_cold_fraction of the high watermark,
    - local_bytes <= max_local_bytes."""
    problems = []
    by_p = partition_status(status)
    for p in partitions:
        s = by_p.get(p)
        if s is None:
            problems.append(f"p{p}: missing from /v1/topics")
            continue
        cold = s.get("cold") or {}
        if not cold or cold.get("objects", 0) == 0:
            problems.append(f"p{p}: nothing in the cold tier yet ({s})")
            continue
        hw, log_start, local_start = s["high_watermark"], s["log_start_offset"], s["local_start_offset"]
        if cold["start_offset"] != log_start:
            problems.append(f"p{p}: cold start_offset {cold['start_offset']} != log_start_offset {log_start}")
        if cold["end_offset"] < local_start:
            problems.append(f"p{p}: hole between cold end_offset {cold['end_offset']} and local_start_offset "
                            f"{local_start}")
        if cold_only_prefix and local_start <= log_start:
            problems.append(f"p{p}: local_start_offset {local_start} == log start: no record lives only in cold "
                            f"storage yet (local retention has not deleted anything)")
        if cold_end_at_least and cold["end_offset"] < cold_end_at_least[p]:
            problems.append(f"p{p}: cold end_offset {cold['end_offset']} < {cold_end_at_least[p]}")
        if min_cold_fraction is not None and cold["end_offset"] < min_cold_fraction * hw:
            problems.append(f"p{p}: cold end_offset {cold['end_offset']} < {min_cold_fraction:.0%} of "
                            f"high watermark {hw}")
        if max_local_bytes is not None and s["local_bytes"] > max_local_bytes:
            problems.append(f"p{p}: local_bytes {s['local_bytes']} > {max_local_bytes}")
    return problems


def wait_tiered(broker, topic: str, partitions, timeout: float = 120.0, what: str = "tiering",
                require_no_pending: bool = True, settle: float = 1.5, **conds) -> dict:
    """Poll /v1/topics/{topic} (and /metrics) until tiering_problems(...) is empty and, with
    require_no_pending, lakestream_tier_pending_segments is 0, and all that has held with the
    partitions' ranges unchanged for `settle` seconds (the gauge is from the last tier pass, which
    may predate the last segment roll: give it a few --tier-interval-ms). Returns the last status;
    fails with the unmet conditions, the last status and the tier metrics."""
    deadline = time.monotonic() + timeout
    problems, status, tm, err = ["never polled"], None, {}, None
    stable_since, stable_key = None, None
    while time.monotonic() < deadline:
        try:
            status = topic_status(broker, topic)
            problems = tiering_problems(status, partitions, **conds)
            tm = tier_metrics(broker)
            if require_no_pending:
                pending = tm.get("lakestream_tier_pending_segments")
                if pending is None:
                    problems.append("/metrics has no lakestream_tier_pending_segments")
                elif pending > 0:
                    problems.append(f"lakestream_tier_pending_segments = {pending:g}")
            err = None
            key = json.dumps([status["partitions"]], sort_keys=True)
            if problems or key != stable_key:
                stable_since, stable_key = (None, None) if problems else (time.monotonic(), key)
            elif time.monotonic() - stable_since >= settle:
                return status
        except Exception as e:  # noqa: BLE001 - the broker may be restarting; report the last
            err = e
            stable_since, stable_key = None, None
        time.sleep(0.25)
    raise AssertionError(f"{what}: not done after {timeout}s: " + ("; ".join(problems) or "status kept changing")
                         + f"\nlast /v1/topics/{topic}: {json.dumps(status)}\ntier metrics: {tm}"
                         + (f"\nlast error: {err!r}" if err else ""))


def local_segments(broker, topic: str, partition: int) -> dict[int, int]:
    """The partition's segment files on the broker's disk: {base offset: size of the .log}
    (`<data-dir>/topics/<topic>/<partition>/<base:020>.log`), to check what the broker reports."""
    d = broker.data_dir / "topics" / topic / str(partition)
    return {int(f.name[:-4]): f.stat().st_size for f in d.glob("*.log") if f.name[:-4].isdigit()}


# ---- the cold store from outside
DATA_OBJECT_RE = re.compile(r"^(\d{20})-(\d{20})-([^/]+)\.parquet$")
MANIFEST_RE = re.compile(r"^(\d{20})\.json$")
_NAMED_OBJECT_RE = re.compile(r"\d{20}-\d{20}-[^\"/\s\\]+?\.parquet")


@dataclass(frozen=True)
class ColdObject:
    path: str        # relative to the store root: "<topic>/<partition>/<base>-<next>-<nonce>.parquet"
    base_offset: int
    next_offset: int
    size: int


class ColdStore:
    """The broker's cold store through pyarrow.fs: a local folder or an S3 bucket/prefix.
    Paths are relative to the store root (the layout the broker writes:
    `<topic>/<partition>/<base:020>-<next:020>-<nonce>.parquet`, `<topic>/<partition>/manifest/<v:020>.json`)."""

    def __init__(self, fs, root: str, description: str, local_root=None):
        self.fs, self.root, self.description, self.local_root = fs, root.rstrip("/"), description, local_root

    @classmethod
    def local(cls, path) -> "ColdStore":
        import pyarrow.fs as pafs
        return cls(pafs.LocalFileSystem(), str(path), f"folder {path}", local_root=str(path))

    @classmethod
    def s3(cls, seaweedfs, prefix: str = "") -> "ColdStore":
        root = f"{seaweedfs.bucket}/{prefix.strip('/')}" if prefix.strip("/") else seaweedfs.bucket
        return cls(seaweedfs.filesystem(), root, f"{seaweedfs.url(prefix)} at {seaweedfs.endpoint}")

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def list(self, sub: str = "") -> dict[str, int]:
        """Files under `sub` (recursive) -> {relative path: size}."""
        import pyarrow.fs as pafs
        sel = pafs.FileSelector(self._abs(sub), recursive=True, allow_not_found=True)
        out = {}
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.File:
                out[info.path[len(self.root) + 1:]] = info.size
        return out

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs
        return self.fs.get_file_info(self._abs(rel)).type == pafs.FileType.File

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._abs(rel)) as f:
            return f.read()

    def data_objects(self, topic: str, partition: int) -> list[ColdObject]:
        """Every data object stored for the partition (named by the manifest or not), by base offset."""
        prefix = f"{topic}/{partition}/"
        out = []
        for rel, size in self.list(f"{topic}/{partition}").items():
            m = DATA_OBJECT_RE.match(rel[len(prefix):])
            if m:
                out.append(ColdObject(rel, int(m.group(1)), int(m.group(2)), size))
        return sorted(out, key=lambda o: (o.base_offset, o.next_offset, o.path))

    def manifest_versions(self, topic: str, partition: int) -> list[tuple[int, str]]:
        prefix = f"{topic}/{partition}/manifest/"
        out = []
        for rel in self.list(f"{topic}/{partition}/manifest"):
            m = MANIFEST_RE.match(rel[len(prefix):])
            if m:
                out.append((int(m.group(1)), rel))
        return sorted(out)

    def latest_manifest(self, topic: str, partition: int) -> tuple[str, dict]:
        versions = self.manifest_versions(topic, partition)
        assert versions, f"no manifest under {self.description}/{topic}/{partition}/manifest/ " \
                         f"(files there: {sorted(self.list(f'{topic}/{partition}'))[:20]})"
        rel = versions[-1][1]
        text = self.read_bytes(rel).decode()
        try:
            return rel, json.loads(text)
        except ValueError as e:
            raise AssertionError(f"manifest {rel} is not JSON ({e}): {text[:300]!r}") from None

    def manifest_objects(self, topic: str, partition: int) -> tuple[str, list[ColdObject]]:
        """The data objects the latest manifest names (found by file name anywhere in its JSON,
        whatever the schema), sorted by base offset, sizes from the store (-1 if missing)."""
        rel, doc = self.latest_manifest(topic, partition)
        names = sorted(set(_NAMED_OBJECT_RE.findall(json.dumps(doc))))
        stored = {o.path: o.size for o in self.data_objects(topic, partition)}
        out = []
        for name in names:
            m = DATA_OBJECT_RE.match(name)
            path = f"{topic}/{partition}/{name}"
            out.append(ColdObject(path, int(m.group(1)), int(m.group(2)), stored.get(path, -1)))
        return rel, sorted(out, key=lambda o: (o.base_offset, o.next_offset))

    def local_copies(self, rels, dest) -> list[str]:
        """Local file paths for the given objects (a local store's own files; S3 objects are
        downloaded into `dest`, keeping their relative paths)."""
        import pathlib
        if self.local_root is not None:
            return [str(pathlib.Path(self.local_root) / r) for r in rels]
        out = []
        for r in rels:
            target = pathlib.Path(dest) / r
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(r))
            out.append(str(target))
        return out


def check_tiling(objects: list[ColdObject], where: str) -> tuple[int, int]:
    """Objects (sorted by base offset) must cover one contiguous range with no overlap and no
    hole. Returns (start, end)."""
    assert objects, f"{where}: no objects"
    for o in objects:
        assert o.next_offset > o.base_offset, f"{where}: empty or inverted object {o.path}"
    for a, b in zip(objects, objects[1:]):
        assert b.base_offset == a.next_offset, \
            f"{where}: {'overlap' if b.base_offset < a.next_offset else 'hole'} between {a.path} and {b.path}"
    return objects[0].base_offset, objects[-1].next_offset


# ---- deterministic record streams
class RecordStream:
    """Record i of a stream goes to partition i % partitions, and (one idempotent producer,
    fresh topic) lands at offset i // partitions. Everything about it is a function of i, so a
    million records can be checked without keeping them: keys (some null, some empty), values of
    50-200 bytes (some null), headers on about one record in seven (duplicate keys, null and
    empty values, non-ASCII keys), CreateTime timestamps that grow 2 ms per record of a partition
    with +-3 ms of jitter (so not always monotonic inside a batch)."""

    def __init__(self, partitions: int, t0_ms: int, seed: int = 1):
        import random as _random
        self.partitions, self.t0, self.seed = partitions, t0_ms, seed
        self.blob = _random.Random(seed).randbytes(8192)

    def _h(self, i: int) -> int:
        return (((i + 1) * 0x9E3779B97F4A7C15 + self.seed) & 0xFFFFFFFFFFFFFFFF) >> 16

    def index(self, partition: int, offset: int) -> int:
        return offset * self.partitions + partition

    def timestamp(self, i: int) -> int:
        return self.t0 + (i // self.partitions) * 2 + (self._h(i) >> 40) % 7 - 3

    def fields(self, i: int):
        """-> (partition, key, value, timestamp, headers or None)"""
        h = self._h(i)
        kc = h % 50
        key = None if kc == 0 else b"" if kc == 1 else b"k%05d" % (h % 50000)
        if h % 1009 == 7:
            value = None
        else:
            n = 50 + (h >> 8) % 151
            off = (h >> 16) % 8000
            value = (b"v%010d:" % i + self.blob[off:off + n])[:n]
        headers = None
        if (h >> 24) % 7 == 0:
            kind = (h >> 28) % 3
            if kind == 0:
                headers = [("trace", b"t%d" % i)]
            elif kind == 1:
                headers = [("a", b""), ("a", b"dup-%d" % (h % 97)), ("b", None)]
            else:
                headers = [("ключ", b"\xff\x00" + self.blob[:(h >> 32) % 40]), ("null-value", None)]
        return i % self.partitions, key, value, self.timestamp(i), headers

    def partition_timestamps(self, partition: int, count: int) -> list[int]:
        return [self.timestamp(self.index(partition, o)) for o in range(count)]


def produce_stream(bootstrap: str, topic: str, stream: RecordStream, start: int, stop: int,
                   flush_timeout: float = 300.0, **conf) -> None:
    """Produce records [start, stop) of `stream` with one idempotent acks=all producer; delivery
    reports only for failures (a million callbacks would cost more than the produce). Fails if
    any record is not delivered."""
    errors = []

    def on_error(err, msg):
        if err is not None:
            errors.append(err)

    base = {"acks": "all", "enable.idempotence": True, "linger.ms": 20, "batch.num.messages": 10000,
            "queue.buffering.max.messages": 200000, "message.timeout.ms": 120000,
            "delivery.report.only.error": True, "on_delivery": on_error}
    base.update(conf)
    p = producer(bootstrap, **base)
    produce = p.produce
    for i in range(start, stop):
        part, key, value, ts, headers = stream.fields(i)
        while True:
            try:
                if headers is None:
                    produce(topic, value, key, partition=part, timestamp=ts)
                else:
                    produce(topic, value, key, partition=part, timestamp=ts, headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
            assert not errors, f"delivery failed: {errors[:3]} ({len(errors)} errors by record {i})"
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} records still undelivered after flush({flush_timeout})"
    assert not errors, f"{len(errors)} records not delivered, e.g. {errors[:3]}"


def verify_stream(bootstrap: str, topic: str, stream: RecordStream, starts: dict[int, int], ends: dict[int, int],
                  timeout: float = 300.0, where: str = "", **conf) -> int:
    """Consume partitions p from offset starts[p] (OFFSET_BEGINNING allowed: then 0) up to ends[p]
    (exclusive) and check every record exactly against the stream: offset (dense), timestamp type
    and value, key, value, headers. Returns the number of records checked."""
    c = consumer(bootstrap, **{"fetch.wait.max.ms": 100, **conf})
    nxt = {p: (0 if o < 0 else o) for p, o in starts.items()}
    try:
        c.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        checked = 0
        deadline = time.monotonic() + timeout
        while any(nxt[p] < ends[p] for p in nxt):
            if time.monotonic() > deadline:
                raise AssertionError(f"{where}timed out after {timeout}s reading {topic}: next offsets {nxt}, "
                                     f"want ends {ends}")
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    raise AssertionError(f"{where}consumer error: {m.error()} (next offsets {nxt})")
                p, o = m.partition(), m.offset()
                if o >= ends[p]:
                    continue
                assert o == nxt[p], f"{where}partition {p}: got offset {o}, expected {nxt[p]} (offsets not dense)"
                nxt[p] = o + 1
                i = stream.index(p, o)
                _, key, value, ts, headers = stream.fields(i)
                got = (m.timestamp(), m.key(), m.value(), m.headers())
                want = ((TIMESTAMP_CREATE_TIME, ts), key, value, headers)
                if got != want:
                    diff = [f"  {name}: got {_short(g)}, want {_short(w)}"
                            for name, g, w in zip(("timestamp", "key", "value", "headers"), got, want) if g != w]
                    raise AssertionError(f"{where}partition {p} offset {o} (record {i}) differs:\n" + "\n".join(diff))
                checked += 1
        return checked
    finally:
        c.close()


def _short(v, n: int = 300) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


class TimeIndex:
    """Kafka ListOffsets semantics on one partition, from the timestamps at offsets 0..n-1:
    `first_at_or_after(target)` is the first offset whose timestamp >= target, -1 if none
    (timestamps may be out of order: a prefix maximum makes it a binary search)."""

    def __init__(self, timestamps: list[int]):
        self.prefix_max, m = [], None
        for t in timestamps:
            m = t if m is None or t > m else m
            self.prefix_max.append(m)

    def first_at_or_after(self, target: int) -> int:
        i = bisect.bisect_left(self.prefix_max, target)
        return i if i < len(self.prefix_max) else -1


class AckLog:
    """Every record whose delivery report said success, by (partition, offset) -> value
    (a per-message `on_delivery` callback, for crash tests)."""

    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.acked: dict[tuple[int, int], bytes] = {}
        self.duplicate_acks: list = []
        self.failed = 0

    def callback(self, err, msg):
        if err is not None:
            with self.lock:
                self.failed += 1
            return
        key = (msg.partition(), msg.offset())
        with self.lock:
            if key in self.acked:
                self.duplicate_acks.append((key, self.acked[key], msg.value()))
            self.acked[key] = msg.value()

    def snapshot(self) -> dict[tuple[int, int], bytes]:
        with self.lock:
            return dict(self.acked)


# ---- SQL over topics: the PostgreSQL wire endpoint (psql, psycopg, asyncpg) and HTTP /sql
def pg_conninfo(broker, **extra) -> str:
    """A libpq connection string for the broker's PostgreSQL endpoint (any user, database
    `lakestream`), e.g. for psycopg.connect()."""
    parts = {"host": broker.host, "port": broker.pg_port, "user": "anyone", "dbname": "lakestream",
             "connect_timeout": 10, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


def psql(broker, sql: str, timeout: float = 60.0, check: bool = True):
    """Runs one statement with the real `psql` (simple query protocol, unaligned, tuples only).
    Returns the rows as lists of strings (fields split at `|`); with check=False returns the
    CompletedProcess instead (for errors: its stderr)."""
    import os
    import subprocess
    cmd = ["psql", "-h", broker.host, "-p", str(broker.pg_port), "-U", "anyone", "-d", "lakestream",
           "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGPASSWORD": "unused"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if not check:
        return r
    assert r.returncode == 0, f"psql -c {sql!r} -> exit {r.returncode}\nstderr: {r.stderr}\nstdout: {r.stdout[:2000]}"
    return [line.split("|") for line in r.stdout.splitlines()]


def http_sql(broker, sql: str, fmt: str | None = None, timeout: float = 60.0) -> tuple[int, str, bytes]:
    """POST /sql[?format=fmt] with the statement as the body -> (status, content type, body);
    HTTP errors are returned, not raised."""
    url = broker.http_url + "/sql" + (f"?format={fmt}" if fmt else "")
    req = urllib.request.Request(url, data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def thread_cpu_seconds(pid: int, name_prefix: str) -> float:
    """CPU time (user + system, seconds) of the process's threads whose name starts with
    `name_prefix` (e.g. "lakestream-sql": the SQL engine's runtime), from /proc."""
    import os
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/comm") as f:
                if not f.read().startswith(name_prefix):
                    continue
            with open(f"{task_dir}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
