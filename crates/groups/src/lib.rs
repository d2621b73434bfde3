//! Kafka's consumer-group coordinator as a pure state machine: the classic protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) and the consumer protocol of KIP-848
//! (ConsumerGroupHeartbeat with server-side assignors; see [`Coordinator::consumer_group_heartbeat`]
//! and the `consumer` module's notes), plus the group checks OffsetCommit needs. A group id
//! belongs to one protocol at a time: while it has members, the other protocol is refused
//! (GROUP_ID_NOT_FOUND for a heartbeat, INCONSISTENT_GROUP_PROTOCOL for a JoinGroup); an empty
//! group changes protocol on the other protocol's first join.
//!
//! **Architecture invariant:** no I/O, no clock, no threads and no Kafka wire types. Time comes in
//! as `now_ms` arguments and requests as plain structs. A request that must wait (a JoinGroup
//! during a rebalance, a follower's SyncGroup before the leader's) is *parked* under the
//! [`Token`] the broker passed in; every call returns the `(Token, Response)` pairs that are ready,
//! which may include the caller's own token and tokens parked earlier. Every parked token is
//! answered exactly once: by a later call, by [`Coordinator::tick`] (which the broker calls every
//! ~100 ms), or when its member is removed.
//!
//! # Group states
//!
//! ```text
//!                      JoinGroup (waits group.initial.rebalance.delay.ms, extended by new joins)
//!  ┌───────┐ ───────────────────────────────────────────▶ ┌────────────────────┐
//!  │ Empty │ ◀──── rebalance ends with no members ─────── │ PreparingRebalance │ ◀──┐
//!  └───────┘                                              └────────────────────┘    │
//!      │                            all members rejoined, or the  │                 │
//!      │ delete_group               rebalance timeout (members    │ generation + 1, │
//!      ▼                            that did not rejoin removed)  ▼ JoinGroup       │
//!  ┌──────┐                                          ┌─────────────────────┐ answers│
//!  │ Dead │ (the group is gone)                      │ CompletingRebalance │ ───────┤
//!  └──────┘                                          └─────────────────────┘        │
//!                                         leader's SyncGroup  │                     │
//!                                       (parked syncs answered)▼                    │
//!                                                        ┌────────┐                 │
//!                                                        │ Stable │ ────────────────┘
//!                                                        └────────┘
//!  Back to PreparingRebalance from CompletingRebalance or Stable: a new member joins, a known
//!  member joins with other protocols, the leader rejoins, a member leaves, a session expires,
//!  or a member fails to send SyncGroup within the rebalance timeout.
//! ```
//!
//! # Where this differs from, or pins down, Kafka's coordinator
//! - A member whose JoinGroup or SyncGroup is parked does not session-expire (the coordinator,
//!   not the member, is late), as in Kafka; it is dropped only by the rebalance/sync timeouts.
//! - A second JoinGroup (or SyncGroup) from a member whose earlier one is still parked answers the
//!   earlier one with REBALANCE_IN_PROGRESS instead of dropping it (Kafka drops it), so the
//!   broker never holds an unanswerable request.
//! - Every member that has not rejoined when a rebalance ends is removed, static or not.
//! - A static member replaces its old incarnation without a rebalance only in Stable and with
//!   byte-identical protocols (Kafka checks only that the chosen protocol stays the same).
//! - A known member's protocols are checked against the *other* members, so a lone member may
//!   switch protocol type or protocols.
//! - Protocol votes tie-break on the protocol voted for first, in join order (Kafka: arbitrary).
//! - Members that were handed a generation but have not sent SyncGroup within the rebalance
//!   timeout are removed (Kafka 3.2+'s pending-sync timeout).
//! - `tick` scans every member: O(members) per call, fine for tens of thousands of members.
//!
//! # Example
//!
//! ```
//! use groups::{Coordinator, CoordinatorConfig, JoinGroup, Protocol, Response, SyncGroup};
//!
//! let config = CoordinatorConfig { initial_rebalance_delay_ms: 0, ..CoordinatorConfig::default() };
//! let mut coordinator = Coordinator::new(config);
//! let join = JoinGroup {
//!     group_id: "orders".into(),
//!     member_id: String::new(),
//!     group_instance_id: None,
//!     session_timeout_ms: 10_000,
//!     rebalance_timeout_ms: 30_000,
//!     protocol_type: "consumer".into(),
//!     protocols: vec![Protocol { name: "range".into(), metadata: b"sub".to_vec() }],
//!     client_id: "app".into(),
//!     client_host: "/10.0.0.1".into(),
//!     require_known_member_id: false,
//!     reason: None,
//! };
//! // A lone member completes the rebalance at once and leads generation 1.
//! let replies = coordinator.join_group(0, 7, join);
//! let Response::Join(joined) = &replies[0].1 else { unreachable!() };
//! assert_eq!((replies[0].0, joined.generation_id, joined.error.clone()), (7, 1, None));
//! assert_eq!(joined.leader, joined.member_id);
//!
//! // The leader's SyncGroup carries the assignment and makes the group Stable.
//! let sync = SyncGroup {
//!     group_id: "orders".into(),
//!     generation_id: 1,
//!     member_id: joined.member_id.clone(),
//!     group_instance_id: None,
//!     protocol_type: Some("consumer".into()),
//!     protocol_name: Some("range".into()),
//!     assignments: vec![(joined.member_id.clone(), b"p0".to_vec())],
//! };
//! let replies = coordinator.sync_group(1, 8, sync);
//! let Response::Sync(synced) = &replies[0].1 else { unreachable!() };
//! assert_eq!(synced.assignment, b"p0");
//! ```
//!
//! The consumer protocol answers every heartbeat at once; the broker passes its topic metadata.
//!
//! ```
//! use groups::{ConsumerGroupHeartbeat, Coordinator, CoordinatorConfig, TopicId, TopicPartitions};
//!
//! let mut coordinator = Coordinator::new(CoordinatorConfig::default());
//! let metadata = |name: &str| (name == "orders").then_some((TopicId([7; 16]), 2));
//! let join = ConsumerGroupHeartbeat {
//!     group_id: "billing".into(),
//!     member_id: "5b0c6f0e-2f4e-4c55-9d5e-0f1f3b7e2a11".into(), // KIP-1082: the client's own
//!     member_epoch: 0,
//!     instance_id: None,
//!     rack_id: None,
//!     rebalance_timeout_ms: 300_000,
//!     subscribed_topic_names: Some(vec!["orders".into()]),
//!     subscribed_topic_regex: None,
//!     server_assignor: None,
//!     topic_partitions: Some(Vec::new()),
//!     client_id: "app".into(),
//!     client_host: "/10.0.0.2".into(),
//! };
//! let joined = coordinator.consumer_group_heartbeat(0, join, &metadata);
//! assert_eq!((joined.error, joined.member_epoch), (None, 1));
//! let all = vec![TopicPartitions { topic_id: TopicId([7; 16]), partitions: vec![0, 1] }];
//! assert_eq!(joined.assignment, Some(all));
//! ```

