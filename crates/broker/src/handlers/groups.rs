//! Consumer groups on the wire: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups. Membership
//! is decided by `groups::Coordinator`; this module converts wire types and waits for answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use groups::{GroupError, GroupState, Response};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, ResponseKind, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::Broker;
use crate::error::KafkaError;
use crate::offsets::{CommittedOffset, OffsetStore};
use crate::partition::now_ms;
use crate::server::Reply;

use super::{Context, text};

/// Committed offsets of one topic's partitions (`None`: nothing committed).
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);
/// Per partition of one topic: accepted, or the error to answer.
type PartitionOutcomes = Vec<(i32, Result<(), KafkaError>)>;

fn code(error: Option<&GroupError>) -> i16 {
    error.map_or(0, |error| KafkaError::from(error.clone()).code())
}

fn optional(value: Option<StrBytes>) -> Option<String> {
    value
        .map(|value| value.to_string())
        .filter(|value| !value.is_empty())
}

pub fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let config = &broker.config;
    // Key type 0 is a consumer group. 1 (transactions) has no coordinator here yet. Clients
    // retry most errors here for ever; an authorization error is fatal to them, so transactional
    // producers fail at once, with the message saying why.
    let refusal = (request.key_type != 0).then(|| {
        (
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            text("transactions are not supported yet: there is no transaction coordinator"),
        )
    });
    if version < 4 {
        return match refusal {
            Some((error, message)) => FindCoordinatorResponse::default()
                .with_error_code(error)
                .with_error_message(if version >= 1 { Some(message) } else { None })
                .with_node_id(BrokerId(-1))
                .with_port(-1),
            None => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(config.node_id))
                .with_host(text(config.advertised_host.clone()))
                .with_port(config.advertised_port),
        };
    }
    let coordinators = request
        .coordinator_keys
        .into_iter()
        .map(|key| {
            let entry = CoordinatorEntry::default().with_key(key);
            match &refusal {
                Some((error, message)) => entry
                    .with_error_code(*error)
                    .with_error_message(Some(message.clone()))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
                None => entry
                    .with_node_id(BrokerId(config.node_id))
                    .with_host(text(config.advertised_host.clone()))
                    .with_port(config.advertised_port),
            }
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

pub fn join_group(broker: &Arc<Broker>, request: JoinGroupRequest, context: &Context) -> Reply {
    let version = context.version;
    let join = groups::JoinGroup {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: optional(request.group_instance_id),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| groups::Protocol {
                name: protocol.name.to_string(),
                metadata: protocol.metadata.to_vec(),
            })
            .collect(),
        client_id: context.client_id.clone(),
        client_host: format!("/{}", context.client_host),
        require_known_member_id: version >= 4,
        reason: optional(request.reason),
    };
    let answer = broker
        .groups
        .park(|coordinator, now_ms, token| coordinator.join_group(now_ms, token, join));
    Reply::Later(Box::pin(async move {
        let result = match answer.await {
            Ok(Response::Join(result)) => result,
            _ => {
                return ResponseKind::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                        .with_generation_id(-1)
                        .with_protocol_name(if version >= 7 {
                            None
                        } else {
                            Some(StrBytes::default())
                        }),
                );
            }
        };
        let members = result
            .members
            .into_iter()
            .map(|member| {
                JoinGroupResponseMember::default()
                    .with_member_id(text(member.member_id))
                    .with_group_instance_id(member.group_instance_id.map(text))
                    .with_metadata(Bytes::from(member.metadata))
            })
            .collect();
        let protocol_name = match (result.protocol_name, version >= 7) {
            (Some(name), _) => Some(text(name)),
            (None, true) => None,
            (None, false) => Some(StrBytes::default()),
        };
        ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(code(result.error.as_ref()))
                .with_generation_id(result.generation_id)
                .with_protocol_type(result.protocol_type.map(text))
                .with_protocol_name(protocol_name)
                .with_leader(text(result.leader))
                .with_member_id(text(result.member_id))
                .with_members(members),
        )
    }))
}

pub fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> Reply {
    let sync = groups::SyncGroup {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: optional(request.group_instance_id),
        protocol_type: optional(request.protocol_type),
        protocol_name: optional(request.protocol_name),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| {
                (
                    assignment.member_id.to_string(),
                    assignment.assignment.to_vec(),
                )
            })
            .collect(),
    };
    let answer = broker
        .groups
        .park(|coordinator, now_ms, token| coordinator.sync_group(now_ms, token, sync));
    Reply::Later(Box::pin(async move {
        let response = match answer.await {
            Ok(Response::Sync(result)) => {
                let response = SyncGroupResponse::default()
                    .with_error_code(code(result.error.as_ref()))
                    .with_assignment(Bytes::from(result.assignment));
                if version >= 5 {
                    response
                        .with_protocol_type(result.protocol_type.map(text))
                        .with_protocol_name(result.protocol_name.map(text))
                } else {
                    response
                }
            }
            _ => SyncGroupResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
        };
        ResponseKind::SyncGroup(response)
    }))
}

