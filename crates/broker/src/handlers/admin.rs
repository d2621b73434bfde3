//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions and the config APIs.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::Broker;
use crate::error::KafkaError;
use crate::limits::SOCKET_REQUEST_MAX_BYTES;
use crate::topic_config::{TOPIC_CONFIGS, TopicConfig, config_def};

use super::text;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|wanted| {
            let name = wanted.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(wanted.name.clone());
            let outcome = (|| {
                let partitions = if !wanted.assignments.is_empty() {
                    if wanted.num_partitions != -1 || wanted.replication_factor != -1 {
                        return Err(KafkaError::new(
                            ResponseError::InvalidRequest,
                            "give either replica assignments or a partition count and replication factor",
                        ));
                    }
                    let node = broker.config.node_id;
                    if wanted.assignments.iter().any(|assignment| {
                        assignment.broker_ids.iter().map(|id| id.0).ne([node])
                    }) {
                        return Err(KafkaError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("every partition must be assigned to broker {node} alone"),
                        ));
                    }
                    wanted.assignments.len() as i32
                } else if wanted.num_partitions == -1 {
                    broker.config.num_partitions
                } else {
                    wanted.num_partitions
                };
                let replication_factor =
                    if wanted.replication_factor == -1 { 1 } else { wanted.replication_factor };
                let config = TopicConfig::from_pairs(wanted.configs.iter().map(|config| {
                    (config.name.as_str(), config.value.as_deref().unwrap_or(""))
                }))?;
                broker.check_config(&config)?;
                if request.validate_only {
                    broker.topics.validate_create(&name, partitions, replication_factor)?;
                    Ok((partitions, replication_factor, config, None))
                } else {
                    let topic = broker.topics.create(&name, partitions, replication_factor, config.clone())?;
                    Ok((partitions, replication_factor, config, Some(topic.id)))
                }
            })();
            match outcome {
                Ok((partitions, replication_factor, config, id)) => {
                    let mut result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(replication_factor);
                    if let Some(id) = id {
                        result = result.with_topic_id(id);
                    }
                    if version >= 5 {
                        result = result.with_configs(Some(
                            TOPIC_CONFIGS
                                .iter()
                                .map(|def| {
                                    let (value, is_default) =
                                        config.get(def.name).expect("defined config");
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(def.name))
                                        .with_value(Some(text(value)))
                                        .with_config_source(if is_default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                                })
                                .collect(),
                        ));
                    }
                    result
                }
                Err(error) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(text(error.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub fn delete_topics(broker: &Arc<Broker>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v0-v5 name topics in `topic_names`, v6 in `topics` (by name or id).
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .into_iter()
        .map(|name| (Some(name.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .into_iter()
            .map(|state| (state.name.map(|name| name.0.to_string()), state.topic_id)),
    );
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let name = name.or_else(|| broker.topics.by_id(id).map(|topic| topic.name.to_string()));
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(|name| TopicName(text(name))))
                .with_topic_id(id);
            let Some(name) = name else {
                return result
                    .with_error_code(ResponseError::UnknownTopicId.code())
                    .with_error_message(Some(text(format!("no topic has id {id}"))));
            };
            if name == crate::offsets::OFFSETS_TOPIC {
                return result
                    .with_error_code(ResponseError::InvalidTopicException.code())
                    .with_error_message(Some(text(format!(
                        "{name} is internal and cannot be deleted"
                    ))));
            }
            match broker.topics.delete(&name) {
                Ok(topic) => {
                    if let Some(tiering) = &broker.tiering {
                        tiering.topic_deleted(&name, topic.partition_count());
                    }
                    result.with_topic_id(topic.id)
                }
                Err(error) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(text(error.message))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|wanted| {
            let name = wanted.name.0.to_string();
            let result = CreatePartitionsTopicResult::default().with_name(wanted.name);
            match broker
                .topics
                .add_partitions(&name, wanted.count, request.validate_only)
            {
                Ok(()) => result,
                Err(error) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(text(error.message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub fn describe_configs(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|key| key.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = broker.topics.get(resource.resource_name.as_str()) else {
                        let error = KafkaError::unknown_topic(resource.resource_name.as_str());
                        return result
                            .with_error_code(error.code())
                            .with_error_message(Some(text(error.message)));
                    };
                    let config = topic.config();
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|def| wanted(def.name))
                        .map(|def| {
                            let (value, is_default) = config.get(def.name).expect("defined config");
                            let mut entry = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(def.name))
                                .with_value(Some(text(value)))
                                .with_config_source(if is_default {
                                    SOURCE_DEFAULT
                                } else {
                                    SOURCE_TOPIC
                                });
                            if version >= 3 {
                                entry = entry.with_config_type(def.kind.wire_type());
                                if request.include_documentation {
                                    entry = entry.with_documentation(Some(
                                        StrBytes::from_static_str(def.doc),
                                    ));
                                }
                            }
                            entry
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let config = &broker.config;
                    let entries = [
                        (
                            "auto.create.topics.enable",
                            config.auto_create_topics.to_string(),
                            1,
                        ),
                        ("num.partitions", config.num_partitions.to_string(), 3),
                        (
                            "socket.request.max.bytes",
                            SOCKET_REQUEST_MAX_BYTES.to_string(),
                            3,
                        ),
                        ("log.dirs", config.data_dir.display().to_string(), 2),
                    ];
                    let configs = entries
                        .into_iter()
                        .filter(|(name, _, _)| wanted(name))
                        .map(|(name, value, config_type)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(text(value)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER)
                                .with_config_type(if version >= 3 { config_type } else { 0 })
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(text(format!(
                        "resource type {other} is not supported; use 2 (topic) or 4 (broker)"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies `change` to a copy of the topic's config and stores it unless only validating.
fn alter_topic(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut TopicConfig) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    if resource_type != RESOURCE_TOPIC {
        return Err(KafkaError::new(
            ResponseError::InvalidRequest,
            "only topic configs can be altered; broker configs are set at start-up",
        ));
    }
    let topic = broker
        .topics
        .get(name)
        .ok_or_else(|| KafkaError::unknown_topic(name))?;
    let mut config = topic.config();
    change(&mut config)?;
    broker.check_config(&config)?;
    if !validate_only {
        broker.topics.set_config(name, config)?;
    }
    Ok(())
}

pub fn alter_configs(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let outcome = alter_topic(
                broker,
                resource.resource_type,
                resource.resource_name.as_str(),
                request.validate_only,
                |config| {
                    // AlterConfigs replaces the whole set of overrides.
                    *config =
                        TopicConfig::from_pairs(resource.configs.iter().map(|entry| {
                            (entry.name.as_str(), entry.value.as_deref().unwrap_or(""))
                        }))?;
                    Ok(())
                },
            );
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(()) => response,
                Err(error) => response
                    .with_error_code(error.code())
                    .with_error_message(Some(text(error.message))),
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub fn incremental_alter_configs(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let outcome = alter_topic(
                broker,
                resource.resource_type,
                resource.resource_name.as_str(),
                request.validate_only,
                |config| {
                    for entry in &resource.configs {
                        let name = entry.name.as_str();
                        let value = entry.value.as_deref().unwrap_or("");
                        match entry.config_operation {
                            0 => config.set(name, value)?,
                            1 => config.delete(name)?,
                            operation @ (2 | 3) => {
                                let is_list = config_def(name).is_some_and(|def| {
                                    matches!(def.kind, crate::topic_config::ConfigKind::ListOf(_))
                                });
                                if !is_list {
                                    return Err(KafkaError::invalid_config(format!(
                                        "{name} is not a list: APPEND and SUBTRACT apply to list configs only"
                                    )));
                                }
                                let current = config.get(name).map(|(value, _)| value.to_string()).unwrap_or_default();
                                let mut items: Vec<String> = current
                                    .split(',')
                                    .map(str::trim)
                                    .filter(|item| !item.is_empty())
                                    .map(String::from)
                                    .collect();
                                for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
                                    let present = items.iter().any(|existing| existing == item);
                                    if operation == 2 && !present {
                                        items.push(item.to_string());
                                    } else if operation == 3 {
                                        items.retain(|existing| existing != item);
                                    }
                                }
                                config.set(name, &items.join(","))?;
                            }
                            other => {
                                return Err(KafkaError::new(
                                    ResponseError::InvalidRequest,
                                    format!("config operation {other} is unknown (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)"),
                                ));
                            }
                        }
                    }
                    Ok(())
                },
            );
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(()) => response,
                Err(error) => response
                    .with_error_code(error.code())
                    .with_error_message(Some(text(error.message))),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