mod assignor;
mod consumer;
#[cfg(test)]
mod consumer_tests;
mod error;
mod group;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use assignor::Assignor;
use consumer::ConsumerGroup;
pub use consumer::{
    ConsumerGroupDescription, ConsumerGroupHeartbeat, ConsumerGroupHeartbeatResult,
    ConsumerMemberDescription, JOIN_EPOCH, LEAVE_EPOCH, MemberEpoch, PartitionId,
    STATIC_LEAVE_EPOCH, TopicAssignment, TopicId, TopicMetadata, TopicPartitions,
};
pub use error::GroupError;
use group::Group;

/// The broker's handle for a request the coordinator may park and answer later.
pub type Token = u64;
/// A group's generation: bumped by one each time a rebalance completes.
pub type GenerationId = i32;

/// Tunables, named after Kafka's broker configs where one exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members (each new member extends it, up to the rebalance timeout). 0 disables.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: u64,
    /// `group.max.size` (and `group.consumer.max.size`): members (and classic members-to-be that
    /// were handed a member id) per group.
    pub max_group_size: usize,
    /// Bytes of protocol names and metadata one member may register.
    pub max_member_metadata_bytes: usize,
    /// Bytes of assignment the leader may hand one member.
    pub max_member_assignment_bytes: usize,
    /// Groups held at once. At the limit, the longest-empty group is forgotten to make room;
    /// if no group is empty, new groups are refused.
    pub max_groups: usize,
    /// Bytes of ids, metadata and assignments held across all groups: the memory bound.
    pub max_stored_bytes: usize,
    /// Mixed into generated member ids. The broker should pass something that differs between
    /// processes (its start time, say) so a zombie client of an earlier process cannot collide
    /// with a member id handed out by this one.
    pub member_id_seed: u64,
    /// `group.consumer.session.timeout.ms`: a consumer-protocol member that sends no heartbeat
    /// for this long is removed.
    pub consumer_session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms`: how often consumer-protocol members are told to
    /// heartbeat.
    pub consumer_heartbeat_interval_ms: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: 1_000,
            max_member_metadata_bytes: 1 << 20,
            max_member_assignment_bytes: 1 << 20,
            max_groups: 10_000,
            max_stored_bytes: 256 << 20,
            member_id_seed: 0,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
        }
    }
}

/// One protocol a member supports (for consumers: an assignor such as "range" or
/// "cooperative-sticky") and the member's opaque metadata for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroup {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id` of a static member (KIP-345).
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: i32,
    /// 0 or less (JoinGroup v0 has none) means "the session timeout".
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference. A repeated name keeps its first entry.
    pub protocols: Vec<Protocol>,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+ (KIP-394): a new dynamic member is first handed a member id and must rejoin
    /// with it.
    pub require_known_member_id: bool,
    /// Why the client rejoins (JoinGroup v8+); not interpreted, for the broker's logs.
    pub reason: Option<String>,
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    pub group_id: String,
    pub generation_id: GenerationId,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment, `(member id, opaque bytes)`; empty from followers.
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// A Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub group_id: String,
    pub generation_id: GenerationId,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member named in a LeaveGroup request. v3+ may name a static member by instance id alone
