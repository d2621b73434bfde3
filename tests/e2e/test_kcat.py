"""End-to-end with Debian's kcat 1.7.1 (librdkafka 2.0.2: older client, strict ApiVersions parsing)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from e2e_util import create_topic, unique

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(broker, *args, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    if KCAT is None:
        pytest.fail("kcat is not installed (scripts/test installs it with apt-get)", pytrace=False)
    cmd = [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", *args]
    r = subprocess.run(cmd, input=input if input is not None else b"", capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\nstderr: {r.stderr.decode(errors='replace')}"
    return r


def test_kcat_lists_metadata(broker):
    t = unique("kcat")
    create_topic(broker.bootstrap, t, 4)
    md = json.loads(kcat(broker, "-L", "-J").stdout)
    assert [b["id"] for b in md["brokers"]] == [0]
    assert md["brokers"][0]["name"] == broker.bootstrap
    topics = {x["topic"]: x for x in md["topics"]}
    assert t in topics, f"{t} not in {sorted(topics)}"
    parts = topics[t]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2, 3]
    assert all(p["leader"] == 0 for p in parts)
    # plain text output, single topic
    out = kcat(broker, "-L", "-t", t).stdout.decode()
    assert f'topic "{t}" with 4 partitions' in out, out


def test_kcat_produce_consume_lines(broker):
    t = unique("kcat")
    create_topic(broker.bootstrap, t, 3)
    lines = [f"line {i} ünïcode" for i in range(500)]
    kcat(broker, "-P", "-t", t, input=("\n".join(lines) + "\n").encode())
    r = kcat(broker, "-C", "-t", t, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\n")
    got = {}
    for row in r.stdout.decode().splitlines():
        p, o, v = row.split(" ", 2)
        got.setdefault(int(p), []).append((int(o), v))
    for p, recs in got.items():
        assert [o for o, _ in recs] == list(range(len(recs))), f"partition {p} offsets not dense"
    values = [v for recs in got.values() for _, v in recs]
    assert sorted(values) == sorted(lines)
    # within each partition, records keep their input order
    for recs in got.values():
        idx = [lines.index(v) for _, v in recs]
        assert idx == sorted(idx)


def test_kcat_keys(broker):
    t = unique("kcat")
    create_topic(broker.bootstrap, t, 2)
    rows = [f"key{i % 7}:value {i}" for i in range(200)]
    kcat(broker, "-P", "-t", t, "-K:", input=("\n".join(rows) + "\n").encode())
    r = kcat(broker, "-C", "-t", t, "-o", "beginning", "-e", "-q", "-K:")
    got = r.stdout.decode().splitlines()
    assert sorted(got) == sorted(rows)
    # same key -> same partition, in order
    r = kcat(broker, "-C", "-t", t, "-o", "beginning", "-e", "-q", "-f", "%p|%k|%s\n")
    where = {}
    per_key = {}
    for row in r.stdout.decode().splitlines():
        p, k, v = row.split("|", 2)
        assert where.setdefault(k, p) == p, f"key {k} in partitions {where[k]} and {p}"
        per_key.setdefault(k, []).append(int(v.split()[1]))
    for k, seqs in per_key.items():
        assert seqs == sorted(seqs), f"key {k} out of order"


def test_kcat_consume_from_partition_offset(broker):
    t = unique("kcat")
    create_topic(broker.bootstrap, t, 1)
    kcat(broker, "-P", "-t", t, "-p", "0", input=("\n".join(f"m{i}" for i in range(50)) + "\n").encode())
    r = kcat(broker, "-C", "-t", t, "-p", "0", "-o", "42", "-e", "-q", "-f", "%o:%s\n")
    assert r.stdout.decode().splitlines() == [f"{i}:m{i}" for i in range(42, 50)]
    r = kcat(broker, "-C", "-t", t, "-p", "0", "-o", "-3", "-e", "-q", "-f", "%o:%s\n")  # last 3
    assert r.stdout.decode().splitlines() == [f"{i}:m{i}" for i in range(47, 50)]
