//! Committed consumer-group offsets, kept durably in the internal topic `__consumer_offsets`
//! (one partition) and in memory for lookups.
//!
//! Records use Kafka's own layouts, so tools that read that topic understand them:
//! key `OffsetCommitKey` v1 = (version i16 = 1, group string, topic string, partition i32);
//! value `OffsetCommitValue` v3 = (version i16 = 3, offset i64, leader epoch i32, metadata string,
//! commit timestamp i64); a null value deletes the key. Strings are an i16 length and UTF-8.
//! At start the topic is replayed from the beginning; the last record of a key wins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::KafkaError;
use crate::flusher::Flusher;
use crate::partition::{Partition, now_ms};
use crate::topic_config::TopicConfig;
use crate::topics::Topics;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Largest metadata string kept with an offset (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// (topic, partition)
pub type TopicPartition = (String, i32);

pub struct OffsetStore {
    partition: Arc<Partition>,
    groups: Mutex<HashMap<String, BTreeMap<TopicPartition, CommittedOffset>>>,
    /// Records appended since the last snapshot (or start).
    records_since_snapshot: AtomicU64,
    /// A snapshot is taken once this many records were appended since the last one.
    snapshot_after_records: u64,
}

/// Records of committed offsets written between snapshots of `__consumer_offsets`: the topic is
/// not compacted, so without snapshots it would grow with every commit and be replayed whole at
/// start. A snapshot rewrites the live offsets and deletes the segments before it.
pub const OFFSETS_SNAPSHOT_AFTER_RECORDS: u64 = 1_000_000;

/// Records per batch of a snapshot.
const SNAPSHOT_BATCH_RECORDS: usize = 1_000;

/// How long a snapshot waits for its fsync before giving up (and keeping the old segments).
const SNAPSHOT_DURABLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl OffsetStore {
    /// Creates the internal topic if needed and replays it.
    pub fn open(topics: &Topics, snapshot_after_records: u64) -> Result<OffsetStore, KafkaError> {
        let topic = match topics.get(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => topics.create(
                OFFSETS_TOPIC,
                1,
                1,
                TopicConfig::from_pairs([("cleanup.policy", "compact")])?,
            )?,
        };
        let partition = topic
            .partition(0)
            .expect("the offsets topic has partition 0");
        let mut groups: HashMap<String, BTreeMap<TopicPartition, CommittedOffset>> = HashMap::new();
        let end = partition.high_watermark();
        let mut offset = partition.log_start_offset();
        let mut replayed = 0u64;
        while offset < end {
            let chunk = partition.read(offset, 4 * 1024 * 1024)?.records;
            if chunk.is_empty() {
                break;
            }
            for batch in records::stored_batches(&chunk) {
                let (header, range) = batch?;
                offset = header.last_offset() + 1;
                for record in records::records(&chunk[range])? {
                    let record = record?;
                    let Some((group, topic, partition_index)) = record.key.and_then(decode_key)
                    else {
                        continue;
                    };
                    replayed += 1;
                    let entry = groups.entry(group).or_default();
                    match record.value.and_then(decode_value) {
                        Some(committed) => {
                            entry.insert((topic, partition_index), committed);
                        }
                        None => {
                            entry.remove(&(topic, partition_index));
                        }
                    }
                }
            }
        }
        groups.retain(|_, offsets| !offsets.is_empty());
        tracing::info!(
            records = replayed,
            groups = groups.len(),
            "committed offsets replayed"
        );
        Ok(OffsetStore {
            partition,
            groups: Mutex::new(groups),
            records_since_snapshot: AtomicU64::new(replayed),
            snapshot_after_records,
        })
    }

    /// Appends one batch of offset records under the store's lock (which orders it with the
    /// in-memory view). Returns where it landed.
    fn append(
        &self,
        group_records: &[(Vec<u8>, Option<Vec<u8>>)],
        flusher: &Flusher,
    ) -> Result<crate::partition::Appended, KafkaError> {
        let timestamp = now_ms();
        let mut builder = records::BatchBuilder::new(0);
        for (key, value) in group_records {
            builder = builder.record(Some(key), value.as_deref(), timestamp);
        }
        let mut batch = builder.build();
        let header = records::validate_batch(&batch)?;
        let appended = self
            .partition
            .append(&mut [(header, &mut batch[..])], false, flusher)?;
        self.records_since_snapshot
            .fetch_add(group_records.len() as u64, Ordering::Relaxed);
        Ok(appended)
    }

    /// Takes a snapshot when enough records were written since the last one: rolls the offsets
    /// partition, rewrites every live committed offset into the new segment, waits until that is
    /// durable, then deletes the older segments. A crash at any point leaves either the old
    /// segments (the snapshot repeats what they say) or the durable snapshot. Commits wait on
    /// the store's lock meanwhile. Returns whether a snapshot was taken.
    pub fn snapshot_if_due(&self, flusher: &Flusher) -> Result<bool, KafkaError> {
        if self.records_since_snapshot.load(Ordering::Relaxed) < self.snapshot_after_records {
            return Ok(false);
        }
        let groups = self.groups.lock();
        self.partition.roll()?;
        let snapshot_start = self.partition.log_end_offset();
        let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut last_offset = -1;
        let live: usize = groups.values().map(BTreeMap::len).sum();
        for (group, offsets) in groups.iter() {
            for ((topic, partition), committed) in offsets {
                records.push((
                    encode_key(group, topic, *partition),
                    Some(encode_value(committed)),
                ));
                if records.len() == SNAPSHOT_BATCH_RECORDS {
                    last_offset = self.append(&records, flusher)?.last_offset;
                    records.clear();
                }
            }
        }
        if !records.is_empty() {
            last_offset = self.append(&records, flusher)?.last_offset;
        }
        let deadline = std::time::Instant::now() + SNAPSHOT_DURABLE_TIMEOUT;
        while self.partition.high_watermark() <= last_offset {
            if std::time::Instant::now() > deadline {
                tracing::warn!("offsets snapshot not durable in time; keeping the older segments");
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let deleted = self.partition.delete_segments_below(snapshot_start)?;
        self.records_since_snapshot
            .store(live as u64, Ordering::Relaxed);
        tracing::info!(
            live_offsets = live,
            deleted_segments = deleted,
            "committed offsets snapshot taken"
        );
        Ok(true)
    }

    /// Writes commits (`Some`) and deletions (`None`) for one group as one batch. Returns the
    /// batch's last offset: the change is durable once the offsets partition's high watermark
    /// passes it (see [`OffsetStore::wait_durable`]).
    pub fn write(
        &self,
        group: &str,
        changes: &[(TopicPartition, Option<CommittedOffset>)],
        flusher: &Flusher,
    ) -> Result<i64, KafkaError> {
        if changes.is_empty() {
            return Ok(-1);
        }
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = changes
            .iter()
            .map(|((topic, partition_index), committed)| {
                (
                    encode_key(group, topic, *partition_index),
                    committed.as_ref().map(encode_value),
                )
            })
            .collect();
        // The lock orders the in-memory view like the log, so a replay ends where memory is.
        let mut groups = self.groups.lock();
        let appended = self.append(&records, flusher)?;
        let offsets = groups.entry(group.to_string()).or_default();
        for (key, committed) in changes {
            match committed {
                Some(committed) => {
                    offsets.insert(key.clone(), committed.clone());
                }
                None => {
                    offsets.remove(key);
                }
            }
        }
        if offsets.is_empty() {
            groups.remove(group);
        }
        Ok(appended.last_offset)
    }

    pub async fn wait_durable(&self, last_offset: i64) {
        let mut high_watermark = self.partition.subscribe_high_watermark();
        let _ = high_watermark
            .wait_for(|high_watermark| *high_watermark > last_offset)
            .await;
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.groups
            .lock()
            .get(group)?
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of a group.
    pub fn group(&self, group: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.groups.lock().get(group).cloned().unwrap_or_default()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.groups.lock().keys().cloned().collect()
    }

    pub fn validate_metadata(metadata: &str) -> Result<(), KafkaError> {
        if metadata.len() > OFFSET_METADATA_MAX_BYTES {
            return Err(KafkaError::new(
                ResponseError::OffsetMetadataTooLarge,
                format!(
                    "offset metadata of {} bytes exceeds offset.metadata.max.bytes={OFFSET_METADATA_MAX_BYTES}",
                    metadata.len()
                ),
            ));
        }
        Ok(())
    }
}

fn put_string(buffer: &mut Vec<u8>, text: &str) {
    let length = text.len().min(i16::MAX as usize);
    buffer.extend_from_slice(&(length as i16).to_be_bytes());
    buffer.extend_from_slice(&text.as_bytes()[..length]);
}

/// Reads big-endian fields off a byte slice; `None` once it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2)
            .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|bytes| i32::from_be_bytes(bytes.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|bytes| i64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Option<String> {
        let length = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(length)?.to_vec()).ok()
    }
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + group.len() + topic.len());
    key.extend_from_slice(&1i16.to_be_bytes());
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// (group, topic, partition) of an offset-commit key; other key versions (group metadata) are
/// skipped.
pub fn decode_key(key: &[u8]) -> Option<(String, String, i32)> {
    let mut reader = Reader(key);
    if !matches!(reader.i16()?, 0 | 1) {
        return None;
    }
    Some((reader.string()?, reader.string()?, reader.i32()?))
}

pub fn encode_value(committed: &CommittedOffset) -> Vec<u8> {
    let mut value = Vec::with_capacity(24 + committed.metadata.len());
    value.extend_from_slice(&3i16.to_be_bytes());
    value.extend_from_slice(&committed.offset.to_be_bytes());
    value.extend_from_slice(&committed.leader_epoch.to_be_bytes());
    put_string(&mut value, &committed.metadata);
    value.extend_from_slice(&committed.commit_timestamp_ms.to_be_bytes());
    value
}

pub fn decode_value(value: &[u8]) -> Option<CommittedOffset> {
    let mut reader = Reader(value);
    if reader.i16()? != 3 {
        return None;
    }
    Some(CommittedOffset {
        offset: reader.i64()?,
        leader_epoch: reader.i32()?,
        metadata: reader.string()?,
        commit_timestamp_ms: reader.i64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("group-1", "orders", 5);
        assert_eq!(
            decode_key(&key),
            Some(("group-1".into(), "orders".into(), 5))
        );
        let committed = CommittedOffset {
            offset: 42,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_value(&encode_value(&committed)), Some(committed));
    }

    #[test]
    fn damaged_records_are_skipped_not_trusted() {
        let key = encode_key("g", "t", 1);
        for cut in 0..key.len() {
            assert_eq!(decode_key(&key[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            decode_key(&[0, 2, 0, 0]),
            None,
            "group metadata keys are not offsets"
        );
        let value = encode_value(&CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        for cut in 0..value.len() {
            assert_eq!(decode_value(&value[..cut]), None, "cut at {cut}");
        }
    }
}
