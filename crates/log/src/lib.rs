//! One partition's durable log: a directory of segments holding Kafka RecordBatch v2 bytes
//! exactly as produced (after the broker assigned offsets), with sparse offset and time
//! indexes, recovery of a torn tail at open, size/time based rolling and retention.
//!
//! **Architecture invariant:** `log` knows nothing about sockets, topics, producers or
//! replication. It stores batches, finds them by offset or timestamp, and says what is durable.
//! On-disk format and durability protocol: `docs/log-format.md`.
//!
//! ```
//! use log::{LogConfig, PartitionLog};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
//! let mut batch = records::BatchBuilder::new(0).record(None, Some(b"hello"), 1_000).build();
//! let appended = log.append(&mut batch, 2_000, false).unwrap();
//! log.flush().unwrap(); // now durable: acknowledge
//! assert_eq!((appended.base_offset, log.log_end_offset(), log.flushed_offset()), (0, 1, 1));
//! assert_eq!(&log.read(0, 1 << 20).unwrap()[..], &batch[..]);
//! ```

mod index;
mod segment;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use records::{BatchHeader, RecordError};

use segment::Segment;

/// Per-partition settings, named after Kafka's topic configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when an append would grow the active segment past this. Capped at
    /// `u32::MAX` because index entries hold 32-bit file positions.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment started longer ago than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete sealed segments whose newest timestamp is older; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest sealed segments while the log is larger; -1 = no
    /// limit.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: -1,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
        }
    }
}

