"""Classic consumer groups (issue #3): rebalancing between members, committed offsets (also across
a broker kill -9), cooperative-sticky and static membership with confluent-kafka, the other
clients (kafka-python, aiokafka, kcat -G), the `lakestream groups` CLI, and bad group requests
over raw sockets.

Every broker runs with `--group-initial-rebalance-delay-ms 300` and consumers use the broker's
minimum session timeout (6 s) with 500 ms heartbeats, so rebalances take about a second. Waits are
event-driven (poll until a condition holds, with a deadline); nothing asserts after a sleep."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from conftest import lakestream_bin
from e2e_util import (RawConn, base_conf, consumer_assignment_v0, consumer_subscription_v0,
                      create_topic, heartbeat_request_v0, join_group_request_v0, offset_commit_request_v2,
                      parse_heartbeat_response_v0, parse_join_group_response_v0, parse_offset_commit_response_v2,
                      parse_sync_group_response_v0, producer, produce_all, raw_call, sync_group_request_v0, unique,
                      watermarks)

pytestmark = pytest.mark.broker_args("--group-initial-rebalance-delay-ms", "300")

SESSION_MS = 6000  # the broker's group.min.session.timeout.ms
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
INVALID_REQUEST = 42
KCAT = shutil.which("kcat") or shutil.which("kafkacat")


# --------------------------------------------------------------------- helpers
def group_conf(bootstrap: str, group: str, **extra) -> dict:
    conf = base_conf(bootstrap, **{
        "group.id": group, "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500,
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000})
    conf.update(extra)
    if conf.get("group.protocol") == "consumer":
        # KIP-848: the broker sets the session timeout and heartbeat interval.
        del conf["session.timeout.ms"], conf["heartbeat.interval.ms"]
    return conf


class Member:
    """One confluent-kafka group member, driven by `poll()` from the test's thread. Records the
    rebalance callbacks it sees and every record it is handed; with commit=True it commits the
    processed records synchronously after each batch (before its next poll, so before any
    revocation can reach it)."""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str, commit: bool = False,
                 incremental: bool = False, tolerate_errors: bool = False, **extra):
        self.name, self.topic, self.commit = name, topic, commit
        self.incremental = incremental
        self.tolerate_errors = tolerate_errors  # keep consumer/commit errors in .errors instead of failing
        self.errors: list = []
        self.acked: dict[int, int] = {}  # partition -> highest acknowledged commit
        self.events: list[tuple[str, frozenset[int]]] = []   # ("assign"|"revoke"|"lost", partitions)
        self.records: list[tuple[int, int, bytes]] = []      # (partition, offset, value)
        self.c = Consumer(group_conf(bootstrap, group, **{"client.id": name, **extra}))
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.closed = False

    def _on_assign(self, c, parts):
        self.events.append(("assign", frozenset(tp.partition for tp in parts)))
        if self.incremental:
            c.incremental_assign(parts)  # raises unless the group runs the COOPERATIVE protocol

    def _on_revoke(self, c, parts):
        self.events.append(("revoke", frozenset(tp.partition for tp in parts)))
        if self.incremental:
            c.incremental_unassign(parts)

    def _on_lost(self, c, parts):
        self.events.append(("lost", frozenset(tp.partition for tp in parts)))

    def poll(self, timeout: float = 0.05, max_records: int = 100) -> int:
        msgs = self.c.consume(num_messages=max_records, timeout=timeout)
        last = {}
        for m in msgs:
            if m.error():
                if self.tolerate_errors:
                    self.errors.append(m.error())
                    continue
                raise AssertionError(f"{self.name}: consumer error {m.error()}")
            self.records.append((m.partition(), m.offset(), m.value()))
            last[m.partition()] = m.offset()
        if self.commit and last:
            try:
                self.c.commit(offsets=[TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
                              asynchronous=False)
            except KafkaException as e:
                if not self.tolerate_errors:
                    raise
                self.errors.append(e)
            else:
                for p, o in last.items():
                    self.acked[p] = max(self.acked.get(p, 0), o + 1)
        return len(msgs)

    def parts(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.c.close()


def poll_until(members, pred, timeout: float = 30.0, what: str = "condition", **poll_kw):
    """Poll every open member in turn until `pred()` holds; fail after `timeout` with the state."""
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            if not m.closed:
                m.poll(**poll_kw)
        if pred():
            return
        if time.monotonic() > deadline:
            state = {m.name: {"assignment": sorted(m.parts()) if not m.closed else "closed",
                              "records": len(m.records), "events": m.events[-6:]} for m in members}
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; members: {state}")


def balanced(members, partitions: int, each: int):
    """pred: every member holds `each` partitions and together exactly range(partitions), disjoint."""
    def pred():
        sets = [m.parts() for m in members]
        return (all(len(s) == each for s in sets) and sum(len(s) for s in sets) == partitions
                and set().union(*sets) == set(range(partitions)))
    return pred


def produce_per_partition(bootstrap: str, topic: str, partitions: int, per_partition: int,
                          tag: str = "r") -> set[bytes]:
    """per_partition records into each partition, values `tag:p:i`; returns the set of values."""
    recs = [{"partition": p, "value": f"{tag}:{p}:{i}".encode()} for p in range(partitions) for i in range(per_partition)]
    d = produce_all(producer(bootstrap), topic, recs)
    assert not d.errors, d.errors[:3]
    return {r["value"] for r in recs}


def committed(bootstrap: str, group: str, topic: str, partitions) -> dict[int, int]:
    c = Consumer(group_conf(bootstrap, group))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        for tp in tps:
            assert tp.error is None, f"committed({tp}) error {tp.error}"
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def assert_exactly_once(members, expected: set[bytes]):
    values = [v for m in members for (_, _, v) in m.records]
    dup = {v: n for v, n in collections.Counter(values).items() if n > 1}
    assert not dup, f"{len(dup)} records read more than once, e.g. {list(dup.items())[:5]}"
    missing = expected - set(values)
    assert not missing, f"{len(missing)} records never read, e.g. {sorted(missing)[:5]}"
    extra = set(values) - expected
    assert not extra, f"unexpected records {sorted(extra)[:5]}"


def all_read(members, expected: set[bytes]):
    return lambda: {v for m in members for (_, _, v) in m.records} >= expected


# --------------------------------------------------------------------- membership and rebalancing
def test_three_members_split_six_partitions_and_read_each_record_once(broker):
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 6)
    members = [Member(broker.bootstrap, g, t, f"m{i}") for i in range(3)]
    try:
        poll_until(members, balanced(members, 6, 2), what="three members with two partitions each")
        expected = produce_per_partition(broker.bootstrap, t, 6, 50)
        poll_until(members, all_read(members, expected), what="all 300 records")
        assert_exactly_once(members, expected)
        for m in members:  # each member read exactly its own partitions, offsets dense from 0
            by_p = collections.defaultdict(list)
            for p, o, _ in m.records:
                by_p[p].append(o)
            assert set(by_p) == m.parts(), f"{m.name} read partitions {sorted(by_p)} but owns {sorted(m.parts())}"
            for p, offs in by_p.items():
                assert offs == list(range(50)), f"{m.name} partition {p}: offsets {offs[:5]}..."
    finally:
        for m in members:
            m.close()


def test_member_that_leaves_hands_its_partitions_to_the_others(broker):
    """Members commit synchronously after each batch; one commits and close()s (LeaveGroup) half
    way. The other two take its partitions over from its committed offsets: across the group every
    record is read exactly once."""
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 6)
    members = [Member(broker.bootstrap, g, t, f"m{i}", commit=True) for i in range(3)]
    a, b, leaver = members
    try:
        poll_until(members, balanced(members, 6, 2), what="three members with two partitions each")
        leaver_parts = leaver.parts()
        expected = produce_per_partition(broker.bootstrap, t, 6, 50)
        # Small batches so that the leaver is still far from done when it leaves.
        poll_until(members, lambda: len(leaver.records) >= 10, what="the leaver reading 10 records", max_records=5)
        leaver_last = {}
        for p, o, _ in leaver.records:
            leaver_last[p] = max(leaver_last.get(p, -1), o)
        leaver.close()  # its last batch is committed already; close() sends LeaveGroup
        assert len(leaver.records) < 100, "the leaver read all its records before leaving; nothing to hand over"
        t_left = time.monotonic()
        poll_until([a, b], balanced([a, b], 6, 3), timeout=SESSION_MS / 1000 - 1,
                   what="the two others taking over (a LeaveGroup must not wait for the session timeout)")
        assert time.monotonic() - t_left < SESSION_MS / 1000
        assert leaver_parts <= a.parts() | b.parts()
        poll_until([a, b], all_read(members, expected), what="the rest of the topic")
        assert_exactly_once(members, expected)
        # The new owners of the leaver's partitions started right after its last committed record.
        for p in leaver_parts:
            offs = sorted(o for m in (a, b) for (pp, o, _) in m.records if pp == p)
            want_first = leaver_last.get(p, -1) + 1
            assert offs and offs[0] == want_first, f"partition {p}: takeover started at {offs[:1]}, want {want_first}"
    finally:
        for m in members:
            m.close()


_KILLED_MEMBER = r"""
import json, sys, confluent_kafka
bootstrap, group, topic = sys.argv[1:4]
c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": group,
    "client.id": "doomed", "session.timeout.ms": %d, "heartbeat.interval.ms": 500, "enable.auto.commit": False,
    "auto.offset.reset": "earliest", "log_level": 0})