/// (empty member id), as administrative removal does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// What LeaveGroup did: one result per named member, in request order, and the parked requests
/// the departures answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveOutcome {
    pub members: Vec<Result<(), GroupError>>,
    pub responses: Vec<(Token, Response)>,
}

/// The answer to a parked or immediate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Join(JoinResult),
    Sync(SyncResult),
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the group's chosen protocol.
    pub metadata: Vec<u8>,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    /// -1 on error.
    pub generation_id: GenerationId,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// The member's id: the new one for a new member, also with MEMBER_ID_REQUIRED.
    pub member_id: String,
    /// Every member with its metadata, for the leader only; empty for followers.
    pub members: Vec<JoinMember>,
    /// JoinGroup v9+; always false (the static-leader optimisation of KIP-814 is not done).
    pub skip_assignment: bool,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// This member's assignment from the leader; empty on error or if the leader gave none.
    pub assignment: Vec<u8>,
}

impl JoinResult {
    fn failed(member_id: String, error: GroupError) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

impl SyncResult {
    fn failed(error: GroupError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Vec::new(),
        }
    }
}

/// A group's state, with Kafka's names: classic groups use Empty, PreparingRebalance,
/// CompletingRebalance, Stable and Dead; consumer-protocol groups Empty, Assigning, Reconciling,
/// Stable and Dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; may still be used to store offsets.
    Empty,
    /// Consumer protocol: the target assignment is behind the group epoch.
    Assigning,
    /// Consumer protocol: some member has not reached its target assignment yet.
    Reconciling,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Generation handed out; waiting for the leader's SyncGroup.
    CompletingRebalance,
    Stable,
    /// The group does not exist (deleted, or never created).
    Dead,
}

