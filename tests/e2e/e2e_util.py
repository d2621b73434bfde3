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