pub fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let heartbeat = groups::Heartbeat {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: optional(request.group_instance_id),
    };
    let outcome = broker
        .groups
        .with(|coordinator, now_ms| coordinator.heartbeat(now_ms, heartbeat));
    HeartbeatResponse::default().with_error_code(code(outcome.err().as_ref()))
}

pub fn leave_group(
    broker: &Arc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let leaving: Vec<groups::LeavingMember> = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| groups::LeavingMember {
                member_id: member.member_id.to_string(),
                group_instance_id: optional(member.group_instance_id.clone()),
            })
            .collect()
    } else {
        vec![groups::LeavingMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let group_id = request.group_id.0.to_string();
    let outcome = broker
        .groups
        .with(|coordinator, now_ms| coordinator.leave_group(now_ms, &group_id, leaving.clone()));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return LeaveGroupResponse::default().with_error_code(code(Some(&error))),
    };
    broker.groups.deliver(outcome.responses);
    if version < 3 {
        let error = outcome
            .members
            .first()
            .and_then(|result| result.as_ref().err());
        return LeaveGroupResponse::default().with_error_code(code(error));
    }
    let members = leaving
        .into_iter()
        .zip(outcome.members)
        .map(|(member, result)| {
            MemberResponse::default()
                .with_member_id(text(member.member_id))
                .with_group_instance_id(member.group_instance_id.map(text))
                .with_error_code(code(result.err().as_ref()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub fn offset_commit(broker: &Arc<Broker>, request: OffsetCommitRequest) -> Reply {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = optional(request.group_instance_id);
    let allowed = broker.groups.with(|coordinator, _| {
        coordinator.validate_offset_commit(
            &group_id,
            request.generation_id_or_member_epoch,
            &member_id,
            instance_id.as_deref(),
        )
    });
    let timestamp = now_ms();
    // Per partition: Ok(commit) to write, or the error to answer.
    let mut outcomes: Vec<(TopicName, PartitionOutcomes)> = Vec::new();
    let mut changes = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let known = broker.topics.get(&name);
        let partitions = topic
            .partitions
            .into_iter()
            .map(|partition| {
                let index = partition.partition_index;
                let metadata = partition
                    .committed_metadata
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let outcome = allowed
                    .clone()
                    .map_err(KafkaError::from)
                    .and_then(|()| match &known {
                        Some(topic) if topic.partition(index).is_some() => Ok(()),
                        _ => Err(KafkaError::unknown_partition(&name, index)),
                    })
                    .and_then(|()| OffsetStore::validate_metadata(&metadata))
                    .map(|()| {
                        changes.push((
                            (name.clone(), index),
                            Some(CommittedOffset {
                                offset: partition.committed_offset,
                                leader_epoch: partition.committed_leader_epoch,
                                metadata,
                                commit_timestamp_ms: timestamp,
                            }),
                        ));
                    });
                (index, outcome)
            })
            .collect();
        outcomes.push((topic.name, partitions));
    }
    let written = broker
        .groups
        .offsets
        .write(&group_id, &changes, &broker.flusher);
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let write_error = match written {
            Ok(last_offset) if last_offset >= 0 => {
                broker.groups.offsets.wait_durable(last_offset).await;
                None
            }
            Ok(_) => None,
            Err(error) => Some(error.code()),
        };
        let topics = outcomes
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, outcome)| {
                                let error = match outcome {
                                    Ok(()) => write_error.unwrap_or(0),
                                    Err(error) => error.code(),
                                };
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect();
        ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
    }))
}

/// Committed offsets of one group: `(topic, [(partition, committed)])`, for the requested
/// topics (all partitions asked for, -1 where nothing is committed) or for every committed one.
fn committed_for(
    store: &OffsetStore,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<TopicOffsets> {
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let entries = partitions
                    .into_iter()
                    .map(|partition| (partition, store.get(group, &topic, partition)))
                    .collect();
                (topic, entries)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<TopicOffsets> = Vec::new();
            for ((topic, partition), committed) in store.group(group) {
                match by_topic.last_mut() {
                    Some((last, entries)) if *last == topic => {
                        entries.push((partition, Some(committed)))
                    }
                    _ => by_topic.push((topic, vec![(partition, Some(committed))])),
                }
            }
            by_topic
        }
    }
}

