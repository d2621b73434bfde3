//! Metadata: the one broker, and the topics asked for (creating them when allowed).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use crate::Broker;
use crate::topic_config::TopicConfig;
use crate::topics::Topic;

use super::text;

pub fn handle(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let config = &broker.config;
    let node = BrokerId(config.node_id);
    let brokers = vec![
        MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(text(config.advertised_host.clone()))
            .with_port(config.advertised_port),
    ];
    // v0: an empty list means every topic; v1+: null means every topic.
    // v10+ may name a topic by id instead (the new consumer protocol assigns by id).
    let names: Option<Vec<Result<String, uuid::Uuid>>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .map(|topic| match topic.name {
                    Some(name) => Ok(name.0.to_string()),
                    None => Err(topic.topic_id),
                })
                .collect(),
        ),
    };
    let allow_create =
        config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let topics = match names {
        None => broker
            .topics
            .all()
            .iter()
            .map(|topic| describe(broker, topic))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| {
                let name = match name {
                    Ok(name) => name,
                    Err(id) => {
                        return match broker.topics.by_id(id) {
                            Some(topic) => describe(broker, &topic),
                            None => MetadataResponseTopic::default()
                                .with_topic_id(id)
                                .with_error_code(ResponseError::UnknownTopicId.code()),
                        };
                    }
                };
                if let Some(topic) = broker.topics.get(&name) {
                    return describe(broker, &topic);
                }
                let missing =
                    MetadataResponseTopic::default().with_name(Some(TopicName(text(name.clone()))));
                if !allow_create {
                    return missing.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                }
                match broker
                    .topics
                    .create(&name, config.num_partitions, 1, TopicConfig::default())
                {
                    Ok(topic) => describe(broker, &topic),
                    Err(error) => {
                        // Lost a race with another creator: describe what exists.
                        match broker.topics.get(&name) {
                            Some(topic) => describe(broker, &topic),
                            None => missing.with_error_code(error.code()),
                        }
                    }
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(text(config.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
}

fn describe(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let partitions = (0..topic.partition_count())
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(text(topic.name.to_string()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions)
}
