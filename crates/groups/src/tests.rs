//! Scenario tests driving the coordinator with explicit times, one-line error cases, and a
//! property test of random event sequences.

use std::collections::{HashMap, HashSet};

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn config(initial_rebalance_delay_ms: u64) -> CoordinatorConfig {
    CoordinatorConfig {
        initial_rebalance_delay_ms,
        ..CoordinatorConfig::default()
    }
}

fn protocols(names: &[&str], metadata: &str) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| Protocol {
            name: (*name).into(),
            metadata: metadata.as_bytes().to_vec(),
        })
        .collect()
}

/// A consumer `client` joining `group` with member id `member_id`, "range" and metadata "m-{client}".
fn join_req(group: &str, client: &str, member_id: &str) -> JoinGroup {
    JoinGroup {
        group_id: group.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols(&["range"], &format!("m-{client}")),
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: false,
        reason: None,
    }
}

fn static_join(group: &str, client: &str, member_id: &str) -> JoinGroup {
    JoinGroup {
        group_instance_id: Some(format!("i-{client}")),
        ..join_req(group, client, member_id)
    }
}

fn sync_req(
    group: &str,
    generation_id: i32,
    member_id: &str,
    assignments: &[(&str, &str)],
) -> SyncGroup {
    SyncGroup {
        group_id: group.into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(m, a)| ((*m).into(), a.as_bytes().to_vec()))
            .collect(),
    }
}

fn hb(group: &str, generation_id: i32, member_id: &str) -> Heartbeat {
    Heartbeat {
        group_id: group.into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
    }
}

fn leaving(member_id: &str) -> LeavingMember {
    LeavingMember {
        member_id: member_id.into(),
        group_instance_id: None,
    }
}

/// Drives a coordinator: hands out tokens, collects answers, checks that each token is answered
/// at most once and only if it was issued, and checks the internal invariants after every call.
struct Harness {
    coordinator: Coordinator,
    now_ms: u64,
    next_token: Token,
    answered: HashSet<Token>,
    inbox: HashMap<Token, Response>,
}

impl Harness {
    fn new(config: CoordinatorConfig) -> Harness {
        Harness {
            coordinator: Coordinator::new(config),
            now_ms: 0,
            next_token: 1,
            answered: HashSet::new(),
            inbox: HashMap::new(),
        }
    }

    fn absorb(&mut self, replies: Vec<(Token, Response)>) {
        for (token, response) in replies {
            assert!(
                token < self.next_token,
                "answer for token {token} that was never issued"
            );
            assert!(self.answered.insert(token), "token {token} answered twice");
            self.inbox.insert(token, response);
        }
        self.coordinator.check_invariants();
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token - 1
    }

    fn at(&mut self, now_ms: u64) {
        assert!(now_ms >= self.now_ms);
        self.now_ms = now_ms;
        let replies = self.coordinator.tick(now_ms);
        self.absorb(replies);
    }

    fn join(&mut self, request: JoinGroup) -> Token {
        let token = self.token();
        let replies = self.coordinator.join_group(self.now_ms, token, request);
        self.absorb(replies);
        token
    }

    fn sync(&mut self, request: SyncGroup) -> Token {
        let token = self.token();
        let replies = self.coordinator.sync_group(self.now_ms, token, request);
        self.absorb(replies);
        token
    }

    fn heartbeat(&mut self, request: Heartbeat) -> Result<(), GroupError> {
        let result = self.coordinator.heartbeat(self.now_ms, request);
        self.coordinator.check_invariants();
        result
    }

    fn leave(&mut self, group: &str, members: Vec<LeavingMember>) -> Vec<Result<(), GroupError>> {
        let outcome = self
            .coordinator
            .leave_group(self.now_ms, group, members)
            .expect("valid leave");
        self.absorb(outcome.responses);
        outcome.members
    }

    fn is_parked(&self, token: Token) -> bool {
        !self.answered.contains(&token)
    }

    fn joined(&mut self, token: Token) -> JoinResult {
        match self.inbox.remove(&token) {
            Some(Response::Join(result)) => result,
            other => panic!("token {token}: expected a join answer, got {other:?}"),
        }
    }

    fn synced(&mut self, token: Token) -> SyncResult {
        match self.inbox.remove(&token) {
            Some(Response::Sync(result)) => result,
            other => panic!("token {token}: expected a sync answer, got {other:?}"),
        }
    }

    fn join_error(&mut self, request: JoinGroup) -> Option<GroupError> {
        let token = self.join(request);
        self.joined(token).error
    }

    fn sync_error(&mut self, request: SyncGroup) -> Option<GroupError> {
        let token = self.sync(request);
        self.synced(token).error
    }

    fn state(&self, group: &str) -> GroupState {
        self.coordinator.describe_group(group).state
    }

    /// Forms a Stable group (initial delay must be 0): the first member joins alone, the others
    /// join, the first rejoins, and that generation completes with the first as leader, who
    /// assigns "a-{client}" to each. Returns (generation, member ids in request order).
    fn form(&mut self, group: &str, mut requests: Vec<JoinGroup>) -> (i32, Vec<String>) {
        let clients: Vec<String> = requests.iter().map(|r| r.client_id.clone()).collect();
        let first = self.join(requests[0].clone());
        let first = self.joined(first);
        assert_eq!(first.error, None);
        let mut results = vec![first.clone()];
        if requests.len() > 1 {
            let others: Vec<Token> = requests.drain(1..).map(|r| self.join(r)).collect();
            let rejoin = self.join(JoinGroup {
                member_id: first.member_id.clone(),
                ..requests[0].clone()
            });
            results = vec![self.joined(rejoin)];
            results.extend(others.into_iter().map(|t| self.joined(t)));
        }
        let generation = results[0].generation_id;
        assert!(
            results
                .iter()
                .all(|r| r.error.is_none() && r.generation_id == generation)
        );
        let ids: Vec<String> = results.iter().map(|r| r.member_id.clone()).collect();
        let assignments: Vec<(&str, String)> = ids
            .iter()
            .zip(&clients)
            .map(|(id, client)| (id.as_str(), format!("a-{client}")))
            .collect();
        let assignment_refs: Vec<(&str, &str)> =
            assignments.iter().map(|(m, a)| (*m, a.as_str())).collect();
        let leader = results[0].leader.clone();
        assert_eq!(leader, ids[0]);
        let mut sync_tokens: Vec<Token> = Vec::new();
        let sync = |member: &str, assignments: &[(&str, &str)]| SyncGroup {
            protocol_name: None,
            ..sync_req(group, generation, member, assignments)
        };
        for id in ids.iter().filter(|id| **id != leader) {
            sync_tokens.push(self.sync(sync(id, &[])));
        }
        sync_tokens.push(self.sync(sync(&leader, &assignment_refs)));
        for token in sync_tokens {
            assert_eq!(self.synced(token).error, None);
        }
        assert_eq!(self.state(group), GroupState::Stable);
        (generation, ids)
    }
}

