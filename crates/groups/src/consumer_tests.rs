//! The consumer group protocol (KIP-848): scenario tests with explicit times, one-line error
//! cases, and a property test of random heartbeats, joins, leaves and time jumps.

use std::collections::BTreeMap;

use super::*;

const REBALANCE_MS: i32 = 10_000;

fn id(n: u8) -> TopicId {
    TopicId([n; 16])
}

/// The broker's topics: name → (id, partition count).
#[derive(Default, Clone)]
struct Topics(BTreeMap<String, (TopicId, i32)>);

impl TopicMetadata for Topics {
    fn topic(&self, name: &str) -> Option<(TopicId, i32)> {
        self.0.get(name).copied()
    }

    fn topic_names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// `[(topic id byte, partitions)]` as wire partitions.
fn parts(list: &[(u8, &[i32])]) -> Vec<TopicPartitions> {
    list.iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(topic, partitions)| TopicPartitions {
            topic_id: id(*topic),
            partitions: partitions.to_vec(),
        })
        .collect()
}

/// A heartbeat of an established member: nothing changed, ownership not reported.
fn hb_req(group: &str, member_id: &str, member_epoch: i32) -> ConsumerGroupHeartbeat {
    ConsumerGroupHeartbeat {
        group_id: group.into(),
        member_id: member_id.into(),
        member_epoch,
        instance_id: None,
        rack_id: None,
        rebalance_timeout_ms: -1,
        subscribed_topic_names: None,
        subscribed_topic_regex: None,
        server_assignor: None,
        topic_partitions: None,
        client_id: "client".into(),
        client_host: "/10.0.0.1".into(),
    }
}

/// A v1 join: the member's own id, epoch 0, a subscription and a rebalance timeout.
fn join_req(group: &str, member_id: &str, topics: &[&str]) -> ConsumerGroupHeartbeat {
    ConsumerGroupHeartbeat {
        rebalance_timeout_ms: REBALANCE_MS,
        subscribed_topic_names: Some(topics.iter().map(|t| (*t).to_owned()).collect()),
        topic_partitions: Some(Vec::new()),
        ..hb_req(group, member_id, JOIN_EPOCH)
    }
}

struct Harness {
    coordinator: Coordinator,
    topics: Topics,
    now_ms: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(CoordinatorConfig::default())
    }

    fn with(config: CoordinatorConfig) -> Harness {
        let mut topics = Topics::default();
        topics.0.insert("orders".into(), (id(1), 4));
        topics.0.insert("payments".into(), (id(2), 2));
        Harness {
            coordinator: Coordinator::new(config),
            topics,
            now_ms: 0,
        }
    }

    fn at(&mut self, now_ms: u64) {
        assert!(now_ms >= self.now_ms);
        self.now_ms = now_ms;
        self.coordinator.tick(now_ms);
        self.coordinator.check_invariants();
    }

    fn send(&mut self, request: ConsumerGroupHeartbeat) -> ConsumerGroupHeartbeatResult {
        let topics = self.topics.clone();
        let result = self
            .coordinator
            .consumer_group_heartbeat(self.now_ms, request, &topics);
        self.coordinator.check_invariants();
        result
    }

    /// A request that must succeed.
    fn ok(&mut self, request: ConsumerGroupHeartbeat) -> ConsumerGroupHeartbeatResult {
        let result = self.send(request);
        assert_eq!(result.error, None, "{result:?}");
        result
    }

    fn join(
        &mut self,
        group: &str,
        member_id: &str,
        topics: &[&str],
    ) -> ConsumerGroupHeartbeatResult {
        self.ok(join_req(group, member_id, topics))
    }

    /// A heartbeat reporting what the member owns.
    fn hb(
        &mut self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        owned: &[(u8, &[i32])],
    ) -> ConsumerGroupHeartbeatResult {
        self.ok(ConsumerGroupHeartbeat {
            topic_partitions: Some(parts(owned)),
            ..hb_req(group, member_id, member_epoch)
        })
    }

    fn code(&mut self, request: ConsumerGroupHeartbeat) -> i16 {
        self.send(request).error.map_or(0, |e| e.code())
    }

    fn describe(&self, group: &str) -> ConsumerGroupDescription {
        self.coordinator.describe_consumer_group(group).unwrap()
    }

    fn member(&self, group: &str, member_id: &str) -> ConsumerMemberDescription {
        let description = self.describe(group);
        description
            .members
            .into_iter()
            .find(|m| m.member_id == member_id)
            .unwrap()
    }

    /// The member's target, as `[(topic id byte, partitions)]`.
    fn target(&self, group: &str, member_id: &str) -> Vec<(u8, Vec<i32>)> {
        self.member(group, member_id)
            .target_assignment
            .into_iter()
            .map(|t| (t.topic_id.0[0], t.partitions))
            .collect()
    }
}

fn epoch_and_assignment(
    result: &ConsumerGroupHeartbeatResult,
) -> (i32, Option<Vec<TopicPartitions>>) {
    (result.member_epoch, result.assignment.clone())
}

