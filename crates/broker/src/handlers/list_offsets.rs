//! ListOffsets: earliest, latest, max timestamp, and the first offset at or after a timestamp.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use futures::FutureExt;
use kafka_protocol::messages::ResponseKind;

use crate::Broker;
use crate::error::KafkaError;
use crate::limits::DECOMPRESSED_BATCH_MAX_BYTES;
use crate::partition::Partition;
use crate::server::Reply;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// Answers at once unless a cold object has to be read (a timestamp in the cold tier).
pub fn handle(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> Reply {
    let mut response = Box::pin(respond(broker.clone(), request, version));
    match (&mut response).now_or_never() {
        Some(response) => Reply::Now(ResponseKind::ListOffsets(response)),
        None => Reply::Later(Box::pin(async move {
            ResponseKind::ListOffsets(response.await)
        })),
    }
}

async fn respond(
    broker: Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // Leader epochs exist on the wire from v4.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let mut topics = Vec::with_capacity(request.topics.len());
    for wanted in request.topics {
        let name = wanted.name.0.to_string();
        let topic = broker.topics.get(&name);
        let mut partitions = Vec::with_capacity(wanted.partitions.len());
        for wanted_partition in wanted.partitions {
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
            let found = match partition {
                Ok(partition) => lookup(&broker, &partition, wanted_partition.timestamp).await,
                Err(error) => Err(error),
            };
            partitions.push(match found {
                Ok((offset, timestamp)) => base
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(leader_epoch),
                Err(error) => base
                    .with_error_code(error.code())
                    .with_offset(-1)
                    .with_timestamp(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(wanted.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; (-1, -1) when no record has a timestamp that late.
/// The cold tier holds the older offsets, so it is asked first.
async fn lookup(
    broker: &Broker,
    partition: &Partition,
    timestamp: i64,
) -> Result<(i64, i64), KafkaError> {
    match timestamp {
        LATEST => Ok((partition.high_watermark(), -1)),
        EARLIEST => Ok((partition.log_start_offset(), -1)),
        EARLIEST_LOCAL => Ok((partition.local_start_offset(), -1)),
        MAX_TIMESTAMP => {
            let (mut timestamp, mut offset) = partition.max_timestamp();
            let cold = match &broker.tiering {
                Some(tiering) => tiering.max_timestamp(partition).await?,
                None => None,
            };
            if let Some((cold_timestamp, cold_offset)) = cold
                && (offset < 0 || cold_timestamp > timestamp)
            {
                (timestamp, offset) = (cold_timestamp, cold_offset);
            }
            Ok(if offset < 0 {
                (-1, -1)
            } else {
                (offset, timestamp)
            })
        }
        target => {
            if let Some(tiering) = &broker.tiering
                && let Some(found) = tiering.offset_for_timestamp(partition, target).await?
            {
                return Ok(found);
            }
            match partition.batch_for_timestamp(target)? {
                Some(batch) => Ok(first_at_or_after(batch, target).unwrap_or((-1, -1))),
                None => Ok((-1, -1)),
            }
        }
    }
}

/// The first record of `batch` (decompressed here, off the produce path) whose timestamp is at
/// least `target`.
fn first_at_or_after(batch: Bytes, target: i64) -> Option<(i64, i64)> {
    let header = records::BatchHeader::parse(&batch).ok()?;
    if header.timestamp_type() == records::TimestampType::LogAppendTime {
        // Every record of the batch carries the broker's append time.
        return (header.max_timestamp >= target)
            .then_some((header.base_offset, header.max_timestamp));
    }
    match look_inside(&batch, &header, target) {
        Ok(found) => found,
        Err(error) => {
            // Too large (or undecodable) to look inside: answer at batch granularity, the first
            // offset that can hold a late-enough record, rather than no answer.
            tracing::warn!(%error, base_offset = header.base_offset, "cannot look inside a stored batch");
            (header.max_timestamp >= target).then_some((header.base_offset, header.max_timestamp))
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LookInsideError {
    #[error(transparent)]
    Record(#[from] records::RecordError),
    #[error(transparent)]
    Decompress(#[from] records::codecs::DecompressError),
}

/// Walks the records of a CreateTime batch, decompressing it with a bound if needed.
fn look_inside(
    batch: &[u8],
    header: &records::BatchHeader,
    target: i64,
) -> Result<Option<(i64, i64)>, LookInsideError> {
    let compression = header.compression()?;
    let section = batch
        .get(records::BATCH_HEADER_LEN..header.total_len())
        .ok_or(records::RecordError::Truncated {
            needed: header.total_len(),
            available: batch.len(),
        })?;
    let decompressed;
    let section = if compression == records::Compression::None {
        section
    } else {
        decompressed =
            records::codecs::decompress(compression, section, DECOMPRESSED_BATCH_MAX_BYTES)?;
        &decompressed[..]
    };
    for record in records::records_in_section(section, header.record_count) {
        let record = record?;
        let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
        if timestamp >= target {
            return Ok(Some((
                header.base_offset + record.offset_delta as i64,
                timestamp,
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use records::{BATCH_HEADER_LEN, BatchBuilder, Compression};

    use super::*;

    /// `batch` with its records section compressed by zstd (length and CRC fixed up).
    fn zstd_batch(batch: &[u8]) -> Vec<u8> {
        let mut out = batch[..BATCH_HEADER_LEN].to_vec();
        out.extend(zstd::encode_all(&batch[BATCH_HEADER_LEN..], 1).unwrap());
        finish(out, Compression::Zstd)
    }

    fn finish(mut out: Vec<u8>, compression: Compression) -> Vec<u8> {
        out[21..23].copy_from_slice(&compression.codec().to_be_bytes());
        let batch_length = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        records::validate_batch(&out).unwrap();
        out
    }

    #[test]
    fn looks_inside_uncompressed_and_compressed_batches() {
        let batch = BatchBuilder::new(10)
            .record(None, Some(b"a"), 100)
            .record(None, Some(b"b"), 50)
            .record(None, Some(b"c"), 300)
            .record(None, Some(b"d"), 200)
            .build();
        for batch in [batch.clone(), zstd_batch(&batch)] {
            let check = |target, expect| {
                assert_eq!(
                    first_at_or_after(Bytes::from(batch.clone()), target),
                    expect,
                    "target {target}"
                );
            };
            check(0, Some((10, 100)));
            check(100, Some((10, 100)));
            check(101, Some((12, 300)));
            check(250, Some((12, 300)));
            check(301, None);
        }
    }

    #[test]
    fn an_undecodable_batch_answers_at_batch_granularity() {
        let batch = BatchBuilder::new(7)
            .opaque_payload(Compression::Zstd, 3, 500, b"not zstd")
            .build();
        assert_eq!(
            first_at_or_after(Bytes::from(batch.clone()), 1),
            Some((7, 500))
        );
        assert_eq!(first_at_or_after(Bytes::from(batch), 501), None);
    }
}