impl LogConfig {
    fn segment_bytes_max(&self) -> u64 {
        self.segment_bytes.clamp(1, u32::MAX as u64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "offset {offset} is out of range (log start {log_start_offset}, log end {log_end_offset})"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("batch of {batch_bytes} bytes is larger than max.message.bytes {max_message_bytes}")]
    RecordTooLarge {
        batch_bytes: usize,
        max_message_bytes: u32,
    },
    #[error("invalid record set: {0}")]
    InvalidRecords(#[from] RecordError),
    #[error("segment {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

impl LogError {
    fn io(operation: &'static str, path: &Path, source: std::io::Error) -> LogError {
        LogError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest batch max timestamp in the record set (the append time under LogAppendTime).
    pub max_timestamp: i64,
    /// The append time if the batches were stamped LogAppendTime, else -1 (Kafka's wire value).
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// The fsyncs that make everything appended before [`PartitionLog::begin_flush`] durable.
/// [`FlushJob::run`] needs no access to the log, so a group-commit flusher can run it without
/// holding the partition lock, then report back with [`PartitionLog::complete_flush`].
#[derive(Debug)]
pub struct FlushJob {
    files: Vec<(PathBuf, Arc<File>)>,
    dir: Option<PathBuf>,
    pending_sealed: usize,
    dir_generation: u64,
    end_offset: i64,
}

impl FlushJob {
    /// fdatasync every file with unflushed data, then fsync the directory if segments were
    /// created since the last flush.
    pub fn run(&self) -> Result<(), LogError> {
        for (path, file) in &self.files {
            file.sync_data()
                .map_err(|source| LogError::io("syncing", path, source))?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)
                .and_then(|dir_file| dir_file.sync_all())
                .map_err(|source| LogError::io("syncing directory", dir, source))?;
        }
        Ok(())
    }

    /// `flushed_offset` once this job has run.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }
}

/// A sealed segment as the cold tier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    /// The newest batch max timestamp in the segment (-1 if empty).
    pub max_timestamp: i64,
}

/// Part of a sealed segment, readable without holding the log (see
/// [`PartitionLog::sealed_slice`]).
#[derive(Debug)]
pub struct SealedSlice {
    file: Arc<File>,
    path: PathBuf,
    position: u64,
    end: u64,
    segment_next_offset: i64,
}

impl SealedSlice {
    /// The offset after the segment's last batch.
    pub fn segment_next_offset(&self) -> i64 {
        self.segment_next_offset
    }

    /// Whole batches from the slice's start: at most `max_bytes`, but at least one batch.
    pub fn read(&self, max_bytes: usize) -> Result<Bytes, LogError> {
        // The first batch's length is the least read; its header says how long it is.
        let mut header_bytes = [0u8; records::BATCH_HEADER_LEN];
        self.file
            .read_exact_at(&mut header_bytes, self.position)
            .map_err(|source| LogError::io("reading", &self.path, source))?;
        let first = BatchHeader::parse(&header_bytes).map_err(|error| LogError::Corrupt {
            path: self.path.clone(),
            position: self.position,
            reason: error.to_string(),
        })?;
        segment::read_batches(
            &self.file,
            &self.path,
            self.position,
            self.end,
            max_bytes.max(first.total_len()),
            i64::MAX,
        )
    }
}

/// One partition's log. Not internally synchronized: the broker wraps it in a lock. All reads
/// take `&self` (positioned reads, no seek state), so a read-write lock lets fetches run in
/// parallel with each other.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    flushed_offset: i64,
    /// Sealed segments' log and index files not yet synced.
    pending_sealed: Vec<(PathBuf, Arc<File>)>,
    /// Bumped when a segment file is created; the directory needs an fsync while it is ahead
    /// of `dir_generation_synced`.
    dir_generation: u64,
    dir_generation_synced: u64,
}

impl PartitionLog {
    /// Opens (creating if missing) the log in `dir` and recovers it: the active segment is
    /// scanned and cut at its first invalid batch; sealed segments are trusted if their
    /// indexes check out, otherwise scanned too. Everything left is synced, so
    /// `flushed_offset() == log_end_offset()` on return.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        fs::create_dir_all(dir).map_err(|source| LogError::io("creating", dir, source))?;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        let entries = fs::read_dir(dir).map_err(|source| LogError::io("listing", dir, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| LogError::io("listing", dir, source))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((stem, extension)) = name.split_once('.') else {
                continue;
            };
            let Some(base) = parse_base_offset(stem) else {
                continue;
            };
            match extension {
                "log" => bases.push(base),
                "index" | "timeindex" | "zoneindex" => index_files.push((base, entry.path())),
                _ => {}
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                tracing::warn!(path = %path.display(), "removing index file without a segment");
                fs::remove_file(&path).map_err(|source| LogError::io("deleting", &path, source))?;
            }
        }
        let index_interval_bytes = config.index_interval_bytes as u64;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (at, &base) in bases.iter().enumerate() {
            let active = at + 1 == bases.len();
            let segment = Segment::open(dir, base, active, index_interval_bytes)?;
            if let Some(previous) = segments.last() {
                let previous: &Segment = previous;
                if segment.base_offset < previous.next_offset {
                    return Err(LogError::Corrupt {
                        path: segment.path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {base} but the previous segment ends at {}",
                            previous.next_offset
                        ),
                    });
                }
            }
            segments.push(segment);
        }
        let created = segments.is_empty();
        if created {
            segments.push(Segment::create(dir, 0)?);
        }
        for segment in &segments {
            segment
                .file
                .sync_data()
                .map_err(|source| LogError::io("syncing", &segment.path, source))?;
        }
        File::open(dir)
            .and_then(|dir_file| dir_file.sync_all())
            .map_err(|source| LogError::io("syncing directory", dir, source))?;
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            flushed_offset: 0,
            pending_sealed: Vec::new(),
            dir_generation: 0,
            dir_generation_synced: 0,
        };
        log.flushed_offset = log.log_end_offset();
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes effect at the next append (rolling) or retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// The first offset that can be read.
    pub fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    /// The next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// The offset after the last durable batch: everything below it survives a crash.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The largest batch max timestamp in the log and the base offset of that batch (batch
    /// granularity: the broker can walk that batch for the exact record); (-1, -1) if empty.
    pub fn max_timestamp(&self) -> (i64, i64) {
        self.segments
            .iter()
            .filter(|segment| segment.size > 0)
            .map(|segment| (segment.max_timestamp, segment.offset_of_max_timestamp))
            .fold((-1, -1), |best, candidate| {
                if candidate.0 > best.0 {
                    candidate
                } else {
                    best
                }
            })
    }

    /// Appends a record set of one or more batches, already validated by
    /// `records::validate_batch`. Rewrites each batch's base offset (and, if `log_append_time`,
    /// its timestamp type, max timestamp and CRC) in `record_set`, then writes it with one
    /// positioned write. Does not fsync: see [`PartitionLog::flush`]. On error nothing is
    /// appended (the offsets in `record_set` may have been rewritten).
    pub fn append(
        &mut self,
        record_set: &mut [u8],
        append_time_ms: i64,
        log_append_time: bool,
    ) -> Result<AppendInfo, LogError> {
        if record_set.is_empty() {
            return Err(RecordError::EmptyRecordSet.into());
        }
        let base_offset = self.log_end_offset();
        let mut next_offset = base_offset;
        let mut max_timestamp = -1;
        let mut position = 0;
        while position < record_set.len() {
            let batch = &mut record_set[position..];
            let header = BatchHeader::parse(batch)?;
            let total = header.total_len();
            if total > batch.len() {
                return Err(RecordError::Truncated {
                    needed: total,
                    available: batch.len(),
                }
                .into());
            }
            if total > self.config.max_message_bytes as usize {
                return Err(LogError::RecordTooLarge {
                    batch_bytes: total,
                    max_message_bytes: self.config.max_message_bytes,
                });
            }
            if header.last_offset_delta < 0 {
                return Err(RecordError::InvalidRecordCount {
                    record_count: header.record_count,
                    last_offset_delta: header.last_offset_delta,
                }
                .into());
            }
            let batch = &mut batch[..total];
            records::set_base_offset(batch, next_offset)?;
            if log_append_time {
                records::set_log_append_time(batch, append_time_ms)?;
                max_timestamp = max_timestamp.max(append_time_ms);
            } else {
                max_timestamp = max_timestamp.max(header.max_timestamp);
            }
            next_offset += header.last_offset_delta as i64 + 1;
            position += total;
        }
        let last_offset = next_offset - 1;

        if self.should_roll(record_set.len() as u64, last_offset, append_time_ms) {
            self.roll()?;
        }
        let index_interval_bytes = self.config.index_interval_bytes as u64;
        let active = self.active_mut();
        let start = active.size;
        if let Err(source) = active.file.write_all_at(record_set, start) {
            // Cut off whatever part was written, so the next append lands right after `start`.
            let _ = active.file.set_len(start);
            return Err(LogError::io("appending to", &active.path, source));
        }
        if active.size == 0 {
            active.roll_base_ms = Some(append_time_ms);
        }
        let mut position = 0;
        while position < record_set.len() {
            let batch = &record_set[position..];
            let header = BatchHeader::parse(batch)?;
            let min_timestamp = records::min_timestamp(&batch[..header.total_len()]);
            active.note_batch(
                &header,
                min_timestamp,
                start + position as u64,
                index_interval_bytes,
                true,
            );
            position += header.total_len();
        }
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp,
            log_append_time_ms: if log_append_time { append_time_ms } else { -1 },
            log_start_offset: self.log_start_offset(),
        })
    }

    fn should_roll(&self, set_bytes: u64, last_offset: i64, append_time_ms: i64) -> bool {
        let active = self.active();
        if active.size == 0 {
            return false;
        }
        let too_big = active.size + set_bytes > self.config.segment_bytes_max();
        let too_old = active
            .roll_base_ms
            .is_some_and(|started| append_time_ms.saturating_sub(started) > self.config.segment_ms);
        let offsets_overflow = last_offset - active.base_offset > u32::MAX as i64;
        too_big || too_old || offsets_overflow
    }

    /// Seals the active segment (final time-index entry, index files written) and starts a
    /// new one at the log end offset.
    fn roll(&mut self) -> Result<(), LogError> {
        let base_offset = self.log_end_offset();
        let active = self.active_mut();
        active.seal()?;
        let mut sealed_files = vec![(active.path.clone(), Arc::clone(&active.file))];
        sealed_files.extend(active.index_files());
        let segment = Segment::create(&self.dir, base_offset)?;
        self.pending_sealed.extend(sealed_files);
        self.segments.push(segment);
        self.dir_generation += 1;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled to a new segment");
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end, so that what is appended
    /// next begins a segment of its own. Nothing happens while the active segment is empty.
    pub fn roll_now(&mut self) -> Result<(), LogError> {
        if self.active().size == 0 {
            return Ok(());
        }
        self.roll()
    }

    /// The sealed segments (every one but the active), oldest first.
    pub fn sealed_segments(&self) -> Vec<SegmentInfo> {
        self.segments[..self.segments.len() - 1]
            .iter()
            .map(|segment| SegmentInfo {
                base_offset: segment.base_offset,
                next_offset: segment.next_offset,
                size: segment.size,
                max_timestamp: if segment.size > 0 {
                    segment.max_timestamp
                } else {
                    -1
                },
            })
            .collect()
    }

    /// A reader of the sealed segment holding `offset` (or, after a gap, the next sealed
    /// segment), starting at the batch that holds it. `None` if `offset` is in the active
    /// segment or beyond.
    pub fn sealed_slice(&self, offset: i64) -> Result<Option<SealedSlice>, LogError> {
        let sealed = &self.segments[..self.segments.len() - 1];
        let first = sealed.partition_point(|segment| segment.next_offset <= offset);
        for segment in &sealed[first..] {
            if let Some(slice) = segment.sealed_slice(offset)? {
                return Ok(Some(slice));
            }
        }
        Ok(None)
    }

    /// Deletes the whole segments that lie entirely below `offset`, oldest first, never the
    /// active one; the log start moves to the first segment kept. For a log whose content below
    /// `offset` has been superseded (the offsets topic after a snapshot). Returns how many.
    pub fn delete_segments_below(&mut self, offset: i64) -> Result<u64, LogError> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1].base_offset <= offset {
            self.segments[0].delete_files()?;
            self.segments.remove(0);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Captures the fsyncs needed to make everything appended so far durable.
    pub fn begin_flush(&self) -> FlushJob {
        let mut files = self.pending_sealed.clone();
        if self.flushed_offset < self.log_end_offset() {
            files.push((self.active().path.clone(), Arc::clone(&self.active().file)));
        }
        let dir_dirty = self.dir_generation != self.dir_generation_synced;
        FlushJob {
            files,
            dir: dir_dirty.then(|| self.dir.clone()),
            pending_sealed: self.pending_sealed.len(),
            dir_generation: self.dir_generation,
            end_offset: self.log_end_offset(),
        }
    }

    /// Records that `job` ran successfully: `flushed_offset` moves to its end.
    pub fn complete_flush(&mut self, job: FlushJob) {
        let synced = job.pending_sealed.min(self.pending_sealed.len());
        self.pending_sealed.drain(..synced);
        if job.dir.is_some() {
            self.dir_generation_synced = self.dir_generation_synced.max(job.dir_generation);
        }
        self.flushed_offset = self.flushed_offset.max(job.end_offset);
    }

    /// Makes everything appended so far durable (fdatasync of the segments written since the
    /// last flush, fsync of the directory if a segment was created). After an error the data
    /// may or may not be durable; `flushed_offset` does not move.
    pub fn flush(&mut self) -> Result<(), LogError> {
        let job = self.begin_flush();
        job.run()?;
        self.complete_flush(job);
        Ok(())
    }

    /// Whole batches starting with the one that holds `offset`; see
    /// [`PartitionLog::read_until`].
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.read_until(offset, max_bytes, i64::MAX)
    }

    /// Whole batches starting with the one that holds `offset` (or the next batch after a
    /// gap), from one segment, stopping before `max_bytes` would be exceeded — but the first
    /// batch is returned whatever its size — and before any batch whose last offset is at or
    /// above `end_offset` (pass the high watermark to keep consumers below it). Empty at the
    /// log end or when the first batch reaches `end_offset`. `OffsetOutOfRange` if `offset` is
    /// below the log start or above the log end.
    pub fn read_until(
        &self,
        offset: i64,
        max_bytes: usize,
        end_offset: i64,
    ) -> Result<Bytes, LogError> {
        self.check_offset(offset)?;
        let end_offset = end_offset.min(self.log_end_offset());
        let first = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset)
            .max(1)
            - 1;
        for segment in &self.segments[first..] {
            if segment.base_offset >= end_offset {
                break;
            }
            if let Some(bytes) = segment.read(offset, max_bytes, end_offset)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    fn check_offset(&self, offset: i64) -> Result<(), LogError> {
        if offset < self.log_start_offset() || offset > self.log_end_offset() {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: self.log_end_offset(),
            });
        }
        Ok(())
    }

    /// The first record whose timestamp is at least `timestamp_ms`, as (offset, timestamp);
    /// `None` if there is none. Exact for uncompressed CreateTime batches (their records are
    /// walked). A LogAppendTime batch gives its base offset and append time. A compressed
    /// CreateTime batch cannot be looked into: it gives its base offset and max timestamp, and
    /// the caller may decompress that batch to refine the answer.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in &self.segments {
            if let Some(found) = segment.offset_for_timestamp(timestamp_ms)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// From `offset` on, the first run of batches that can hold a record with a timestamp in
    /// `[low, high)` (`high` = `i64::MAX`: no upper bound): where to start reading (never before
    /// `offset`) and the offset where the run ends (a batch at or after it need not be read).
    /// `None` if no batch at or after `offset` can. Exact bounds come from each segment's zones (runs of about 64 KiB of
    /// batches with their least and greatest record timestamps); a compressed CreateTime batch
    /// counts as possibly older than anything.
    pub fn next_in_time_range(&self, offset: i64, low: i64, high: i64) -> Option<(i64, i64)> {
        let first = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset)
            .max(1)
            - 1;
        self.segments[first..]
            .iter()
            .find_map(|segment| segment.next_in_time_range(offset, low, high))
    }

    /// An offset roughly `bytes` before the log end, at a batch boundary (for replaying the
    /// tail, e.g. to rebuild producer state). Never below the log start.
    pub fn tail_offset(&self, bytes: u64) -> i64 {
        let mut remaining = bytes;
        for segment in self.segments.iter().rev() {
            if segment.size >= remaining {
                let position = segment.size - remaining;
                return segment
                    .offset_at_or_after(position)
                    .unwrap_or(segment.base_offset);
            }
            remaining -= segment.size;
        }
        self.log_start_offset()
    }

    /// Deletes the oldest sealed segments that are past `retention.ms` (their newest timestamp
    /// is older than `now_ms - retention_ms`) or beyond `retention.bytes`. The active segment
    /// is never deleted. The log start offset moves to the first remaining segment's base.
    /// Returns the number of segments deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<u64, LogError> {
        let LogConfig {
            retention_ms,
            retention_bytes,
            ..
        } = self.config;
        let mut total_bytes = self.size_bytes();
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let expired =
                retention_ms >= 0 && oldest.max_timestamp < now_ms.saturating_sub(retention_ms);
            let over_size =
                retention_bytes >= 0 && total_bytes - oldest.size >= retention_bytes as u64;
            if !(expired || over_size) {
                break;
            }
            oldest.delete_files()?;
            total_bytes -= oldest.size;
            tracing::info!(
                segment = %oldest.path.display(),
                expired,
                over_size,
                "deleted segment by retention"
            );
            self.segments.remove(0);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes the log's directory and everything in it.
    pub fn delete_all(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(|source| LogError::io("deleting", &dir, source))
    }
}

fn parse_base_offset(stem: &str) -> Option<i64> {
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests;