/// OffsetFetch's answer for some topics, in either of its layouts (v0-7 and v8+ use different
/// types with the same fields).
macro_rules! fetched_topics {
    ($topic:ty, $partition:ty, $entries:expr, $leader_epoch:expr) => {
        $entries
            .into_iter()
            .map(|(topic, entries)| {
                <$topic>::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(
                        entries
                            .into_iter()
                            .map(|(partition, committed): (i32, Option<CommittedOffset>)| {
                                <$partition>::default()
                                    .with_partition_index(partition)
                                    .with_committed_offset(
                                        committed.as_ref().map_or(-1, |c| c.offset),
                                    )
                                    .with_committed_leader_epoch($leader_epoch(&committed))
                                    .with_metadata(Some(text(
                                        committed.map(|c| c.metadata).unwrap_or_default(),
                                    )))
                            })
                            .collect(),
                    )
            })
            .collect()
    };
}

pub fn offset_fetch(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let store = &broker.groups.offsets;
    let leader_epoch = |committed: &Option<CommittedOffset>| {
        if version >= 5 {
            committed.as_ref().map_or(-1, |c| c.leader_epoch)
        } else {
            -1
        }
    };
    if version < 8 {
        let wanted = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                .collect()
        });
        let topics = fetched_topics!(
            OffsetFetchResponseTopic,
            OffsetFetchResponsePartition,
            committed_for(store, request.group_id.0.as_str(), wanted),
            leader_epoch
        );
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let groups = request
        .groups
        .into_iter()
        .map(|group| {
            let wanted = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                    .collect()
            });
            let topics = fetched_topics!(
                OffsetFetchResponseTopics,
                OffsetFetchResponsePartitions,
                committed_for(store, group.group_id.0.as_str(), wanted),
                leader_epoch
            );
            OffsetFetchResponseGroup::default()
                .with_group_id(group.group_id)
                .with_topics(topics)
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}

pub fn offset_delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> Reply {
    let group_id = request.group_id.0.to_string();
    let active = broker
        .groups
        .with(|coordinator, _| coordinator.is_active(&group_id));
    let known = active || !broker.groups.offsets.group(&group_id).is_empty();
    if !known {
        return Reply::Now(ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code()),
        ));
    }
    // An active group may still be consuming these topics: Kafka refuses then.
    let partition_error = if active {
        ResponseError::GroupSubscribedToTopic.code()
    } else {
        0
    };
    let mut changes = Vec::new();
    let topics: Vec<OffsetDeleteResponseTopic> = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|partition| {
                    if !active {
                        changes.push(((name.clone(), partition.partition_index), None));
                    }
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(partition_error)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    let written = broker
        .groups
        .offsets
        .write(&group_id, &changes, &broker.flusher);
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let error = match written {
            Ok(last_offset) => {
                if last_offset >= 0 {
                    broker.groups.offsets.wait_durable(last_offset).await;
                }
                0
            }
            Err(error) => error.code(),
        };
        ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default()
                .with_error_code(error)
                .with_topics(topics),
        )
    }))
}

/// Groups the coordinator knows plus groups that only have committed offsets (Empty).
fn all_groups(broker: &Broker) -> Vec<groups::GroupListing> {
    let mut listings = broker
        .groups
        .with(|coordinator, _| coordinator.list_groups());
    let known: BTreeSet<String> = listings
        .iter()
        .map(|listing| listing.group_id.clone())
        .collect();
    for group_id in broker.groups.offsets.groups() {
        if !known.contains(&group_id) {
            listings.push(groups::GroupListing {
                group_id,
                protocol_type: "consumer".into(),
                state: GroupState::Empty,
                group_type: groups::GroupType::Classic,
            });
        }
    }
    listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    listings
}