def report(kind):
    def cb(consumer, parts):
        print(json.dumps([kind, sorted(tp.partition for tp in parts)]), flush=True)
    return cb
c.subscribe([topic], on_assign=report("assign"), on_revoke=report("revoke"))
while True:
    c.poll(0.1)
""" % SESSION_MS


def test_killed_member_partitions_move_after_session_timeout(broker):
    """A member in a subprocess is killed with SIGKILL (no LeaveGroup, no more heartbeats): its
    partitions move to the two survivors once its session times out, and they read its records."""
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 6)
    lines: queue.Queue = queue.Queue()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_MEMBER, broker.bootstrap, g, t],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in proc.stdout], daemon=True).start()
    doomed = {"parts": set()}
    members = [Member(broker.bootstrap, g, t, f"m{i}") for i in range(2)]

    def doomed_state():
        while True:
            try:
                kind, parts = lines.get_nowait()
            except queue.Empty:
                return doomed["parts"]
            doomed["parts"] = set(parts) if kind == "assign" else set()

    try:
        def three_way():
            d = doomed_state()
            sets = [m.parts() for m in members] + [d]
            return all(len(s) == 2 for s in sets) and set().union(*sets) == set(range(6))
        poll_until(members, three_way, timeout=45, what="the subprocess member and two others with two partitions each")
        doomed_parts = set(doomed["parts"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t_killed = time.monotonic()
        poll_until(members, balanced(members, 6, 3), timeout=SESSION_MS / 1000 + 20,
                   what="the survivors taking over the killed member's partitions")
        took = time.monotonic() - t_killed
        # The dead member's last heartbeat was at most 0.5 s before the kill: the coordinator must
        # keep it for its session timeout (it has no way to know it died), not drop it earlier.
        assert took >= SESSION_MS / 1000 - 2, f"partitions moved {took:.1f}s after the kill, before the session timeout"
        assert doomed_parts <= members[0].parts() | members[1].parts()
        expected = produce_per_partition(broker.bootstrap, t, 6, 10)
        poll_until(members, all_read(members, expected), what="all records, including the dead member's partitions")
        assert_exactly_once(members, expected)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for m in members:
            m.close()


def test_new_member_continues_after_committed_offsets_and_new_group_reads_all(broker):
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 3)
    first = produce_per_partition(broker.bootstrap, t, 3, 10, tag="a")
    m1 = Member(broker.bootstrap, g, t, "m1")
    try:
        poll_until([m1], all_read([m1], first), what="the first member reading 30 records")
        commit_at = {0: 4, 1: 10, 2: 7}  # partly read partitions too
        m1.c.commit(offsets=[TopicPartition(t, p, o) for p, o in commit_at.items()], asynchronous=False)
    finally:
        m1.close()
    assert committed(broker.bootstrap, g, t, range(3)) == commit_at
    second = produce_per_partition(broker.bootstrap, t, 3, 10, tag="b")

    m2 = Member(broker.bootstrap, g, t, "m2")
    try:
        # Expected: what follows each committed offset (old and new records), nothing before it.
        want = {(p, o) for p in range(3) for o in range(commit_at[p], 20)}
        poll_until([m2], lambda: {(p, o) for p, o, _ in m2.records} >= want, what="the new member catching up")
        got = collections.Counter((p, o) for p, o, _ in m2.records)
        assert set(got) == want, f"re-read committed records: {sorted(set(got) - want)[:10]}"
        assert max(got.values()) == 1, "a record was delivered twice"
    finally:
        m2.close()

    fresh = Member(broker.bootstrap, unique("g-new"), t, "fresh")
    try:
        poll_until([fresh], all_read([fresh], first | second), what="a new group reading from the beginning")
        assert_exactly_once([fresh], first | second)
    finally:
        fresh.close()


def test_committed_offsets_survive_broker_kill9(broker):
    t, g, g2 = unique("grp"), unique("g"), unique("g2")
    create_topic(broker.bootstrap, t, 6)
    produce_per_partition(broker.bootstrap, t, 6, 20)
    m = Member(broker.bootstrap, g, t, "m")
    other = Member(broker.bootstrap, g2, t, "other")
    try:
        poll_until([m, other], lambda: len(m.parts()) == 6 and len(other.parts()) == 6, what="assignments")
        # Many synchronous commits; only the last one per partition counts.
        final = {}
        for round_ in range(10):
            offs = {p: min(20, round_ * 2 + p) for p in range(6)}
            m.c.commit(offsets=[TopicPartition(t, p, o, metadata=f"r{round_}") for p, o in offs.items()],
                       asynchronous=False)
            final = offs
        other_final = {p: 20 - p for p in range(6)}
        other.c.commit(offsets=[TopicPartition(t, p, o) for p, o in other_final.items()], asynchronous=False)
    finally:
        m.close()
        other.close()
    broker.kill9()
    broker.start()

    assert committed(broker.bootstrap, g, t, range(6)) == final
    assert committed(broker.bootstrap, g2, t, range(6)) == other_final
    c = Consumer(group_conf(broker.bootstrap, g))
    try:
        tps = c.committed([TopicPartition(t, p) for p in range(6)], timeout=15)
        assert {tp.partition: tp.metadata for tp in tps} == {p: "r9" for p in range(6)}
    finally:
        c.close()
    # A new member of the group continues exactly there.
    m2 = Member(broker.bootstrap, g, t, "m2")
    try:
        want = {(p, o) for p in range(6) for o in range(final[p], 20)}
        poll_until([m2], lambda: {(p, o) for p, o, _ in m2.records} >= want, what="the member after the restart")
        assert {(p, o) for p, o, _ in m2.records} == want
    finally:
        m2.close()


def test_offset_commits_in_flight_at_broker_kill9(broker):
    """Raw OffsetCommits (generation -1: a group without members) back to back while the broker is
    killed with SIGKILL, three times: after each restart the committed offset is at least the last
    acknowledged one (a commit is acknowledged after fsync) and at most the last one sent."""
    g, t = unique("g"), unique("grp")
    create_topic(broker.bootstrap, t, 2)
    floor = 0
    for cycle in range(3):
        state = {"sent": floor, "acked": floor}

        def committer():
            try:
                with RawConn(broker.bootstrap) as conn:
                    while True:
                        n = state["sent"] + 1
                        state["sent"] = n
                        resp = parse_offset_commit_response_v2(
                            raw_call(conn, offset_commit_request_v2, g, -1, "", {t: {0: n, 1: n}}))
                        assert resp == {(t, 0): 0, (t, 1): 0}, resp
                        state["acked"] = n
            except (OSError, ConnectionError, AssertionError) as e:
                state["end"] = e
        th = threading.Thread(target=committer, daemon=True)
        th.start()
        wait = time.monotonic() + 20
        while state["acked"] < floor + 20 and time.monotonic() < wait and th.is_alive():
            time.sleep(0.01)
        assert state["acked"] >= floor + 20, f"cycle {cycle}: only {state['acked'] - floor} commits acknowledged: {state.get('end')!r}"
        broker.kill9()
        th.join(15)
        assert not th.is_alive()
        assert not isinstance(state.get("end"), AssertionError), state["end"]
        broker.start()
        got = committed(broker.bootstrap, g, t, [0, 1])
        for p in (0, 1):
            assert state["acked"] <= got[p] <= state["sent"], \
                f"cycle {cycle} partition {p}: committed {got[p]}, acknowledged {state['acked']}, sent {state['sent']}"
        floor = max(got.values())


def test_live_group_resumes_from_committed_offsets_after_broker_kill9(broker):
    """Two members commit after every batch; the broker is killed with SIGKILL mid-topic and
    restarted. The members rejoin and finish the topic: nothing is skipped, and no partition is
    re-read from before its last acknowledged commit."""
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 4)
    conf = {"reconnect.backoff.max.ms": 500, "retry.backoff.max.ms": 500}
    members = [Member(broker.bootstrap, g, t, f"m{i}", commit=True, tolerate_errors=True, **conf) for i in range(2)]
    try:
        poll_until(members, balanced(members, 4, 2), what="two members with two partitions each")
        expected = produce_per_partition(broker.bootstrap, t, 4, 100)
        poll_until(members, lambda: sum(len(m.records) for m in members) >= 100, what="100 records", max_records=5)
        broker.kill9()
        acked = {}
        for m in members:
            for p, o in m.acked.items():
                acked[p] = max(acked.get(p, 0), o)
        before = [len(m.records) for m in members]
        broker.start()
        poll_until(members, all_read(members, expected), timeout=60, what="the rest of the topic after the restart")
        for p in range(4):
            after = sorted(o for m, n in zip(members, before) for (pp, o, _) in m.records[n:] if pp == p)
            if after:
                assert after[0] >= acked.get(p, 0), \
                    f"partition {p} re-read from {after[0]}, before its acknowledged commit {acked.get(p, 0)}"
        values = collections.Counter(v for m in members for (_, _, v) in m.records)
        assert set(values) == expected
    finally:
        for m in members:
            m.close()


def test_cooperative_sticky_second_member_causes_incremental_rebalance(broker):
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 6)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    first = Member(broker.bootstrap, g, t, "first", incremental=True, **conf)
    try:
        poll_until([first], lambda: first.parts() == set(range(6)), what="the first member owning all 6 partitions")
        # (incremental_assign() in the callbacks raises unless the protocol is COOPERATIVE)
        first_events = len(first.events)
        expected = produce_per_partition(broker.bootstrap, t, 6, 20)
        second = Member(broker.bootstrap, g, t, "second", incremental=True, **conf)
        try:
            poll_until([first, second], balanced([first, second], 6, 3),
                       what="an incremental rebalance to 3 + 3 partitions")
            # Replay the first member's callbacks: it never owned fewer than its final 3.
            owned, sizes = set(), []
            for kind, parts in first.events:
                owned = owned | parts if kind == "assign" else owned - parts
                sizes.append(len(owned))
            assert min(sizes[first_events - 1:]) >= 3, f"the first member's ownership dipped: {first.events}"
            later = first.events[first_events:]
            revoked = set().union(*[p for k, p in later if k == "revoke"]) if later else set()
            assert not [e for e in later if e[0] == "lost"], later
            assert revoked and revoked < set(range(6)), f"revoked {sorted(revoked)}: not a strict subset of all 6"
            assert revoked == second.parts(), (revoked, second.parts())
            assert not [e for e in later if e[0] == "assign" and e[1]], f"first got new partitions: {later}"
            # The second member was assigned incrementally, only the revoked partitions.
            assert [e for e in second.events if e[0] == "assign" and e[1]] == [("assign", frozenset(revoked))]
            poll_until([first, second], all_read([first, second], expected), what="all records")
            kept = set(range(6)) - revoked
            assert {p for p, _, _ in first.records} >= kept
        finally:
            second.close()
    finally:
        first.close()


def test_static_member_restart_gets_same_partitions_without_rebalance(broker):
    """A static member (group.instance.id) close()s, which for static members sends no LeaveGroup,
    and a new consumer with the same instance id joins within the session timeout: it gets the same
    partitions back and the other member sees no rebalance."""
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 4)
    static = {"session.timeout.ms": 10000}
    stay = Member(broker.bootstrap, g, t, "stay", **{"group.instance.id": "stay", **static})
    bounce = Member(broker.bootstrap, g, t, "bounce", **{"group.instance.id": "bounce", **static})
    bounce2 = None
    try:
        poll_until([stay, bounce], balanced([stay, bounce], 4, 2), what="two static members with two partitions each")
        stay_parts, bounce_parts = stay.parts(), bounce.parts()
        stay_events = list(stay.events)
        bounce.close()
        bounce2 = Member(broker.bootstrap, g, t, "bounce2", **{"group.instance.id": "bounce", **static})
        poll_until([stay, bounce2], lambda: bounce2.parts() == bounce_parts, timeout=9,
                   what="the restarted static member getting its partitions back within the session timeout")
        # Both serve their partitions (which takes a while: a rebalance would show up meanwhile).
        expected = produce_per_partition(broker.bootstrap, t, 4, 10)
        poll_until([stay, bounce2], all_read([stay, bounce2], expected), what="all records")
        assert_exactly_once([stay, bounce2], expected)
        assert stay.events == stay_events, f"the other member saw a rebalance: {stay.events[len(stay_events):]}"
        assert stay.parts() == stay_parts and bounce2.parts() == bounce_parts
        assert [e for e in bounce2.events if e[0] == "assign"] == [("assign", frozenset(bounce_parts))]
    finally:
        stay.close()
        bounce.close()
        if bounce2:
            bounce2.close()


def test_admin_lists_describes_and_deletes_groups(broker):
    """ListGroups, DescribeGroups and DeleteGroups through confluent-kafka's AdminClient."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient
    t, g, g_empty = unique("grp"), unique("g"), unique("g-empty")
    create_topic(broker.bootstrap, t, 4)
    c = Consumer(group_conf(broker.bootstrap, g_empty))
    try:
        c.commit(offsets=[TopicPartition(t, 0, 1)], asynchronous=False)
    finally:
        c.close()
    members = [Member(broker.bootstrap, g, t, f"m{i}", **{"group.instance.id": "static-1"} if i else {})
               for i in range(2)]
    adm = AdminClient(base_conf(broker.bootstrap))
    try:
        poll_until(members, balanced(members, 4, 2), what="two members with two partitions each")
        listed = adm.list_consumer_groups(request_timeout=15).result()
        assert not listed.errors, listed.errors
        states = {x.group_id: x.state for x in listed.valid}
        assert states.get(g) == ConsumerGroupState.STABLE, states
        assert states.get(g_empty) == ConsumerGroupState.EMPTY, states

        d = adm.describe_consumer_groups([g], request_timeout=15)[g].result()
        assert d.state == ConsumerGroupState.STABLE and d.partition_assignor == "range", d
        want = {m.c.memberid(): (m.name, m.parts()) for m in members}
        got = {x.member_id: (x.client_id, {tp.partition for tp in x.assignment.topic_partitions}) for x in d.members}
        assert got == want
        assert sorted((x.group_instance_id or "") for x in d.members) == ["", "static-1"]

        # A group with members cannot be deleted; an empty one can, with its offsets.
        fs = adm.delete_consumer_groups([g, g_empty], request_timeout=15)
        with pytest.raises(KafkaException) as e:
            fs[g].result()
        assert e.value.args[0].code() == 68, e.value  # NON_EMPTY_GROUP
        fs[g_empty].result()
        assert committed(broker.bootstrap, g_empty, t, [0]) == {0: -1001}
        listed = adm.list_consumer_groups(request_timeout=15).result()
        assert g_empty not in {x.group_id for x in listed.valid}
        # The live group was not touched.
        expected = produce_per_partition(broker.bootstrap, t, 4, 5)
        poll_until(members, all_read(members, expected), what="the live group still consuming")
    finally:
        for m in members:
            m.close()