// ---- the life of a group ----

#[test]
fn three_members_get_one_generation_and_their_assignments() {
    let mut h = Harness::new(config(3_000));
    let a = h.join(join_req("g", "a", ""));
    h.at(1_000);
    let b = h.join(join_req("g", "b", ""));
    let c = h.join(join_req("g", "c", ""));
    h.at(2_999);
    assert!(h.is_parked(a) && h.is_parked(b) && h.is_parked(c));
    h.at(3_000); // new members came during the delay: wait another delay
    assert!(h.is_parked(a));
    h.at(6_000);
    let (ja, jb, jc) = (h.joined(a), h.joined(b), h.joined(c));
    for j in [&ja, &jb, &jc] {
        assert_eq!(
            (j.error.clone(), j.generation_id, j.leader.as_str()),
            (None, 1, ja.member_id.as_str())
        );
        assert_eq!(
            (j.protocol_type.as_deref(), j.protocol_name.as_deref()),
            (Some("consumer"), Some("range"))
        );
    }
    assert!(ja.member_id.starts_with("a-") && jb.member_id.starts_with("b-"));
    let seen: Vec<(String, Vec<u8>)> = ja
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.metadata.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (ja.member_id.clone(), b"m-a".to_vec()),
            (jb.member_id.clone(), b"m-b".to_vec()),
            (jc.member_id.clone(), b"m-c".to_vec())
        ]
    );
    assert!(jb.members.is_empty() && jc.members.is_empty());
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);

    // Followers wait for the leader; heartbeats are fine meanwhile.
    let sb = h.sync(sync_req("g", 1, &jb.member_id, &[]));
    let sc = h.sync(sync_req("g", 1, &jc.member_id, &[]));
    assert_eq!(h.heartbeat(hb("g", 1, &jb.member_id)), Ok(()));
    assert!(h.is_parked(sb) && h.is_parked(sc));
    let sa = h.sync(sync_req(
        "g",
        1,
        &ja.member_id,
        &[(&ja.member_id, "pa"), (&jb.member_id, "pb")],
    ));
    assert_eq!(h.synced(sa).assignment, b"pa");
    assert_eq!(h.synced(sb).assignment, b"pb");
    let sc = h.synced(sc);
    assert_eq!((sc.error, sc.assignment), (None, vec![])); // the leader gave c nothing
    let description = h.coordinator.describe_group("g");
    assert_eq!(
        (description.state, description.protocol.as_str()),
        (GroupState::Stable, "range")
    );
    assert_eq!(description.members[1].assignment, b"pb");
    assert_eq!(description.members[1].metadata, b"m-b");
    assert!(h.coordinator.is_active("g"));
}

#[test]
fn initial_rebalance_delay_is_honoured() {
    let mut h = Harness::new(config(3_000));
    let a = h.join(join_req("g", "a", ""));
    h.at(2_900);
    assert!(h.is_parked(a));
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    h.at(3_000); // nobody else came: done
    assert_eq!(h.joined(a).generation_id, 1);
}

#[test]
fn the_initial_delay_slides_with_each_new_member() {
    let mut h = Harness::new(config(3_000));
    let a = h.join(join_req("g", "a", ""));
    h.at(2_500);
    let b = h.join(join_req("g", "b", ""));
    h.at(5_499); // the delay counts from the last member to join
    assert!(h.is_parked(a) && h.is_parked(b));
    h.at(5_500); // not 6 000: no second whole delay
    assert_eq!(
        (h.joined(a).generation_id, h.joined(b).generation_id),
        (1, 1)
    );
}

#[test]
fn initial_delay_extensions_stop_at_the_rebalance_timeout() {
    let mut h = Harness::new(config(3_000));
    let a = h.join(JoinGroup {
        rebalance_timeout_ms: 4_000,
        ..join_req("g", "a", "")
    });
    h.at(1_000);
    let b = h.join(join_req("g", "b", ""));
    h.at(3_000); // extended, but only by the 1 000 ms of rebalance time left
    assert!(h.is_parked(a) && h.is_parked(b));
    h.at(3_999);
    assert!(h.is_parked(a));
    h.at(4_000);
    assert_eq!(
        (h.joined(a).generation_id, h.joined(b).generation_id),
        (1, 1)
    );
}

#[test]
fn a_leaving_member_makes_the_others_rejoin() {
    let mut h = Harness::new(config(0));
    let (generation, ids) = h.form(
        "g",
        vec![
            join_req("g", "a", ""),
            join_req("g", "b", ""),
            join_req("g", "c", ""),
        ],
    );
    assert_eq!(h.leave("g", vec![leaving(&ids[2])]), vec![Ok(())]);
    assert_eq!(
        h.heartbeat(hb("g", generation, &ids[0])),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        h.sync_error(sync_req("g", generation, &ids[1], &[])),
        Some(GroupError::RebalanceInProgress)
    );
    let a = h.join(join_req("g", "a", &ids[0]));
    assert!(h.is_parked(a));
    let b = h.join(join_req("g", "b", &ids[1]));
    let (ja, jb) = (h.joined(a), h.joined(b));
    assert_eq!(
        (ja.generation_id, jb.generation_id),
        (generation + 1, generation + 1)
    );
    assert_eq!(ja.members.len(), 2);
    assert_eq!(
        h.heartbeat(hb("g", generation + 1, &ids[2])),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let mut h = Harness::new(config(0));
    let (generation, ids) = h.form("g", vec![join_req("g", "a", ""), join_req("g", "b", "")]);
    for t in [3_000, 6_000, 9_000] {
        h.at(t);
        assert_eq!(h.heartbeat(hb("g", generation, &ids[0])), Ok(()));
    }
    h.at(9_999);
    assert_eq!(h.state("g"), GroupState::Stable);
    h.at(10_000); // b's session (from its SyncGroup at 0) is over
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat(hb("g", generation, &ids[0])),
        Err(GroupError::RebalanceInProgress)
    );
    let a = h.join(join_req("g", "a", &ids[0]));
    let ja = h.joined(a);
    assert_eq!((ja.generation_id, ja.members.len()), (generation + 1, 1));
    // The last member going silent empties the group.
    h.at(30_000);
    assert_eq!(h.state("g"), GroupState::Empty);
    assert!(!h.coordinator.is_active("g"));
}

