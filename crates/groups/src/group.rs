//! One group's state machine. `Coordinator` validates what needs the whole broker's view (group
//! ids, limits, the memory budget, member id generation) and hands each request to its group.

use std::collections::HashMap;

use indexmap::IndexMap;

use crate::{
    CoordinatorConfig, GenerationId, GroupDescription, GroupError, GroupState, Heartbeat,
    JoinGroup, JoinMember, JoinResult, LeavingMember, MemberDescription, Protocol, Response,
    SyncGroup, SyncResult, Token,
};

type Out = Vec<(Token, Response)>;

#[derive(Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// In preference order, names unique.
    pub protocols: Vec<Protocol>,
    pub assignment: Vec<u8>,
    /// A JoinGroup parked until the rebalance completes (only in PreparingRebalance).
    pub join_token: Option<Token>,
    /// A SyncGroup parked until the leader's (only in CompletingRebalance).
    pub sync_token: Option<Token>,
    /// Handed a generation but has not sent SyncGroup for it yet.
    pub awaiting_sync: bool,
    /// Removed at this time unless it heartbeats, joins or syncs first. Not applied while a
    /// request of the member is parked: then the coordinator, not the member, is late.
    pub session_deadline_ms: u64,
}

impl Member {
    fn new(request: JoinGroup, member_id: String, now_ms: u64, token: Option<Token>) -> Member {
        let (session_timeout_ms, rebalance_timeout_ms) = timeouts(&request);
        Member {
            member_id,
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Vec::new(),
            join_token: token,
            sync_token: None,
            awaiting_sync: false,
            session_deadline_ms: now_ms.saturating_add(session_timeout_ms),
        }
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    fn is_parked(&self) -> bool {
        self.join_token.is_some() || self.sync_token.is_some()
    }

    fn refresh_session(&mut self, now_ms: u64) {
        self.session_deadline_ms = now_ms.saturating_add(self.session_timeout_ms);
    }

    /// The member's metadata for `protocol` (empty if it does not support it).
    fn metadata_for(&self, protocol: Option<&str>) -> Vec<u8> {
        protocol
            .and_then(|name| self.protocols.iter().find(|p| p.name == name))
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Bytes counted against the memory budget, the assignment aside.
    fn identity_bytes(&self) -> usize {
        self.member_id.len()
            + self.group_instance_id.as_ref().map_or(0, String::len)
            + self.client_id.len()
            + self.client_host.len()
            + protocols_bytes(&self.protocols)
    }
}

/// Session and rebalance timeouts of a validated request (session timeout within the range).
fn timeouts(request: &JoinGroup) -> (u64, u64) {
    let session = u64::try_from(request.session_timeout_ms).unwrap_or(0);
    let rebalance = u64::try_from(request.rebalance_timeout_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .unwrap_or(session);
    (session, rebalance)
}

pub(crate) fn protocols_bytes(protocols: &[Protocol]) -> usize {
    protocols
        .iter()
        .map(|p| p.name.len() + p.metadata.len())
        .sum()
}

/// What `Member::identity_bytes` will be for the member this request creates or updates.
pub(crate) fn member_bytes_estimate(request: &JoinGroup, new_member_id: Option<&str>) -> usize {
    new_member_id.map_or(request.member_id.len(), str::len)
        + request.group_instance_id.as_ref().map_or(0, String::len)
        + request.client_id.len()
        + request.client_host.len()
        + protocols_bytes(&request.protocols)
}

/// The timer of a rebalance in PreparingRebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinTimer {
    /// The first rebalance of an empty group (Kafka's `group.initial.rebalance.delay.ms`): never
    /// completes early; completes once no new member has joined for the delay, and at the latest
    /// when the rebalance timeout has passed since the first join. (Kafka re-arms a whole delay at
    /// each expiry that saw a join, which can wait almost twice the delay after the last member;
    /// a sliding window gives every member the same wait and ends the delay sooner.)
    Initial {
        deadline_ms: u64,
        latest_deadline_ms: u64,
    },
    /// Completes when every member (and every member handed an id) has joined, or at the
    /// deadline, dropping those that have not.
    Normal { deadline_ms: u64 },
}

#[derive(Debug)]
pub(crate) struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: GenerationId,
    /// Set by the first member of an empty group.
    pub protocol_type: Option<String>,
    /// Chosen when a rebalance completes; `None` while Empty.
    pub protocol_name: Option<String>,
    /// Always a member, or `None` when there are none.
    pub leader_id: Option<String>,
    /// In join order (the first becomes leader when the leader goes).
    pub members: IndexMap<String, Member>,
    /// `group.instance.id` → member id of the static members.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry time.
    pub pending_members: IndexMap<String, u64>,
    join_timer: Option<JoinTimer>,
    /// When members that got a generation but have not synced are removed.
    sync_deadline_ms: Option<u64>,
    pub emptied_at_ms: u64,
    /// Bytes counted against the coordinator's budget, as of the last `refresh_bytes`.
    pub stored_bytes: usize,
}

impl Group {
    pub fn new(group_id: String, now_ms: u64) -> Group {
        Group {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: IndexMap::new(),
            join_timer: None,
            sync_deadline_ms: None,
            emptied_at_ms: now_ms,
            stored_bytes: 0,
        }
    }