#[test]
fn a_lone_member_gets_epoch_one_and_every_partition() {
    let mut h = Harness::new();
    let joined = h.join("g", "m1", &["orders"]);
    assert_eq!(
        joined,
        ConsumerGroupHeartbeatResult {
            error: None,
            member_id: "m1".into(),
            member_epoch: 1,
            heartbeat_interval_ms: 5_000,
            assignment: Some(parts(&[(1, &[0, 1, 2, 3])])),
        }
    );
    let description = h.describe("g");
    assert_eq!(
        (
            description.state,
            description.group_epoch,
            description.assignment_epoch
        ),
        (GroupState::Stable, 1, 1)
    );
    assert_eq!(description.assignor_name, "uniform");
    // A plain heartbeat changes nothing and sends no assignment.
    let beat = h.hb("g", "m1", 1, &[(1, &[0, 1, 2, 3])]);
    assert_eq!(epoch_and_assignment(&beat), (1, None));
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_releases_them() {
    let mut h = Harness::new();
    h.join("g", "m1", &["orders"]);
    h.at(1_000);
    // m2 joins: group epoch 2; m1 still holds everything, so m2 gets nothing yet.
    let joined = h.join("g", "m2", &["orders"]);
    assert_eq!(epoch_and_assignment(&joined), (2, Some(Vec::new())));
    assert_eq!(h.target("g", "m2"), vec![(1, vec![2, 3])]);
    assert_eq!(h.describe("g").state, GroupState::Reconciling);

    // m1 is told to revoke 2 and 3 (its assignment shrinks) and stays at epoch 1.
    let revoke = h.hb("g", "m1", 1, &[(1, &[0, 1, 2, 3])]);
    assert_eq!(
        epoch_and_assignment(&revoke),
        (1, Some(parts(&[(1, &[0, 1])])))
    );
    // While m1 has not released them, m2 still gets nothing; so too while m1 says nothing.
    assert_eq!(epoch_and_assignment(&h.hb("g", "m2", 2, &[])), (2, None));
    let silent = h.ok(hb_req("g", "m1", 1));
    assert_eq!(epoch_and_assignment(&silent), (1, None));
    assert_eq!(epoch_and_assignment(&h.hb("g", "m2", 2, &[])), (2, None));

    // m1 reports it released them: it moves to epoch 2 with its (unchanged) assignment.
    let released = h.hb("g", "m1", 1, &[(1, &[0, 1])]);
    assert_eq!(epoch_and_assignment(&released), (2, None));
    // Now m2 gets them.
    let gained = h.hb("g", "m2", 2, &[]);
    assert_eq!(
        epoch_and_assignment(&gained),
        (2, Some(parts(&[(1, &[2, 3])])))
    );
    let description = h.describe("g");
    assert_eq!(
        (description.state, description.group_epoch),
        (GroupState::Stable, 2)
    );
    for member in &description.members {
        assert_eq!(member.member_epoch, 2);
        assert_eq!(member.assignment, member.target_assignment);
    }
}

/// Brings members `ids` (all subscribed to orders) to a stable group with faithful heartbeats.
fn stable_group(h: &mut Harness, group: &str, ids: &[&str]) -> BTreeMap<String, (i32, Vec<i32>)> {
    let mut state: BTreeMap<String, (i32, Vec<i32>)> = BTreeMap::new();
    for member_id in ids {
        let joined = h.join(group, member_id, &["orders", "payments"]);
        state.insert((*member_id).into(), (joined.member_epoch, flatten(&joined)));
    }
    for _ in 0..3 {
        converge_round(h, group, &mut state);
    }
    assert_eq!(h.describe(group).state, GroupState::Stable);
    state
}

/// Partitions of a response's assignment as `topic * 100 + partition`.
fn flatten(result: &ConsumerGroupHeartbeatResult) -> Vec<i32> {
    result
        .assignment
        .iter()
        .flatten()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| i32::from(t.topic_id.0[0]) * 100 + p)
        })
        .collect()
}

fn unflatten(owned: &[i32]) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<u8, Vec<i32>> = BTreeMap::new();
    for p in owned {
        by_topic
            .entry(u8::try_from(p / 100).unwrap())
            .or_default()
            .push(p % 100);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic_id: id(topic),
            partitions,
        })
        .collect()
}

fn converge_round(h: &mut Harness, group: &str, state: &mut BTreeMap<String, (i32, Vec<i32>)>) {
    for (member_id, (epoch, owned)) in state.iter_mut() {
        let result = h.ok(ConsumerGroupHeartbeat {
            topic_partitions: Some(unflatten(owned)),
            ..hb_req(group, member_id, *epoch)
        });
        *epoch = result.member_epoch;
        if result.assignment.is_some() {
            *owned = flatten(&result);
        }
    }
}

#[test]
fn a_leaving_member_hands_its_partitions_to_the_rest() {
    let mut h = Harness::new();
    stable_group(&mut h, "g", &["m1", "m2"]);
    let epoch = h.describe("g").group_epoch;
    let left = h.ok(hb_req("g", "m2", LEAVE_EPOCH));
    assert_eq!((left.member_epoch, left.assignment), (LEAVE_EPOCH, None));
    assert_eq!(h.describe("g").group_epoch, epoch + 1);
    let m1 = h.member("g", "m1");
    let owned: Vec<(u8, Vec<i32>)> = m1
        .assignment
        .iter()
        .map(|t| (t.topic_id.0[0], t.partitions.clone()))
        .collect();
    let owned: Vec<(u8, &[i32])> = owned.iter().map(|(t, p)| (*t, p.as_slice())).collect();
    let result = h.hb("g", "m1", epoch, &owned);
    assert_eq!(
        epoch_and_assignment(&result),
        (epoch + 1, Some(parts(&[(1, &[0, 1, 2, 3]), (2, &[0, 1])])))
    );
    assert_eq!(h.describe("g").state, GroupState::Stable);
    // The last member leaving empties the group; it stays listed, Empty.
    h.ok(hb_req("g", "m1", LEAVE_EPOCH));
    assert_eq!(h.describe("g").state, GroupState::Empty);
    assert_eq!(h.code(hb_req("g", "m1", LEAVE_EPOCH)), 25);
}

