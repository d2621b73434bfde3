//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat, `group.protocol=consumer`):
//! one group's state machine. `Coordinator` validates what needs the whole broker's view (the
//! request's shape, the group id against classic groups, limits, member id generation) and hands
//! each heartbeat to its group.
//!
//! # The model
//!
//! - The **group epoch** goes up by one whenever the membership, a subscription, a member's
//!   preferred assignor, or the metadata of a subscribed topic (its id or partition count)
//!   changes. Every bump recomputes the **target assignment** at once with the group's assignor,
//!   so the assignment epoch always equals the group epoch (the `Assigning` state is never
//!   observed; it exists for Kafka's names).
//! - Each member **reconciles** toward its target on its own heartbeats. Its *current
//!   assignment* (what it may own now, and what responses carry) only ever gains partitions that
//!   no other member holds, and the member is asked to give up the partitions its target no
//!   longer has by being sent a current assignment without them; it keeps its old epoch until it
//!   reports (in `topic_partitions`) that it no longer owns them. So a partition is never in two
//!   members' current assignments (or revocations pending) at once: the key invariant.
//! - Member states, as Kafka names them: `Stable` (current = target, or nothing to do until the
//!   next bump), `UnrevokedPartitions` (waiting for the member to revoke; the member is removed if
//!   it has not within its rebalance timeout), `UnreleasedPartitions` (at the target epoch, waiting
//!   for other members to release partitions of its target).
//! - A member leaves with epoch -1; a static member (`instance_id`) may leave with -2, which keeps
//!   its current assignment reserved until its session expires, and a new member with the same
//!   instance id (epoch 0, new member id) takes over its partitions and epoch without a bump.
//!
//! # Where this pins down or differs from Kafka
//! - Subscribed-topic metadata is re-read on every heartbeat (Kafka rate-limits the refresh), so
//!   a created topic or added partitions bump the group epoch at the next heartbeat of any member.
//! - A heartbeat with epoch 0 and a member id the group knows (KIP-1082 clients keep their id
//!   when they rejoin after being fenced) resets that member: it is taken to own nothing (a join
//!   must report no partitions) and reconciles from scratch toward its unchanged target, with no
//!   group epoch bump.
//! - After a revocation, the member jumps straight to the target epoch (Kafka goes through
//!   `epoch + 1` first when the target moved again meanwhile).
//! - A heartbeat with epoch != 0 for a group that does not exist answers UNKNOWN_MEMBER_ID (so a
//!   client rejoins after a broker restart) rather than GROUP_ID_NOT_FOUND.
//! - The response carries the assignment when the member joins, sends a full request, its
//!   assignment changed, or (beyond Kafka) its reported `topic_partitions` disagree with what it
//!   may own (not counting partitions it is still revoking), which repairs a lost response.
//! - `subscribed_topic_regex` (RE2-style, matched against whole topic names, as Kafka does) is
//!   resolved against the broker's topics at every heartbeat of the member, so topics created
//!   later join the subscription; an empty regex clears it, a missing one leaves it unchanged.
//! - Rack ids are stored and described but not used by the assignors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::assignor::{self, AssignmentSpec, Assignor};
use crate::{CoordinatorConfig, GroupError, GroupState};

/// A member's epoch in the consumer protocol: 0 to join, -1 to leave, -2 for a static member
/// leaving for a while, otherwise the epoch of the last assignment the member reconciled to.
pub type MemberEpoch = i32;
/// A partition number within a topic.
pub type PartitionId = i32;

/// The member epoch that joins (or rejoins) a group.
pub const JOIN_EPOCH: MemberEpoch = 0;
/// The member epoch that leaves a group.
pub const LEAVE_EPOCH: MemberEpoch = -1;
/// The member epoch with which a static member leaves, keeping its partitions reserved.
pub const STATIC_LEAVE_EPOCH: MemberEpoch = -2;

/// A topic's id (Kafka's `Uuid`, 16 bytes). Assignments name topics by id, subscriptions by name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicId(pub [u8; 16]);

impl fmt::Debug for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Partitions by topic: an assignment, or what a member owns.
pub(crate) type Assignment = BTreeMap<TopicId, BTreeSet<PartitionId>>;

/// The broker's view of topics, passed into each heartbeat.
pub trait TopicMetadata {
    /// The topic's id and partition count, or `None` if there is no such topic.
    fn topic(&self, name: &str) -> Option<(TopicId, i32)>;

    /// Every topic a regex subscription may match (internal topics excluded).
    fn topic_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A subscription regex as Kafka applies it: to the whole topic name.
pub(crate) fn compile_topic_regex(regex: &str) -> Result<regex::Regex, GroupError> {
    regex::Regex::new(&format!("^(?:{regex})$")).map_err(|error| {
        GroupError::InvalidRegularExpression {
            regex: regex.to_string(),
            reason: error.to_string(),
        }
    })
}

impl<F: Fn(&str) -> Option<(TopicId, i32)>> TopicMetadata for F {
    fn topic(&self, name: &str) -> Option<(TopicId, i32)> {
        self(name)
    }
}

/// Some partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    pub topic_id: TopicId,
    pub partitions: Vec<PartitionId>,
}