# --------------------------------------------------------------------- other clients
@pytest.mark.timeout(90)
def test_kafka_python_group_consumer_reads_all_and_commits(broker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    t, g = unique("grp"), unique("g-kp")
    create_topic(broker.bootstrap, t, 3)
    expected = produce_per_partition(broker.bootstrap, t, 3, 20)
    c = KafkaConsumer(t, bootstrap_servers=broker.bootstrap, group_id=g, auto_offset_reset="earliest",
                      enable_auto_commit=False, session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
                      request_timeout_ms=35000)
    try:
        got = []
        deadline = time.monotonic() + 45
        while len(got) < len(expected) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                got.extend(r.value for r in recs)
        assert sorted(got) == sorted(expected), f"read {len(got)} of {len(expected)} records"
        assert c.assignment() == {KTP(t, p) for p in range(3)}
        c.commit()
        assert {p: c.committed(KTP(t, p)) for p in range(3)} == {0: 20, 1: 20, 2: 20}
    finally:
        c.close()
    assert committed(broker.bootstrap, g, t, range(3)) == {0: 20, 1: 20, 2: 20}


@pytest.mark.timeout(90)
def test_aiokafka_group_consumer_reads_all_and_commits(broker):
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP
    t, g = unique("grp"), unique("g-aio")
    create_topic(broker.bootstrap, t, 3)
    expected = produce_per_partition(broker.bootstrap, t, 3, 20)

    async def run():
        c = AIOKafkaConsumer(t, bootstrap_servers=broker.bootstrap, group_id=g, auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
                             request_timeout_ms=35000)
        await c.start()
        try:
            got = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 45
            while len(got) < len(expected) and loop.time() < deadline:
                for recs in (await c.getmany(timeout_ms=500)).values():
                    got.extend(r.value for r in recs)
            assert sorted(got) == sorted(expected), f"read {len(got)} of {len(expected)} records"
            assert c.assignment() == {ATP(t, p) for p in range(3)}
            await c.commit()
            return {p: await c.committed(ATP(t, p)) for p in range(3)}
        finally:
            await c.stop()

    assert asyncio.run(run()) == {0: 20, 1: 20, 2: 20}
    assert committed(broker.bootstrap, g, t, range(3)) == {0: 20, 1: 20, 2: 20}


def test_kcat_balanced_consumer_reads_all(broker):
    if KCAT is None:
        pytest.fail("kcat is not installed (scripts/test installs it with apt-get)", pytrace=False)
    t, g = unique("grp"), unique("g-kcat")
    create_topic(broker.bootstrap, t, 3)
    expected = produce_per_partition(broker.bootstrap, t, 3, 20)
    cmd = [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", "-X", "session.timeout.ms=6000",
           "-G", g, "-o", "beginning", "-c", str(len(expected)), "-q", "-f", "%p %o %s\n", t]
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\nstderr: {r.stderr.decode(errors='replace')}"
    rows = [line.split(" ", 2) for line in r.stdout.decode().splitlines()]
    assert sorted(v.encode() for _, _, v in rows) == sorted(expected)
    for p in range(3):
        assert [int(o) for pp, o, _ in rows if int(pp) == p] == list(range(20)), f"partition {p}"


# --------------------------------------------------------------------- CLI
def parse_groups_describe(text: str, topic: str) -> dict[int, dict]:
    """Rows of a `lakestream groups describe` table (kafka-consumer-groups.sh style: whitespace
    separated, a header naming the columns) for `topic` -> {partition: {committed, end, lag, consumer}}."""
    aliases = {"PARTITION": "partition", "CURRENT-OFFSET": "committed", "LOG-END-OFFSET": "end", "LAG": "lag",
               "TOPIC": "topic", "CONSUMER-ID": "consumer"}
    header, rows = None, {}
    for line in text.splitlines():
        cols = line.split()
        if not cols:
            continue
        if header is None:
            names = [aliases.get(c.upper()) for c in cols]
            if {"topic", "partition", "committed", "end", "lag"} <= set(names):
                header = names
            continue
        row = dict(zip(header, cols))
        if row.get("topic") != topic:
            continue  # member rows without partitions ("-"/"?"), other topics

        def num(s):
            return None if s == "-" else int(s)
        rows[int(row["partition"])] = {**{k: num(row[k]) for k in ("committed", "end", "lag")},
                                       "consumer": row.get("consumer")}
    assert header is not None, f"no header with TOPIC, PARTITION, CURRENT-OFFSET, LOG-END-OFFSET and LAG in:\n{text}"
    return rows


def groups_describe(broker, group: str) -> str:
    cmd = [lakestream_bin(), "groups", "describe", group, "--bootstrap", broker.bootstrap]
    r = subprocess.run(cmd, capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\nstdout: {out}\nstderr: {r.stderr.decode(errors='replace')}"
    return out


def test_cli_groups_describe_shows_lag(broker):
    t, g = unique("grp"), unique("g")
    create_topic(broker.bootstrap, t, 3)
    produce_per_partition(broker.bootstrap, t, 3, 10)
    commit_at = {0: 10, 1: 3, 2: 0}
    c = Consumer(group_conf(broker.bootstrap, g))
    try:
        c.commit(offsets=[TopicPartition(t, p, o) for p, o in commit_at.items()], asynchronous=False)
    finally:
        c.close()
    produce_all(producer(broker.bootstrap), t, [{"partition": 2, "value": b"more"}])
    ends = {p: hi for p, (_, hi) in watermarks(broker.bootstrap, t, range(3)).items()}
    assert ends == {0: 10, 1: 10, 2: 11}

    # A group with committed offsets and no members.
    out = groups_describe(broker, g)
    rows = parse_groups_describe(out, t)
    assert sorted(rows) == [0, 1, 2], out
    for p in range(3):
        assert rows[p] == {"committed": commit_at[p], "end": ends[p], "lag": ends[p] - commit_at[p],
                           "consumer": "-"}, (p, out)

    # The same group with a member that owns every partition (and commits nothing more).
    m = Member(broker.bootstrap, g, t, "described")
    try:
        poll_until([m], lambda: m.parts() == {0, 1, 2}, what="the member's assignment")
        out = groups_describe(broker, g)
        assert "Stable" in out.splitlines()[0], out
        rows = parse_groups_describe(out, t)
        member_id = m.c.memberid()
        for p in range(3):
            assert rows[p] == {"committed": commit_at[p], "end": ends[p], "lag": ends[p] - commit_at[p],
                               "consumer": member_id}, (p, out)
    finally:
        m.close()


# --------------------------------------------------------------------- bad group requests (raw frames)
@pytest.fixture
def other_group(broker):
    """A confluent consumer in its own group, joined before the bad requests; `check()` produces a
    record and waits until that member reads and commits it (the coordinator still serves it)."""
    t, g = unique("healthy"), unique("g-healthy")
    create_topic(broker.bootstrap, t, 1)
    m = Member(broker.bootstrap, g, t, "healthy", commit=True)
    poll_until([m], lambda: m.parts() == {0}, what="the healthy member's assignment")
    n = [0]

    def check():
        n[0] += 1
        v = f"still-served-{n[0]}".encode()
        produce_all(producer(broker.bootstrap), t, [{"value": v, "partition": 0}])
        poll_until([m], lambda: any(r[2] == v for r in m.records), what=f"the healthy group reading {v!r}")
        assert broker.running, "the broker died"
    yield check
    m.close()


def raw_member(bootstrap: str, group: str, topic: str) -> tuple[RawConn, str, int]:
    """Join `group` alone with JoinGroup v0 + SyncGroup v0 (session timeout 30 s, so no heartbeats
    are needed during a test). Returns (connection, member id, generation)."""
    conn = RawConn(bootstrap, timeout=20)
    j = parse_join_group_response_v0(raw_call(conn, join_group_request_v0, group,
                                              protocols=[("range", consumer_subscription_v0([topic]))]))
    assert j["error_code"] == 0, j
    assert j["leader"] == j["member_id"] and j["member_id"], j
    err, _ = parse_sync_group_response_v0(raw_call(conn, sync_group_request_v0, group, j["generation_id"], j["member_id"],
                                                   [(j["member_id"], consumer_assignment_v0({topic: [0]}))]))
    assert err == 0, err
    return conn, j["member_id"], j["generation_id"]


def heartbeat(conn, group, generation, member) -> int:
    return parse_heartbeat_response_v0(raw_call(conn, heartbeat_request_v0, group, generation, member))


def test_heartbeat_from_unknown_member(broker, other_group):
    g = unique("g-raw")
    conn, member, gen = raw_member(broker.bootstrap, g, "some-topic")
    try:
        assert heartbeat(conn, g, gen, member) == 0
        with RawConn(broker.bootstrap) as bad:
            assert heartbeat(bad, g, gen, "nobody-0000") == UNKNOWN_MEMBER_ID
            assert heartbeat(bad, g, gen, "") == UNKNOWN_MEMBER_ID
            assert heartbeat(bad, unique("g-none"), 1, "nobody-0000") == UNKNOWN_MEMBER_ID
            # An offset commit from a member the active group does not know is refused the same way.
            resp = parse_offset_commit_response_v2(raw_call(bad, offset_commit_request_v2, g, gen, "nobody-0000",
                                                            {"some-topic": {0: 5}}))
            assert resp == {("some-topic", 0): UNKNOWN_MEMBER_ID}
        other_group()
        assert heartbeat(conn, g, gen, member) == 0, "the real member was disturbed"
    finally:
        conn.close()


def test_offset_commit_with_stale_generation(broker, other_group):
    """Member A alone (generation 1); B joins and both rejoin (generation 2). A commit from A with
    generation 1 is ILLEGAL_GENERATION, before and after the SyncGroups; with generation 2 it works."""
    t, g = unique("t-raw"), unique("g-raw")
    create_topic(broker.bootstrap, t, 2)
    meta = [("range", consumer_subscription_v0([t]))]
    a, a_id, gen1 = raw_member(broker.bootstrap, g, t)
    b = RawConn(broker.bootstrap, timeout=30)
    try:
        # B's JoinGroup parks until A rejoins (A learns of the rebalance from its heartbeat).
        cid_b = b.next_cid()
        b.send(join_group_request_v0(cid_b, g, protocols=meta))
        hb = None
        deadline = time.monotonic() + 10
        while hb != 27 and time.monotonic() < deadline:
            hb = heartbeat(a, g, gen1, a_id)
            if hb != 27:
                time.sleep(0.05)
        assert hb == 27, f"heartbeat during the rebalance: {hb}, want 27 REBALANCE_IN_PROGRESS"
        ja = parse_join_group_response_v0(raw_call(a, join_group_request_v0, g, member_id=a_id, protocols=meta))
        got_cid, body = b.recv_frame()
        assert got_cid == cid_b
        jb = parse_join_group_response_v0(body)
        assert ja["error_code"] == 0 and jb["error_code"] == 0, (ja, jb)
        gen2 = ja["generation_id"]
        assert gen2 == jb["generation_id"] and gen2 != gen1, (gen1, ja, jb)

        def commit(gen):
            with RawConn(broker.bootstrap) as c:
                return parse_offset_commit_response_v2(raw_call(c, offset_commit_request_v2, g, gen, a_id, {t: {0: 1}}))
        assert commit(gen1) == {(t, 0): ILLEGAL_GENERATION}
        # Complete the rebalance: the leader's SyncGroup carries everyone's assignment.
        leader, follower = (a, b) if ja["leader"] == a_id else (b, a)
        lid = ja["leader"]
        fid = jb["member_id"] if lid == a_id else a_id
        cid_f = follower.next_cid()
        follower.send(sync_group_request_v0(cid_f, g, gen2, fid, []))
        err, _ = parse_sync_group_response_v0(raw_call(leader, sync_group_request_v0, g, gen2, lid, [
            (lid, consumer_assignment_v0({t: [0]})), (fid, consumer_assignment_v0({t: [1]}))]))
        assert err == 0
        got_cid, body = follower.recv_frame()
        assert got_cid == cid_f and parse_sync_group_response_v0(body)[0] == 0
        assert commit(gen1) == {(t, 0): ILLEGAL_GENERATION}
        assert commit(gen1 - 1) == {(t, 0): ILLEGAL_GENERATION}
        assert heartbeat(a, g, gen1, a_id) == ILLEGAL_GENERATION
        assert heartbeat(a, g, gen2, a_id) == 0
        assert committed(broker.bootstrap, g, t, [0]) == {0: -1001}, "a stale commit was stored"
        other_group()
        assert commit(gen2) == {(t, 0): 0}
        assert committed(broker.bootstrap, g, t, [0]) == {0: 1}
    finally:
        a.close()
        b.close()


def test_join_group_with_no_protocols(broker, other_group):
    g = unique("g-raw")
    conn, member, gen = raw_member(broker.bootstrap, g, "some-topic")
    try:
        with RawConn(broker.bootstrap) as bad:
            for group in (unique("g-new"), g):  # a new group and an active one
                j = parse_join_group_response_v0(raw_call(bad, join_group_request_v0, group, protocols=[]))
                assert j["error_code"] == INCONSISTENT_GROUP_PROTOCOL, (group, j)
                # A valid join with a session timeout under the broker's minimum (6 s) is refused too.
                j = parse_join_group_response_v0(raw_call(bad, join_group_request_v0, group, session_timeout_ms=1000,
                                                          protocols=[("range", consumer_subscription_v0(["x"]))]))
                assert j["error_code"] == INVALID_SESSION_TIMEOUT, (group, j)
        other_group()
        assert heartbeat(conn, g, gen, member) == 0, "the active group was disturbed by the rejected join"
    finally:
        conn.close()


def test_join_group_with_oversized_metadata(broker, other_group):
    g = unique("g-raw")
    conn, member, gen = raw_member(broker.bootstrap, g, "some-topic")
    try:
        big = consumer_subscription_v0(["some-topic"], user_data=b"x" * ((1 << 20) + 1))
        with RawConn(broker.bootstrap, timeout=20) as bad:
            for group in (unique("g-new"), g):
                j = parse_join_group_response_v0(raw_call(bad, join_group_request_v0, group, protocols=[("range", big)]))
                assert j["error_code"] == INVALID_REQUEST, (group, {k: v for k, v in j.items() if k != "members"})
        other_group()
        assert heartbeat(conn, g, gen, member) == 0, "the active group was disturbed by the rejected join"
    finally:
        conn.close()


# --------------------------------------------------------------------- the consumer protocol (KIP-848)
# Brokers for these tests hand out 300 ms heartbeat intervals and a 6 s session timeout.
KIP848 = ("--group-initial-rebalance-delay-ms", "300", "--group-consumer-heartbeat-interval-ms", "300",
          "--group-consumer-session-timeout-ms", "6000")


@pytest.mark.broker_args(*KIP848)
def test_consumer_protocol_members_share_partitions_and_read_each_record_once(broker):
    """group.protocol=consumer: three members converge to two partitions each through the
    broker's assignor and incremental reconciliation; every record is read exactly once."""
    t, g = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, t, 6)
    members = [Member(broker.bootstrap, g, t, f"m{i}", **{"group.protocol": "consumer"}) for i in range(3)]
    try:
        poll_until(members, balanced(members, 6, 2), what="three consumer-protocol members with two partitions each")
        expected = produce_per_partition(broker.bootstrap, t, 6, 50)
        poll_until(members, all_read(members, expected), what="all 300 records")
        assert_exactly_once(members, expected)
    finally:
        for m in members:
            m.close()


@pytest.mark.broker_args(*KIP848)
def test_consumer_protocol_member_leaves_and_commits_carry_over(broker):
    """A member that commits and leaves (epoch -1) hands its partitions to the others, which
    start right after its committed offsets; a new group reads everything."""
    t, g = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, t, 4)
    expected = produce_per_partition(broker.bootstrap, t, 4, 40)
    a, leaver = (Member(broker.bootstrap, g, t, f"m{i}", commit=True, **{"group.protocol": "consumer"})
                 for i in range(2))
    try:
        poll_until([a, leaver], balanced([a, leaver], 4, 2), what="two members with two partitions each",
                   max_records=1)
        poll_until([a, leaver], lambda: len(leaver.records) >= 5, what="the leaver reading", max_records=1)
        leaver.close()
        poll_until([a], lambda: a.parts() == set(range(4)), what="the remaining member taking everything")
        poll_until([a], all_read([a, leaver], expected), what="the rest of the topic")
        assert_exactly_once([a, leaver], expected)
    finally:
        a.close()
        leaver.close()
    fresh = Member(broker.bootstrap, unique("g"), t, "fresh", **{"group.protocol": "consumer"})
    try:
        poll_until([fresh], all_read([fresh], expected), what="a new group reading everything")
    finally:
        fresh.close()


