//! One module per Kafka API. `dispatch` runs the synchronous part of a request and says how the
//! answer comes: now, later (a future), or not at all.

pub mod admin;
pub mod api_versions;
pub mod cluster;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::Broker;
use crate::server::Reply;

/// Who sent a request, and in which version.
pub struct Context<'a> {
    pub version: i16,
    pub client_id: String,
    pub client_host: &'a str,
}

pub fn dispatch(broker: &Arc<Broker>, request: RequestKind, context: &Context) -> Reply {
    let version = context.version;
    match request {
        RequestKind::ApiVersions(_) => {
            Reply::Now(ResponseKind::ApiVersions(api_versions::handle()))
        }
        RequestKind::Metadata(request) => Reply::Now(ResponseKind::Metadata(metadata::handle(
            broker, request, version,
        ))),
        RequestKind::Produce(request) => produce::handle(broker, request, version),
        RequestKind::Fetch(request) => fetch::handle(broker, request),
        RequestKind::ListOffsets(request) => list_offsets::handle(broker, request, version),
        RequestKind::CreateTopics(request) => Reply::Now(ResponseKind::CreateTopics(
            admin::create_topics(broker, request, version),
        )),
        RequestKind::DeleteTopics(request) => Reply::Now(ResponseKind::DeleteTopics(
            admin::delete_topics(broker, request),
        )),
        RequestKind::CreatePartitions(request) => Reply::Now(ResponseKind::CreatePartitions(
            admin::create_partitions(broker, request),
        )),
        RequestKind::DescribeConfigs(request) => Reply::Now(ResponseKind::DescribeConfigs(
            admin::describe_configs(broker, request, version),
        )),
        RequestKind::AlterConfigs(request) => Reply::Now(ResponseKind::AlterConfigs(
            admin::alter_configs(broker, request),
        )),
        RequestKind::IncrementalAlterConfigs(request) => {
            Reply::Now(ResponseKind::IncrementalAlterConfigs(
                admin::incremental_alter_configs(broker, request),
            ))
        }
        RequestKind::InitProducerId(request) => Reply::Now(ResponseKind::InitProducerId(
            cluster::init_producer_id(broker, request),
        )),
        RequestKind::DescribeCluster(request) => Reply::Now(ResponseKind::DescribeCluster(
            cluster::describe_cluster(broker, request),
        )),
        RequestKind::FindCoordinator(request) => Reply::Now(ResponseKind::FindCoordinator(
            groups::find_coordinator(broker, request, version),
        )),
        RequestKind::JoinGroup(request) => groups::join_group(broker, request, context),
        RequestKind::SyncGroup(request) => groups::sync_group(broker, request, version),
        RequestKind::Heartbeat(request) => {
            Reply::Now(ResponseKind::Heartbeat(groups::heartbeat(broker, request)))
        }
        RequestKind::LeaveGroup(request) => Reply::Now(ResponseKind::LeaveGroup(
            groups::leave_group(broker, request, version),
        )),
        RequestKind::OffsetCommit(request) => groups::offset_commit(broker, request),
        RequestKind::OffsetFetch(request) => Reply::Now(ResponseKind::OffsetFetch(
            groups::offset_fetch(broker, request, version),
        )),
        RequestKind::OffsetDelete(request) => groups::offset_delete(broker, request),
        RequestKind::ListGroups(request) => Reply::Now(ResponseKind::ListGroups(
            groups::list_groups(broker, request, version),
        )),
        RequestKind::DescribeGroups(request) => Reply::Now(ResponseKind::DescribeGroups(
            groups::describe_groups(broker, request),
        )),
        RequestKind::DeleteGroups(request) => groups::delete_groups(broker, request),
        RequestKind::ConsumerGroupHeartbeat(request) => {
            Reply::Now(ResponseKind::ConsumerGroupHeartbeat(
                groups::consumer_group_heartbeat(broker, request, context),
            ))
        }
        RequestKind::ConsumerGroupDescribe(request) => Reply::Now(
            ResponseKind::ConsumerGroupDescribe(groups::consumer_group_describe(broker, request)),
        ),
        other => unreachable!(
            "api_versions::supported admits only handled APIs, got {:?}",
            std::mem::discriminant(&other)
        ),
    }
}

pub fn text(message: impl Into<String>) -> StrBytes {
    StrBytes::from_string(message.into())
}