impl GroupState {
    /// The name Kafka's ListGroups and DescribeGroups use.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Which rebalance protocol a group speaks (ListGroups v5+'s group type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupType {
    /// JoinGroup/SyncGroup/Heartbeat.
    Classic,
    /// ConsumerGroupHeartbeat (KIP-848).
    Consumer,
}

impl GroupType {
    /// The name Kafka's ListGroups uses.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }
}

/// One row of ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// Empty if a classic group never had a member; "consumer" for consumer-protocol groups.
    pub protocol_type: String,
    pub state: GroupState,
    pub group_type: GroupType,
}

/// DescribeGroups for one group. An unknown group is described as `Dead` with no members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol; empty unless the group is Stable (as Kafka does).
    pub protocol: String,
    /// Not in Kafka's DescribeGroups response; for tests and operators.
    pub generation_id: GenerationId,
    /// Not in Kafka's DescribeGroups response; for tests and operators.
    pub leader_id: Option<String>,
    /// In join order.
    pub members: Vec<MemberDescription>,
}

/// A member in DescribeGroups. `metadata` and `assignment` are filled only in a Stable group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// Every group the broker coordinates.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: BTreeMap<String, Group>,
    /// Consumer-protocol groups. A group id is in at most one of the two maps.
    consumer_groups: BTreeMap<String, ConsumerGroup>,
    /// Sum of every group's `stored_bytes`, of both protocols.
    stored_bytes: usize,
    member_id_counter: u64,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            consumer_groups: BTreeMap::new(),
            stored_bytes: 0,
            member_id_counter: 0,
        }
    }

    /// Whether `incoming_bytes` fit in the memory budget once the `replaced_bytes` they take
    /// the place of are given back.
    fn check_memory_budget(
        &self,
        incoming_bytes: usize,
        replaced_bytes: usize,
    ) -> Result<(), GroupError> {
        let available = self
            .config
            .max_stored_bytes
            .saturating_sub(self.stored_bytes)
            + replaced_bytes;
        if incoming_bytes > available {
            return Err(GroupError::MemoryBudgetExhausted {
                needed: incoming_bytes,
                available,
            });
        }
        Ok(())
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// JoinGroup. The reply for `token` may be in the returned list (an error, MEMBER_ID_REQUIRED,
    /// or a join answered at once) or come later, when the rebalance completes.
    pub fn join_group(
        &mut self,
        now_ms: u64,
        token: Token,
        request: JoinGroup,
    ) -> Vec<(Token, Response)> {
        let mut out = Vec::new();
        let member_id = request.member_id.clone();
        if let Err(error) = self.try_join_group(now_ms, token, request, &mut out) {
            out.push((token, Response::Join(JoinResult::failed(member_id, error))));
        }
        out
    }

    fn try_join_group(
        &mut self,
        now_ms: u64,
        token: Token,
        mut request: JoinGroup,
        out: &mut Vec<(Token, Response)>,
    ) -> Result<(), GroupError> {
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let session = u64::try_from(request.session_timeout_ms).unwrap_or(0);
        if session < self.config.min_session_timeout_ms
            || session > self.config.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout {
                session_timeout_ms: request.session_timeout_ms,
                min_ms: self.config.min_session_timeout_ms,
                max_ms: self.config.max_session_timeout_ms,
            });
        }
        // An empty instance id is no instance id (clients send "" or null for dynamic members).
        request.group_instance_id = request
            .group_instance_id
            .filter(|instance| !instance.is_empty());
        dedup_protocols(&mut request.protocols);
        let metadata_bytes = group::protocols_bytes(&request.protocols);
        if metadata_bytes > self.config.max_member_metadata_bytes {
            return Err(GroupError::MemberMetadataTooLarge {
                bytes: metadata_bytes,
                max: self.config.max_member_metadata_bytes,
            });
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }

        // A new member gets its id before anything is changed; a wasted id costs nothing.
        let new_member_id = if request.member_id.is_empty() {
            let prefix = request
                .group_instance_id
                .as_deref()
                .unwrap_or(&request.client_id)
                .to_owned();
            Some(self.generate_member_id(&prefix))
        } else {
            None
        };

        // Memory budget: this member's bytes replace whatever it (or the static member it
        // replaces) held before.
        let incoming_bytes = group::member_bytes_estimate(&request, new_member_id.as_deref());
        let replaced_bytes = self
            .groups
            .get(&request.group_id)
            .map_or(0, |group| group.bytes_of_joining_member(&request));
        self.check_memory_budget(incoming_bytes, replaced_bytes)?;

        if let Some(consumer_group) = self.consumer_groups.get(&request.group_id)
            && !consumer_group.members.is_empty()
        {
            return Err(GroupError::NotClassicGroup {
                group_id: request.group_id.clone(),
            });
        }
        let created = !self.groups.contains_key(&request.group_id);
        if created {
            if new_member_id.is_none() {
                return Err(GroupError::UnknownMemberId);
            }
            // An empty consumer-protocol group of this id becomes a classic group (as Kafka
            // converts an empty group on the first join of the other protocol).
            if let Some(consumer_group) = self.consumer_groups.remove(&request.group_id) {
                self.stored_bytes -= consumer_group.stored_bytes;
            }
            self.make_room_for_group()?;
            let group = Group::new(request.group_id.clone(), now_ms);
            self.groups.insert(request.group_id.clone(), group);
        }
        let group_id = request.group_id.clone();
        let result = match self.groups.get_mut(&group_id) {
            Some(group) => group.join(&self.config, now_ms, token, request, new_member_id, out),
            None => Err(GroupError::UnknownMemberId),
        };
        if result.is_err() && created {
            // Refused before anything was stored: do not leave an empty group behind.
            self.groups.remove(&group_id);
        }
        self.refresh_bytes(&group_id);
        result
    }

    /// SyncGroup. A follower's sync during CompletingRebalance is parked until the leader's.
    pub fn sync_group(
        &mut self,
        now_ms: u64,
        token: Token,
        request: SyncGroup,
    ) -> Vec<(Token, Response)> {
        let mut out = Vec::new();
        let result = if request.group_id.is_empty() {
            Err(GroupError::InvalidGroupId)
        } else {
            let available = self
                .config
                .max_stored_bytes
                .saturating_sub(self.stored_bytes);
            let group_id = request.group_id.clone();
            let result = match self.groups.get_mut(&group_id) {
                Some(group) => {
                    group.sync(&self.config, now_ms, token, request, available, &mut out)
                }
                None => Err(GroupError::UnknownMemberId),
            };
            self.refresh_bytes(&group_id);
            result
        };
        if let Err(error) = result {
            out.push((token, Response::Sync(SyncResult::failed(error))));
        }
        out
    }

    /// Heartbeat. `Err(RebalanceInProgress)` is how a member learns it must rejoin.
    pub fn heartbeat(&mut self, now_ms: u64, request: Heartbeat) -> Result<(), GroupError> {
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        match self.groups.get_mut(&request.group_id) {
            Some(group) => group.heartbeat(now_ms, &request),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// LeaveGroup (v3+ batch form; older versions name one member). `Err` is a request-level
    /// error; per-member errors are in [`LeaveOutcome::members`].
    pub fn leave_group(
        &mut self,
        now_ms: u64,
        group_id: &str,
        members: Vec<LeavingMember>,
    ) -> Result<LeaveOutcome, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut responses = Vec::new();
        let results = match self.groups.get_mut(group_id) {
            Some(group) => members
                .iter()
                .map(|leaving| group.leave(&self.config, now_ms, leaving, &mut responses))
                .collect(),
            None => members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect(),
        };
        self.refresh_bytes(group_id);
        Ok(LeaveOutcome {
            members: results,
            responses,
        })
    }

    /// ConsumerGroupHeartbeat (KIP-848): join (epoch 0), heartbeat, or leave (-1, or -2 for a
    /// static member leaving for a while). Always answers at once. `metadata` resolves the
    /// subscribed topic names; a change in what it says for them (a topic created, deleted or
    /// grown) bumps the group epoch and reassigns.
    pub fn consumer_group_heartbeat(
        &mut self,
        now_ms: u64,
        request: ConsumerGroupHeartbeat,
        metadata: &dyn TopicMetadata,
    ) -> ConsumerGroupHeartbeatResult {
        self.try_consumer_group_heartbeat(now_ms, request, metadata)
            .unwrap_or_else(ConsumerGroupHeartbeatResult::failed)
    }

    fn try_consumer_group_heartbeat(
        &mut self,
        now_ms: u64,
        mut request: ConsumerGroupHeartbeat,
        metadata: &dyn TopicMetadata,
    ) -> Result<ConsumerGroupHeartbeatResult, GroupError> {
        consumer::validate(&mut request)?;
        let group_id = request.group_id.clone();
        let classic_members = self
            .groups
            .get(&group_id)
            .map(|group| group.members.len() + group.pending_members.len());
        if classic_members.is_some_and(|members| members > 0) {
            return Err(GroupError::NotConsumerGroup { group_id });
        }
        let exists = self.consumer_groups.contains_key(&group_id);
        if !exists && request.member_epoch != JOIN_EPOCH {
            // Also what a member hears after the broker restarted: rejoin.
            return Err(GroupError::UnknownMemberId);
        }
        let member_id = if request.member_epoch == JOIN_EPOCH && request.member_id.is_empty() {
            self.generate_uuid()
        } else {
            request.member_id.clone()
        };

        // Limits: this member's identity bytes replace what it held before.
        let existing = self
            .consumer_groups
            .get(&group_id)
            .and_then(|group| group.members.get(&member_id));
        let incoming_bytes = consumer::identity_bytes_after(&request, &member_id, existing);
        if incoming_bytes > self.config.max_member_metadata_bytes {
            return Err(GroupError::MemberMetadataTooLarge {
                bytes: incoming_bytes,
                max: self.config.max_member_metadata_bytes,
            });
        }
        let replaced_bytes = existing.map_or(0, |member| member.identity_bytes());
        self.check_memory_budget(incoming_bytes, replaced_bytes)?;

        if !exists {
            // An empty classic group of this id becomes a consumer-protocol group.
            if let Some(classic) = self.groups.remove(&group_id) {
                self.stored_bytes -= classic.stored_bytes;
            }
            self.make_room_for_group()?;
            self.consumer_groups.insert(
                group_id.clone(),
                ConsumerGroup::new(group_id.clone(), now_ms),
            );
        }
        let result = match self.consumer_groups.get_mut(&group_id) {
            Some(group) => group.heartbeat(&self.config, now_ms, request, member_id, metadata),
            None => Err(GroupError::UnknownMemberId),
        };
        if let Some(group) = self.consumer_groups.get_mut(&group_id) {
            if result.is_err() && !exists {
                // Refused before anything was stored: do not leave an empty group behind.
                self.consumer_groups.remove(&group_id);
            } else {
                let before = group.stored_bytes;
                let after = group.refresh_bytes();
                self.stored_bytes = self.stored_bytes - before + after;
            }
        }
        result
    }

    /// Advances time: expires sessions, ends rebalances whose (initial) delay or timeout passed,
    /// and removes members that did not send SyncGroup in time.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(Token, Response)> {
        let mut out = Vec::new();
        let mut stored_bytes = 0;
        for group in self.groups.values_mut() {
            group.tick(&self.config, now_ms, &mut out);
            stored_bytes += group.refresh_bytes();
        }
        for group in self.consumer_groups.values_mut() {
            if group.tick(now_ms) {
                group.refresh_bytes();
            }
            stored_bytes += group.stored_bytes;
        }
        self.stored_bytes = stored_bytes;
        out
    }

    /// Whether an OffsetCommit may be applied, for groups of either protocol (for a
    /// consumer-protocol group, `generation_id` is the member epoch: see
    /// [`Coordinator::validate_offset_commit_member_epoch`]). `generation_id < 0` with no member
    /// id is a standalone consumer (`assign()`), allowed only while the group has no members.
    pub fn validate_offset_commit(
        &self,
        group_id: &str,
        generation_id: GenerationId,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if self.consumer_groups.contains_key(group_id) {
            return self.validate_offset_commit_member_epoch(group_id, member_id, generation_id);
        }
        match self.groups.get(group_id) {
            Some(group) => {
                group.validate_offset_commit(generation_id, member_id, group_instance_id)
            }
            None if generation_id < 0 => Ok(()),
            // A commit from a generation of a group that no longer exists.
            None => Err(GroupError::IllegalGeneration {
                generation_id,
                current: -1,
            }),
        }
    }

    /// OffsetCommit from a consumer-protocol group (the request's generation is the member
    /// epoch): UNKNOWN_MEMBER_ID for a member the group does not know, STALE_MEMBER_EPOCH unless
    /// the epoch is the member's current one. A negative epoch (with no member id: a standalone
    /// consumer or an admin) may commit only while the group has no members.
    pub fn validate_offset_commit_member_epoch(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: MemberEpoch,
    ) -> Result<(), GroupError> {
        match self.consumer_groups.get(group_id) {
            Some(group) => group.validate_offset_commit(member_id, member_epoch),
            None if member_epoch < 0 => Ok(()),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    /// ListGroups: every group of both protocols, by group id.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let classic = self.groups.values().map(|group| GroupListing {
            group_id: group.group_id.clone(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            state: group.state,
            group_type: GroupType::Classic,
        });
        let consumer = self.consumer_groups.values().map(|group| GroupListing {
            group_id: group.group_id.clone(),
            protocol_type: "consumer".to_owned(),
            state: group.state(),
            group_type: GroupType::Consumer,
        });
        let mut listings: Vec<GroupListing> = classic.chain(consumer).collect();
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listings
    }

    /// ConsumerGroupDescribe for one group: GROUP_ID_NOT_FOUND if there is no consumer-protocol
    /// group of that id (including when it is a classic group).
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Result<ConsumerGroupDescription, GroupError> {
        match self.consumer_groups.get(group_id) {
            Some(group) => Ok(group.describe()),
            None if self.groups.contains_key(group_id) => Err(GroupError::NotConsumerGroup {
                group_id: group_id.to_owned(),
            }),
            None => Err(GroupError::GroupIdNotFound),
        }
    }

    /// DescribeGroups for one group; `Dead` with no members if the group does not exist.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        match self.groups.get(group_id) {
            Some(group) => group.describe(),
            None => GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                generation_id: -1,
                leader_id: None,
                members: Vec::new(),
            },
        }
    }

    /// DeleteGroups for one group, of either protocol: only an Empty group can go.
    pub fn delete_group(&mut self, group_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if let Some(group) = self.consumer_groups.get(group_id) {
            if !group.members.is_empty() {
                return Err(GroupError::NonEmptyGroup);
            }
            self.stored_bytes -= group.stored_bytes;
            self.consumer_groups.remove(group_id);
            return Ok(());
        }
        let Some(group) = self.groups.get(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        if group.state != GroupState::Empty {
            return Err(GroupError::NonEmptyGroup);
        }
        if let Some(group) = self.groups.remove(group_id) {
            self.stored_bytes -= group.stored_bytes;
        }
        Ok(())
    }

    /// Whether the group has members (so its offsets must not be reset from outside).
    pub fn is_active(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|group| !group.members.is_empty())
            || self
                .consumer_groups
                .get(group_id)
                .is_some_and(|group| !group.members.is_empty())
    }

    /// Bytes of ids, metadata and assignments held, as counted against `max_stored_bytes`.
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
    }

    fn refresh_bytes(&mut self, group_id: &str) {
        if let Some(group) = self.groups.get_mut(group_id) {
            let before = group.stored_bytes;
            let after = group.refresh_bytes();
            self.stored_bytes = self.stored_bytes - before + after;
        }
    }

    /// At the group limit, forgets the group that has been empty longest (it holds nothing but
    /// its generation number and protocol type).
    fn make_room_for_group(&mut self) -> Result<(), GroupError> {
        if self.groups.len() + self.consumer_groups.len() < self.config.max_groups {
            return Ok(());
        }
        let oldest_classic = self
            .groups
            .values()
            .filter(|group| group.state == GroupState::Empty && group.pending_members.is_empty())
            .map(|group| (group.emptied_at_ms, &group.group_id));
        let oldest_consumer = self
            .consumer_groups
            .values()
            .filter(|group| group.members.is_empty())
            .map(|group| (group.emptied_at_ms, &group.group_id));
        let oldest_empty = oldest_classic
            .chain(oldest_consumer)
            .min()
            .map(|(_, group_id)| group_id.clone());
        match oldest_empty {
            Some(group_id) => {
                if let Some(group) = self.groups.remove(&group_id) {
                    self.stored_bytes -= group.stored_bytes;
                }
                if let Some(group) = self.consumer_groups.remove(&group_id) {
                    self.stored_bytes -= group.stored_bytes;
                }
                Ok(())
            }
            None => Err(GroupError::TooManyGroups {
                max: self.config.max_groups,
            }),
        }
    }

    /// `{prefix}-{uuid-shaped hex}`. The first 64 bits are a bijection of the counter, so ids
    /// never repeat within a process; the seed separates processes.
    fn generate_member_id(&mut self, prefix: &str) -> String {
        format!("{prefix}-{}", self.generate_uuid())
    }

    /// Uuid-shaped hex, unique within the process (see `generate_member_id`).
    fn generate_uuid(&mut self) -> String {
        self.member_id_counter += 1;
        let high = mix64(
            self.member_id_counter
                .wrapping_add(mix64(self.config.member_id_seed)),
        );
        let low = mix64(high ^ 0x9e37_79b9_7f4a_7c15);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }
}