/// A ConsumerGroupHeartbeat request. Optional fields are `None` when unchanged since the
/// member's previous heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupHeartbeat {
    pub group_id: String,
    /// v1 (KIP-1082): the client's own UUID, always set. v0: empty when joining, and the
    /// coordinator hands one out.
    pub member_id: String,
    /// [`JOIN_EPOCH`], [`LEAVE_EPOCH`], [`STATIC_LEAVE_EPOCH`], or the member's current epoch.
    pub member_epoch: MemberEpoch,
    /// `group.instance.id` of a static member. An empty string counts as `None`.
    pub instance_id: Option<String>,
    /// An empty string counts as `None`.
    pub rack_id: Option<String>,
    /// -1: unchanged. Required when joining.
    pub rebalance_timeout_ms: i32,
    /// Required (possibly empty) when joining.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// Not supported: anything but `None` or an empty string is INVALID_REQUEST.
    pub subscribed_topic_regex: Option<String>,
    /// `group.remote.assignor`: "uniform" or "range"; `None` leaves the choice to the group.
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; `None` when unchanged. Must be empty when joining.
    pub topic_partitions: Option<Vec<TopicPartitions>>,
    /// From the request header, for describe.
    pub client_id: String,
    /// The client's address, for describe.
    pub client_host: String,
}

/// A ConsumerGroupHeartbeat response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupHeartbeatResult {
    /// `Some` on error; then the other fields are empty (member id "", epoch 0, interval 0).
    pub error: Option<GroupError>,
    /// The member's id (the generated one for a v0 join). Empty on error.
    pub member_id: String,
    /// The member's epoch after this heartbeat: -1 or -2 after a leave.
    pub member_epoch: MemberEpoch,
    pub heartbeat_interval_ms: i32,
    /// The member's current assignment (what it may own now), sorted by topic id and partition;
    /// `None` if unchanged by this heartbeat and the request was neither a join nor full.
    pub assignment: Option<Vec<TopicPartitions>>,
}

impl ConsumerGroupHeartbeatResult {
    pub(crate) fn failed(error: GroupError) -> ConsumerGroupHeartbeatResult {
        ConsumerGroupHeartbeatResult {
            error: Some(error),
            member_id: String::new(),
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// ConsumerGroupDescribe for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    /// Empty, Assigning, Reconciling or Stable.
    pub state: GroupState,
    pub group_epoch: i32,
    /// The epoch of the target assignment (always the group epoch here).
    pub assignment_epoch: i32,
    /// The assignor the group uses now.
    pub assignor_name: String,
    /// By member id.
    pub members: Vec<ConsumerMemberDescription>,
}

/// A member in ConsumerGroupDescribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: MemberEpoch,
    pub client_id: String,
    pub client_host: String,
    /// Sorted.
    pub subscribed_topic_names: Vec<String>,
    /// What the member may own now (partitions it is revoking excluded).
    pub assignment: Vec<TopicAssignment>,
    pub target_assignment: Vec<TopicAssignment>,
}

/// Partitions of one topic in a description, with the topic's name as of the last metadata the
/// group saw (empty if the topic is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAssignment {
    pub topic_id: TopicId,
    pub topic_name: String,
    pub partitions: Vec<PartitionId>,
}

/// Where a member is in reconciling toward its target, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

#[derive(Debug)]
pub(crate) struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: u64,
    /// Names and regex matches together: what the assignor sees.
    pub subscribed_topic_names: BTreeSet<String>,
    /// The names the member gave.
    pub explicit_topic_names: BTreeSet<String>,
    /// The regex the member gave, if any.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<Assignor>,
    pub member_epoch: MemberEpoch,
    /// The epoch before the last change: a heartbeat with it is still accepted (the response
    /// that moved the member on may have been lost).
    pub previous_member_epoch: MemberEpoch,
    pub state: MemberState,
    /// What the member may own now.
    pub assigned: Assignment,
    /// What it must give up and has not yet reported as given up (`UnrevokedPartitions` only).
    pub pending_revocation: Assignment,
    pub session_deadline_ms: u64,
    /// Set while `UnrevokedPartitions`: the member is removed if still revoking then.
    pub revocation_deadline_ms: Option<u64>,
}