    pub fn refresh_bytes(&mut self) -> usize {
        self.stored_bytes = self.compute_bytes();
        self.stored_bytes
    }

    pub fn compute_bytes(&self) -> usize {
        self.group_id.len()
            + self
                .members
                .values()
                .map(|m| m.identity_bytes() + m.assignment.len())
                .sum::<usize>()
            + self.pending_members.keys().map(String::len).sum::<usize>()
    }

    /// Bytes (assignment aside) of the member this join updates or replaces, if any.
    pub fn bytes_of_joining_member(&self, request: &JoinGroup) -> usize {
        let member_id = if request.member_id.is_empty() {
            match request
                .group_instance_id
                .as_ref()
                .and_then(|i| self.static_members.get(i))
            {
                Some(member_id) => member_id,
                None => return 0,
            }
        } else {
            &request.member_id
        };
        self.members
            .get(member_id)
            .map_or(0, Member::identity_bytes)
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// KIP-345 fencing: the instance id is registered to another member id.
    fn is_fenced(&self, group_instance_id: Option<&str>, member_id: &str) -> bool {
        group_instance_id
            .and_then(|instance| self.static_members.get(instance))
            .is_some_and(|registered| registered != member_id)
    }

    fn fenced_error(group_instance_id: Option<&str>) -> GroupError {
        GroupError::FencedInstanceId {
            group_instance_id: group_instance_id.unwrap_or_default().to_owned(),
        }
    }

    /// Whether a member with these protocols can be in the group alongside every member other
    /// than `excluding` (the member being updated or replaced): same protocol type and at least
    /// one protocol that all of them support. Kafka compares with the member's own old protocols
    /// too; leaving it out lets a lone member switch protocols.
    fn supports(
        &self,
        protocol_type: &str,
        protocols: &[Protocol],
        excluding: Option<&str>,
    ) -> bool {
        let mut others = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != excluding)
            .peekable();
        if others.peek().is_none() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        protocols
            .iter()
            .any(|p| others.iter().all(|m| m.supports(&p.name)))
    }