@pytest.mark.broker_args(*KIP848)
def test_consumer_protocol_group_in_cli_describe(broker):
    """`lakestream groups describe` (DescribeGroups) shows a KIP-848 group like a classic one:
    Stable, its member owning every partition, and lag = end offset - committed offset."""
    t, g = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, t, 3)
    produce_per_partition(broker.bootstrap, t, 3, 10)
    m = Member(broker.bootstrap, g, t, "described", **{"group.protocol": "consumer"})
    try:
        poll_until([m], lambda: m.parts() == {0, 1, 2}, what="the member's assignment")
        m.c.commit(offsets=[TopicPartition(t, p, 4) for p in range(3)], asynchronous=False)
        out = groups_describe(broker, g)
        assert "Stable" in out.splitlines()[0], out
        rows = parse_groups_describe(out, t)
        for p in range(3):
            assert rows[p] == {"committed": 4, "end": 10, "lag": 6, "consumer": m.c.memberid()}, (p, out)
        # ListGroups v5 filters by group type: this is a "consumer" group, not a "classic" one.
        from confluent_kafka import ConsumerGroupType
        from e2e_util import admin
        adm = admin(broker.bootstrap)
        by_type = {kind: {g.group_id for g in adm.list_consumer_groups(types={kind}).result(timeout=30).valid}
                   for kind in (ConsumerGroupType.CONSUMER, ConsumerGroupType.CLASSIC)}
        assert g in by_type[ConsumerGroupType.CONSUMER] and g not in by_type[ConsumerGroupType.CLASSIC], by_type
    finally:
        m.close()