#[test]
fn a_silent_member_expires_after_the_session_timeout() {
    let mut h = Harness::new();
    stable_group(&mut h, "g", &["m1", "m2"]);
    let epoch = h.describe("g").group_epoch;
    h.at(40_000);
    let m1 = h.member("g", "m1").assignment.clone();
    h.ok(hb_req("g", "m1", epoch));
    h.at(44_999);
    assert_eq!(h.describe("g").members.len(), 2);
    h.at(45_000); // m2's last heartbeat was at 0
    let description = h.describe("g");
    assert_eq!(description.members.len(), 1);
    assert_eq!(description.group_epoch, epoch + 1);
    let owned: Vec<TopicPartitions> = m1
        .iter()
        .map(|t| TopicPartitions {
            topic_id: t.topic_id,
            partitions: t.partitions.clone(),
        })
        .collect();
    let result = h.ok(ConsumerGroupHeartbeat {
        topic_partitions: Some(owned),
        ..hb_req("g", "m1", epoch)
    });
    assert_eq!(
        epoch_and_assignment(&result),
        (epoch + 1, Some(parts(&[(1, &[0, 1, 2, 3]), (2, &[0, 1])])))
    );
    // m2 is gone: told so, it must rejoin.
    assert_eq!(h.code(hb_req("g", "m2", epoch)), 25);
    // m1 expires too when it stops; the group is then Empty.
    h.at(45_000 + 45_000);
    assert_eq!(h.describe("g").state, GroupState::Empty);
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    let mut h = Harness::new();
    h.join("g", "m1", &["orders"]);
    h.join("g", "m2", &["orders"]);
    let revoke = h.hb("g", "m1", 1, &[(1, &[0, 1, 2, 3])]);
    assert_eq!(
        epoch_and_assignment(&revoke),
        (1, Some(parts(&[(1, &[0, 1])])))
    );
    // m1 keeps heartbeating but keeps owning 2 and 3.
    for now_ms in [3_000, 6_000, 9_000] {
        h.at(now_ms);
        h.hb("g", "m1", 1, &[(1, &[0, 1, 2, 3])]);
        h.hb("g", "m2", 2, &[]);
    }
    h.at(REBALANCE_MS as u64); // the revocation started at 0
    assert_eq!(h.code(hb_req("g", "m1", 1)), 25);
    let result = h.hb("g", "m2", 2, &[]);
    assert_eq!(
        epoch_and_assignment(&result),
        (3, Some(parts(&[(1, &[0, 1, 2, 3])])))
    );
}

#[test]
fn added_partitions_and_created_topics_are_assigned_at_the_next_heartbeat() {
    let mut h = Harness::new();
    h.topics.0.insert("orders".into(), (id(1), 2));
    let mut state = stable_group(&mut h, "g", &["m1", "m2"]);
    let epoch = h.describe("g").group_epoch;
    h.topics.0.insert("orders".into(), (id(1), 4));
    converge_round(&mut h, "g", &mut state);
    converge_round(&mut h, "g", &mut state);
    assert_eq!(h.describe("g").group_epoch, epoch + 1);
    let mut all: Vec<i32> = state
        .values()
        .flat_map(|(_, owned)| owned.clone())
        .collect();
    all.sort_unstable();
    assert_eq!(all, vec![100, 101, 102, 103, 200, 201]);
    assert_eq!(h.describe("g").state, GroupState::Stable);

    // A subscribed topic that does not exist yet is assigned once it is created.
    let joined = h.join("h", "m3", &["later"]);
    assert_eq!(epoch_and_assignment(&joined), (1, Some(Vec::new())));
    assert_eq!(epoch_and_assignment(&h.hb("h", "m3", 1, &[])), (1, None));
    h.topics.0.insert("later".into(), (id(9), 2));
    let result = h.hb("h", "m3", 1, &[]);
    assert_eq!(
        epoch_and_assignment(&result),
        (2, Some(parts(&[(9, &[0, 1])])))
    );
    // Deleted and re-created (new id): revoke the old, then assign the new.
    h.topics.0.insert("later".into(), (id(8), 1));
    let result = h.hb("h", "m3", 2, &[(9, &[0, 1])]);
    assert_eq!(epoch_and_assignment(&result), (2, Some(Vec::new())));
    let result = h.hb("h", "m3", 2, &[]);
    assert_eq!(
        epoch_and_assignment(&result),
        (3, Some(parts(&[(8, &[0])])))
    );
}

#[test]
fn uniform_is_sticky() {
    let mut h = Harness::new();
    h.topics.0.insert("orders".into(), (id(1), 8));
    h.topics.0.insert("payments".into(), (id(2), 0));
    stable_group(&mut h, "g", &["a", "b", "c"]);
    let before: BTreeMap<String, Vec<(u8, Vec<i32>)>> = ["a", "b", "c"]
        .iter()
        .map(|m| ((*m).to_owned(), h.target("g", m)))
        .collect();
    let loads: Vec<usize> = before.values().map(|t| t[0].1.len()).collect();
    assert_eq!(loads, vec![3, 3, 2]);
    // A fourth member: the two members with three give up one partition each, nothing else
    // moves.
    h.join("g", "d", &["orders"]);
    let mut moved = 0;
    for (member, old) in &before {
        let new = h.target("g", member);
        let (old, new) = (&old[0].1, &new[0].1);
        assert!(
            new.iter().all(|p| old.contains(p)),
            "{member}: {old:?} -> {new:?}"
        );
        moved += old.len() - new.len();
    }
    assert_eq!(moved, 2);
    assert_eq!(h.target("g", "d")[0].1.len(), 2);
    // A member leaving: its partitions spread, everyone else keeps theirs.
    let d = h.target("g", "d")[0].1.clone();
    let kept: BTreeMap<String, Vec<i32>> = ["a", "b", "c"]
        .iter()
        .map(|m| ((*m).to_owned(), h.target("g", m)[0].1.clone()))
        .collect();
    h.ok(hb_req("g", "d", LEAVE_EPOCH));
    let mut gained = Vec::new();
    for (member, old) in &kept {
        let new = h.target("g", member)[0].1.clone();
        assert!(old.iter().all(|p| new.contains(p)));
        assert!((2..=3).contains(&new.len()));
        gained.extend(new.into_iter().filter(|p| !old.contains(p)));
    }
    gained.sort_unstable();
    assert_eq!(gained, d);
}