impl ConsumerMember {
    fn new(member_id: String, now_ms: u64, session_timeout_ms: u64) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: BTreeSet::new(),
            explicit_topic_names: BTreeSet::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: now_ms.saturating_add(session_timeout_ms),
            revocation_deadline_ms: None,
        }
    }

    /// Bytes counted against the memory budget and `max_member_metadata_bytes`, assignments aside.
    pub fn identity_bytes(&self) -> usize {
        self.member_id.len()
            + self.instance_id.as_ref().map_or(0, String::len)
            + self.rack_id.as_ref().map_or(0, String::len)
            + self.client_id.len()
            + self.client_host.len()
            + self
                .subscribed_topic_names
                .iter()
                .map(String::len)
                .sum::<usize>()
    }

    fn set_epoch(&mut self, epoch: MemberEpoch) {
        if epoch != self.member_epoch {
            self.previous_member_epoch = self.member_epoch;
            self.member_epoch = epoch;
        }
    }
}

/// What `ConsumerMember::identity_bytes` will be after `request` (with `member_id`) is applied
/// to `existing`.
pub(crate) fn identity_bytes_after(
    request: &ConsumerGroupHeartbeat,
    member_id: &str,
    existing: Option<&ConsumerMember>,
) -> usize {
    let subscription = match (&request.subscribed_topic_names, existing) {
        (Some(names), _) => names.iter().map(String::len).sum(),
        (None, Some(member)) => member.subscribed_topic_names.iter().map(String::len).sum(),
        (None, None) => 0,
    };
    let kept = |new: &Option<String>, old: Option<&Option<String>>| match (new, old) {
        (Some(value), _) => value.len(),
        (None, Some(old)) => old.as_ref().map_or(0, String::len),
        (None, None) => 0,
    };
    member_id.len()
        + kept(&request.instance_id, existing.map(|m| &m.instance_id))
        + kept(&request.rack_id, existing.map(|m| &m.rack_id))
        + request.client_id.len()
        + request.client_host.len()
        + subscription
}

/// Bytes an assignment is counted as.
fn assignment_bytes(assignment: &Assignment) -> usize {
    assignment
        .values()
        .map(|partitions| 16 + 4 * partitions.len())
        .sum()
}

fn to_assignment(partitions: &[TopicPartitions]) -> Assignment {
    let mut assignment = Assignment::new();
    for topic in partitions {
        assignment
            .entry(topic.topic_id)
            .or_default()
            .extend(topic.partitions.iter().copied());
    }
    assignment.retain(|_, partitions| !partitions.is_empty());
    assignment
}

