"""Bad input over raw sockets (issue #2): each bad request gets its error (or the connection
closed, as Kafka does), and the broker keeps serving other clients meanwhile."""

from __future__ import annotations

import random
import struct

import pytest

from e2e_util import (RawConn, admin, consume_range, create_topic, crc32c, parse_api_versions_v0,
                      parse_produce_response_v7, produce_request_v7, record_batch, request, compact_string,
                      unique, uvarint, watermarks)

UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10


@pytest.fixture
def healthy(broker):
    """A client connected before the bad one; `healthy()` checks it (and a fresh one) are served."""
    conn = RawConn(broker.bootstrap)
    err, keys = conn.api_versions_v0()
    assert err == 0 and 18 in keys

    def check():
        err, keys = conn.api_versions_v0()
        assert err == 0 and 18 in keys and 0 in keys, "healthy connection not served"
        with RawConn(broker.bootstrap) as fresh:
            err, _ = fresh.api_versions_v0()
            assert err == 0, "fresh connection not served"
        md = admin(broker.bootstrap).list_topics(timeout=10)
        assert md.brokers, "confluent-kafka metadata request failed"

    yield check
    conn.close()


def test_crc32c_helper():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(b"\x00" * 32) == 0x8A9136AA


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_bytes_close_connection(broker, healthy, seed):
    rng = random.Random(seed)
    with RawConn(broker.bootstrap) as bad:
        bad.send(bytes(rng.getrandbits(8) for _ in range(4096)), peer_may_close=True)
        healthy()  # served while the bad connection is open
        bad.shutdown_write()  #: we are done sending; the broker must drop us
        bad.wait_closed(timeout=15)
    healthy()


def test_framed_garbage_closes_connection(broker, healthy):
    """A well-framed request whose body does not parse (Produce v7 with a garbage body)."""
    rng = random.Random(7)
    with RawConn(broker.bootstrap) as bad:
        body = struct.pack(">h", 30000) + bytes(rng.getrandbits(8) for _ in range(200))  # transactional_id len 30000
        bad.send(request(0, 7, 1, body), peer_may_close=True)
        bad.wait_closed(timeout=15)
    healthy()


@pytest.mark.parametrize("count", [0x03616263, 0x7FFFFFFF])
def test_huge_array_length_in_a_tiny_frame(broker, healthy, count):
    """Metadata v1 declaring millions of topics in 4 bytes: the codec reserves memory for all of
    them before decoding one (found by the request_decode fuzz target). The connection closes and
    the broker lives on."""
    with RawConn(broker.bootstrap) as bad:
        bad.send(request(3, 1, 2, struct.pack(">i", count)), peer_may_close=True)
        bad.wait_closed(timeout=15)
    healthy()
    assert broker.proc.poll() is None, "the broker died"


def test_oversize_length_prefix(broker, healthy):
    with RawConn(broker.bootstrap) as bad:
        bad.send(struct.pack(">i", 200 * 1024 * 1024) + b"\x00\x12\x00\x00", peer_may_close=True)  # claims a 200 MiB request
        healthy()
        bad.wait_closed(timeout=15)  # without waiting for the 200 MiB
    healthy()


@pytest.mark.parametrize("size", [-1, -2147483648])
def test_negative_length_prefix(broker, healthy, size):
    with RawConn(broker.bootstrap) as bad:
        bad.send(struct.pack(">i", size) + b"\x00" * 16, peer_may_close=True)
        healthy()
        bad.wait_closed(timeout=15)
    healthy()


def test_unknown_api_key(broker, healthy):
    """Kafka closes the connection on an unknown API key; an error response is also acceptable."""
    with RawConn(broker.bootstrap) as bad:
        bad.send(request(29999, 0, 4242, b"\x00" * 8), peer_may_close=True)
        data = bad.wait_closed(timeout=15)
        if data:
            size, cid = struct.unpack(">ii", data[:8])
            assert cid == 4242, f"response with correlation id {cid}"
            assert len(data) >= 10 and struct.unpack(">h", data[8:10])[0] != 0, "unknown API key answered without error"
    healthy()


