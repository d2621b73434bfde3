//! ListOffsets: earliest, latest, max timestamp, and the first offset at or after a timestamp.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use crate::Broker;
use crate::error::KafkaError;
use crate::limits::DECOMPRESSED_BATCH_MAX_BYTES;
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // Leader epochs exist on the wire from v4.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let topics = request
        .topics
        .into_iter()
        .map(|wanted| {
            let name = wanted.name.0.to_string();
            let topic = broker.topics.get(&name);
            let partitions = wanted
                .partitions
                .into_iter()
                .map(|wanted_partition| {
                    let index = wanted_partition.partition_index;
                    let base = ListOffsetsPartitionResponse::default().with_partition_index(index);
                    let partition = topic
                        .as_ref()
                        .ok_or_else(|| KafkaError::unknown_topic(&name))
                        .and_then(|topic| {
                            topic
                                .partition(index)
                                .ok_or_else(|| KafkaError::unknown_partition(&name, index))
                        });
                    match partition
                        .and_then(|partition| lookup(&partition, wanted_partition.timestamp))
                    {
                        Ok((offset, timestamp)) => base
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(leader_epoch),
                        Err(error) => base
                            .with_error_code(error.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(wanted.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; (-1, -1) when no record has a timestamp that late.
fn lookup(partition: &Partition, timestamp: i64) -> Result<(i64, i64), KafkaError> {
    match timestamp {
        LATEST => Ok((partition.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((partition.log_start_offset(), -1)),
        MAX_TIMESTAMP => {
            let (timestamp, offset) = partition.max_timestamp();
            Ok(if offset < 0 {
                (-1, -1)
            } else {
                (offset, timestamp)
            })
        }
        target => match partition.batch_for_timestamp(target)? {
            Some(batch) => Ok(first_at_or_after(batch, target).unwrap_or((-1, -1))),
            None => Ok((-1, -1)),
        },
    }
}

/// The first record of `batch` (decompressed here, off the produce path) whose timestamp is at
/// least `target`.
fn first_at_or_after(mut batch: Bytes, target: i64) -> Option<(i64, i64)> {
    let header = records::BatchHeader::parse(&batch).ok()?;
    if header.timestamp_type() == records::TimestampType::LogAppendTime {
        // Every record of the batch carries the broker's append time.
        return (header.max_timestamp >= target)
            .then_some((header.base_offset, header.max_timestamp));
    }
    let bounded = |input: &mut Bytes, compression| {
        crate::codecs::decompress(compression, input, DECOMPRESSED_BATCH_MAX_BYTES)
            .map_err(anyhow::Error::new)
    };
    let set = match RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(bounded)) {
        Ok(set) => set,
        Err(error) => {
            // Too large (or undecodable) to look inside: answer at batch granularity, the first
            // offset that can hold a late-enough record, rather than no answer.
            tracing::warn!(%error, base_offset = header.base_offset, "cannot look inside a stored batch");
            return (header.max_timestamp >= target)
                .then_some((header.base_offset, header.max_timestamp));
        }
    };
    set.records
        .iter()
        .find(|record| record.timestamp >= target)
        .map(|record| (record.offset, record.timestamp))
}