/// splitmix64's finalizer: a bijection on u64 that scatters neighbouring inputs.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Keeps the first protocol of each name, in order.
fn dedup_protocols(protocols: &mut Vec<Protocol>) {
    let mut seen = std::collections::HashSet::new();
    protocols.retain(|protocol| seen.insert(protocol.name.clone()));
}

#[cfg(test)]
impl Coordinator {
    /// Internal consistency across groups, for tests.
    fn check_invariants(&self) {
        let mut tokens = std::collections::HashSet::new();
        let mut stored_bytes = 0;
        for (group_id, group) in &self.groups {
            assert_eq!(group_id, &group.group_id);
            group.check_invariants();
            assert_eq!(
                group.stored_bytes,
                group.compute_bytes(),
                "{group_id}: stale byte count"
            );
            for member in group.members.values() {
                for token in member.join_token.iter().chain(&member.sync_token) {
                    assert!(tokens.insert(*token), "token {token} parked twice");
                }
            }
            stored_bytes += group.stored_bytes;
        }
        for (group_id, group) in &self.consumer_groups {
            assert_eq!(group_id, &group.group_id);
            assert!(
                !self.groups.contains_key(group_id),
                "{group_id}: in both protocols"
            );
            group.check_invariants();
            assert_eq!(
                group.stored_bytes,
                group.compute_bytes(),
                "{group_id}: stale byte count"
            );
            stored_bytes += group.stored_bytes;
        }
        assert_eq!(stored_bytes, self.stored_bytes, "stored bytes drifted");
        assert!(self.groups.len() + self.consumer_groups.len() <= self.config.max_groups);
    }

    /// Tokens parked right now.
    fn parked_tokens(&self) -> std::collections::HashSet<Token> {
        let members = self
            .groups
            .values()
            .flat_map(|group| group.members.values());
        members
            .flat_map(|member| member.join_token.iter().chain(&member.sync_token).copied())
            .collect()
    }
}