#[test]
fn a_member_that_does_not_rejoin_in_time_is_dropped() {
    let mut h = Harness::new(config(0));
    let (generation, ids) = h.form("g", vec![join_req("g", "a", ""), join_req("g", "b", "")]);
    let a = h.join(join_req("g", "a", &ids[0])); // the leader's rejoin starts a rebalance
    for t in (3_000..30_000).step_by(3_000) {
        h.at(t);
        assert_eq!(
            h.heartbeat(hb("g", generation, &ids[1])),
            Err(GroupError::RebalanceInProgress)
        );
    }
    // a's join was parked longer than its session timeout: waiting on the coordinator does not
    // count as silence.
    assert!(h.is_parked(a));
    h.at(30_000);
    let ja = h.joined(a);
    assert_eq!(
        (ja.error, ja.generation_id, ja.members.len()),
        (None, generation + 1, 1)
    );
    assert_eq!(
        h.heartbeat(hb("g", generation, &ids[1])),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn members_that_never_sync_are_removed_and_parked_syncs_answered() {
    let mut h = Harness::new(config(0));
    let a = h.join(join_req("g", "a", ""));
    let ja = h.joined(a);
    let b = h.join(join_req("g", "b", ""));
    let a = h.join(join_req("g", "a", &ja.member_id));
    let (ja, jb) = (h.joined(a), h.joined(b));
    let sb = h.sync(sync_req("g", jb.generation_id, &jb.member_id, &[]));
    for t in (3_000..30_000).step_by(3_000) {
        h.at(t);
        assert_eq!(
            h.heartbeat(hb("g", ja.generation_id, &ja.member_id)),
            Ok(())
        );
    }
    h.at(29_999);
    assert!(h.is_parked(sb));
    h.at(30_000); // the leader never synced within the rebalance timeout
    assert_eq!(h.synced(sb).error, Some(GroupError::RebalanceInProgress));
    assert_eq!(
        h.heartbeat(hb("g", ja.generation_id, &ja.member_id)),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
}

#[test]
fn a_repeated_join_supersedes_the_parked_one() {
    let mut h = Harness::new(config(0));
    let (_, ids) = h.form("g", vec![join_req("g", "a", ""), join_req("g", "b", "")]);
    let first = h.join(join_req("g", "a", &ids[0]));
    let second = h.join(join_req("g", "a", &ids[0]));
    assert_eq!(h.joined(first).error, Some(GroupError::RebalanceInProgress));
    assert!(h.is_parked(second));
    let b = h.join(join_req("g", "b", &ids[1]));
    assert_eq!((h.joined(second).error, h.joined(b).error), (None, None));
}

#[test]
fn a_lost_join_answer_is_repeated_during_completing_rebalance() {
    let mut h = Harness::new(config(0));
    let a = h.join(join_req("g", "a", ""));
    let ja = h.joined(a);
    let again = h.join(join_req("g", "a", &ja.member_id));
    let again = h.joined(again);
    assert_eq!((again.generation_id, again.members.len()), (1, 1));
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
}

// ---- cooperative rebalancing: rounds are just joins and syncs ----

#[test]
fn cooperative_rounds_in_a_stable_group() {
    let mut h = Harness::new(config(0));
    let coop = |client: &str, id: &str, owned: &str| JoinGroup {
        protocols: protocols(&["cooperative-sticky", "range"], owned),
        ..join_req("g", client, id)
    };
    let (generation, ids) = h.form("g", vec![coop("a", "", "owned:"), coop("b", "", "owned:")]);
    // A follower rejoining with the same metadata learns the current generation, no rebalance.
    let same = h.join(coop("b", &ids[1], "owned:"));
    assert_eq!(h.joined(same).generation_id, generation);
    assert_eq!(h.state("g"), GroupState::Stable);
    // Round 1: b rejoins with new owned partitions; a learns it from its heartbeat.
    let b = h.join(coop("b", &ids[1], "owned:p1"));
    assert_eq!(
        h.heartbeat(hb("g", generation, &ids[0])),
        Err(GroupError::RebalanceInProgress)
    );
    let a = h.join(coop("a", &ids[0], "owned:p0,p1"));
    let (ja, jb) = (h.joined(a), h.joined(b));
    assert_eq!(
        (ja.generation_id, jb.generation_id),
        (generation + 1, generation + 1)
    );
    assert_eq!(ja.protocol_name.as_deref(), Some("cooperative-sticky"));
    assert_eq!(ja.members[1].metadata, b"owned:p1");
    let sync = |member: &str, assignments: &[(&str, &str)]| SyncGroup {
        protocol_name: Some("cooperative-sticky".into()),
        ..sync_req("g", generation + 1, member, assignments)
    };
    let sb = h.sync(sync(&ids[1], &[]));
    let sa = h.sync(sync(&ids[0], &[(&ids[0], "p0"), (&ids[1], "")]));
    assert_eq!(
        (h.synced(sa).assignment, h.synced(sb).assignment),
        (b"p0".to_vec(), vec![])
    );
    // Round 2: a revoked p1 and rejoins; b follows; p1 moves.
    let a = h.join(coop("a", &ids[0], "owned:p0"));
    let b = h.join(coop("b", &ids[1], "owned:"));
    assert_eq!(
        (h.joined(a).generation_id, h.joined(b).generation_id),
        (generation + 2, generation + 2)
    );
}

#[test]
fn protocol_is_chosen_by_vote_among_common_protocols() {
    let cases: &[(&[&[&str]], &str)] = &[
        (
            &[
                &["range", "roundrobin"],
                &["roundrobin", "range"],
                &["roundrobin"],
            ],
            "roundrobin",
        ),
        (
            &[
                &["range", "roundrobin"],
                &["range", "roundrobin"],
                &["roundrobin", "range"],
            ],
            "range",
        ),
        (&[&["a", "b"], &["b", "a"]], "a"), // a tie goes to the first vote
    ];
    for (members, expected) in cases {
        let mut h = Harness::new(config(3_000));
        let tokens: Vec<Token> = members
            .iter()
            .enumerate()
            .map(|(i, names)| {
                h.join(JoinGroup {
                    protocols: protocols(names, "m"),
                    ..join_req("g", &format!("c{i}"), "")
                })
            })
            .collect();
        h.at(3_000);
        h.at(6_000);
        assert_eq!(
            h.joined(tokens[0]).protocol_name.as_deref(),
            Some(*expected),
            "{members:?}"
        );
    }
}

// ---- static membership (KIP-345) ----

#[test]
fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let mut h = Harness::new(config(0));
    let (generation, ids) = h.form(
        "g",
        vec![static_join("g", "a", ""), static_join("g", "b", "")],
    );
    assert!(ids[1].starts_with("i-b-"));
    // b restarts: same instance id, no member id.
    let b = h.join(static_join("g", "b", ""));
    let jb = h.joined(b);
    assert_eq!(
        (jb.error.clone(), jb.generation_id, jb.leader.as_str()),
        (None, generation, ids[0].as_str())
    );
    assert_ne!(jb.member_id, ids[1]);
    assert!(jb.members.is_empty());
    assert_eq!(h.state("g"), GroupState::Stable);
    // Its SyncGroup gets the assignment the old incarnation had.
    let sb = h.sync(SyncGroup {
        group_instance_id: Some("i-b".into()),
        ..sync_req("g", generation, &jb.member_id, &[])
    });
    assert_eq!(h.synced(sb).assignment, b"a-b");
    // The old incarnation is fenced.
    let old = Heartbeat {
        group_instance_id: Some("i-b".into()),
        ..hb("g", generation, &ids[1])
    };
    let fenced = GroupError::FencedInstanceId {
        group_instance_id: "i-b".into(),
    };
    assert_eq!(h.heartbeat(old.clone()), Err(fenced.clone()));
    assert_eq!(
        h.join_error(static_join("g", "b", &ids[1])),
        Some(fenced.clone())
    );
    assert_eq!(
        h.coordinator
            .validate_offset_commit("g", generation, &ids[1], Some("i-b")),
        Err(fenced)
    );
    assert_eq!(
        h.heartbeat(hb("g", generation, &ids[1])),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(h.heartbeat(hb("g", generation, &ids[0])), Ok(()));
    assert_eq!(h.coordinator.describe_group("g").generation_id, generation);
}

#[test]
fn a_replaced_static_leader_is_not_told_it_leads() {
    let mut h = Harness::new(config(0));
    let (generation, ids) = h.form(
        "g",
        vec![static_join("g", "a", ""), static_join("g", "b", "")],
    );
    let a = h.join(static_join("g", "a", ""));
    let ja = h.joined(a);
    assert_eq!(
        (ja.generation_id, ja.leader.as_str()),
        (generation, ids[0].as_str())
    );
    assert_eq!(
        h.coordinator.describe_group("g").leader_id,
        Some(ja.member_id.clone())
    );
}

#[test]
fn a_static_member_with_new_protocols_triggers_a_rebalance() {
    let mut h = Harness::new(config(0));
    let (generation, _) = h.form(
        "g",
        vec![static_join("g", "a", ""), static_join("g", "b", "")],
    );
    let b = h.join(JoinGroup {
        protocols: protocols(&["range"], "new-subscription"),
        ..static_join("g", "b", "")
    });
    assert!(h.is_parked(b));
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    h.at(30_000);
    assert_eq!(h.joined(b).generation_id, generation + 1);
}

#[test]
fn a_replaced_static_member_has_its_parked_join_fenced() {
    let mut h = Harness::new(config(0));
    let joins = vec![
        static_join("g", "a", ""),
        static_join("g", "b", ""),
        static_join("g", "c", ""),
    ];
    let (generation, ids) = h.form("g", joins);
    let a = h.join(static_join("g", "a", &ids[0])); // the leader's rejoin: rebalance
    let old_b = h.join(static_join("g", "b", &ids[1]));
    assert!(h.is_parked(a) && h.is_parked(old_b));
    let new_b = h.join(static_join("g", "b", "")); // b restarted meanwhile
    let fenced = GroupError::FencedInstanceId {
        group_instance_id: "i-b".into(),
    };
    assert_eq!(h.joined(old_b).error, Some(fenced));
    assert!(h.is_parked(new_b));
    let c = h.join(static_join("g", "c", &ids[2]));
    let (ja, jb, jc) = (h.joined(a), h.joined(new_b), h.joined(c));
    assert_eq!(
        [ja.generation_id, jb.generation_id, jc.generation_id],
        [generation + 1; 3]
    );
    assert_ne!(jb.member_id, ids[1]);
    let members: Vec<&str> = ja.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(
        members,
        vec![ids[0].as_str(), jb.member_id.as_str(), ids[2].as_str()]
    );
}

#[test]
fn static_members_expire_and_can_be_removed_by_instance_id() {
    let mut h = Harness::new(config(0));
    let (generation, ids) = h.form(
        "g",
        vec![static_join("g", "a", ""), static_join("g", "b", "")],
    );
    let by_instance = LeavingMember {
        member_id: String::new(),
        group_instance_id: Some("i-b".into()),
    };
    let unknown_instance = LeavingMember {
        member_id: String::new(),
        group_instance_id: Some("i-z".into()),
    };
    assert_eq!(
        h.leave("g", vec![by_instance, unknown_instance]),
        vec![Ok(()), Err(GroupError::UnknownMemberId)]
    );
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    let a = h.join(static_join("g", "a", &ids[0]));
    assert_eq!(h.joined(a).generation_id, generation + 1);
    h.at(40_000); // a never syncs nor heartbeats: a static member's session ends too
    assert_eq!(h.state("g"), GroupState::Empty);
}

// ---- KIP-394: MEMBER_ID_REQUIRED ----

#[test]
fn member_id_required_then_join_with_it() {
    let mut h = Harness::new(config(0));
    let first = JoinGroup {
        require_known_member_id: true,
        ..join_req("g", "a", "")
    };
    let t = h.join(first.clone());
    let j = h.joined(t);
    assert_eq!(
        (j.error, j.generation_id),
        (Some(GroupError::MemberIdRequired), -1)
    );
    assert!(j.member_id.starts_with("a-"));
    let t = h.join(JoinGroup {
        member_id: j.member_id.clone(),
        ..first.clone()
    });
    let joined = h.joined(t);
    assert_eq!(
        (&joined.error, joined.generation_id, &joined.member_id),
        (&None, 1, &j.member_id)
    );
    let t = h.sync(sync_req("g", 1, &joined.member_id, &[]));
    assert_eq!(h.synced(t).error, None);
    // A pending id blocks the rebalance it would take part in, until it joins.
    let t = h.join(first.clone());
    let pending = h.joined(t).member_id;
    let a = h.join(JoinGroup {
        member_id: joined.leader.clone(),
        ..first.clone()
    });
    assert!(h.is_parked(a));
    let b = h.join(JoinGroup {
        member_id: pending,
        ..first.clone()
    });
    assert_eq!(
        (h.joined(a).generation_id, h.joined(b).generation_id),
        (2, 2)
    );
}

#[test]
fn an_unused_pending_member_id_expires() {
    let mut h = Harness::new(config(0));
    let request = JoinGroup {
        require_known_member_id: true,
        ..join_req("g", "a", "")
    };
    let t = h.join(request.clone());
    let member_id = h.joined(t).member_id;
    h.at(10_000);
    assert_eq!(
        h.join_error(JoinGroup {
            member_id,
            ..request
        }),
        Some(GroupError::UnknownMemberId)
    );
    assert_eq!(h.coordinator.stored_bytes(), "g".len());
}

// ---- every error, one line each ----

#[test]
fn error_codes() {
    type Case = (
        &'static str,
        fn(&mut Harness, i32, &[String]) -> Option<GroupError>,
        i16,
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("join: empty group id", |h, _, _| h.join_error(join_req("", "x", "")), 24),
        ("sync: empty group id", |h, g, ids| h.sync_error(sync_req("", g, &ids[0], &[])), 24),
        ("heartbeat: empty group id", |h, g, ids| h.heartbeat(hb("", g, &ids[0])).err(), 24),
        ("leave: empty group id", |h, _, ids| h.coordinator.leave_group(0, "", vec![leaving(&ids[0])]).err(), 24),
        ("delete: empty group id", |h, _, _| h.coordinator.delete_group("").err(), 24),
        ("join: session too short", |h, _, _| h.join_error(JoinGroup { session_timeout_ms: 5_999, ..join_req("n", "x", "") }), 26),
        ("join: session too long", |h, _, _| h.join_error(JoinGroup { session_timeout_ms: 1_800_001, ..join_req("n", "x", "") }), 26),
        ("join: negative session", |h, _, _| h.join_error(JoinGroup { session_timeout_ms: -1, ..join_req("n", "x", "") }), 26),
        ("join: no protocols", |h, _, _| h.join_error(JoinGroup { protocols: vec![], ..join_req("n", "x", "") }), 23),
        ("join: empty protocol type", |h, _, _| h.join_error(JoinGroup { protocol_type: String::new(), ..join_req("n", "x", "") }), 23),
        ("join: other protocol type", |h, _, _| h.join_error(JoinGroup { protocol_type: "connect".into(), ..join_req("g", "x", "") }), 23),
        ("join: no common protocol", |h, _, _| h.join_error(JoinGroup { protocols: protocols(&["roundrobin"], "m"), ..join_req("g", "x", "") }), 23),
        ("known join: no common protocol", |h, _, ids| h.join_error(JoinGroup { protocols: protocols(&["rr"], "m"), ..join_req("g", "b", &ids[1]) }), 23),
        ("sync: other protocol name", |h, g, ids| h.sync_error(SyncGroup { protocol_name: Some("rr".into()), ..sync_req("g", g, &ids[0], &[]) }), 23),
        ("sync: other protocol type", |h, g, ids| h.sync_error(SyncGroup { protocol_type: Some("connect".into()), ..sync_req("g", g, &ids[0], &[]) }), 23),
        ("join: unknown member id", |h, _, _| h.join_error(join_req("g", "x", "x-1")), 25),
        ("join: member id for an unknown group", |h, _, _| h.join_error(join_req("nope", "x", "x-1")), 25),
        ("sync: unknown member", |h, g, _| h.sync_error(sync_req("g", g, "x-1", &[])), 25),
        ("sync: unknown group", |h, g, ids| h.sync_error(sync_req("nope", g, &ids[0], &[])), 25),
        ("heartbeat: unknown member", |h, g, _| h.heartbeat(hb("g", g, "x-1")).err(), 25),
        ("heartbeat: unknown group", |h, g, ids| h.heartbeat(hb("nope", g, &ids[0])).err(), 25),
        ("leave: unknown member", |h, _, _| h.leave("g", vec![leaving("x-1")]).remove(0).err(), 25),
        ("leave: unknown group", |h, _, ids| h.leave("nope", vec![leaving(&ids[0])]).remove(0).err(), 25),
        ("commit: unknown member", |h, g, _| h.coordinator.validate_offset_commit("g", g, "x-1", None).err(), 25),
        ("heartbeat: old generation", |h, g, ids| h.heartbeat(hb("g", g - 1, &ids[0])).err(), 22),
        ("heartbeat: future generation", |h, g, ids| h.heartbeat(hb("g", g + 1, &ids[1])).err(), 22),
        ("sync: old generation", |h, g, ids| h.sync_error(sync_req("g", g - 1, &ids[1], &[])), 22),
        ("commit: old generation", |h, g, ids| h.coordinator.validate_offset_commit("g", g - 1, &ids[0], None).err(), 22),
        ("commit: generation of an unknown group", |h, _, _| h.coordinator.validate_offset_commit("nope", 3, "x-1", None).err(), 22),
        ("heartbeat: rebalancing", |h, g, ids| { h.join(join_req("g", "c", "")); h.heartbeat(hb("g", g, &ids[0])).err() }, 27),
        ("sync: rebalancing", |h, g, ids| { h.join(join_req("g", "c", "")); h.sync_error(sync_req("g", g, &ids[1], &[])) }, 27),
        ("commit: awaiting sync", |h, _, ids| {
            h.join(join_req("g", "c", ""));
            let a = h.join(join_req("g", "a", &ids[0]));
            h.join(join_req("g", "b", &ids[1]));
            let g = h.joined(a).generation_id;
            h.coordinator.validate_offset_commit("g", g, &ids[0], None).err()
        }, 27),
        ("heartbeat: fenced instance", |h, g, ids| h.heartbeat(Heartbeat { group_instance_id: Some("i-a".into()), ..hb("g", g, &ids[1]) }).err(), 82),
        ("sync: fenced instance", |h, g, ids| h.sync_error(SyncGroup { group_instance_id: Some("i-a".into()), ..sync_req("g", g, &ids[1], &[]) }), 82),
        ("leave: fenced instance", |h, _, ids| h.leave("g", vec![LeavingMember { member_id: ids[1].clone(), group_instance_id: Some("i-a".into()) }]).remove(0).err(), 82),
        ("join: member id required", |h, _, _| h.join_error(JoinGroup { require_known_member_id: true, ..join_req("g", "c", "") }), 79),
        ("join: empty instance id is dynamic", |h, _, _| h.join_error(JoinGroup { group_instance_id: Some(String::new()), require_known_member_id: true, ..join_req("g", "c", "") }), 79),
        ("join: group full", |h, _, _| h.join_error(join_req("full", "x", "")), 81),
        ("delete: members present", |h, _, _| h.coordinator.delete_group("g").err(), 68),
        ("delete: rebalancing", |h, _, _| { h.join(join_req("slow", "x", "")); h.coordinator.delete_group("slow").err() }, 68),
        ("delete: unknown group", |h, _, _| h.coordinator.delete_group("nope").err(), 69),
        ("join: metadata too large", |h, _, _| h.join_error(JoinGroup { protocols: protocols(&["range"], &"x".repeat(2_000)), ..join_req("g", "c", "") }), 42),
        ("sync: assignment too large", |h, _, ids| {
            let a = h.join(join_req("g", "a", &ids[0]));
            h.join(join_req("g", "b", &ids[1]));
            let g = h.joined(a).generation_id;
            let big = "x".repeat(3_000);
            h.sync_error(sync_req("g", g, &ids[0], &[(&ids[1], &big)]))
        }, 42),
        ("join: too many groups", |h, _, _| { h.join(join_req("other", "x", "")); h.join_error(join_req("third", "y", "")) }, -1),
        ("join: memory budget", |h, _, _| h.join_error(JoinGroup { client_host: "h".repeat(20_000), ..join_req("g", "c", "") }), -1),
    ];
    for (name, case, code) in cases {
        let limits = CoordinatorConfig {
            max_member_metadata_bytes: 1_000,
            max_member_assignment_bytes: 2_000,
            max_groups: 3,
            max_stored_bytes: 16_000,
            ..config(0)
        };
        let mut h = Harness::new(limits);
        // "g": Stable with static a (the leader) and dynamic b; "full": rebalancing with 3 of 3.
        let (generation, ids) =
            h.form("g", vec![static_join("g", "a", ""), join_req("g", "b", "")]);
        h.coordinator.config.max_group_size = 3;
        let full = h.join(join_req("full", "f1", ""));
        h.joined(full);
        h.join(join_req("full", "f2", ""));
        h.join(join_req("full", "f3", ""));
        h.coordinator.config.initial_rebalance_delay_ms = 3_000;
        let error = case(&mut h, generation, &ids);
        let error = error.unwrap_or_else(|| panic!("{name}: no error"));
        assert_eq!(error.code(), *code, "{name}: {error}");
        assert!(!error.to_string().is_empty());
        // Whatever happened in the case, "g" still answers its members (or rebalances).
        h.at(h.now_ms + 100);
    }
}

// ---- isolation, deletion, listing, offsets ----

#[test]
fn errors_in_one_group_leave_another_alone() {
    let mut h = Harness::new(CoordinatorConfig {
        max_member_metadata_bytes: 100,
        ..config(0)
    });
    let (generation, ids) = h.form(
        "good",
        vec![join_req("good", "a", ""), join_req("good", "b", "")],
    );
    let bad = [
        JoinGroup {
            protocols: protocols(&["range"], &"x".repeat(101)),
            ..join_req("bad", "x", "")
        },
        JoinGroup {
            protocols: vec![],
            ..join_req("bad", "x", "")
        },
        JoinGroup {
            session_timeout_ms: 1,
            ..join_req("bad", "x", "")
        },
        join_req("bad", "x", "x-unknown"),
        JoinGroup {
            protocols: protocols(&["range"], &"x".repeat(101)),
            ..join_req("good", "x", "")
        },
    ];
    for request in bad {
        assert!(h.join_error(request).is_some());
    }
    assert!(
        h.coordinator
            .list_groups()
            .iter()
            .all(|g| g.group_id != "bad"),
        "refused joins create no group"
    );
    assert_eq!(h.state("good"), GroupState::Stable);
    assert_eq!(h.heartbeat(hb("good", generation, &ids[0])), Ok(()));
    assert_eq!(h.heartbeat(hb("good", generation, &ids[1])), Ok(()));
}

#[test]
fn delete_list_and_describe() {
    let mut h = Harness::new(config(0));
    let (_, ids) = h.form("g", vec![join_req("g", "a", "")]);
    let listing = h.coordinator.list_groups();
    assert_eq!(
        listing,
        vec![GroupListing {
            group_id: "g".into(),
            protocol_type: "consumer".into(),
            state: GroupState::Stable,
            group_type: GroupType::Classic,
        }]
    );
    assert_eq!(
        h.coordinator.delete_group("g"),
        Err(GroupError::NonEmptyGroup)
    );
    assert_eq!(
        h.leave("g", vec![leaving(&ids[0]), leaving(&ids[0])]),
        vec![Ok(()), Err(GroupError::UnknownMemberId)]
    );
    assert_eq!(
        (h.state("g"), GroupState::Empty.as_str()),
        (GroupState::Empty, "Empty")
    );
    assert_eq!(h.coordinator.describe_group("g").generation_id, 2);
    assert_eq!(h.coordinator.delete_group("g"), Ok(()));
    assert_eq!(h.state("g"), GroupState::Dead);
    assert_eq!(
        h.coordinator.delete_group("g"),
        Err(GroupError::GroupIdNotFound)
    );
    assert!(h.coordinator.list_groups().is_empty());
    assert_eq!(h.coordinator.stored_bytes(), 0);
    // A new group of the same name starts over.
    let t = h.join(join_req("g", "a", ""));
    assert_eq!(h.joined(t).generation_id, 1);
}

#[test]
fn describe_hides_metadata_until_stable() {
    let mut h = Harness::new(config(3_000));
    h.join(join_req("g", "a", ""));
    let description = h.coordinator.describe_group("g");
    assert_eq!(
        (description.state, description.protocol.as_str()),
        (GroupState::PreparingRebalance, "")
    );
    assert_eq!(description.members[0].metadata, b"");
    assert_eq!(description.members[0].client_id, "a");
}

#[test]
fn offset_commit_validation() {
    let mut h = Harness::new(config(0));
    let c = &h.coordinator;
    assert_eq!(c.validate_offset_commit("standalone", -1, "", None), Ok(()));
    assert_eq!(c.validate_offset_commit("", -1, "", None), Ok(()));
    let (generation, ids) = h.form("g", vec![join_req("g", "a", ""), join_req("g", "b", "")]);
    let c = &h.coordinator;
    assert_eq!(
        c.validate_offset_commit("g", generation, &ids[1], None),
        Ok(())
    );
    assert_eq!(
        c.validate_offset_commit("g", -1, "", None),
        Err(GroupError::UnknownMemberId)
    );
    // During PreparingRebalance the current generation may still commit.
    h.leave("g", vec![leaving(&ids[1])]);
    let c = &h.coordinator;
    assert_eq!(
        c.validate_offset_commit("g", generation, &ids[0], None),
        Ok(())
    );
    assert_eq!(
        c.validate_offset_commit("g", generation, &ids[1], None),
        Err(GroupError::UnknownMemberId)
    );
    h.leave("g", vec![leaving(&ids[0])]);
    assert_eq!(h.state("g"), GroupState::Empty);
    assert_eq!(
        h.coordinator.validate_offset_commit("g", -1, "", None),
        Ok(())
    );
    assert!(!h.coordinator.is_active("g"));
}

#[test]
fn the_longest_empty_group_is_forgotten_at_the_group_limit() {
    let mut h = Harness::new(CoordinatorConfig {
        max_groups: 2,
        ..config(0)
    });
    for (t, group) in [(0, "g1"), (10, "g2")] {
        h.at(t);
        let (_, ids) = h.form(group, vec![join_req(group, "a", "")]);
        h.leave(group, vec![leaving(&ids[0])]);
    }
    let t = h.join(join_req("g3", "a", ""));
    assert_eq!(h.joined(t).error, None);
    let groups: Vec<String> = h
        .coordinator
        .list_groups()
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(groups, vec!["g2", "g3"]);
}

#[test]
fn member_ids_are_unique_and_seeded() {
    let mut one = Coordinator::new(config(0));
    let ids: HashSet<String> = (0..1_000).map(|_| one.generate_member_id("c")).collect();
    assert_eq!(ids.len(), 1_000);
    let mut other = Coordinator::new(CoordinatorConfig {
        member_id_seed: 7,
        ..config(0)
    });
    let first = other.generate_member_id("c");
    assert!(!ids.contains(&first));
    assert_eq!(first.len(), "c-".len() + 36);
}

// ---- property test: random event sequences ----

mod random {
    use proptest::prelude::*;

    use super::*;

    const GROUPS: [&str; 2] = ["g0", "g1"];
    const CLIENTS: u8 = 4;

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            group: usize,
            client: u8,
            fresh: bool,
            require_known: bool,
            variant: u8,
            rebalance_ms: i32,
        },
        Sync {
            group: usize,
            client: u8,
            generation_skew: i8,
        },
        Heartbeat {
            group: usize,
            client: u8,
            generation_skew: i8,
        },
        Leave {
            group: usize,
            client: u8,
            by_instance: bool,
        },
        Advance {
            ms: u64,
        },
        Delete {
            group: usize,
        },
        Commit {
            group: usize,
            client: u8,
            standalone: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let group = 0..GROUPS.len();
        let client = 0..CLIENTS;
        prop_oneof![
            4 => (group.clone(), client.clone(), proptest::bool::weighted(0.15), any::<bool>(), prop_oneof![4 => Just(0u8), 1 => 0..4u8], prop_oneof![Just(0), Just(5_000), Just(30_000)])
                .prop_map(|(group, client, fresh, require_known, variant, rebalance_ms)| Op::Join { group, client, fresh, require_known, variant, rebalance_ms }),
            4 => (group.clone(), client.clone(), prop_oneof![6 => Just(0i8), 1 => -1..=1i8]).prop_map(|(group, client, generation_skew)| Op::Sync { group, client, generation_skew }),
            2 => (group.clone(), client.clone(), prop_oneof![6 => Just(0i8), 1 => -1..=1i8]).prop_map(|(group, client, generation_skew)| Op::Heartbeat { group, client, generation_skew }),
            1 => (group.clone(), client.clone(), any::<bool>()).prop_map(|(group, client, by_instance)| Op::Leave { group, client, by_instance }),
            3 => prop_oneof![0..500u64, 0..12_000u64].prop_map(|ms| Op::Advance { ms }),
            1 => group.clone().prop_map(|group| Op::Delete { group }),
            1 => (group, client, any::<bool>()).prop_map(|(group, client, standalone)| Op::Commit { group, client, standalone }),
        ]
    }

    /// What a client knows: its member id, and the last generation it was given.
    #[derive(Debug, Clone, Default)]
    struct Client {
        member_id: String,
        generation_id: i32,
        leader: bool,
        peers: Vec<String>,
    }

    struct World {
        h: Harness,
        clients: HashMap<(usize, u8), Client>,
        /// Which client a token belongs to.
        owners: HashMap<Token, (usize, u8)>,
        /// Generation delivered to each member id by a successful JoinGroup answer.
        delivered: HashMap<String, i32>,
        generations: HashMap<usize, i32>,
    }

    impl World {
        fn deliver(&mut self) {
            let tokens: Vec<Token> = self.h.inbox.keys().copied().collect();
            for token in tokens {
                let Some(response) = self.h.inbox.remove(&token) else {
                    continue;
                };
                let Some(key) = self.owners.get(&token).copied() else {
                    continue;
                };
                let client = self.clients.entry(key).or_default();
                match response {
                    Response::Join(j) => match &j.error {
                        None => {
                            self.delivered.insert(j.member_id.clone(), j.generation_id);
                            client.leader = j.leader == j.member_id;
                            client.peers = j.members.iter().map(|m| m.member_id.clone()).collect();
                            client.member_id = j.member_id;
                            client.generation_id = j.generation_id;
                        }
                        Some(GroupError::MemberIdRequired) => client.member_id = j.member_id,
                        Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId { .. }) => {
                            client.member_id.clear()
                        }
                        Some(_) => {}
                    },
                    Response::Sync(s) => {
                        if matches!(
                            s.error,
                            Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId { .. })
                        ) {
                            client.member_id.clear();
                        }
                    }
                }
            }
        }

        fn apply(&mut self, op: Op) {
            let instance = |client: u8| client.is_multiple_of(2).then(|| format!("i-{client}"));
            match op {
                Op::Join {
                    group,
                    client,
                    fresh,
                    require_known,
                    variant,
                    rebalance_ms,
                } => {
                    let known = self
                        .clients
                        .entry((group, client))
                        .or_default()
                        .member_id
                        .clone();
                    let names: &[&str] = match variant {
                        0 => &["range"],
                        1 => &["range", "roundrobin"],
                        _ => &["roundrobin"],
                    };
                    let request = JoinGroup {
                        group_instance_id: instance(client),
                        require_known_member_id: require_known,
                        rebalance_timeout_ms: rebalance_ms,
                        protocols: protocols(names, &format!("m{variant}")),
                        protocol_type: if variant == 3 {
                            "connect".into()
                        } else {
                            "consumer".into()
                        },
                        ..join_req(
                            GROUPS[group],
                            &format!("c{client}"),
                            if fresh { "" } else { &known },
                        )
                    };
                    let token = self.h.token();
                    self.owners.insert(token, (group, client));
                    let replies = self.h.coordinator.join_group(self.h.now_ms, token, request);
                    self.h.absorb(replies);
                }
                Op::Sync {
                    group,
                    client,
                    generation_skew,
                } => {
                    let state = self.clients.entry((group, client)).or_default().clone();
                    let assignments: Vec<(String, Vec<u8>)> = if state.leader {
                        state
                            .peers
                            .iter()
                            .map(|p| (p.clone(), p.as_bytes().to_vec()))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let request = SyncGroup {
                        group_id: GROUPS[group].into(),
                        generation_id: state.generation_id + i32::from(generation_skew),
                        member_id: state.member_id,
                        group_instance_id: instance(client),
                        protocol_type: None,
                        protocol_name: None,
                        assignments,
                    };
                    let token = self.h.token();
                    self.owners.insert(token, (group, client));
                    let replies = self.h.coordinator.sync_group(self.h.now_ms, token, request);
                    self.h.absorb(replies);
                }
                Op::Heartbeat {
                    group,
                    client,
                    generation_skew,
                } => {
                    let state = self.clients.entry((group, client)).or_default().clone();
                    let request = Heartbeat {
                        group_id: GROUPS[group].into(),
                        generation_id: state.generation_id + i32::from(generation_skew),
                        member_id: state.member_id,
                        group_instance_id: instance(client),
                    };
                    let _ = self.h.heartbeat(request);
                }
                Op::Leave {
                    group,
                    client,
                    by_instance,
                } => {
                    let state = self.clients.entry((group, client)).or_default().clone();
                    let member = LeavingMember {
                        member_id: if by_instance {
                            String::new()
                        } else {
                            state.member_id
                        },
                        group_instance_id: instance(client),
                    };
                    let outcome =
                        self.h
                            .coordinator
                            .leave_group(self.h.now_ms, GROUPS[group], vec![member]);
                    let outcome = outcome.expect("group ids are valid");
                    assert_eq!(outcome.members.len(), 1);
                    self.h.absorb(outcome.responses);
                }
                Op::Advance { ms } => {
                    let now_ms = self.h.now_ms + ms;
                    self.h.at(now_ms);
                }
                Op::Delete { group } => {
                    let active = self.h.coordinator.is_active(GROUPS[group]);
                    let result = self.h.coordinator.delete_group(GROUPS[group]);
                    if active {
                        assert_eq!(result, Err(GroupError::NonEmptyGroup));
                    }
                    if result.is_ok() {
                        self.generations.remove(&group);
                    }
                }
                Op::Commit {
                    group,
                    client,
                    standalone,
                } => {
                    let state = self.clients.entry((group, client)).or_default().clone();
                    let c = &self.h.coordinator;
                    let result = if standalone {
                        c.validate_offset_commit(GROUPS[group], -1, "", None)
                    } else {
                        c.validate_offset_commit(
                            GROUPS[group],
                            state.generation_id,
                            &state.member_id,
                            None,
                        )
                    };
                    if standalone {
                        let state = c.describe_group(GROUPS[group]).state;
                        assert_eq!(
                            result.is_ok(),
                            matches!(state, GroupState::Empty | GroupState::Dead)
                        );
                    }
                }
            }
            self.deliver();
            self.check();
        }

        fn check(&mut self) {
            for (index, group) in GROUPS.iter().enumerate() {
                let description = self.h.coordinator.describe_group(group);
                if description.state == GroupState::Dead {
                    continue;
                }
                let previous = self.generations.insert(index, description.generation_id);
                assert!(
                    previous.is_none_or(|g| g <= description.generation_id),
                    "{group}: generation went back"
                );
                let members: HashSet<&str> = description
                    .members
                    .iter()
                    .map(|m| m.member_id.as_str())
                    .collect();
                if let Some(leader) = &description.leader_id {
                    assert!(
                        members.contains(leader.as_str()),
                        "{group}: leader is not a member"
                    );
                }
                if matches!(
                    description.state,
                    GroupState::Stable | GroupState::CompletingRebalance
                ) {
                    for member in &description.members {
                        assert_eq!(
                            self.delivered.get(&member.member_id),
                            Some(&description.generation_id),
                            "{group}: member {} was not told generation {}",
                            member.member_id,
                            description.generation_id
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut world = World {
                h: Harness::new(CoordinatorConfig { max_group_size: 3, ..config(3_000) }),
                clients: HashMap::new(),
                owners: HashMap::new(),
                delivered: HashMap::new(),
                generations: HashMap::new(),
            };
            for op in ops {
                world.apply(op);
            }
            // Liveness: once clients go quiet, every parked request is answered and every group
            // ends up Empty.
            for _ in 0..4 {
                let now_ms = world.h.now_ms + 40_000;
                world.h.at(now_ms);
            }
            prop_assert!(world.h.coordinator.parked_tokens().is_empty());
            for token in world.owners.keys() {
                prop_assert!(world.h.answered.contains(token), "request {} was never answered", token);
            }
            for group in GROUPS {
                let state = world.h.state(group);
                prop_assert!(matches!(state, GroupState::Empty | GroupState::Dead), "{} is {:?}", group, state);
            }
        }
    }
}
