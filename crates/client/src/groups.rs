//! Consumer-group admin: list, describe and delete groups, fetch and commit their offsets, and a
//! minimal group membership (join, sync, heartbeat, leave) for tools and tests.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::{
    self, ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::check;
use crate::{Client, Offset, PartitionId, Result, missing, str_bytes, topic_name};

/// A group's generation: it grows by one with every completed rebalance.
pub type GenerationId = i32;

/// [`Client::offset_commit`] generation for a commit from outside the group (a tool resetting
/// offsets); the broker accepts it only while the group has no members.
pub const STANDALONE_GENERATION: GenerationId = -1;

/// The highest ConsumerProtocolAssignment/Subscription version kafka-protocol knows. Newer
/// versions only add fields at the end, so Kafka's own clients read them with the highest version
/// they know; so does [`decode_consumer_assignment`].
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

/// Kafka's MEMBER_ID_REQUIRED: JoinGroup v4+ asks a new member to join again with the id it
/// was given.
const MEMBER_ID_REQUIRED: i16 = 79;

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// `Empty`, `Stable`, ...; `None` from brokers before ListGroups v4.
    pub state: Option<String>,
}

/// One group as DescribeGroups reports it. A group the broker does not know is `Dead` with no
/// members.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    /// `consumer` for Kafka consumers; empty for a group that does not exist.
    pub protocol_type: String,
    /// The chosen assignor, e.g. `range`; empty unless the group is `Stable`.
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The partitions the member owns, when its assignment is a consumer-protocol assignment
    /// (`None` when the bytes do not decode as one).
    pub assignment: Option<Vec<TopicPartitions>>,
}

/// Some partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<PartitionId>,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: PartitionId,
    /// `None` when the group has committed nothing for this partition.
    pub offset: Option<Offset>,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// What [`Client::join_group`] got back.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedGroup {
    pub member_id: String,
    pub generation_id: GenerationId,
    pub leader_id: String,
    pub protocol: Option<String>,
    /// Every member's id, for the leader only (followers get an empty list).
    pub member_ids: Vec<String>,
}

/// Reads a consumer protocol assignment (a version i16 followed by a
/// `ConsumerProtocolAssignment` of that version). Empty bytes are an empty assignment (a member
/// between JoinGroup and SyncGroup); `None` means the bytes are not a consumer assignment.
pub fn decode_consumer_assignment(bytes: &[u8]) -> Option<Vec<TopicPartitions>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    if version < 0 {
        return None;
    }
    let _ = bytes::Buf::get_i16(&mut buf);
    let assignment =
        ConsumerProtocolAssignment::decode(&mut buf, version.min(CONSUMER_PROTOCOL_VERSION_MAX))
            .ok()?;
    Some(
        assignment
            .assigned_partitions
            .into_iter()
            .map(|tp| TopicPartitions {
                topic: tp.topic.0.to_string(),
                partitions: tp.partitions,
            })
            .collect(),
    )
}

/// Writes a version-0 consumer protocol assignment, as a group leader sends it in SyncGroup.
pub fn encode_consumer_assignment(assignment: &[TopicPartitions]) -> Bytes {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assignment
            .iter()
            .map(|tp| {
                messages::consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(topic_name(&tp.topic))
                    .with_partitions(tp.partitions.clone())
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    message
        .encode(&mut buf, 0)
        .expect("a v0 assignment always encodes");
    buf.freeze()
}

fn encode_consumer_subscription(topics: &[&str]) -> Bytes {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| str_bytes(t)).collect());
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    message
        .encode(&mut buf, 0)
        .expect("a v0 subscription always encodes");
    buf.freeze()
}

fn group_id(name: &str) -> GroupId {
    GroupId(str_bytes(name))
}