fn to_wire(assignment: &Assignment) -> Vec<TopicPartitions> {
    assignment
        .iter()
        .filter(|(_, partitions)| !partitions.is_empty())
        .map(|(topic_id, partitions)| TopicPartitions {
            topic_id: *topic_id,
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn contains(assignment: &Assignment, topic_id: &TopicId, partition: PartitionId) -> bool {
    assignment
        .get(topic_id)
        .is_some_and(|partitions| partitions.contains(&partition))
}

fn partitions_of(assignment: &Assignment) -> impl Iterator<Item = (TopicId, PartitionId)> + '_ {
    assignment
        .iter()
        .flat_map(|(topic_id, partitions)| partitions.iter().map(move |p| (*topic_id, *p)))
}

/// Whether the member still owns any of `revoking` by its report; no report means it may.
fn owns_any(owned: Option<&Assignment>, revoking: &Assignment) -> bool {
    match owned {
        None => true,
        Some(owned) => partitions_of(revoking).any(|(topic_id, p)| contains(owned, &topic_id, p)),
    }
}

/// Whether every partition reported is in `assigned`; no report cannot be checked.
fn is_subset(owned: Option<&Assignment>, assigned: &Assignment) -> bool {
    owned.is_some_and(|owned| partitions_of(owned).all(|(t, p)| contains(assigned, &t, p)))
}

fn invalid(reason: &str) -> GroupError {
    GroupError::InvalidRequest {
        reason: reason.to_owned(),
    }
}

/// Checks what can be checked without the group, normalises empty instance/rack ids and regexes
/// to `None`, and parses the assignor name.
pub(crate) fn validate(request: &mut ConsumerGroupHeartbeat) -> Result<(), GroupError> {
    request.instance_id = request.instance_id.take().filter(|id| !id.is_empty());
    request.rack_id = request.rack_id.take().filter(|id| !id.is_empty());
    if request.group_id.is_empty() {
        return Err(invalid("group id must not be empty"));
    }
    if request.member_epoch < STATIC_LEAVE_EPOCH {
        return Err(invalid("member epoch must be -2, -1, 0 or positive"));
    }
    if request.member_epoch != JOIN_EPOCH && request.member_id.is_empty() {
        return Err(invalid("member id must not be empty unless joining"));
    }
    if request.member_epoch == STATIC_LEAVE_EPOCH && request.instance_id.is_none() {
        return Err(invalid(
            "member epoch -2 is for static members: instance id is required",
        ));
    }
    if request.rebalance_timeout_ms < -1 {
        return Err(invalid(
            "rebalance timeout must be -1 (unchanged) or at least 0",
        ));
    }
    if let Some(regex) = request
        .subscribed_topic_regex
        .as_deref()
        .filter(|regex| !regex.is_empty())
    {
        compile_topic_regex(regex)?;
    }
    if request.member_epoch == JOIN_EPOCH {
        if request.rebalance_timeout_ms == -1 {
            return Err(invalid("rebalance timeout must be set when joining"));
        }
        if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
            return Err(invalid(
                "subscribed topic names or a regex must be set when joining",
            ));
        }
        if request
            .topic_partitions
            .as_ref()
            .is_some_and(|topics| topics.iter().any(|t| !t.partitions.is_empty()))
        {
            return Err(invalid("topic partitions must be empty when joining"));
        }
    }
    if let Some(name) = &request.server_assignor
        && Assignor::from_name(name).is_none()
    {
        return Err(GroupError::UnsupportedAssignor {
            assignor: name.clone(),
        });
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    /// The epoch of `target`: always `group_epoch` after each call.
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// `instance_id` → member id of the static members.
    pub static_members: HashMap<String, String>,
    /// Target assignment, an entry per member.
    pub target: BTreeMap<String, Assignment>,
    /// Subscribed topic name → how many members subscribe to it.
    subscribed_topics: BTreeMap<String, usize>,
    /// The subscribed topics' metadata the target was computed from (existing topics only).
    metadata: BTreeMap<String, (TopicId, i32)>,
    /// Partition → the member whose current assignment or pending revocation holds it.
    owners: HashMap<(TopicId, PartitionId), String>,
    /// The assignor of the last target computation.
    pub assignor: Assignor,
    pub emptied_at_ms: u64,
    /// Bytes counted against the coordinator's budget, as of the last `refresh_bytes`.
    pub stored_bytes: usize,
}

impl ConsumerGroup {
    pub fn new(group_id: String, now_ms: u64) -> ConsumerGroup {
        ConsumerGroup {
            group_id,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            metadata: BTreeMap::new(),
            owners: HashMap::new(),
            assignor: Assignor::DEFAULT,
            emptied_at_ms: now_ms,
            stored_bytes: 0,
        }
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.assignment_epoch < self.group_epoch {
            GroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.member_epoch != self.assignment_epoch)
        {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    pub fn refresh_bytes(&mut self) -> usize {
        self.stored_bytes = self.compute_bytes();
        self.stored_bytes
    }

    pub fn compute_bytes(&self) -> usize {
        let members: usize = self
            .members
            .values()
            .map(|m| {
                m.identity_bytes()
                    + assignment_bytes(&m.assigned)
                    + assignment_bytes(&m.pending_revocation)
            })
            .sum();
        let target: usize = self.target.values().map(assignment_bytes).sum();
        let metadata: usize = self.metadata.keys().map(|name| name.len() + 20).sum();
        self.group_id.len() + members + target + metadata
    }

    // ---- heartbeat ----

    /// A validated heartbeat. `member_id` is the request's, or a generated one for a v0 join.
    pub fn heartbeat(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        request: ConsumerGroupHeartbeat,
        member_id: String,
        metadata: &dyn TopicMetadata,
    ) -> Result<ConsumerGroupHeartbeatResult, GroupError> {
        let interval_ms = i32::try_from(config.consumer_heartbeat_interval_ms).unwrap_or(i32::MAX);
        match request.member_epoch {
            LEAVE_EPOCH => {
                self.leave(now_ms, &request)?;
                return Ok(ConsumerGroupHeartbeatResult {
                    error: None,
                    member_id,
                    member_epoch: LEAVE_EPOCH,
                    heartbeat_interval_ms: interval_ms,
                    assignment: None,
                });
            }
            STATIC_LEAVE_EPOCH => {
                self.leave_temporarily(config, now_ms, &request)?;
                return Ok(ConsumerGroupHeartbeatResult {
                    error: None,
                    member_id,
                    member_epoch: STATIC_LEAVE_EPOCH,
                    heartbeat_interval_ms: interval_ms,
                    assignment: None,
                });
            }
            _ => {}
        }
        let joining = request.member_epoch == JOIN_EPOCH;
        let owned = if joining {
            Some(Assignment::new())
        } else {
            request.topic_partitions.as_deref().map(to_assignment)
        };
        // Every check comes before the first change.
        let mut bump = if joining {
            self.admit(config, now_ms, &request, &member_id)?
        } else {
            self.check_member(&request, owned.as_ref())?;
            false
        };
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let assigned_before = member.assigned.clone();

        // Apply the request's changes.
        if let Some(rack_id) = &request.rack_id {
            member.rack_id = Some(rack_id.clone());
        }
        if let Ok(rebalance_timeout_ms) = u64::try_from(request.rebalance_timeout_ms) {
            member.rebalance_timeout_ms = rebalance_timeout_ms;
        }
        if let Some(name) = &request.server_assignor {
            let assignor = Assignor::from_name(name);
            if assignor != member.server_assignor {
                member.server_assignor = assignor;
                bump = true;
            }
        }
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_deadline_ms = now_ms.saturating_add(config.consumer_session_timeout_ms);
        let mut subscription_change = None;
        if let Some(names) = &request.subscribed_topic_names {
            member.explicit_topic_names = names.iter().filter(|n| !n.is_empty()).cloned().collect();
        }
        match request.subscribed_topic_regex.as_deref() {
            None => {}
            Some("") => member.subscribed_topic_regex = None,
            Some(regex) => member.subscribed_topic_regex = Some(regex.to_string()),
        }
        let mut names = member.explicit_topic_names.clone();
        if let Some(regex) = &member.subscribed_topic_regex {
            // Compiled when the request was validated.
            let regex = compile_topic_regex(regex)?;
            names.extend(
                metadata
                    .topic_names()
                    .into_iter()
                    .filter(|name| regex.is_match(name)),
            );
        }
        if names != member.subscribed_topic_names {
            let old = std::mem::replace(&mut member.subscribed_topic_names, names.clone());
            subscription_change = Some((old, names));
        }
        if let Some((old, new)) = subscription_change {
            self.unsubscribe(&old);
            self.subscribe(&new);
            bump = true;
        }

        if self.refresh_metadata(metadata) {
            bump = true;
        }
        if bump {
            self.bump_and_assign(now_ms);
        }
        self.reconcile(&member_id, owned.as_ref(), now_ms);

        let Some(member) = self.members.get(&member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let full_request = request.rebalance_timeout_ms != -1
            && request.subscribed_topic_names.is_some()
            && request.topic_partitions.is_some();
        // What the member reports owning disagrees with what it may own (a lost response, or a
        // confused client): repeat the assignment.
        let report_disagrees = owned.as_ref().is_some_and(|owned| {
            !partitions_of(&member.assigned).all(|(t, p)| contains(owned, &t, p))
                || !partitions_of(owned).all(|(t, p)| {
                    contains(&member.assigned, &t, p) || contains(&member.pending_revocation, &t, p)
                })
        });
        let changed = member.assigned != assigned_before;
        let assignment = (joining || full_request || changed || report_disagrees)
            .then(|| to_wire(&member.assigned));
        Ok(ConsumerGroupHeartbeatResult {
            error: None,
            member_id,
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: interval_ms,
            assignment,
        })
    }

    /// A join (epoch 0): creates the member, takes over a static member that left with -2, or
    /// resets a known member that rejoins. Returns whether the group epoch must go up.
    fn admit(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        request: &ConsumerGroupHeartbeat,
        member_id: &str,
    ) -> Result<bool, GroupError> {
        if let Some(member) = self.members.get(member_id) {
            // A known member rejoins (KIP-1082 ids outlive a fencing).
            if request.instance_id.is_some() && request.instance_id != member.instance_id {
                return Err(GroupError::FencedInstanceId {
                    group_instance_id: request.instance_id.clone().unwrap_or_default(),
                });
            }
            self.reset_member(member_id);
            return Ok(false);
        }
        if let Some(instance_id) = &request.instance_id
            && let Some(registered) = self.static_members.get(instance_id).cloned()
        {
            let left = self
                .members
                .get(&registered)
                .is_some_and(|m| m.member_epoch == STATIC_LEAVE_EPOCH);
            if !left {
                return Err(GroupError::UnreleasedInstanceId {
                    group_instance_id: instance_id.clone(),
                });
            }
            self.replace_static_member(&registered, member_id);
            return Ok(false);
        }
        if self.members.len() >= config.max_group_size {
            return Err(GroupError::GroupMaxSizeReached {
                max: config.max_group_size,
            });
        }
        let mut member = ConsumerMember::new(
            member_id.to_owned(),
            now_ms,
            config.consumer_session_timeout_ms,
        );
        member.instance_id = request.instance_id.clone();
        if let Some(instance_id) = &request.instance_id {
            self.static_members
                .insert(instance_id.clone(), member_id.to_owned());
        }
        self.members.insert(member_id.to_owned(), member);
        self.target.insert(member_id.to_owned(), Assignment::new());
        Ok(true)
    }

    /// A heartbeat with epoch > 0: the member must be known, hold its instance id, and be at the
    /// epoch it claims (or the previous one, reporting only partitions it still may own).
    fn check_member(
        &self,
        request: &ConsumerGroupHeartbeat,
        owned: Option<&Assignment>,
    ) -> Result<(), GroupError> {
        let Some(member) = self.members.get(&request.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if request.instance_id.is_some() && request.instance_id != member.instance_id {
            return Err(GroupError::FencedInstanceId {
                group_instance_id: request.instance_id.clone().unwrap_or_default(),
            });
        }
        let fenced = GroupError::FencedMemberEpoch {
            member_epoch: request.member_epoch,
            current: member.member_epoch,
        };
        if request.member_epoch > member.member_epoch {
            return Err(fenced);
        }
        if request.member_epoch < member.member_epoch
            && (request.member_epoch != member.previous_member_epoch
                || !is_subset(owned, &member.assigned))
        {
            return Err(fenced);
        }
        Ok(())
    }

    /// The member owns nothing and starts over at epoch 0; its target is unchanged.
    fn reset_member(&mut self, member_id: &str) {
        self.release_all(member_id);
        if let Some(member) = self.members.get_mut(member_id) {
            member.assigned.clear();
            member.pending_revocation.clear();
            member.state = MemberState::Stable;
            member.revocation_deadline_ms = None;
            member.member_epoch = JOIN_EPOCH;
            member.previous_member_epoch = JOIN_EPOCH;
        }
    }

    /// A new incarnation of a static member that left with -2 takes over its state (current and
    /// target assignment, subscription) under a new member id, at epoch 0.
    fn replace_static_member(&mut self, old_member_id: &str, new_member_id: &str) {
        let Some(mut member) = self.members.remove(old_member_id) else {
            return;
        };
        member.member_id = new_member_id.to_owned();
        member.member_epoch = JOIN_EPOCH;
        member.previous_member_epoch = JOIN_EPOCH;
        for (topic_id, partition) in partitions_of(&member.assigned) {
            self.owners
                .insert((topic_id, partition), new_member_id.to_owned());
        }
        if let Some(instance_id) = &member.instance_id {
            self.static_members
                .insert(instance_id.clone(), new_member_id.to_owned());
        }
        let target = self.target.remove(old_member_id).unwrap_or_default();
        self.target.insert(new_member_id.to_owned(), target);
        self.members.insert(new_member_id.to_owned(), member);
    }

    /// Epoch -1: the member goes and the group rebalances.
    fn leave(&mut self, now_ms: u64, request: &ConsumerGroupHeartbeat) -> Result<(), GroupError> {
        let Some(member) = self.members.get(&request.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if request.instance_id.is_some() && request.instance_id != member.instance_id {
            return Err(GroupError::FencedInstanceId {
                group_instance_id: request.instance_id.clone().unwrap_or_default(),
            });
        }
        self.remove_member(&request.member_id);
        self.bump_and_assign(now_ms);
        Ok(())
    }

    /// Epoch -2: a static member goes for a while. Its current assignment stays reserved (no
    /// bump) until its session expires or a new incarnation takes it over; partitions it was
    /// revoking are released (a departed client owns nothing).
    fn leave_temporarily(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        request: &ConsumerGroupHeartbeat,
    ) -> Result<(), GroupError> {
        let instance_id = request.instance_id.clone().unwrap_or_default();
        let Some(registered) = self.static_members.get(&instance_id).cloned() else {
            return Err(GroupError::UnknownMemberId);
        };
        if registered != request.member_id {
            return Err(GroupError::FencedInstanceId {
                group_instance_id: instance_id,
            });
        }
        let pending = match self.members.get_mut(&registered) {
            Some(member) => {
                member.set_epoch(STATIC_LEAVE_EPOCH);
                member.state = MemberState::Stable;
                member.revocation_deadline_ms = None;
                member.session_deadline_ms =
                    now_ms.saturating_add(config.consumer_session_timeout_ms);
                std::mem::take(&mut member.pending_revocation)
            }
            None => return Err(GroupError::UnknownMemberId),
        };
        for partition in partitions_of(&pending) {
            self.owners.remove(&partition);
        }
        Ok(())
    }

    // ---- time ----

    /// Removes members whose session expired or that did not revoke within their rebalance
    /// timeout, with one epoch bump. Returns whether anything changed.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now_ms >= m.session_deadline_ms
                    || m.revocation_deadline_ms.is_some_and(|d| now_ms >= d)
            })
            .map(|m| m.member_id.clone())
            .collect();
        if expired.is_empty() {
            return false;
        }
        for member_id in &expired {
            self.remove_member(member_id);
        }
        self.bump_and_assign(now_ms);
        true
    }

    // ---- membership and assignment ----

    fn remove_member(&mut self, member_id: &str) {
        self.release_all(member_id);
        if let Some(member) = self.members.remove(member_id) {
            if let Some(instance_id) = &member.instance_id {
                self.static_members.remove(instance_id);
            }
            self.unsubscribe(&member.subscribed_topic_names);
            // Topics nobody subscribes to any more leave the snapshot without changing the
            // target, so the next heartbeat's metadata check does not see a spurious change.
            let subscribed = &self.subscribed_topics;
            self.metadata
                .retain(|name, _| subscribed.contains_key(name));
        }
        self.target.remove(member_id);
    }

    fn release_all(&mut self, member_id: &str) {
        if let Some(member) = self.members.get(member_id) {
            for partition in
                partitions_of(&member.assigned).chain(partitions_of(&member.pending_revocation))
            {
                self.owners.remove(&partition);
            }
        }
    }

    fn subscribe(&mut self, names: &BTreeSet<String>) {
        for name in names {
            *self.subscribed_topics.entry(name.clone()).or_default() += 1;
        }
    }

    fn unsubscribe(&mut self, names: &BTreeSet<String>) {
        for name in names {
            if let Some(count) = self.subscribed_topics.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.subscribed_topics.remove(name);
                }
            }
        }
    }

    /// Re-reads the subscribed topics' metadata; whether it differs from what the target was
    /// computed from.
    fn refresh_metadata(&mut self, metadata: &dyn TopicMetadata) -> bool {
        let snapshot: BTreeMap<String, (TopicId, i32)> = self
            .subscribed_topics
            .keys()
            .filter_map(|name| {
                metadata
                    .topic(name)
                    .filter(|&(_, partition_count)| partition_count > 0)
                    .map(|topic| (name.clone(), topic))
            })
            .collect();
        if snapshot == self.metadata {
            return false;
        }
        self.metadata = snapshot;
        true
    }

    /// The assignor most members ask for (ties to the earlier in `Assignor` order), or the default.
    fn choose_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(assignor) = member.server_assignor {
                *votes.entry(assignor).or_default() += 1;
            }
        }
        let mut best: Option<(Assignor, usize)> = None;
        for (assignor, count) in votes {
            if best.is_none_or(|(_, best_count)| count > best_count) {
                best = Some((assignor, count));
            }
        }
        best.map_or(Assignor::DEFAULT, |(assignor, _)| assignor)
    }

    fn bump_and_assign(&mut self, now_ms: u64) {
        self.group_epoch += 1;
        self.assignor = self.choose_assignor();
        let spec = AssignmentSpec {
            topics: &self.metadata,
            members: self
                .members
                .iter()
                .map(|(id, m)| (id.as_str(), &m.subscribed_topic_names))
                .collect(),
            previous: &self.target,
        };
        self.target = assignor::assign(self.assignor, &spec);
        self.assignment_epoch = self.group_epoch;
        if self.members.is_empty() {
            self.emptied_at_ms = now_ms;
        }
    }

    /// Moves the member toward its target as far as the other members' partitions and its own
    /// report of what it owns (`None`: unknown) allow.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: u64) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        match member.state {
            MemberState::Stable if member.member_epoch == self.assignment_epoch => return,
            MemberState::Stable | MemberState::UnreleasedPartitions => {}
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &member.pending_revocation) {
                    return;
                }
                let revoked = std::mem::take(&mut member.pending_revocation);
                for partition in partitions_of(&revoked) {
                    self.owners.remove(&partition);
                }
            }
        }
        self.compute_next(member_id, owned, now_ms);
    }

    /// Kafka's CurrentAssignmentBuilder step: keep current ∩ target; revoke current − target
    /// (staying at the old epoch, gaining nothing) while the member may still own any of it;
    /// otherwise move to the target epoch and gain the target partitions nobody else holds.
    fn compute_next(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: u64) {
        let target_epoch = self.assignment_epoch;
        let empty = Assignment::new();
        let target = self.target.get(member_id).unwrap_or(&empty);
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        for (topic_id, partition) in partitions_of(&member.assigned) {
            let side = if contains(target, &topic_id, partition) {
                &mut keep
            } else {
                &mut revoke
            };
            side.entry(topic_id).or_default().insert(partition);
        }
        let mut gain = Assignment::new();
        let mut unreleased = false;
        for (topic_id, partition) in partitions_of(target) {
            if contains(&member.assigned, &topic_id, partition) {
                continue;
            }
            match self.owners.get(&(topic_id, partition)) {
                Some(owner) if owner != member_id => unreleased = true,
                _ => {
                    gain.entry(topic_id).or_default().insert(partition);
                }
            }
        }

        if !revoke.is_empty() && owns_any(owned, &revoke) {
            member.assigned = keep;
            member.pending_revocation = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revocation_deadline_ms =
                Some(now_ms.saturating_add(member.rebalance_timeout_ms));
            // Owners are unchanged: kept and revoking partitions are still this member's.
            return;
        }
        for partition in partitions_of(&revoke) {
            self.owners.remove(&partition);
        }
        for (topic_id, partition) in partitions_of(&gain) {
            self.owners
                .insert((topic_id, partition), member_id.to_owned());
        }
        for (topic_id, partitions) in gain {
            keep.entry(topic_id).or_default().extend(partitions);
        }
        member.assigned = keep;
        member.pending_revocation.clear();
        member.set_epoch(target_epoch);
        member.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        member.revocation_deadline_ms = None;
    }

    // ---- reads ----

    /// OffsetCommit from this group: `member_epoch` is the request's generation field.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: MemberEpoch,
    ) -> Result<(), GroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if member_epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch {
                member_epoch,
                current: member.member_epoch,
            });
        }
        Ok(())
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        let names: HashMap<TopicId, &str> = self
            .metadata
            .iter()
            .map(|(name, (topic_id, _))| (*topic_id, name.as_str()))
            .collect();
        let describe = |assignment: &Assignment| -> Vec<TopicAssignment> {
            assignment
                .iter()
                .filter(|(_, partitions)| !partitions.is_empty())
                .map(|(topic_id, partitions)| TopicAssignment {
                    topic_id: *topic_id,
                    topic_name: names.get(topic_id).copied().unwrap_or_default().to_owned(),
                    partitions: partitions.iter().copied().collect(),
                })
                .collect()
        };
        ConsumerGroupDescription {
            group_id: self.group_id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.assignor.as_str().to_owned(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                    assignment: describe(&m.assigned),
                    target_assignment: self
                        .target
                        .get(&m.member_id)
                        .map(&describe)
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Internal consistency, for tests: panics with a description of the first broken rule.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let id = &self.group_id;
        assert_eq!(
            self.assignment_epoch, self.group_epoch,
            "{id}: target behind"
        );
        let mut owners = HashMap::new();
        let mut subscribed: BTreeMap<String, usize> = BTreeMap::new();
        for (member_id, member) in &self.members {
            assert_eq!(member_id, &member.member_id);
            assert!(
                member.member_epoch <= self.group_epoch,
                "{id}: member {member_id} epoch {} above group epoch {}",
                member.member_epoch,
                self.group_epoch
            );
            assert!(
                self.target.contains_key(member_id),
                "{id}: no target for {member_id}"
            );
            for partition in
                partitions_of(&member.assigned).chain(partitions_of(&member.pending_revocation))
            {
                if let Some(other) = owners.insert(partition, member_id.clone()) {
                    panic!("{id}: partition {partition:?} held by {other} and {member_id}");
                }
            }
            assert_eq!(
                member.state == MemberState::UnrevokedPartitions,
                !member.pending_revocation.is_empty(),
                "{id}: {member_id} revoking iff UnrevokedPartitions"
            );
            assert_eq!(
                member.state == MemberState::UnrevokedPartitions,
                member.revocation_deadline_ms.is_some(),
                "{id}: revocation deadline iff UnrevokedPartitions"
            );
            if let Some(instance_id) = &member.instance_id {
                assert_eq!(self.static_members.get(instance_id), Some(member_id));
            }
            for name in &member.subscribed_topic_names {
                *subscribed.entry(name.clone()).or_default() += 1;
            }
        }
        assert_eq!(owners, self.owners, "{id}: owners map drifted");
        assert_eq!(
            subscribed, self.subscribed_topics,
            "{id}: subscription counts drifted"
        );
        assert_eq!(
            self.target.len(),
            self.members.len(),
            "{id}: stale target entries"
        );
        for (instance_id, member_id) in &self.static_members {
            assert_eq!(
                self.members
                    .get(member_id)
                    .and_then(|m| m.instance_id.as_deref()),
                Some(instance_id.as_str()),
                "{id}: static mapping {instance_id} -> {member_id} is stale"
            );
        }
        // The target gives every partition of every subscribed, existing topic to exactly one
        // member that subscribes to it.
        let mut targeted = HashMap::new();
        for (member_id, assignment) in &self.target {
            for partition in partitions_of(assignment) {
                if let Some(other) = targeted.insert(partition, member_id.clone()) {
                    panic!("{id}: target gives {partition:?} to {other} and {member_id}");
                }
            }
        }
        let mut expected = 0;
        for (name, (topic_id, count)) in &self.metadata {
            let subscribers: Vec<&String> = self
                .members
                .values()
                .filter(|m| m.subscribed_topic_names.contains(name))
                .map(|m| &m.member_id)
                .collect();
            if subscribers.is_empty() {
                continue;
            }
            for partition in 0..*count {
                expected += 1;
                let holder = targeted.get(&(*topic_id, partition));
                assert!(
                    holder.is_some_and(|h| subscribers.contains(&h)),
                    "{id}: {name}-{partition} targeted at {holder:?}, not a subscriber"
                );
            }
        }
        assert_eq!(
            targeted.len(),
            expected,
            "{id}: target has partitions of no subscribed topic"
        );
    }
}