pub fn list_groups(
    broker: &Arc<Broker>,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let groups = all_groups(broker)
        .into_iter()
        .filter(|listing| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|state| state.eq_ignore_ascii_case(listing.state.as_str()))
        })
        .filter(|listing| {
            request.types_filter.is_empty()
                || request
                    .types_filter
                    .iter()
                    .any(|kind| kind.eq_ignore_ascii_case(listing.group_type.as_str()))
        })
        .map(|listing| {
            let mut group = ListedGroup::default()
                .with_group_id(GroupId(text(listing.group_id)))
                .with_protocol_type(text(listing.protocol_type));
            if version >= 4 {
                group = group.with_group_state(text(listing.state.as_str()));
            }
            if version >= 5 {
                group = group.with_group_type(text(listing.group_type.as_str()));
            }
            group
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let mut description = broker
                .groups
                .with(|coordinator, _| coordinator.describe_group(group_id.0.as_str()));
            if description.state == GroupState::Dead {
                if let Ok(consumer_group) = broker
                    .groups
                    .with(|coordinator, _| coordinator.describe_consumer_group(group_id.0.as_str()))
                {
                    return described_consumer_group(group_id, consumer_group);
                }
                if !broker.groups.offsets.group(group_id.0.as_str()).is_empty() {
                    description.state = GroupState::Empty;
                    description.protocol_type = "consumer".into();
                }
            }
            let members = description
                .members
                .into_iter()
                .map(|member| {
                    DescribedGroupMember::default()
                        .with_member_id(text(member.member_id))
                        .with_group_instance_id(member.group_instance_id.map(text))
                        .with_client_id(text(member.client_id))
                        .with_client_host(text(member.client_host))
                        .with_member_metadata(Bytes::from(member.metadata))
                        .with_member_assignment(Bytes::from(member.assignment))
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(group_id)
                .with_group_state(text(description.state.as_str()))
                .with_protocol_type(text(description.protocol_type))
                .with_protocol_data(text(description.protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// A KIP-848 group in DescribeGroups' terms, as Kafka shows it to older tools: protocol type
/// `consumer`, the assignor as protocol, and each member's current assignment encoded as a
/// consumer-protocol assignment.
fn described_consumer_group(
    group_id: GroupId,
    group: groups::ConsumerGroupDescription,
) -> DescribedGroup {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;
    let members = group
        .members
        .into_iter()
        .map(|member| {
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                member
                    .assignment
                    .into_iter()
                    .map(|topic| {
                        TopicPartition::default()
                            .with_topic(TopicName(text(topic.topic_name)))
                            .with_partitions(topic.partitions)
                    })
                    .collect(),
            );
            let mut bytes = bytes::BytesMut::new();
            bytes.extend_from_slice(&0i16.to_be_bytes());
            assignment
                .encode(&mut bytes, 0)
                .expect("a v0 consumer assignment always encodes");
            DescribedGroupMember::default()
                .with_member_id(text(member.member_id))
                .with_group_instance_id(member.instance_id.map(text))
                .with_client_id(text(member.client_id))
                .with_client_host(text(member.client_host))
                .with_member_assignment(bytes.freeze())
        })
        .collect();
    DescribedGroup::default()
        .with_group_id(group_id)
        .with_group_state(text(group.state.as_str()))
        .with_protocol_type(text("consumer"))
        .with_protocol_data(text(group.assignor_name))
        .with_members(members)
}

pub fn delete_groups(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> Reply {
    let mut pending = Vec::new();
    let results: Vec<DeletableGroupResult> = request
        .groups_names
        .into_iter()
        .map(|group_id| {
            let name = group_id.0.to_string();
            let committed = broker.groups.offsets.group(&name);
            let deleted = broker
                .groups
                .with(|coordinator, _| coordinator.delete_group(&name));
            let error = match deleted {
                Ok(()) => 0,
                Err(GroupError::GroupIdNotFound) if !committed.is_empty() => 0,
                Err(error) => code(Some(&error)),
            };
            if error == 0 && !committed.is_empty() {
                let changes: Vec<_> = committed.into_keys().map(|key| (key, None)).collect();
                match broker
                    .groups
                    .offsets
                    .write(&name, &changes, &broker.flusher)
                {
                    Ok(last_offset) => pending.push(last_offset),
                    Err(error) => {
                        return DeletableGroupResult::default()
                            .with_group_id(group_id)
                            .with_error_code(error.code());
                    }
                }
            }
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error)
        })
        .collect();
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        if let Some(last_offset) = pending.into_iter().max() {
            broker.groups.offsets.wait_durable(last_offset).await;
        }
        ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
    }))
}

/// The broker's topics as the consumer-group assignor sees them: id and partition count.
struct BrokerTopics<'a>(&'a crate::topics::Topics);

impl groups::TopicMetadata for BrokerTopics<'_> {
    fn topic(&self, name: &str) -> Option<(groups::TopicId, i32)> {
        let topic = self.0.get(name)?;
        Some((
            groups::TopicId(*topic.id.as_bytes()),
            topic.partition_count(),
        ))
    }

    fn topic_names(&self) -> Vec<String> {
        let topics = self.0.all();
        topics
            .iter()
            .filter(|topic| !topic.is_internal())
            .map(|topic| topic.name.to_string())
            .collect()
    }
}