    /// Each member votes for its most preferred protocol that every member supports; most votes
    /// wins, ties going to the protocol voted for first (in join order).
    fn select_protocol(&self) -> Option<String> {
        let mut votes: IndexMap<&str, usize> = IndexMap::new();
        for member in self.members.values() {
            let vote = member
                .protocols
                .iter()
                .find(|p| self.members.values().all(|m| m.supports(&p.name)));
            if let Some(protocol) = vote {
                *votes.entry(protocol.name.as_str()).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, best_count)| count > best_count) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.as_deref();
        self.members
            .values()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    /// The current generation as `member_id` is told it (the member list for the leader only).
    fn join_result(&self, member_id: &str) -> JoinResult {
        JoinResult {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if self.is_leader(member_id) {
                self.join_members()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn sync_result(&self, assignment: Vec<u8>) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    // ---- JoinGroup ----

    /// `new_member_id` is `Some` (freshly generated) iff the request's member id is empty.
    /// The request's protocols are deduplicated, non-empty and within limits.
    pub fn join(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        token: Token,
        request: JoinGroup,
        new_member_id: Option<String>,
        out: &mut Out,
    ) -> Result<(), GroupError> {
        match new_member_id {
            Some(new_member_id) => {
                self.join_new_member(config, now_ms, token, request, new_member_id, out)
            }
            None => self.join_known_member(config, now_ms, token, request, out),
        }
    }

    fn join_new_member(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        token: Token,
        request: JoinGroup,
        new_member_id: String,
        out: &mut Out,
    ) -> Result<(), GroupError> {
        let registered = request
            .group_instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i))
            .cloned();
        if let Some(old_member_id) = registered {
            if !self.supports(
                &request.protocol_type,
                &request.protocols,
                Some(&old_member_id),
            ) {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            self.replace_static_member(
                config,
                now_ms,
                token,
                request,
                old_member_id,
                new_member_id,
                out,
            );
            return Ok(());
        }
        if self.members.len() + self.pending_members.len() >= config.max_group_size {
            return Err(GroupError::GroupMaxSizeReached {
                max: config.max_group_size,
            });
        }
        if !self.supports(&request.protocol_type, &request.protocols, None) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if request.group_instance_id.is_none() && request.require_known_member_id {
            // KIP-394: hand out the id, count it against the group size, and expect the member
            // back with it within its session timeout.
            let (session_timeout_ms, _) = timeouts(&request);
            self.pending_members.insert(
                new_member_id.clone(),
                now_ms.saturating_add(session_timeout_ms),
            );
            let result = JoinResult::failed(new_member_id, GroupError::MemberIdRequired);
            out.push((token, Response::Join(result)));
            return Ok(());
        }
        self.add_member_and_rebalance(config, now_ms, token, request, new_member_id, out);
        Ok(())
    }

    fn join_known_member(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        token: Token,
        request: JoinGroup,
        out: &mut Out,
    ) -> Result<(), GroupError> {
        let member_id = request.member_id.clone();
        if self.is_fenced(request.group_instance_id.as_deref(), &member_id) {
            return Err(Self::fenced_error(request.group_instance_id.as_deref()));
        }
        if self.pending_members.contains_key(&member_id) {
            if !self.supports(&request.protocol_type, &request.protocols, None) {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            self.pending_members.shift_remove(&member_id);
            self.add_member_and_rebalance(config, now_ms, token, request, member_id, out);
            return Ok(());
        }
        let Some(member) = self.members.get(&member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if !self.supports(&request.protocol_type, &request.protocols, Some(&member_id)) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let unchanged = member.protocols == request.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(now_ms, token, request, out);
                self.try_complete_join(now_ms, out);
            }
            // A retry of a join whose answer was lost: answer it again.
            GroupState::CompletingRebalance if unchanged => {
                self.answer_join_now(now_ms, token, &member_id, out)
            }
            // A follower rejoining with nothing new gets the current generation; the leader's
            // rejoin means "rebalance" (e.g. it saw topic metadata change).
            GroupState::Stable if unchanged && !self.is_leader(&member_id) => {
                self.answer_join_now(now_ms, token, &member_id, out)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(now_ms, token, request, out);
                self.prepare_rebalance(config, now_ms, out);
            }
            // Members exist only outside Empty, and a Dead group is not stored. Assigning and
            // Reconciling are consumer-protocol states, never a classic group's.
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => return Err(GroupError::UnknownMemberId),
        }
        Ok(())
    }

    fn answer_join_now(&mut self, now_ms: u64, token: Token, member_id: &str, out: &mut Out) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.refresh_session(now_ms);
        }
        out.push((token, Response::Join(self.join_result(member_id))));
    }

    fn adopt_protocol_type_if_alone(&mut self, protocol_type: &str) {
        if self.members.len() == 1 {
            self.protocol_type = Some(protocol_type.to_owned());
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        token: Token,
        request: JoinGroup,
        member_id: String,
        out: &mut Out,
    ) {
        let protocol_type = request.protocol_type.clone();
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        let member = Member::new(request, member_id.clone(), now_ms, Some(token));
        self.members.insert(member_id, member);
        self.adopt_protocol_type_if_alone(&protocol_type);
        if self.state == GroupState::PreparingRebalance {
            if let Some(JoinTimer::Initial {
                deadline_ms,
                latest_deadline_ms,
            }) = &mut self.join_timer
            {
                let extended = now_ms.saturating_add(config.initial_rebalance_delay_ms);
                *deadline_ms = (*deadline_ms).max(extended).min(*latest_deadline_ms);
            }
            self.try_complete_join(now_ms, out);
        } else {
            self.prepare_rebalance(config, now_ms, out);
        }
    }

    /// A known member's join that takes part in the rebalance: new protocols and timeouts, and
    /// its request parked (a previous parked join of the member is answered: it was superseded).
    fn update_member(&mut self, now_ms: u64, token: Token, request: JoinGroup, out: &mut Out) {
        let (session_timeout_ms, rebalance_timeout_ms) = timeouts(&request);
        let protocol_type = request.protocol_type;
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return;
        };
        member.protocols = request.protocols;
        member.session_timeout_ms = session_timeout_ms;
        member.rebalance_timeout_ms = rebalance_timeout_ms;
        member.refresh_session(now_ms);
        if let Some(superseded) = member.join_token.replace(token) {
            let result =
                JoinResult::failed(member.member_id.clone(), GroupError::RebalanceInProgress);
            out.push((superseded, Response::Join(result)));
        }
        self.adopt_protocol_type_if_alone(&protocol_type);
    }

    /// KIP-345: a static member rejoined with an empty member id. It takes the old member's
    /// place (and stored assignment) under a new id; the old id is fenced.
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        token: Token,
        request: JoinGroup,
        old_member_id: String,
        new_member_id: String,
        out: &mut Out,
    ) {
        let Some((index, _, old)) = self.members.shift_remove_full(&old_member_id) else {
            return;
        };
        let instance = request.group_instance_id.clone().unwrap_or_default();
        let fenced = GroupError::FencedInstanceId {
            group_instance_id: instance.clone(),
        };
        if let Some(parked) = old.join_token {
            out.push((
                parked,
                Response::Join(JoinResult::failed(old_member_id.clone(), fenced.clone())),
            ));
        }
        if let Some(parked) = old.sync_token {
            out.push((parked, Response::Sync(SyncResult::failed(fenced))));
        }
        // The leader named in an answer-now response stays the old id, so a replaced leader
        // does not take itself for the leader and compute an assignment a Stable group would
        // never hand out.
        let leader_before = self.leader_id.clone().unwrap_or_default();
        if self.is_leader(&old_member_id) {
            self.leader_id = Some(new_member_id.clone());
        }
        self.static_members.insert(instance, new_member_id.clone());
        let unchanged = old.protocols == request.protocols;
        let protocol_type = request.protocol_type.clone();
        let mut member = Member::new(request, new_member_id.clone(), now_ms, None);
        member.assignment = old.assignment;
        member.awaiting_sync = old.awaiting_sync;
        match self.state {
            GroupState::Stable if unchanged => {
                self.members
                    .shift_insert(index, new_member_id.clone(), member);
                let mut result = self.join_result(&new_member_id);
                result.leader = leader_before;
                result.members = Vec::new();
                out.push((token, Response::Join(result)));
            }
            GroupState::PreparingRebalance => {
                member.join_token = Some(token);
                self.members.shift_insert(index, new_member_id, member);
                self.try_complete_join(now_ms, out);
            }
            _ => {
                member.join_token = Some(token);
                self.members.shift_insert(index, new_member_id, member);
                self.prepare_rebalance(config, now_ms, out);
            }
        }
        self.adopt_protocol_type_if_alone(&protocol_type);
    }

