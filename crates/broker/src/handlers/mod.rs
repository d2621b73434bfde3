//! One module per Kafka API. `dispatch` runs the synchronous part of a request and says how the
//! answer comes: now, later (a future), or not at all.

pub mod admin;
pub mod api_versions;
pub mod cluster;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::Broker;
use crate::server::Reply;

pub fn dispatch(broker: &Arc<Broker>, request: RequestKind, version: i16) -> Reply {
    match request {
        RequestKind::ApiVersions(_) => {
            Reply::Now(ResponseKind::ApiVersions(api_versions::handle()))
        }
        RequestKind::Metadata(request) => Reply::Now(ResponseKind::Metadata(metadata::handle(
            broker, request, version,
        ))),
        RequestKind::Produce(request) => produce::handle(broker, request, version),
        RequestKind::Fetch(request) => fetch::handle(broker, request),
        RequestKind::ListOffsets(request) => Reply::Now(ResponseKind::ListOffsets(
            list_offsets::handle(broker, request, version),
        )),
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
        other => unreachable!(
            "api_versions::supported admits only handled APIs, got {:?}",
            std::mem::discriminant(&other)
        ),
    }
}

pub fn text(message: impl Into<String>) -> StrBytes {
    StrBytes::from_string(message.into())
}