fn topic_partitions_from_wire(
    partitions: Vec<kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions>,
) -> Vec<groups::TopicPartitions> {
    partitions
        .into_iter()
        .map(|owned| groups::TopicPartitions {
            topic_id: groups::TopicId(*owned.topic_id.as_bytes()),
            partitions: owned.partitions,
        })
        .collect()
}

/// ConsumerGroupHeartbeat (KIP-848): the whole protocol of the new consumer group; always
/// answered at once.
pub fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    request: kafka_protocol::messages::ConsumerGroupHeartbeatRequest,
    context: &Context,
) -> kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_response::{
        Assignment, TopicPartitions,
    };
    let heartbeat = groups::ConsumerGroupHeartbeat {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: optional(request.instance_id),
        rack_id: optional(request.rack_id),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
        subscribed_topic_regex: request
            .subscribed_topic_regex
            .map(|regex| regex.to_string()),
        server_assignor: optional(request.server_assignor),
        topic_partitions: request.topic_partitions.map(topic_partitions_from_wire),
        client_id: context.client_id.clone(),
        client_host: format!("/{}", context.client_host),
    };
    let topics = BrokerTopics(&broker.topics);
    let result = broker.groups.with(|coordinator, now_ms| {
        coordinator.consumer_group_heartbeat(now_ms, heartbeat, &topics)
    });
    let error = result
        .error
        .as_ref()
        .map(|error| KafkaError::from(error.clone()));
    kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default()
        .with_error_code(error.as_ref().map_or(0, KafkaError::code))
        .with_error_message(error.map(|error| text(error.message)))
        .with_member_id(Some(text(result.member_id)))
        .with_member_epoch(result.member_epoch)
        .with_heartbeat_interval_ms(result.heartbeat_interval_ms)
        .with_assignment(result.assignment.map(|assigned| {
            Assignment::default().with_topic_partitions(
                assigned
                    .into_iter()
                    .map(|owned| {
                        TopicPartitions::default()
                            .with_topic_id(uuid::Uuid::from_bytes(owned.topic_id.0))
                            .with_partitions(owned.partitions)
                    })
                    .collect(),
            )
        }))
}

/// ConsumerGroupDescribe (KIP-848): groups of the new protocol, with member epochs and both
/// current and target assignments.
pub fn consumer_group_describe(
    broker: &Arc<Broker>,
    request: kafka_protocol::messages::ConsumerGroupDescribeRequest,
) -> kafka_protocol::messages::ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup as Described, Member, TopicPartitions,
    };
    let assignment = |topics: Vec<groups::TopicAssignment>| {
        Assignment::default().with_topic_partitions(
            topics
                .into_iter()
                .map(|topic| {
                    TopicPartitions::default()
                        .with_topic_id(uuid::Uuid::from_bytes(topic.topic_id.0))
                        .with_topic_name(TopicName(text(topic.topic_name)))
                        .with_partitions(topic.partitions)
                })
                .collect(),
        )
    };
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            match broker
                .groups
                .with(|coordinator, _| coordinator.describe_consumer_group(group_id.0.as_str()))
            {
                Ok(description) => Described::default()
                    .with_group_id(group_id)
                    .with_group_state(text(description.state.as_str()))
                    .with_group_epoch(description.group_epoch)
                    .with_assignment_epoch(description.assignment_epoch)
                    .with_assignor_name(text(description.assignor_name))
                    .with_members(
                        description
                            .members
                            .into_iter()
                            .map(|member| {
                                Member::default()
                                    .with_member_id(text(member.member_id))
                                    .with_instance_id(member.instance_id.map(text))
                                    .with_rack_id(member.rack_id.map(text))
                                    .with_member_epoch(member.member_epoch)
                                    .with_client_id(text(member.client_id))
                                    .with_client_host(text(member.client_host))
                                    .with_subscribed_topic_names(
                                        member
                                            .subscribed_topic_names
                                            .into_iter()
                                            .map(|name| TopicName(text(name)))
                                            .collect(),
                                    )
                                    .with_assignment(assignment(member.assignment))
                                    .with_target_assignment(assignment(member.target_assignment))
                            })
                            .collect(),
                    ),
                Err(error) => {
                    let error = KafkaError::from(error);
                    Described::default()
                        .with_group_id(group_id)
                        .with_error_code(error.code())
                        .with_error_message(Some(text(error.message)))
                }
            }
        })
        .collect();
    kafka_protocol::messages::ConsumerGroupDescribeResponse::default().with_groups(groups)
}