def test_api_versions_unsupported_version(broker, healthy):
    """Kafka answers an ApiVersions request of a version it does not know with an ApiVersions
    v0 response: error UNSUPPORTED_VERSION and its supported ranges (clients then retry with v0)."""
    with RawConn(broker.bootstrap) as conn:
        body = compact_string("e2e") + compact_string("1.0") + uvarint(0)  # v3+ body, tagged fields
        conn.send(request(18, 99, 77, body, flexible_header=True))
        cid, rest = conn.recv_frame()
        assert cid == 77
        err, keys = parse_api_versions_v0(rest)
        assert err == UNSUPPORTED_VERSION, f"error_code {err}, want {UNSUPPORTED_VERSION}"
        # (Kafka lists at least its ApiVersions range here; others are optional.)
        assert 18 in keys and keys[18][0] == 0 and keys[18][1] >= 3, keys.get(18)
        # The connection is still usable: retry with v0.
        err, keys = conn.api_versions_v0()
        assert err == 0
    healthy()


def test_unsupported_version_of_other_api_closes_or_errors(broker, healthy):
    """Metadata v999: Kafka closes the connection (it cannot parse the request)."""
    with RawConn(broker.bootstrap) as bad:
        bad.send(request(3, 999, 5, b"\x00" * 8), peer_may_close=True)
        data = bad.wait_closed(timeout=15)
        if data:
            size, cid = struct.unpack(">ii", data[:8])
            assert cid == 5
    healthy()


def _produce_v7(broker, topic: str, partition: int, batch: bytes) -> tuple[int, int]:
    with RawConn(broker.bootstrap) as conn:
        _, keys = conn.api_versions_v0()
        lo, hi = keys[0]
        assert lo <= 7 <= hi, f"broker does not support Produce v7 (range {lo}..{hi})"
        conn.send(produce_request_v7(9, topic, partition, batch))
        cid, rest = conn.recv_frame()
        assert cid == 9
        ((name, part, err, base_offset),) = parse_produce_response_v7(rest)
        assert (name, part) == (topic, partition)
        # The connection survives a produce error.
        e, _ = conn.api_versions_v0()
        assert e == 0
        return err, base_offset


def test_produce_hand_built_batch_ok(broker, healthy):
    """Control for the CRC test: the same hand-built batch with a correct CRC is accepted."""
    t = unique("raw")
    create_topic(broker.bootstrap, t, 1)
    err, base = _produce_v7(broker, t, 0, record_batch([(b"k1", b"hello"), (None, b"world")]))
    assert (err, base) == (0, 0)
    got = consume_range(broker.bootstrap, t, {0: 0}, {0: 2})
    assert [(m.offset(), m.key(), m.value()) for m in got[0]] == [(0, b"k1", b"hello"), (1, None, b"world")]
    healthy()


def test_produce_bad_crc_is_corrupt_message(broker, healthy):
    t = unique("raw")
    create_topic(broker.bootstrap, t, 1)
    err, _ = _produce_v7(broker, t, 0, record_batch([(b"k", b"v")], corrupt_crc=True))
    assert err == CORRUPT_MESSAGE, f"error_code {err}, want {CORRUPT_MESSAGE} CORRUPT_MESSAGE"
    assert watermarks(broker.bootstrap, t, [0]) == {0: (0, 0)}, "the corrupt batch was stored"
    # A flipped payload byte (CRC computed before the flip) is corrupt as well.
    good = bytearray(record_batch([(b"k", b"value")]))
    good[-3] ^= 0xFF
    err, _ = _produce_v7(broker, t, 0, bytes(good))
    assert err == CORRUPT_MESSAGE
    healthy()


def test_produce_missing_topic_raw(broker, healthy):
    t = unique("missing")
    err, _ = _produce_v7(broker, t, 0, record_batch([(None, b"x")]))
    assert err == UNKNOWN_TOPIC_OR_PARTITION, f"error_code {err}"
    assert t not in admin(broker.bootstrap).list_topics(timeout=10).topics
    healthy()


def test_produce_missing_partition_raw(broker, healthy):
    t = unique("raw")
    create_topic(broker.bootstrap, t, 2)
    err, _ = _produce_v7(broker, t, 5, record_batch([(None, b"x")]))
    assert err == UNKNOWN_TOPIC_OR_PARTITION, f"error_code {err}"
    healthy()


def test_produce_over_max_message_bytes_raw(broker, healthy):
    t = unique("raw")
    create_topic(broker.bootstrap, t, 1, config={"max.message.bytes": "1000"})
    err, _ = _produce_v7(broker, t, 0, record_batch([(None, b"x" * 5000)]))
    assert err == MESSAGE_TOO_LARGE, f"error_code {err}, want {MESSAGE_TOO_LARGE} MESSAGE_TOO_LARGE"
    err, base = _produce_v7(broker, t, 0, record_batch([(None, b"x" * 100)]))
    assert (err, base) == (0, 0)
    healthy()
