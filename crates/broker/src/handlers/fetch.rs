//! Fetch: whole batches from each partition as stored, up to the high watermark, with a long
//! poll (max_wait_ms / min_bytes) woken by the flusher.
//!
//! Fetch sessions (KIP-227): this broker declines to create sessions (it answers session id 0),
//! which the protocol allows; clients then send full fetch requests, as librdkafka always does.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};

use crate::Broker;
use crate::limits::{FETCH_MAX_WAIT_MS, FETCH_RESPONSE_MAX_BYTES};
use crate::server::Reply;

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
    let (response, bytes, failed) = read(broker, &request);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_MAX_WAIT_MS);
    if bytes >= min_bytes.max(1) || max_wait_ms == 0 || failed {
        return Reply::Now(ResponseKind::Fetch(response));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms);
        loop {
            let woke = tokio::time::timeout_at(deadline, rounds.changed()).await;
            rounds.mark_unchanged();
            let (response, bytes, failed) = read(&broker, &request);
            if bytes >= min_bytes.max(1) || failed || !matches!(woke, Ok(Ok(()))) {
                return ResponseKind::Fetch(response);
            }
        }
    }))
}

/// Reads every requested partition once: the response, its record bytes, and whether any
/// partition failed (a failure is answered at once rather than waited on).
fn read(broker: &Broker, request: &FetchRequest) -> (FetchResponse, usize, bool) {
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
                    match partition.read(wanted.fetch_offset, limit.max(1)) {
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
    (
        FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses),
        total,
        failed,
    )
}
