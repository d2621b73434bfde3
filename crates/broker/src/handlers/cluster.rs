//! InitProducerId and DescribeCluster.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};

use crate::Broker;

use super::text;

/// Hands out a producer id for an idempotent producer. A producer that asks to bump its epoch
/// (KIP-360, after an error it cannot otherwise recover from) keeps its id with the next epoch.
pub fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return refused(ResponseError::InvalidRequest);
    }
    let (ProducerId(existing), epoch) = (request.producer_id, request.producer_epoch);
    if existing >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        return InitProducerIdResponse::default()
            .with_producer_id(ProducerId(existing))
            .with_producer_epoch(epoch + 1);
    }
    match broker.producer_ids.next() {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "could not reserve producer ids");
            refused(ResponseError::KafkaStorageError)
        }
    }
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let config = &broker.config;
    DescribeClusterResponse::default()
        .with_cluster_id(text(config.cluster_id.clone()))
        .with_controller_id(BrokerId(config.node_id))
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(config.node_id))
                .with_host(text(config.advertised_host.clone()))
                .with_port(config.advertised_port),
        ])
}
