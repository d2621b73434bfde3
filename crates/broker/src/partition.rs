//! One partition: its log, its idempotent-producer state and its high watermark.
//!
//! The high watermark is the end of what is durable: the flusher moves it after each fsync, so a
//! consumer never reads a record that a crash could take back, and `acks=all` waits for it.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use log::{LogConfig, PartitionLog};
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::error::KafkaError;
use crate::flusher::Flusher;
use crate::producer_state::{ProducerStates, SequenceVerdict};

struct State {
    log: PartitionLog,
    producers: ProducerStates,
    /// Appended since the last flush: the partition is (or is about to be) in the flusher's queue.
    dirty: bool,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    state: RwLock<State>,
    high_watermark: watch::Sender<i64>,
    /// The cold tier's manifest for this partition, once loaded (see `tiering`).
    cold: RwLock<Option<Arc<tier::Manifest>>>,
}

/// Where an appended record set landed.
#[derive(Clone, Copy, Debug)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// A slice of the log for a Fetch.
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

impl Partition {
    pub fn open(
        topic: Arc<str>,
        index: i32,
        dir: &Path,
        config: LogConfig,
    ) -> Result<Arc<Partition>, KafkaError> {
        let log = PartitionLog::open(dir, config).map_err(KafkaError::storage)?;
        let mut producers = ProducerStates::default();
        rebuild_producer_state(&log, &mut producers);
        let durable_end = log.log_end_offset();
        Ok(Arc::new(Partition {
            topic,
            index,
            state: RwLock::new(State {
                log,
                producers,
                dirty: false,
            }),
            high_watermark: watch::Sender::new(durable_end),
            cold: RwLock::new(None),
        }))
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn subscribe_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// The first offset of the whole log: the cold tier's start when it holds anything older
    /// than the local segments.
    pub fn log_start_offset(&self) -> i64 {
        let local = self.local_start_offset();
        self.cold_start_offset()
            .map_or(local, |cold| cold.min(local))
    }

    /// The first offset on local disk.
    pub fn local_start_offset(&self) -> i64 {
        self.state.read().log.log_start_offset()
    }

    /// In the local log, from `offset` on, the first run of batches that can hold a record
    /// timestamped in `[low, high)`, as (start, end) offsets: see
    /// `log::PartitionLog::next_in_time_range`.
    pub fn next_in_time_range(&self, offset: i64, low: i64, high: i64) -> Option<(i64, i64)> {
        self.state.read().log.next_in_time_range(offset, low, high)
    }

    /// The cold tier's manifest, if it has been loaded.
    pub fn cold_manifest(&self) -> Option<Arc<tier::Manifest>> {
        self.cold.read().clone()
    }

    pub(crate) fn set_cold_manifest(&self, manifest: Arc<tier::Manifest>) {
        *self.cold.write() = Some(manifest);
    }

    fn cold_start_offset(&self) -> Option<i64> {
        self.cold
            .read()
            .as_ref()
            .and_then(|manifest| manifest.start_offset())
    }

    /// Bytes of log on local disk.
    pub fn local_bytes(&self) -> u64 {
        self.state.read().log.size_bytes()
    }

    pub fn sealed_segments(&self) -> Vec<log::SegmentInfo> {
        self.state.read().log.sealed_segments()
    }

    pub fn sealed_slice(&self, offset: i64) -> Result<Option<log::SealedSlice>, KafkaError> {
        Ok(self.state.read().log.sealed_slice(offset)?)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.state.read().log.log_end_offset()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.state.write().log.set_config(config);
    }

    /// Appends validated batches (each already checked by `records::validate_batch`), assigning
    /// offsets. Idempotent producers' duplicates are acknowledged with their original offsets.
    pub fn append(
        self: &Arc<Self>,
        batches: &mut [(records::BatchHeader, &mut [u8])],
        log_append_time: bool,
        flusher: &Flusher,
    ) -> Result<Appended, KafkaError> {
        let append_time = now_ms();
        let mut state = self.state.write();
        let mut first: Option<i64> = None;
        let mut last = -1;
        for (header, bytes) in batches.iter_mut() {
            match state.producers.check(header)? {
                SequenceVerdict::Duplicate { base_offset } => {
                    first.get_or_insert(base_offset);
                    last = base_offset + header.last_offset_delta as i64;
                }
                SequenceVerdict::Append => {
                    let info = state
                        .log
                        .append(bytes, append_time, log_append_time)
                        .map_err(KafkaError::storage)?;
                    state.producers.record(header, info.base_offset);
                    first.get_or_insert(info.base_offset);
                    last = info.last_offset;
                    if !state.dirty {
                        state.dirty = true;
                        flusher.schedule(self.clone());
                    }
                }
            }
        }
        let Some(base_offset) = first else {
            return Err(KafkaError::new(
                ResponseError::InvalidRecord,
                "empty record set",
            ));
        };
        Ok(Appended {
            base_offset,
            last_offset: last,
            log_append_time_ms: if log_append_time { append_time } else { -1 },
            log_start_offset: state.log.log_start_offset(),
        })
    }

    /// Makes everything appended so far durable and moves the high watermark to it.
    /// Called by the flusher only.
    pub(crate) fn flush(&self) -> Result<(), log::LogError> {
        // The fsync runs without the lock, so appends go on meanwhile; they mark the partition
        // dirty again and are covered by the next round.
        let job = {
            let mut state = self.state.write();
            state.dirty = false;
            state.log.begin_flush()
        };
        job.run()?;
        let durable_end = {
            let mut state = self.state.write();
            state.log.complete_flush(job);
            state.log.flushed_offset()
        };
        self.high_watermark.send_if_modified(|high_watermark| {
            let moved = durable_end > *high_watermark;
            if moved {
                *high_watermark = durable_end;
            }
            moved
        });
        Ok(())
    }

    /// Whole batches from `offset` in the local log, never past the high watermark. An offset
    /// in a gap between the cold tier and the local log reads from the local start.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, KafkaError> {
        self.read_until(offset, max_bytes, i64::MAX)
    }