impl Client {
    /// Every group the broker coordinates, sorted by id.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>> {
        let response = self.send(&ListGroupsRequest::default()).await?;
        check(ApiKey::ListGroups, response.error_code, None, String::new)?;
        let version = self.api_version(ApiKey::ListGroups).unwrap_or(0);
        let mut groups: Vec<GroupListing> = response
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: (version >= 4).then(|| g.group_state.to_string()),
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// Describes groups, in the order asked.
    pub async fn describe_groups<N: AsRef<str>>(
        &mut self,
        names: &[N],
    ) -> Result<Vec<GroupDescription>> {
        let request = DescribeGroupsRequest::default()
            .with_groups(names.iter().map(|n| group_id(n.as_ref())).collect());
        let response = self.send(&request).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            let group = response
                .groups
                .iter()
                .find(|g| g.group_id.0.as_str() == name)
                .ok_or_else(|| missing(ApiKey::DescribeGroups, format!("group {name}")))?;
            check(
                ApiKey::DescribeGroups,
                group.error_code,
                group.error_message.as_deref(),
                || format!("group {name}"),
            )?;
            let consumer = group.protocol_type.as_str() == "consumer";
            out.push(GroupDescription {
                group_id: name.to_owned(),
                state: group.group_state.to_string(),
                protocol_type: group.protocol_type.to_string(),
                protocol: group.protocol_data.to_string(),
                members: group
                    .members
                    .iter()
                    .map(|m| GroupMember {
                        member_id: m.member_id.to_string(),
                        group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                        client_id: m.client_id.to_string(),
                        client_host: m.client_host.to_string(),
                        assignment: if consumer {
                            decode_consumer_assignment(&m.member_assignment)
                        } else {
                            None
                        },
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// A group's committed offsets: for the given partitions (`offset: None` where nothing is
    /// committed), or, with `topics: None`, for every partition the group has committed.
    pub async fn offset_fetch(
        &mut self,
        group: &str,
        topics: Option<&[TopicPartitions]>,
    ) -> Result<Vec<CommittedOffset>> {
        let version = self.version_for(ApiKey::OffsetFetch)?;
        let context = || format!("group {group}");
        let mut request = OffsetFetchRequest::default();
        if version >= 8 {
            let wanted = topics.map(|topics| {
                topics
                    .iter()
                    .map(|tp| {
                        messages::offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic_name(&tp.topic))
                            .with_partition_indexes(tp.partitions.clone())
                    })
                    .collect()
            });
            request.groups = vec![
                messages::offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group_id(group))
                    .with_topics(wanted),
            ];
        } else {
            request.group_id = group_id(group);
            request.topics = topics.map(|topics| {
                topics
                    .iter()
                    .map(|tp| {
                        messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic_name(&tp.topic))
                            .with_partition_indexes(tp.partitions.clone())
                    })
                    .collect()
            });
        }
        let response = self.send(&request).await?;
        // Each committed offset with its partition's error code.
        let mut answered: Vec<(CommittedOffset, i16)> = Vec::new();
        let mut answer = |topic: &TopicName, partition, offset, leader_epoch, metadata, error| {
            let metadata: Option<StrBytes> = metadata;
            let committed = CommittedOffset {
                topic: topic.0.to_string(),
                partition,
                offset: (offset >= 0).then_some(offset),
                leader_epoch,
                metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
            };
            answered.push((committed, error));
        };
        if version >= 8 {
            let group_answer = response
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| missing(ApiKey::OffsetFetch, context()))?;
            check(ApiKey::OffsetFetch, group_answer.error_code, None, context)?;
            for topic in group_answer.topics {
                for p in topic.partitions {
                    answer(
                        &topic.name,
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata,
                        p.error_code,
                    );
                }
            }
        } else {
            check(ApiKey::OffsetFetch, response.error_code, None, context)?;
            for topic in response.topics {
                for p in topic.partitions {
                    answer(
                        &topic.name,
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata,
                        p.error_code,
                    );
                }
            }
        }
        let mut out = Vec::with_capacity(answered.len());
        for (committed, error_code) in answered {
            check(ApiKey::OffsetFetch, error_code, None, || {
                format!(
                    "group {group} topic {} partition {}",
                    committed.topic, committed.partition
                )
            })?;
            out.push(committed);
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Commits offsets `(topic, partition, offset)` for a group. A member commits with its
    /// generation and member id; a tool commits with [`STANDALONE_GENERATION`] and an empty
    /// member id, which the broker accepts only while the group has no members. The first
    /// partition the broker refuses is the error.
    pub async fn offset_commit(
        &mut self,
        group: &str,
        generation_id: GenerationId,
        member_id: &str,
        offsets: &[(String, PartitionId, Offset)],
    ) -> Result<()> {
        let mut topics: Vec<messages::offset_commit_request::OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let partition =
                messages::offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    messages::offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(generation_id)
            .with_member_id(str_bytes(member_id))
            .with_topics(topics);
        let response = self.send(&request).await?;
        for (topic, partition, _) in offsets {
            let answer = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == *partition)
                .ok_or_else(|| {
                    missing(
                        ApiKey::OffsetCommit,
                        format!("topic {topic} partition {partition}"),
                    )
                })?;
            check(ApiKey::OffsetCommit, answer.error_code, None, || {
                format!("group {group} topic {topic} partition {partition}")
            })?;
        }
        Ok(())
    }

    /// Deletes groups and their committed offsets; the first refusal is the error.
    pub async fn delete_groups<N: AsRef<str>>(&mut self, names: &[N]) -> Result<()> {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(names.iter().map(|n| group_id(n.as_ref())).collect());
        let response = self.send(&request).await?;
        for name in names {
            let name = name.as_ref();
            let result = response
                .results
                .iter()
                .find(|r| r.group_id.0.as_str() == name)
                .ok_or_else(|| missing(ApiKey::DeleteGroups, format!("group {name}")))?;
            check(ApiKey::DeleteGroups, result.error_code, None, || {
                format!("group {name}")
            })?;
        }
        Ok(())
    }

    /// Joins a group as a consumer subscribed to `topics` with the `range` protocol, answering
    /// MEMBER_ID_REQUIRED by joining again with the given id. Waits until the rebalance ends.
    pub async fn join_group(
        &mut self,
        group: &str,
        member_id: &str,
        session_timeout_ms: i32,
        topics: &[&str],
    ) -> Result<JoinedGroup> {
        let mut member_id = member_id.to_owned();
        loop {
            let request = JoinGroupRequest::default()
                .with_group_id(group_id(group))
                .with_session_timeout_ms(session_timeout_ms)
                .with_rebalance_timeout_ms(session_timeout_ms)
                .with_member_id(str_bytes(&member_id))
                .with_protocol_type(str_bytes("consumer"))
                .with_protocols(vec![
                    messages::join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(str_bytes("range"))
                        .with_metadata(encode_consumer_subscription(topics)),
                ]);
            let response = self.send(&request).await?;
            if response.error_code == MEMBER_ID_REQUIRED && member_id.is_empty() {
                member_id = response.member_id.to_string();
                continue;
            }
            check(ApiKey::JoinGroup, response.error_code, None, || {
                format!("group {group}")
            })?;
            return Ok(JoinedGroup {
                member_id: response.member_id.to_string(),
                generation_id: response.generation_id,
                leader_id: response.leader.to_string(),
                protocol: response.protocol_name.map(|p| p.to_string()),
                member_ids: response
                    .members
                    .iter()
                    .map(|m| m.member_id.to_string())
                    .collect(),
            });
        }
    }

    /// Ends a rebalance: the leader sends every member's assignment (others send none) and each
    /// member gets its own back.
    pub async fn sync_group(
        &mut self,
        group: &str,
        generation_id: GenerationId,
        member_id: &str,
        assignments: &[(String, Vec<TopicPartitions>)],
    ) -> Result<Option<Vec<TopicPartitions>>> {
        let request = SyncGroupRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id(generation_id)
            .with_member_id(str_bytes(member_id))
            .with_protocol_type(Some(str_bytes("consumer")))
            .with_protocol_name(Some(str_bytes("range")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(member, assignment)| {
                        messages::sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(str_bytes(member))
                            .with_assignment(encode_consumer_assignment(assignment))
                    })
                    .collect(),
            );
        let response = self.send(&request).await?;
        check(ApiKey::SyncGroup, response.error_code, None, || {
            format!("group {group}")
        })?;
        Ok(decode_consumer_assignment(&response.assignment))
    }

    /// Tells the coordinator the member is alive.
    pub async fn heartbeat(
        &mut self,
        group: &str,
        generation_id: GenerationId,
        member_id: &str,
    ) -> Result<()> {
        let request = HeartbeatRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id(generation_id)
            .with_member_id(str_bytes(member_id));
        let response = self.send(&request).await?;
        check(ApiKey::Heartbeat, response.error_code, None, || {
            format!("group {group}")
        })
    }

    /// Leaves a group.
    pub async fn leave_group(&mut self, group: &str, member_id: &str) -> Result<()> {
        let version = self.version_for(ApiKey::LeaveGroup)?;
        let mut request = LeaveGroupRequest::default().with_group_id(group_id(group));
        if version >= 3 {
            request.members = vec![
                messages::leave_group_request::MemberIdentity::default()
                    .with_member_id(str_bytes(member_id)),
            ];
        } else {
            request.member_id = str_bytes(member_id);
        }
        let response = self.send(&request).await?;
        check(ApiKey::LeaveGroup, response.error_code, None, || {
            format!("group {group}")
        })?;
        for member in &response.members {
            check(ApiKey::LeaveGroup, member.error_code, None, || {
                format!("group {group} member {member_id}")
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partitions: &[PartitionId]) -> TopicPartitions {
        TopicPartitions {
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
        }
    }

    #[test]
    fn assignments_round_trip_and_garbage_is_none() {
        let assignment = vec![tp("orders", &[0, 2]), tp("clicks", &[1])];
        let bytes = encode_consumer_assignment(&assignment);
        assert_eq!(decode_consumer_assignment(&bytes), Some(assignment.clone()));

        // Versions 1..=3 have the same layout; a newer version is read as the newest known.
        for version in [1i16, 3, 7] {
            let mut other = BytesMut::from(&bytes[..]);
            other[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                decode_consumer_assignment(&other),
                Some(assignment.clone()),
                "v{version}"
            );
        }
        assert_eq!(decode_consumer_assignment(b""), Some(Vec::new()));
        assert_eq!(decode_consumer_assignment(b"\x00"), None);
        assert_eq!(decode_consumer_assignment(b"\xff\xff\x00\x00"), None);
        assert_eq!(decode_consumer_assignment(b"\x00\x00\x00\x05ab"), None);
        assert_eq!(decode_consumer_assignment(&bytes[..bytes.len() - 3]), None);
    }
}
