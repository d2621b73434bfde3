//! Fetch: whole batches from each partition as stored, up to the high watermark, with a long
//! poll (max_wait_ms / min_bytes) woken by the flusher.
//!
//! Fetch sessions (KIP-227): this broker declines to create sessions (it answers session id 0),
//! which the protocol allows; clients then send full fetch requests, as librdkafka always does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};

use tier::ObjectEntry;

use crate::Broker;
use crate::error::KafkaError;
use crate::limits::{FETCH_MAX_WAIT_MS, FETCH_RESPONSE_MAX_BYTES};
use crate::server::Reply;
use crate::tiering::ColdRead;

pub fn handle(broker: &Arc<Broker>, request: FetchRequest) -> Reply {
    if request.session_id != 0 {
        return Reply::Now(ResponseKind::Fetch(
            FetchResponse::default()
                .with_error_code(ResponseError::FetchSessionIdNotFound.code())
                .with_session_id(0),
        ));
    }
    // Subscribe before the first read so that a flush between the read and the wait is not missed.
    let mut rounds = broker.flusher.subscribe_rounds();
    let no_failures = HashMap::new();
    let Read {
        response,
        bytes,
        failed,
        loads,
    } = read(broker, &request, &no_failures);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_MAX_WAIT_MS);
    if !loads.is_empty() && bytes > 0 {
        // Answer with what is ready; the cold objects load for the next fetch.
        for entry in loads {
            let broker = broker.clone();
            tokio::spawn(async move {
                if let Some(tiering) = broker.tiering.as_ref() {
                    let _ = tiering.load(&entry).await;
                }
            });
        }
        return Reply::Now(ResponseKind::Fetch(response));
    }
    if loads.is_empty() && (bytes >= min_bytes.max(1) || max_wait_ms == 0 || failed) {
        return Reply::Now(ResponseKind::Fetch(response));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let mut failures = HashMap::new();
        let mut loads = loads;
        // Cold objects first: the read after loading them is served from the cache.
        for _ in 0..COLD_LOAD_ROUNDS {
            if loads.is_empty() {
                break;
            }
            load_all(&broker, loads, &mut failures).await;
            let again = read(&broker, &request, &failures);
            if again.loads.is_empty() || again.bytes > 0 {
                return ResponseKind::Fetch(again.response);
            }
            loads = again.loads;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms);
        loop {
            let woke = tokio::time::timeout_at(deadline, rounds.changed()).await;
            rounds.mark_unchanged();
            let Read {
                response,
                bytes,
                failed,
                ..
            } = read(&broker, &request, &failures);
            if bytes >= min_bytes.max(1) || failed || !matches!(woke, Ok(Ok(()))) {
                return ResponseKind::Fetch(response);
            }
        }
    }))
}

/// Loads after which a fetch that still finds its cold object missing (evicted meanwhile by
/// other readers) answers empty rather than looping.
const COLD_LOAD_ROUNDS: usize = 3;

async fn load_all(
    broker: &Broker,
    loads: Vec<ObjectEntry>,
    failures: &mut HashMap<String, KafkaError>,
) {
    let Some(tiering) = broker.tiering.as_ref() else {
        return;
    };
    let results = futures::future::join_all(loads.iter().map(|entry| tiering.load(entry))).await;
    for (entry, result) in loads.into_iter().zip(results) {
        if let Err(error) = result {
            failures.insert(entry.key, error);
        }
    }
}

struct Read {
    response: FetchResponse,
    /// Record bytes in the response.
    bytes: usize,
    /// Some partition failed (a failure is answered at once rather than waited on).
    failed: bool,
    /// Cold objects to load before the partitions that need them can be served.
    loads: Vec<ObjectEntry>,
}

/// Reads every requested partition once. A cold object in `failures` failed to load: its
/// partition gets the error.
fn read(broker: &Broker, request: &FetchRequest, failures: &HashMap<String, KafkaError>) -> Read {
    let mut loads = Vec::new();
    let mut budget = (request.max_bytes.max(0) as usize).min(FETCH_RESPONSE_MAX_BYTES);
    let mut total = 0;
    let mut failed = false;
    let responses = request
        .topics
        .iter()
        .map(|fetch_topic| {
            let name = fetch_topic.topic.0.to_string();
            let topic = broker.topics.get(&name);
            let partitions = fetch_topic
                .partitions
                .iter()
                .map(|wanted| {
                    let base = PartitionData::default()
                        .with_partition_index(wanted.partition)
                        .with_aborted_transactions(Some(Vec::new()));
                    let partition = topic.as_ref().and_then(|topic| topic.partition(wanted.partition));
                    let Some(partition) = partition else {
                        failed = true;
                        return base
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1);
                    };
                    let limit = (wanted.partition_max_bytes.max(0) as usize).min(budget);
                    if limit == 0 && total > 0 {
                        let high_watermark = partition.high_watermark();
                        return base
                            .with_high_watermark(high_watermark)
                            .with_last_stable_offset(high_watermark)
                            .with_log_start_offset(partition.log_start_offset())
                            .with_records(Some(bytes::Bytes::new()));
                    }
                    let cold = broker
                        .tiering
                        .as_ref()
                        .filter(|_| wanted.fetch_offset < partition.local_start_offset());
                    let result = match cold {
                        Some(tiering) => tiering.read(&partition, wanted.fetch_offset, limit.max(1)),
                        None => partition.read(wanted.fetch_offset, limit.max(1)).map(ColdRead::Ready),
                    };
                    let result = match result {
                        Ok(ColdRead::Load(entry)) => match failures.get(&entry.key) {
                            Some(error) => Err(error.clone()),
                            None => {
                                loads.push(entry);
                                let high_watermark = partition.high_watermark();
                                return base
                                    .with_high_watermark(high_watermark)
                                    .with_last_stable_offset(high_watermark)
                                    .with_log_start_offset(partition.log_start_offset())
                                    .with_records(Some(bytes::Bytes::new()));
                            }
                        },
                        Ok(ColdRead::Ready(read)) => Ok(read),
                        Err(error) => Err(error),
                    };
                    match result {
                        Ok(read) => {
                            total += read.records.len();
                            budget = budget.saturating_sub(read.records.len());
                            base.with_high_watermark(read.high_watermark)
                                .with_last_stable_offset(read.high_watermark)
                                .with_log_start_offset(read.log_start_offset)
                                .with_records(Some(read.records))
                        }
                        Err(error) => {
                            failed = true;
                            tracing::debug!(topic = %name, partition = wanted.partition, %error, "fetch refused");
                            base.with_error_code(error.code())
                                .with_high_watermark(partition.high_watermark())
                                .with_last_stable_offset(partition.high_watermark())
                                .with_log_start_offset(partition.log_start_offset())
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(fetch_topic.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    Read {
        response: FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses),
        bytes: total,
        failed,
        loads,
    }
}