    // ---- rebalance ----

    fn prepare_rebalance(&mut self, config: &CoordinatorConfig, now_ms: u64, out: &mut Out) {
        if self.state == GroupState::CompletingRebalance {
            // Parked followers learn that this generation will not be completed.
            for member in self.members.values_mut() {
                member.assignment.clear();
                if let Some(parked) = member.sync_token.take() {
                    out.push((
                        parked,
                        Response::Sync(SyncResult::failed(GroupError::RebalanceInProgress)),
                    ));
                }
            }
        }
        for member in self.members.values_mut() {
            member.awaiting_sync = false;
        }
        self.sync_deadline_ms = None;
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        let delay_ms = config.initial_rebalance_delay_ms;
        self.join_timer = Some(if self.state == GroupState::Empty && delay_ms > 0 {
            JoinTimer::Initial {
                deadline_ms: now_ms.saturating_add(delay_ms.min(rebalance_timeout_ms)),
                latest_deadline_ms: now_ms.saturating_add(rebalance_timeout_ms.max(delay_ms)),
            }
        } else {
            JoinTimer::Normal {
                deadline_ms: now_ms.saturating_add(rebalance_timeout_ms),
            }
        });
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(now_ms, out);
    }

    fn try_complete_join(&mut self, now_ms: u64, out: &mut Out) {
        let all_joined = self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_token.is_some());
        if self.state == GroupState::PreparingRebalance
            && matches!(self.join_timer, Some(JoinTimer::Normal { .. }))
            && all_joined
        {
            self.complete_join(now_ms, out);
        }
    }