    /// As [`Partition::read`], also stopping before the first batch that reaches `end_offset`
    /// (pass a batch boundary).
    pub fn read_until(
        &self,
        offset: i64,
        max_bytes: usize,
        end_offset: i64,
    ) -> Result<ReadResult, KafkaError> {
        let high_watermark = self.high_watermark();
        let log_start_offset = self.log_start_offset();
        let state = self.state.read();
        let local_start_offset = state.log.log_start_offset();
        let log_end_offset = state.log.log_end_offset();
        let offset = if offset >= log_start_offset {
            offset.max(local_start_offset)
        } else {
            offset
        };
        if offset < log_start_offset || offset > log_end_offset {
            return Err(KafkaError::new(
                ResponseError::OffsetOutOfRange,
                format!(
                    "offset {offset} is out of range for {}-{} (log start {log_start_offset}, end {log_end_offset})",
                    self.topic, self.index
                ),
            ));
        }
        let records = if offset >= high_watermark {
            Bytes::new()
        } else {
            state
                .log
                .read_until(offset, max_bytes, high_watermark.min(end_offset))?
        };
        Ok(ReadResult {
            records,
            high_watermark,
            log_start_offset,
        })
    }

    /// The first batch whose max timestamp is at least `timestamp_ms`, below the high watermark.
    pub fn batch_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Bytes>, KafkaError> {
        let high_watermark = self.high_watermark();
        let state = self.state.read();
        match state.log.offset_for_timestamp(timestamp_ms)? {
            Some((offset, _)) if offset < high_watermark => {
                Ok(Some(state.log.read_until(offset, 1, high_watermark)?))
            }
            _ => Ok(None),
        }
    }

    /// The largest timestamp in the log and the offset of the record that has it.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.state.read().log.max_timestamp()
    }

    /// Starts a new segment at the log end (see `PartitionLog::roll_now`).
    pub(crate) fn roll(&self) -> Result<(), KafkaError> {
        self.state
            .write()
            .log
            .roll_now()
            .map_err(KafkaError::storage)
    }

    /// Deletes the whole segments below `offset`; the log start moves up.
    pub(crate) fn delete_segments_below(&self, offset: i64) -> Result<u64, KafkaError> {
        self.state
            .write()
            .log
            .delete_segments_below(offset)
            .map_err(KafkaError::storage)
    }

    pub fn apply_retention(&self) -> Result<u64, log::LogError> {
        self.state.write().log.apply_retention(now_ms())
    }
}

/// Idempotent producers continue across restarts: the state is rebuilt from the batch headers of
/// the log's tail, which recovery has just validated.
fn rebuild_producer_state(log: &PartitionLog, producers: &mut ProducerStates) {
    const TAIL_BYTES: i64 = 64 * 1024 * 1024;
    let end = log.log_end_offset();
    let mut offset = log.tail_offset(TAIL_BYTES as u64);
    while offset < end {
        let Ok(chunk) = log.read_until(offset, 8 * 1024 * 1024, end) else {
            break;
        };
        if chunk.is_empty() {
            break;
        }
        let mut next = offset;
        for batch in records::batches(&chunk) {
            let Ok((header, _)) = batch else { break };
            producers.record(&header, header.base_offset);
            next = header.last_offset() + 1;
        }
        if next == offset {
            break;
        }
        offset = next;
    }
}