#[test]
fn range_gives_contiguous_ranges_in_member_id_order() {
    let mut h = Harness::new();
    h.topics.0.insert("t1".into(), (id(3), 7));
    h.topics.0.insert("t2".into(), (id(4), 3));
    for member in ["c", "a", "b"] {
        h.ok(ConsumerGroupHeartbeat {
            server_assignor: Some("range".into()),
            ..join_req("g", member, &["t1", "t2"])
        });
    }
    // d subscribes only to t2.
    h.ok(ConsumerGroupHeartbeat {
        server_assignor: Some("range".into()),
        ..join_req("g", "d", &["t2"])
    });
    assert_eq!(h.describe("g").assignor_name, "range");
    assert_eq!(h.target("g", "a"), vec![(3, vec![0, 1, 2]), (4, vec![0])]);
    assert_eq!(h.target("g", "b"), vec![(3, vec![3, 4]), (4, vec![1])]);
    assert_eq!(h.target("g", "c"), vec![(3, vec![5, 6]), (4, vec![2])]);
    assert_eq!(h.target("g", "d"), vec![]);
}

#[test]
fn uniform_respects_different_subscriptions() {
    let mut h = Harness::new();
    h.topics.0.insert("t1".into(), (id(3), 6));
    h.topics.0.insert("t2".into(), (id(4), 2));
    h.join("g", "a", &["t1", "t2"]);
    h.join("g", "b", &["t1"]);
    h.join("g", "c", &["t2"]);
    let a = h.target("g", "a");
    let b = h.target("g", "b");
    let c = h.target("g", "c");
    let count = |t: &Vec<(u8, Vec<i32>)>| t.iter().map(|(_, p)| p.len()).sum::<usize>();
    assert!(b.iter().all(|(topic, _)| *topic == 3));
    assert!(c.iter().all(|(topic, _)| *topic == 4));
    assert_eq!(count(&a) + count(&b) + count(&c), 8);
    assert!(count(&a).abs_diff(count(&b)) <= 1, "{a:?} {b:?} {c:?}");
}

#[test]
fn a_static_member_leaving_with_minus_two_keeps_its_partitions_for_its_next_incarnation() {
    let mut h = Harness::new();
    let static_join = |member_id: &str| ConsumerGroupHeartbeat {
        instance_id: Some("i1".into()),
        ..join_req("g", member_id, &["orders", "payments"])
    };
    let joined = h.ok(static_join("s1"));
    let mut state = BTreeMap::new();
    state.insert("s1".to_owned(), (joined.member_epoch, flatten(&joined)));
    let joined = h.join("g", "m2", &["orders", "payments"]);
    state.insert("m2".to_owned(), (joined.member_epoch, flatten(&joined)));
    for _ in 0..3 {
        converge_round(&mut h, "g", &mut state);
    }
    let epoch = h.describe("g").group_epoch;
    let s1_partitions = state["s1"].1.clone();
    assert_eq!(s1_partitions.len(), 3);

    let left = h.ok(ConsumerGroupHeartbeat {
        instance_id: Some("i1".into()),
        ..hb_req("g", "s1", STATIC_LEAVE_EPOCH)
    });
    assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
    // No rebalance: m2 does not get s1's partitions.
    assert_eq!(h.describe("g").group_epoch, epoch);
    state.remove("s1");
    converge_round(&mut h, "g", &mut state);
    assert_eq!(state["m2"].1.len(), 3);
    // The same instance id in use elsewhere is refused while s1 is active; after -2 it is free.
    h.at(30_000);
    let rejoined = h.ok(static_join("s1-restarted"));
    assert_eq!(rejoined.member_epoch, epoch);
    assert_eq!(flatten(&rejoined), s1_partitions);
    assert_eq!(h.describe("g").group_epoch, epoch);
    assert_eq!(h.describe("g").state, GroupState::Stable);
    assert_eq!(h.code(hb_req("g", "s1", epoch)), 25);
    // An active instance id cannot be taken over.
    assert_eq!(h.code(static_join("s1-third")), 111);

    // A static member that left and never comes back expires after the session timeout.
    h.ok(ConsumerGroupHeartbeat {
        instance_id: Some("i1".into()),
        ..hb_req("g", "s1-restarted", STATIC_LEAVE_EPOCH)
    });
    h.at(40_000);
    converge_round(&mut h, "g", &mut state);
    h.at(30_000 + 45_000);
    assert_eq!(h.describe("g").members.len(), 1);
    converge_round(&mut h, "g", &mut state);
    assert_eq!(state["m2"].1.len(), 6);
}

#[test]
fn a_lost_response_is_forgiven_once_and_a_rejoin_with_a_known_id_resets() {
    let mut h = Harness::new();
    h.join("g", "m1", &["orders"]);
    h.join("g", "m2", &["orders"]);
    h.hb("g", "m1", 1, &[(1, &[0, 1, 2, 3])]);
    // m1 released 2 and 3 and moved to epoch 2, but the response was lost: it retries at 1.
    h.hb("g", "m1", 1, &[(1, &[0, 1])]);
    assert_eq!(h.member("g", "m1").member_epoch, 2);
    let retry = h.hb("g", "m1", 1, &[(1, &[0, 1])]);
    assert_eq!(retry.member_epoch, 2);
    // Claiming partitions it no longer may own with the previous epoch is fenced.
    let claim = ConsumerGroupHeartbeat {
        topic_partitions: Some(parts(&[(1, &[0, 1, 2])])),
        ..hb_req("g", "m1", 1)
    };
    assert_eq!(h.code(claim), 110);
    // A fenced KIP-1082 member rejoins with its id at epoch 0: no rebalance, its target back.
    let rejoined = h.join("g", "m1", &["orders"]);
    assert_eq!(
        epoch_and_assignment(&rejoined),
        (2, Some(parts(&[(1, &[0, 1])])))
    );
    assert_eq!(h.describe("g").group_epoch, 2);
}

