//! Produce: validate each batch's header and CRC (never decompressing), append, and answer when
//! the acks level is met: acks=0 never, acks=1 after the append, acks=all after the fsync.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use crate::Broker;
use crate::error::KafkaError;
use crate::partition::{Appended, Partition};
use crate::server::Reply;

use super::text;

/// Outcome for one partition, before the wait for durability.
struct PartitionOutcome {
    index: i32,
    result: Result<Appended, KafkaError>,
    /// The partition to wait on for acks=all.
    partition: Option<Arc<Partition>>,
}

pub fn handle(broker: &Arc<Broker>, request: ProduceRequest, _version: i16) -> Reply {
    let acks = request.acks;
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartitionOutcome>)> = Vec::new();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = broker.topics.get(&name);
        let outcomes = topic_data
            .partition_data
            .into_iter()
            .map(|data| {
                let index = data.index;
                let outcome = if request.transactional_id.is_some() {
                    Err(KafkaError::new(
                        ResponseError::InvalidRequest,
                        "transactional produce is not supported yet",
                    ))
                } else if !matches!(acks, -1..=1) {
                    Err(KafkaError::new(
                        ResponseError::InvalidRequiredAcks,
                        format!("acks must be 0, 1 or -1 (all), not {acks}"),
                    ))
                } else {
                    append(broker, topic.as_deref(), &name, index, data.records, acks)
                };
                match outcome {
                    Ok((appended, partition)) => PartitionOutcome {
                        index,
                        result: Ok(appended),
                        partition: Some(partition),
                    },
                    Err(error) => {
                        tracing::debug!(topic = %name, partition = index, %error, "produce refused");
                        PartitionOutcome { index, result: Err(error), partition: None }
                    }
                }
            })
            .collect();
        topics.push((topic_data.name, outcomes));
    }
    match acks {
        0 => Reply::Nothing,
        1 => Reply::Now(ResponseKind::Produce(response(topics, &[]))),
        _ => {
            let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
            Reply::Later(Box::pin(async move {
                let mut timed_out = Vec::new();
                let deadline = tokio::time::Instant::now() + timeout;
                for (_, outcomes) in &topics {
                    for outcome in outcomes {
                        let (Ok(appended), Some(partition)) = (&outcome.result, &outcome.partition)
                        else {
                            continue;
                        };
                        let target = appended.last_offset;
                        let mut high_watermark = partition.subscribe_high_watermark();
                        let durable = tokio::time::timeout_at(
                            deadline,
                            high_watermark.wait_for(|high_watermark| *high_watermark > target),
                        )
                        .await;
                        if !matches!(durable, Ok(Ok(_))) {
                            timed_out.push((partition.topic.clone(), partition.index));
                        }
                    }
                }
                ResponseKind::Produce(response(topics, &timed_out))
            }))
        }
    }
}

fn append(
    broker: &Broker,
    topic: Option<&crate::topics::Topic>,
    name: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
) -> Result<(Appended, Arc<Partition>), KafkaError> {
    let topic = topic.ok_or_else(|| KafkaError::unknown_topic(name))?;
    if topic.is_internal() {
        return Err(KafkaError::new(
            ResponseError::InvalidTopicException,
            format!("{name} is internal: clients cannot write to it"),
        ));
    }
    let partition = topic
        .partition(index)
        .ok_or_else(|| KafkaError::unknown_partition(name, index))?;
    let config = topic.config();
    if acks == -1 && config.min_insync_replicas() > 1 {
        return Err(KafkaError::new(
            ResponseError::NotEnoughReplicas,
            format!(
                "{name} has min.insync.replicas={} but this broker keeps one replica",
                config.min_insync_replicas()
            ),
        ));
    }
    let records = records
        .filter(|records| !records.is_empty())
        .ok_or_else(|| {
            KafkaError::new(
                ResponseError::InvalidRecord,
                "the produce request carries no records",
            )
        })?;
    // The batches get their offsets written in place, so they need a buffer of their own.
    let mut bytes = BytesMut::from(&records[..]);
    let max_message_bytes = config.max_message_bytes();
    let mut spans = Vec::new();
    for batch in records::batches(&bytes) {
        let (header, range) = batch?;
        if range.len() > max_message_bytes {
            return Err(KafkaError::new(
                ResponseError::MessageTooLarge,
                format!(
                    "a record batch of {} bytes exceeds max.message.bytes={max_message_bytes} of {name}",
                    range.len()
                ),
            ));
        }
        if header.is_transactional() || header.is_control() {
            return Err(KafkaError::new(
                ResponseError::InvalidRecord,
                "transactional and control batches are not supported yet",
            ));
        }
        spans.push((header, range));
    }
    // The batches lie back to back from the start of the buffer: cut it into one slice each.
    let mut batches = Vec::with_capacity(spans.len());
    let mut rest: &mut [u8] = &mut bytes;
    for (header, range) in spans {
        let (batch, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
        rest = tail;
        batches.push((header, batch));
    }
    let appended = partition.append(&mut batches, config.log_append_time(), &broker.flusher)?;
    Ok((appended, partition))
}

fn response(
    topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartitionOutcome>)>,
    timed_out: &[(Arc<str>, i32)],
) -> ProduceResponse {
    let responses = topics
        .into_iter()
        .map(|(name, outcomes)| {
            let partition_responses = outcomes
                .into_iter()
                .map(|outcome| {
                    let base = PartitionProduceResponse::default().with_index(outcome.index);
                    let waited_too_long = timed_out
                        .iter()
                        .any(|(topic, index)| **topic == *name.0 && *index == outcome.index);
                    match outcome.result {
                        Ok(_) if waited_too_long => base
                            .with_error_code(ResponseError::RequestTimedOut.code())
                            .with_base_offset(-1)
                            .with_error_message(Some(text(
                                "the append did not become durable within the request timeout",
                            ))),
                        Ok(appended) => base
                            .with_base_offset(appended.base_offset)
                            .with_log_append_time_ms(appended.log_append_time_ms)
                            .with_log_start_offset(appended.log_start_offset),
                        Err(error) => base
                            .with_error_code(error.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(Some(text(error.message))),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