    /// Ends PreparingRebalance: members that did not rejoin are dropped, the generation moves
    /// on, and every parked join is answered.
    fn complete_join(&mut self, now_ms: u64, out: &mut Out) {
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_token.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in laggards {
            self.detach_member(&member_id, out);
        }
        self.join_timer = None;
        self.generation_id = self.generation_id.saturating_add(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.emptied_at_ms = now_ms;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let result = self.join_result(&member_id);
            if let Some(member) = self.members.get_mut(&member_id) {
                member.awaiting_sync = true;
                member.refresh_session(now_ms);
                if let Some(parked) = member.join_token.take() {
                    out.push((parked, Response::Join(result)));
                }
            }
        }
    }

    /// Takes a member out, answering its parked requests with UNKNOWN_MEMBER_ID, without
    /// changing the group's state.
    fn detach_member(&mut self, member_id: &str, out: &mut Out) -> bool {
        let Some(member) = self.members.shift_remove(member_id) else {
            return false;
        };
        if let Some(parked) = member.join_token {
            out.push((
                parked,
                Response::Join(JoinResult::failed(
                    String::new(),
                    GroupError::UnknownMemberId,
                )),
            ));
        }
        if let Some(parked) = member.sync_token {
            out.push((
                parked,
                Response::Sync(SyncResult::failed(GroupError::UnknownMemberId)),
            ));
        }
        if let Some(instance) = &member.group_instance_id
            && self
                .static_members
                .get(instance)
                .is_some_and(|id| id == member_id)
        {
            self.static_members.remove(instance);
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        true
    }

    /// Removes a member and reacts: a settled group rebalances, a rebalancing one may be done.
    fn remove_member(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        member_id: &str,
        out: &mut Out,
    ) {
        if !self.detach_member(member_id, out) {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(config, now_ms, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, out),
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => {}
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ----

    pub fn sync(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        token: Token,
        request: SyncGroup,
        available_bytes: usize,
        out: &mut Out,
    ) -> Result<(), GroupError> {
        let instance = request.group_instance_id.as_deref();
        if self.is_fenced(instance, &request.member_id) {
            return Err(Self::fenced_error(instance));
        }
        if !self.members.contains_key(&request.member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if request.generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration {
                generation_id: request.generation_id,
                current: self.generation_id,
            });
        }
        if request.protocol_type.is_some() && request.protocol_type != self.protocol_type
            || request.protocol_name.is_some() && request.protocol_name != self.protocol_name
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let is_leader = self.is_leader(&request.member_id);
                if is_leader {
                    self.check_assignments(config, &request.assignments, available_bytes)?;
                }
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    member.awaiting_sync = false;
                    member.refresh_session(now_ms);
                    if let Some(superseded) = member.sync_token.replace(token) {
                        let result = SyncResult::failed(GroupError::RebalanceInProgress);
                        out.push((superseded, Response::Sync(result)));
                    }
                }
                if is_leader {
                    self.propagate_assignments(now_ms, request.assignments, out);
                }
                Ok(())
            }
            GroupState::Stable => {
                let Some(member) = self.members.get_mut(&request.member_id) else {
                    return Err(GroupError::UnknownMemberId);
                };
                member.awaiting_sync = false;
                member.refresh_session(now_ms);
                let assignment = member.assignment.clone();
                out.push((token, Response::Sync(self.sync_result(assignment))));
                Ok(())
            }
        }
    }

    fn check_assignments(
        &self,
        config: &CoordinatorConfig,
        assignments: &[(String, Vec<u8>)],
        available_bytes: usize,
    ) -> Result<(), GroupError> {
        let max = config.max_member_assignment_bytes;
        if let Some((member_id, bytes)) = assignments.iter().find(|(_, bytes)| bytes.len() > max) {
            return Err(GroupError::AssignmentTooLarge {
                member_id: member_id.clone(),
                bytes: bytes.len(),
                max,
            });
        }
        let needed: usize = assignments
            .iter()
            .filter(|(member_id, _)| self.members.contains_key(member_id))
            .map(|(_, bytes)| bytes.len())
            .sum();
        let available = available_bytes
            + self
                .members
                .values()
                .map(|m| m.assignment.len())
                .sum::<usize>();
        if needed > available {
            return Err(GroupError::MemoryBudgetExhausted { needed, available });
        }
        Ok(())
    }

    /// The leader's SyncGroup: store every member's assignment (empty if the leader gave none;
    /// entries for non-members are ignored), answer the parked syncs, and settle.
    fn propagate_assignments(
        &mut self,
        now_ms: u64,
        assignments: Vec<(String, Vec<u8>)>,
        out: &mut Out,
    ) {
        let mut by_member: HashMap<String, Vec<u8>> = assignments.into_iter().collect();
        let (protocol_type, protocol_name) =
            (self.protocol_type.clone(), self.protocol_name.clone());
        for member in self.members.values_mut() {
            member.assignment = by_member.remove(&member.member_id).unwrap_or_default();
            if let Some(parked) = member.sync_token.take() {
                member.refresh_session(now_ms);
                let result = SyncResult {
                    error: None,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                out.push((parked, Response::Sync(result)));
            }
        }
        self.state = GroupState::Stable;
    }

    pub fn heartbeat(&mut self, now_ms: u64, request: &Heartbeat) -> Result<(), GroupError> {
        let instance = request.group_instance_id.as_deref();
        if self.is_fenced(instance, &request.member_id) {
            return Err(Self::fenced_error(instance));
        }
        let generation_id = self.generation_id;
        let state = self.state;
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if request.generation_id != generation_id {
            return Err(GroupError::IllegalGeneration {
                generation_id: request.generation_id,
                current: generation_id,
            });
        }
        match state {
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                member.refresh_session(now_ms);
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.refresh_session(now_ms);
                Ok(())
            }
        }
    }

    /// One member of a LeaveGroup. An empty member id with an instance id removes whichever
    /// member holds that instance id (administrative removal, KIP-345).
    pub fn leave(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        leaving: &LeavingMember,
        out: &mut Out,
    ) -> Result<(), GroupError> {
        let instance = leaving.group_instance_id.as_deref();
        if leaving.member_id.is_empty() {
            let Some(member_id) = instance.and_then(|i| self.static_members.get(i)).cloned() else {
                return Err(GroupError::UnknownMemberId);
            };
            self.remove_member(config, now_ms, &member_id, out);
            return Ok(());
        }
        if self
            .pending_members
            .shift_remove(&leaving.member_id)
            .is_some()
        {
            self.try_complete_join(now_ms, out);
            return Ok(());
        }
        if self.is_fenced(instance, &leaving.member_id) {
            return Err(Self::fenced_error(instance));
        }
        if !self.members.contains_key(&leaving.member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        self.remove_member(config, now_ms, &leaving.member_id, out);
        Ok(())
    }

    // ---- time ----

    pub fn tick(&mut self, config: &CoordinatorConfig, now_ms: u64, out: &mut Out) {
        let pending_before = self.pending_members.len();
        self.pending_members
            .retain(|_, deadline_ms| now_ms < *deadline_ms);
        if self.pending_members.len() != pending_before {
            self.try_complete_join(now_ms, out);
        }

        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_parked() && now_ms >= m.session_deadline_ms)
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            self.remove_member(config, now_ms, &member_id, out);
        }

        match self.join_timer {
            Some(JoinTimer::Initial { deadline_ms, .. }) if now_ms >= deadline_ms => {
                self.complete_join(now_ms, out);
            }
            Some(JoinTimer::Normal { deadline_ms }) if now_ms >= deadline_ms => {
                self.complete_join(now_ms, out)
            }
            _ => {}
        }

        if let Some(deadline_ms) = self.sync_deadline_ms
            && now_ms >= deadline_ms
        {
            self.sync_deadline_ms = None;
            let laggards: Vec<String> = self
                .members
                .values()
                .filter(|m| m.awaiting_sync)
                .map(|m| m.member_id.clone())
                .collect();
            if !laggards.is_empty() {
                for member_id in &laggards {
                    self.detach_member(member_id, out);
                }
                self.prepare_rebalance(config, now_ms, out);
            }
        }
    }

    // ---- reads ----

    pub fn validate_offset_commit(
        &self,
        generation_id: GenerationId,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.is_fenced(group_instance_id, member_id) {
            return Err(Self::fenced_error(group_instance_id));
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration {
                generation_id,
                current: self.generation_id,
            });
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = if stable {
            self.protocol_name.clone()
        } else {
            None
        };
        GroupDescription {
            group_id: self.group_id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            leader_id: self.leader_id.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(protocol.as_deref())
                    } else {
                        Vec::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        }
    }

    /// Internal consistency, for tests: panics with a description of the first broken rule.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let id = &self.group_id;
        match &self.leader_id {
            Some(leader) => assert!(
                self.members.contains_key(leader),
                "{id}: leader {leader} is not a member"
            ),
            None => assert!(self.members.is_empty(), "{id}: members but no leader"),
        }
        for (instance, member_id) in &self.static_members {
            let member = self.members.get(member_id);
            assert!(
                member.is_some_and(|m| m.group_instance_id.as_deref() == Some(instance.as_str())),
                "{id}: static mapping {instance} -> {member_id} is stale"
            );
        }
        for member in self.members.values() {
            if let Some(instance) = &member.group_instance_id {
                assert_eq!(
                    self.static_members.get(instance),
                    Some(&member.member_id),
                    "{id}: unmapped static member"
                );
            }
            if member.join_token.is_some() {
                assert_eq!(
                    self.state,
                    GroupState::PreparingRebalance,
                    "{id}: parked join outside a rebalance"
                );
            }
            if member.sync_token.is_some() {
                assert_eq!(
                    self.state,
                    GroupState::CompletingRebalance,
                    "{id}: parked sync outside sync phase"
                );
            }
            assert!(
                !self.pending_members.contains_key(&member.member_id),
                "{id}: member is also pending"
            );
        }
        assert_eq!(
            self.state == GroupState::PreparingRebalance,
            self.join_timer.is_some(),
            "{id}: join timer iff PreparingRebalance"
        );
        match self.state {
            GroupState::Empty => {
                assert!(self.members.is_empty(), "{id}: Empty group has members");
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(
                    !self.members.is_empty(),
                    "{id}: {:?} without members",
                    self.state
                );
                let protocol = self.protocol_name.as_deref();
                assert!(protocol.is_some(), "{id}: no protocol chosen");
                for member in self.members.values() {
                    assert!(
                        member.supports(protocol.unwrap_or_default()),
                        "{id}: member lacks the protocol"
                    );
                }
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
            GroupState::Assigning | GroupState::Reconciling => {
                panic!("{id}: consumer-protocol state in a classic group")
            }
        }
        assert!(
            self.members.len() + self.pending_members.len() > 0 || self.static_members.is_empty()
        );
    }
}