#[test]
fn a_v0_join_gets_a_generated_member_id() {
    let mut h = Harness::new();
    let joined = h.join("g", "", &["orders"]);
    assert_eq!(joined.member_id.len(), 36, "{}", joined.member_id);
    let again = h.join("g", "", &["orders"]);
    assert_ne!(again.member_id, joined.member_id);
    // The first member is still at epoch 1 (it has partitions to revoke).
    assert_eq!(h.ok(hb_req("g", &joined.member_id, 1)).member_epoch, 1);
}

#[test]
fn a_subscription_change_bumps_the_epoch() {
    let mut h = Harness::new();
    h.join("g", "m1", &["orders"]);
    h.ok(ConsumerGroupHeartbeat {
        subscribed_topic_names: Some(vec!["orders".into()]),
        ..hb_req("g", "m1", 1)
    });
    assert_eq!(h.describe("g").group_epoch, 1);
    let result = h.ok(ConsumerGroupHeartbeat {
        subscribed_topic_names: Some(vec!["payments".into(), "orders".into()]),
        topic_partitions: Some(parts(&[(1, &[0, 1, 2, 3])])),
        ..hb_req("g", "m1", 1)
    });
    assert_eq!(
        epoch_and_assignment(&result),
        (2, Some(parts(&[(1, &[0, 1, 2, 3]), (2, &[0, 1])])))
    );
    assert_eq!(
        h.member("g", "m1").subscribed_topic_names,
        vec!["orders".to_owned(), "payments".to_owned()]
    );
}

#[test]
fn error_codes() {
    let config = CoordinatorConfig {
        max_group_size: 2,
        ..CoordinatorConfig::default()
    };
    let mut h = Harness::with(config);
    h.ok(ConsumerGroupHeartbeat {
        instance_id: Some("i1".into()),
        ..join_req("g", "s1", &["orders"])
    });
    h.join("g", "m2", &["orders"]);
    let join = |member: &str| join_req("g", member, &["orders"]);

    assert_eq!(
        h.code(hb_req("g", "m2", 3)),
        110,
        "epoch above the member's"
    );
    assert_eq!(h.code(hb_req("g", "s1", 2)), 110, "s1 is still at epoch 1");
    assert_eq!(h.code(hb_req("g", "nobody", 1)), 25, "unknown member");
    assert_eq!(h.code(hb_req("nowhere", "m2", 1)), 25, "unknown group");
    assert_eq!(
        h.code(hb_req("g", "nobody", LEAVE_EPOCH)),
        25,
        "leave of unknown member"
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            instance_id: Some("i1".into()),
            ..join("s2")
        }),
        111
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            instance_id: Some("i1".into()),
            ..hb_req("g", "m2", 2)
        }),
        82
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            instance_id: Some("i1".into()),
            ..hb_req("g", "m2", STATIC_LEAVE_EPOCH)
        }),
        82
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            server_assignor: Some("sticky".into()),
            ..join("m3")
        }),
        112
    );
    assert_eq!(h.code(join("m3")), 81, "group.max.size is 2");
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            subscribed_topic_names: None,
            ..join_req("h", "m", &[])
        }),
        42
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            rebalance_timeout_ms: -1,
            ..join_req("h", "m", &["orders"])
        }),
        42
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            subscribed_topic_regex: Some("ord[".into()),
            ..join_req("h", "m", &[])
        }),
        128,
        "INVALID_REGULAR_EXPRESSION"
    );
    assert_eq!(
        h.code(ConsumerGroupHeartbeat {
            topic_partitions: Some(parts(&[(1, &[0])])),
            ..join_req("h", "m", &["orders"])
        }),
        42
    );
    assert_eq!(h.code(join_req("", "m", &["orders"])), 42, "empty group id");
    assert_eq!(h.code(hb_req("g", "m2", -3)), 42, "no such epoch");
    assert_eq!(
        h.code(hb_req("g", "m2", STATIC_LEAVE_EPOCH)),
        42,
        "-2 needs an instance id"
    );
    assert_eq!(
        h.code(hb_req("g", "", 1)),
        42,
        "member id needed after joining"
    );
    assert_eq!(
        h.code(hb_req("g", "m2", 1)),
        110,
        "below m2's epoch 2, not its previous 0"
    );
    // None of the failures created a group.
    assert!(h.coordinator.describe_consumer_group("h").is_err());
    assert!(h.coordinator.describe_consumer_group("nowhere").is_err());
    // An empty regex is no regex.
    h.ok(ConsumerGroupHeartbeat {
        subscribed_topic_regex: Some(String::new()),
        ..join_req("h", "m", &["orders"])
    });
}

#[test]
fn classic_and_consumer_groups_do_not_share_an_id_while_they_have_members() {
    let mut h = Harness::new();
    let classic_join = |group: &str| JoinGroup {
        group_id: group.into(),
        member_id: String::new(),
        group_instance_id: None,
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Vec::new(),
        }],
        client_id: "c".into(),
        client_host: "/h".into(),
        require_known_member_id: false,
        reason: None,
    };
    let join_error = |h: &mut Harness, group: &str| {
        let replies = h.coordinator.join_group(h.now_ms, 1, classic_join(group));
        h.coordinator.check_invariants();
        replies
            .into_iter()
            .find_map(|(_, response)| match response {
                Response::Join(result) => result.error.map(|e| e.code()),
                Response::Sync(_) => None,
            })
    };
    // A classic group with members: the consumer protocol is refused, and vice versa.
    h.coordinator.config.initial_rebalance_delay_ms = 0;
    assert_eq!(join_error(&mut h, "classic"), None);
    assert_eq!(h.code(join_req("classic", "m1", &["orders"])), 69);
    assert_eq!(
        h.coordinator
            .describe_consumer_group("classic")
            .map_err(|e| e.code()),
        Err(69)
    );
    h.join("modern", "m1", &["orders"]);
    assert_eq!(join_error(&mut h, "modern"), Some(23));

    // Listed side by side.
    let listing: Vec<(String, String, &str, &str)> = h
        .coordinator
        .list_groups()
        .into_iter()
        .map(|l| {
            (
                l.group_id,
                l.protocol_type,
                l.state.as_str(),
                l.group_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        listing,
        vec![
            (
                "classic".into(),
                "consumer".into(),
                "CompletingRebalance",
                "classic"
            ),
            ("modern".into(), "consumer".into(), "Stable", "consumer"),
        ]
    );

    // Once empty, a group id can change protocol.
    h.ok(hb_req("modern", "m1", LEAVE_EPOCH));
    assert_eq!(join_error(&mut h, "modern"), None);
    assert_eq!(
        h.coordinator.list_groups()[1].group_type,
        GroupType::Classic
    );
    let description = h.coordinator.describe_group("classic");
    h.coordinator
        .leave_group(
            h.now_ms,
            "classic",
            vec![LeavingMember {
                member_id: description.members[0].member_id.clone(),
                group_instance_id: None,
            }],
        )
        .unwrap();
    h.at(1);
    h.join("classic", "m1", &["orders"]);
    assert_eq!(
        h.coordinator.list_groups()[0].group_type,
        GroupType::Consumer
    );
}

#[test]
fn offset_commits_from_consumer_members_carry_the_member_epoch() {
    let mut h = Harness::new();
    h.join("g", "m1", &["orders"]);
    let check = |h: &Harness, member: &str, epoch: i32| {
        h.coordinator
            .validate_offset_commit("g", epoch, member, None)
            .map_err(|e| e.code())
    };
    assert_eq!(check(&h, "m1", 1), Ok(()));
    assert_eq!(check(&h, "m1", 0), Err(113));
    assert_eq!(check(&h, "m1", 2), Err(113));
    assert_eq!(check(&h, "nobody", 1), Err(25));
    assert_eq!(
        check(&h, "", -1),
        Err(25),
        "standalone commits need an empty group"
    );
    assert!(h.coordinator.is_active("g"));
    assert_eq!(
        h.coordinator.delete_group("g").map_err(|e| e.code()),
        Err(68)
    );
    h.ok(hb_req("g", "m1", LEAVE_EPOCH));
    assert_eq!(check(&h, "", -1), Ok(()));
    assert!(!h.coordinator.is_active("g"));
    assert_eq!(h.coordinator.delete_group("g"), Ok(()));
    assert!(h.coordinator.list_groups().is_empty());
}

#[test]
fn describe_reports_members_and_targets() {
    let mut h = Harness::new();
    h.ok(ConsumerGroupHeartbeat {
        instance_id: Some("i1".into()),
        rack_id: Some("rack-a".into()),
        ..join_req("g", "m1", &["payments", "orders", "missing"])
    });
    let description = h.describe("g");
    assert_eq!(
        description,
        ConsumerGroupDescription {
            group_id: "g".into(),
            state: GroupState::Stable,
            group_epoch: 1,
            assignment_epoch: 1,
            assignor_name: "uniform".into(),
            members: vec![ConsumerMemberDescription {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                rack_id: Some("rack-a".into()),
                member_epoch: 1,
                client_id: "client".into(),
                client_host: "/10.0.0.1".into(),
                subscribed_topic_names: vec!["missing".into(), "orders".into(), "payments".into()],
                assignment: vec![
                    TopicAssignment {
                        topic_id: id(1),
                        topic_name: "orders".into(),
                        partitions: vec![0, 1, 2, 3]
                    },
                    TopicAssignment {
                        topic_id: id(2),
                        topic_name: "payments".into(),
                        partitions: vec![0, 1]
                    },
                ],
                target_assignment: vec![
                    TopicAssignment {
                        topic_id: id(1),
                        topic_name: "orders".into(),
                        partitions: vec![0, 1, 2, 3]
                    },
                    TopicAssignment {
                        topic_id: id(2),
                        topic_name: "payments".into(),
                        partitions: vec![0, 1]
                    },
                ],
            }],
        }
    );
    assert_eq!(
        h.coordinator
            .describe_consumer_group("none")
            .map_err(|e| e.code()),
        Err(69)
    );
}

mod properties {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    const CLIENTS: usize = 5;
    /// Clients 0 and 1 are static members (instance ids "i0", "i1").
    const STATIC_CLIENTS: usize = 2;

    #[derive(Debug, Clone)]
    enum Op {
        /// (Re)join with a subscription (0: a, 1: b, 2: a+b), an assignor choice, v0 or v1.
        Join {
            client: usize,
            subscription: u8,
            assignor: u8,
            v0: bool,
        },
        /// A faithful heartbeat, or a lying one.
        Heartbeat {
            client: usize,
            lie: Lie,
        },
        Subscribe {
            client: usize,
            subscription: u8,
        },
        Leave {
            client: usize,
        },
        StaticLeave {
            client: usize,
        },
        Advance {
            ms: u64,
        },
        GrowA,
        /// Creates "b" (with a fresh id) or grows it.
        CreateOrGrowB,
        DeleteB,
    }

    #[derive(Debug, Clone)]
    enum Lie {
        None,
        NoReport,
        Owned(Vec<(bool, i32)>),
        EpochPlus,
        EpochMinus,
    }

    fn op() -> impl Strategy<Value = Op> {
        let client = 0..CLIENTS;
        let lie = prop_oneof![
            6 => Just(Lie::None),
            1 => Just(Lie::NoReport),
            1 => proptest::collection::vec((any::<bool>(), 0..8i32), 0..6).prop_map(Lie::Owned),
            1 => Just(Lie::EpochPlus),
            1 => Just(Lie::EpochMinus),
        ];
        prop_oneof![
            3 => (client.clone(), 0..3u8, 0..3u8, any::<bool>())
                .prop_map(|(client, subscription, assignor, v0)| Op::Join { client, subscription, assignor, v0 }),
            10 => (client.clone(), lie).prop_map(|(client, lie)| Op::Heartbeat { client, lie }),
            1 => (client.clone(), 0..3u8).prop_map(|(client, subscription)| Op::Subscribe { client, subscription }),
            1 => client.clone().prop_map(|client| Op::Leave { client }),
            1 => (0..STATIC_CLIENTS).prop_map(|client| Op::StaticLeave { client }),
            2 => prop_oneof![Just(100u64), Just(3_000), Just(12_000), Just(50_000)].prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::GrowA),
            1 => Just(Op::CreateOrGrowB),
            1 => Just(Op::DeleteB),
        ]
    }

    fn subscription(choice: u8) -> Vec<String> {
        match choice {
            0 => vec!["a".into()],
            1 => vec!["b".into()],
            _ => vec!["a".into(), "b".into()],
        }
    }

    /// What a client believes.
    #[derive(Debug, Default, Clone)]
    struct Client {
        /// Empty before a v0 client's first join.
        member_id: String,
        /// Whether the client believes it is in the group.
        joined: bool,
        /// Left with -2, to come back as a new incarnation.
        away: bool,
        epoch: i32,
        owned: Vec<TopicPartitions>,
        subscription: u8,
        incarnation: u32,
        /// Joined at some point and has not left with -1.
        wants_in: bool,
    }

    struct World {
        h: Harness,
        clients: Vec<Client>,
        next_topic_id: u8,
    }

    impl World {
        fn new() -> World {
            let mut h = Harness::new();
            h.topics.0.clear();
            h.topics.0.insert("a".into(), (id(1), 3));
            World {
                h,
                clients: vec![Client::default(); CLIENTS],
                next_topic_id: 10,
            }
        }

        fn instance(client: usize) -> Option<String> {
            (client < STATIC_CLIENTS).then(|| format!("i{client}"))
        }

        fn absorb(&mut self, client: usize, result: &ConsumerGroupHeartbeatResult) {
            let state = &mut self.clients[client];
            match &result.error {
                None => {
                    state.member_id = result.member_id.clone();
                    state.epoch = result.member_epoch;
                    if let Some(assignment) = &result.assignment {
                        state.owned = assignment.clone();
                    }
                }
                // Fenced or forgotten: abandon everything; rejoin later (KIP-1082: same id).
                Some(_) => {
                    state.joined = false;
                    state.owned.clear();
                }
            }
        }

        fn join(
            &mut self,
            client: usize,
            subscription_choice: u8,
            assignor: Option<&str>,
            v0: bool,
        ) {
            let state = &mut self.clients[client];
            if state.away || (state.member_id.is_empty() && !v0) {
                // A new incarnation (or a first v1 join): a fresh id.
                state.incarnation += 1;
                state.member_id = if v0 {
                    String::new()
                } else {
                    format!("c{client}-{}", state.incarnation)
                };
                state.away = false;
            }
            state.subscription = subscription_choice;
            state.wants_in = true;
            let request = ConsumerGroupHeartbeat {
                instance_id: Self::instance(client),
                server_assignor: assignor.map(str::to_owned),
                ..join_req("g", &state.member_id, &[])
            };
            let request = ConsumerGroupHeartbeat {
                subscribed_topic_names: Some(subscription(subscription_choice)),
                ..request
            };
            let result = self.h.send(request);
            if result.error.is_none() {
                self.clients[client].joined = true;
                self.clients[client].owned.clear();
            }
            self.absorb(client, &result);
        }

        fn heartbeat(&mut self, client: usize, lie: &Lie) {
            let state = &self.clients[client];
            if !state.joined {
                return;
            }
            let mut request = ConsumerGroupHeartbeat {
                topic_partitions: Some(state.owned.clone()),
                ..hb_req("g", &state.member_id, state.epoch)
            };
            match lie {
                Lie::None => {}
                Lie::NoReport => request.topic_partitions = None,
                Lie::Owned(owned) => {
                    request.topic_partitions = Some(
                        owned
                            .iter()
                            .map(|(b, p)| TopicPartitions {
                                topic_id: if *b {
                                    self.h.topics.0.get("b").map_or(id(99), |t| t.0)
                                } else {
                                    id(1)
                                },
                                partitions: vec![*p],
                            })
                            .collect(),
                    )
                }
                Lie::EpochPlus => request.member_epoch += 1,
                Lie::EpochMinus => request.member_epoch -= 1,
            }
            if request.member_epoch <= 0 {
                return;
            }
            let result = self.h.send(request);
            self.absorb(client, &result);
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Join {
                    client,
                    subscription,
                    assignor,
                    v0,
                } => {
                    let assignor = [None, Some("uniform"), Some("range")][usize::from(assignor)];
                    self.join(client, subscription, assignor, v0);
                }
                Op::Heartbeat { client, ref lie } => self.heartbeat(client, lie),
                Op::Subscribe {
                    client,
                    subscription: choice,
                } => {
                    let state = &self.clients[client];
                    if !state.joined {
                        return;
                    }
                    let request = ConsumerGroupHeartbeat {
                        subscribed_topic_names: Some(subscription(choice)),
                        topic_partitions: Some(state.owned.clone()),
                        ..hb_req("g", &state.member_id, state.epoch)
                    };
                    let result = self.h.send(request);
                    if result.error.is_none() {
                        self.clients[client].subscription = choice;
                    }
                    self.absorb(client, &result);
                }
                Op::Leave { client } => {
                    let state = &mut self.clients[client];
                    if !state.joined {
                        return;
                    }
                    let request = ConsumerGroupHeartbeat {
                        instance_id: Self::instance(client),
                        ..hb_req("g", &state.member_id, LEAVE_EPOCH)
                    };
                    state.joined = false;
                    state.wants_in = false;
                    state.owned.clear();
                    if client >= STATIC_CLIENTS {
                        // A v0 client gets a new id next time; v1 keeps its own.
                        if !state.member_id.starts_with('c') {
                            state.member_id.clear();
                        }
                    } else {
                        state.away = true;
                    }
                    self.h.send(request);
                }
                Op::StaticLeave { client } => {
                    let state = &mut self.clients[client];
                    if !state.joined {
                        return;
                    }
                    let request = ConsumerGroupHeartbeat {
                        instance_id: Self::instance(client),
                        ..hb_req("g", &state.member_id, STATIC_LEAVE_EPOCH)
                    };
                    state.joined = false;
                    state.away = true;
                    state.owned.clear();
                    self.h.send(request);
                }
                Op::Advance { ms } => {
                    let now_ms = self.h.now_ms + ms;
                    self.h.at(now_ms);
                }
                Op::GrowA => {
                    if let Some(topic) = self.h.topics.0.get_mut("a") {
                        topic.1 = (topic.1 + 1).min(8);
                    }
                }
                Op::CreateOrGrowB => match self.h.topics.0.get_mut("b") {
                    Some(topic) => topic.1 = (topic.1 + 2).min(8),
                    None => {
                        self.next_topic_id += 1;
                        self.h
                            .topics
                            .0
                            .insert("b".into(), (id(self.next_topic_id), 2));
                    }
                },
                Op::DeleteB => {
                    self.h.topics.0.remove("b");
                }
            }
        }

        /// Every client that means to be in the group (re)joins or heartbeats faithfully, a few
        /// rounds without time passing: the group must become Stable with every member at its
        /// target.
        fn converge(&mut self) {
            for _ in 0..6 {
                for client in 0..CLIENTS {
                    let state = &self.clients[client];
                    if state.joined {
                        self.heartbeat(client, &Lie::None);
                    } else if state.wants_in {
                        let choice = state.subscription;
                        self.join(client, choice, None, false);
                    }
                }
            }
            let Ok(description) = self.h.coordinator.describe_consumer_group("g") else {
                return;
            };
            let clients: HashMap<&str, &Client> = self
                .clients
                .iter()
                .filter(|c| c.joined)
                .map(|c| (c.member_id.as_str(), c))
                .collect();
            for member in &description.members {
                let client = clients.get(member.member_id.as_str());
                assert!(
                    client.is_some(),
                    "member {} has no client",
                    member.member_id
                );
                assert_eq!(
                    member.member_epoch, description.group_epoch,
                    "{description:#?}"
                );
                assert_eq!(
                    member.assignment, member.target_assignment,
                    "{description:#?}"
                );
                let owned: BTreeSet<(TopicId, i32)> = client
                    .into_iter()
                    .flat_map(|c| c.owned.iter())
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
                    .collect();
                let assigned: BTreeSet<(TopicId, i32)> = member
                    .assignment
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
                    .collect();
                assert_eq!(owned, assigned, "client and coordinator disagree");
            }
            let expected = if description.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            assert_eq!(description.state, expected, "{description:#?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

        /// Invariants after every step (Coordinator::check_invariants): no partition in two
        /// members' current assignments (or pending revocations), member epochs <= the group
        /// epoch, the target covering every subscribed partition once. At the end, faithful
        /// members converge to their targets.
        #[test]
        fn random_heartbeats_keep_the_invariants_and_converge(ops in proptest::collection::vec(op(), 1..80)) {
            let mut world = World::new();
            for op in &ops {
                world.apply(op);
            }
            world.converge();
        }
    }
}

#[test]
fn a_regex_subscription_follows_the_topics_that_match() {
    let mut h = Harness::new();
    let joined = h.ok(ConsumerGroupHeartbeat {
        // librdkafka sends its pattern as written, anchors included.
        subscribed_topic_names: Some(Vec::new()),
        subscribed_topic_regex: Some("(^ord.*)".into()),
        ..join_req("g", "m", &[])
    });
    let (epoch, assignment) = epoch_and_assignment(&joined);
    // Whole-name match: "orders" but not "payments" (nor a name merely containing "ord").
    assert_eq!(assignment, Some(parts(&[(1, &[0, 1, 2, 3])])));
    h.topics.0.insert("ordinals".into(), (id(3), 2));
    h.topics.0.insert("reorder".into(), (id(4), 2));
    let next = h.hb("g", "m", epoch, &[(1, &[0, 1, 2, 3])]);
    assert!(
        next.member_epoch > epoch,
        "a new matching topic bumps the epoch"
    );
    assert_eq!(
        next.assignment,
        Some(parts(&[(1, &[0, 1, 2, 3]), (3, &[0, 1])]))
    );
    // An empty regex clears it; names alone remain.
    let cleared = h.ok(ConsumerGroupHeartbeat {
        subscribed_topic_names: Some(vec!["payments".into()]),
        subscribed_topic_regex: Some(String::new()),
        topic_partitions: Some(parts(&[(1, &[0, 1, 2, 3]), (3, &[0, 1])])),
        ..hb_req("g", "m", next.member_epoch)
    });
    assert_eq!(
        cleared.assignment,
        Some(Vec::new()),
        "revoke everything before gaining payments"
    );
}
