//! One segment: a `.log` file of whole batches, its in-memory indexes, and recovery.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use records::{BATCH_HEADER_LEN, BatchHeader, Compression, TimestampType};

use crate::LogError;
use crate::index::{OffsetIndex, TimeIndex, ZoneIndex};

/// Bytes read at a time when scanning a segment at recovery.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Reads of at least this many bytes map the range instead of copying it; smaller ones (a
/// consumer at the tail) are cheaper to copy than to map.
const MAP_MIN_BYTES: usize = 256 << 10;

/// Page size, for the alignment of a mapping's start.
const PAGE_BYTES: u64 = 4096;

/// A mapped range of a segment file, as the owner of a [`Bytes`]; unmapped when dropped.
struct MappedRange {
    map: Mmap,
    /// Where the wanted bytes start in the map (which starts at a page boundary).
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

pub(crate) fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    /// Bytes of whole batches written; nothing past it is ever read.
    pub(crate) size: u64,
    /// Last offset of the last batch + 1, or `base_offset` while empty.
    pub(crate) next_offset: i64,
    /// -1 while empty.
    pub(crate) max_timestamp: i64,
    pub(crate) offset_of_max_timestamp: i64,
    /// Time the segment started, for `segment_ms` (first append, or first batch's timestamp).
    pub(crate) roll_base_ms: Option<i64>,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// `None` for a sealed segment loaded without a zone file (written before zones existed):
    /// its timestamps are then known only up to `max_timestamp`.
    pub(crate) zone_index: Option<ZoneIndex>,
    pub(crate) bytes_since_index_entry: u64,
}

/// The index files next to a segment's `.log`.
const INDEX_EXTENSIONS: [&str; 3] = ["index", "timeindex", "zoneindex"];

impl Segment {
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| LogError::io("creating", &path, source))?;
        for extension in INDEX_EXTENSIONS {
            let stale = dir.join(file_name(base_offset, extension));
            let _ = fs::remove_file(stale);
        }
        Ok(Segment::empty(base_offset, path, file))
    }

    fn empty(base_offset: i64, path: PathBuf, file: File) -> Segment {
        Segment {
            base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            roll_base_ms: None,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            zone_index: Some(ZoneIndex::default()),
            bytes_since_index_entry: 0,
        }
    }

    fn index_path(&self, extension: &str) -> PathBuf {
        self.path.with_extension(extension)
    }

    /// Opens an existing segment. A sealed segment whose indexes look right is trusted after a
    /// scan of its tail (from its last index entry); otherwise, and always for the active
    /// segment, every batch is scanned, the file is cut at the first bad batch and the indexes
    /// are rebuilt.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        active: bool,
        index_interval_bytes: u64,
    ) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| LogError::io("opening", &path, source))?;
        let file_size = file
            .metadata()
            .map_err(|source| LogError::io("reading metadata of", &path, source))?
            .len();
        let mut segment = Segment::empty(base_offset, path, file);
        if !active && segment.load_trusted(file_size, index_interval_bytes)? {
            return Ok(segment);
        }
        segment.recover(file_size, index_interval_bytes, !active)?;
        Ok(segment)
    }

    /// Loads the index files and checks them against the tail of the log; false if they
    /// cannot be trusted.
    fn load_trusted(
        &mut self,
        file_size: u64,
        index_interval_bytes: u64,
    ) -> Result<bool, LogError> {
        let (Ok(offset_bytes), Ok(time_bytes)) = (
            fs::read(self.index_path("index")),
            fs::read(self.index_path("timeindex")),
        ) else {
            return Ok(false);
        };
        let (Some(offset_index), Some(time_index)) = (
            OffsetIndex::decode(&offset_bytes, file_size),
            TimeIndex::decode(&time_bytes),
        ) else {
            return Ok(false);
        };
        // Sealing always writes a final time entry, so a sealed segment with data has one.
        if file_size > 0 && time_index.entries.is_empty() {
            return Ok(false);
        }
        // The last offset entry must point at a batch with that base offset.
        let last_entry = offset_index.entries.last().copied();
        if let Some((relative_offset, position)) = last_entry {
            match self.read_header(position as u64, file_size) {
                Ok(header) if header.base_offset == self.base_offset + relative_offset as i64 => {}
                _ => return Ok(false),
            }
        }
        // Scan the tail after the last offset entry: it finds the segment's end and checks
        // that the index describes this file.
        let scan_from = last_entry.map_or(0, |(_, position)| position);
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.zone_index = fs::read(self.index_path("zoneindex"))
            .ok()
            .and_then(|bytes| ZoneIndex::decode(&bytes));
        let time_index_max = self.time_index.last();
        let end = self.scan(scan_from as u64, file_size, index_interval_bytes, false)?;
        if end.problem.is_some() {
            return Ok(false);
        }
        // Zones must start inside the segment, or they describe some other file.
        let relative_end = (self.next_offset - self.base_offset) as u64;
        if let Some(zones) = &self.zone_index
            && zones
                .entries
                .last()
                .is_some_and(|&(relative_offset, _, _)| relative_offset as u64 >= relative_end)
        {
            self.zone_index = None;
        }
        if let Some((timestamp, relative_offset)) = time_index_max
            && timestamp >= self.max_timestamp
        {
            // On a tie the indexed batch comes first: it reached this timestamp earlier.
            self.max_timestamp = timestamp;
            self.offset_of_max_timestamp = self.base_offset + relative_offset as i64;
        }
        if self.size > 0 {
            self.roll_base_ms = Some(self.first_batch_timestamp()?);
        }
        Ok(true)
    }

    /// Scans every batch, truncates at the first bad one and rebuilds the indexes.
    fn recover(
        &mut self,
        file_size: u64,
        index_interval_bytes: u64,
        write_indexes: bool,
    ) -> Result<(), LogError> {
        self.reset();
        let scanned = self.scan(0, file_size, index_interval_bytes, true)?;
        if let Some(problem) = scanned.problem {
            tracing::warn!(
                segment = %self.path.display(),
                position = self.size,
                dropped_bytes = file_size - self.size,
                %problem,
                "truncating segment at its first invalid batch"
            );
            self.file
                .set_len(self.size)
                .and_then(|()| self.file.sync_all())
                .map_err(|source| LogError::io("truncating", &self.path, source))?;
        }
        if self.size > 0 {
            self.roll_base_ms = Some(self.first_batch_timestamp()?);
        }
        if write_indexes {
            self.seal()?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        self.roll_base_ms = None;
        self.offset_index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.zone_index = Some(ZoneIndex::default());
        self.bytes_since_index_entry = 0;
    }

    /// Walks batches from `start`, validating header and CRC, and feeds each to the segment's
    /// bookkeeping (`self.size`, offsets, max timestamp and, if `index`, the indexes).
    fn scan(
        &mut self,
        start: u64,
        end: u64,
        index_interval_bytes: u64,
        index: bool,
    ) -> Result<Scanned, LogError> {
        let mut buffer: Vec<u8> = Vec::new();
        let mut buffer_start = start;
        let mut position = start;
        self.size = start;
        let problem = loop {
            if position == end {
                break None;
            }
            if end - position < BATCH_HEADER_LEN as u64 {
                break Some(format!(
                    "{} bytes at the end cannot hold a batch header",
                    end - position
                ));
            }
            let in_buffer =
                |len: u64, buffer: &mut Vec<u8>, buffer_start: &mut u64| -> Result<(), LogError> {
                    let have = (*buffer_start + buffer.len() as u64).saturating_sub(position);
                    if position >= *buffer_start && have >= len {
                        return Ok(());
                    }
                    let want = (len.max(SCAN_CHUNK_BYTES as u64)).min(end - position) as usize;
                    buffer.resize(want, 0);
                    self.file
                        .read_exact_at(buffer, position)
                        .map_err(|source| LogError::io("reading", &self.path, source))?;
                    *buffer_start = position;
                    Ok(())
                };
            in_buffer(BATCH_HEADER_LEN as u64, &mut buffer, &mut buffer_start)?;
            let at = (position - buffer_start) as usize;
            let header = match BatchHeader::parse(&buffer[at..]) {
                Ok(header) => header,
                Err(error) => break Some(error.to_string()),
            };
            let total = header.total_len() as u64;
            if total > end - position {
                break Some(format!(
                    "batch of {total} bytes is torn: {} bytes remain",
                    end - position
                ));
            }
            in_buffer(total, &mut buffer, &mut buffer_start)?;
            let at = (position - buffer_start) as usize;
            if let Err(error) = records::validate_stored_batch(&buffer[at..at + total as usize]) {
                break Some(error.to_string());
            }
            if header.base_offset < self.next_offset {
                break Some(format!(
                    "batch base offset {} is below the previous batch's end {}",
                    header.base_offset, self.next_offset
                ));
            }
            if header.base_offset < self.base_offset
                || header.last_offset() - self.base_offset > u32::MAX as i64
                || position + total > u32::MAX as u64
            {
                break Some(format!(
                    "batch base offset {} does not belong in this segment",
                    header.base_offset
                ));
            }
            let min_timestamp = if index {
                records::min_timestamp(&buffer[at..at + total as usize])
            } else {
                None
            };
            self.note_batch(
                &header,
                min_timestamp,
                position,
                index_interval_bytes,
                index,
            );
            position += total;
        };
        Ok(Scanned { problem })
    }

    /// Bookkeeping for a batch now stored at `position`; `min_timestamp` is its least record
    /// timestamp when known (see `records::min_timestamp`).
    pub(crate) fn note_batch(
        &mut self,
        header: &BatchHeader,
        min_timestamp: Option<i64>,
        position: u64,
        index_interval_bytes: u64,
        index: bool,
    ) {
        let relative_offset = (header.base_offset - self.base_offset) as u32;
        if index && let Some(zones) = &mut self.zone_index {
            zones.note(
                relative_offset,
                min_timestamp,
                header.max_timestamp,
                header.total_len() as u64,
            );
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if index && self.bytes_since_index_entry >= index_interval_bytes && position > 0 {
            self.offset_index.push(relative_offset, position as u32);
            let relative_offset_of_max = (self.offset_of_max_timestamp - self.base_offset) as u32;
            self.time_index
                .maybe_push(self.max_timestamp, relative_offset_of_max);
            self.bytes_since_index_entry = 0;
        }
        let total = header.total_len() as u64;
        self.bytes_since_index_entry += total;
        self.size = position + total;
        self.next_offset = header.last_offset() + 1;
    }

    fn first_batch_timestamp(&self) -> Result<i64, LogError> {
        Ok(self.read_header(0, self.size)?.max_timestamp)
    }

    /// See `PartitionLog::next_in_time_range`; `offset` may lie before this segment.
    pub(crate) fn next_in_time_range(
        &self,
        offset: i64,
        low: i64,
        high: i64,
    ) -> Option<(i64, i64)> {
        let offset = offset.max(self.base_offset);
        if self.size == 0 || offset >= self.next_offset || self.max_timestamp < low {
            return None;
        }
        let Some(zones) = &self.zone_index else {
            return Some((offset, self.next_offset));
        };
        let relative_offset = (offset - self.base_offset) as u32;
        let (start, end) = zones.next_match(relative_offset, low, high)?;
        let end = end.map_or(self.next_offset, |end| self.base_offset + end as i64);
        Some((self.base_offset + start as i64, end))
    }

    /// Adds the final time-index entry and writes both index files whole. Not fsynced here:
    /// the flush that follows a roll syncs them (see `docs/log-format.md`).
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        if self.size > 0 {
            let relative_offset = (self.offset_of_max_timestamp - self.base_offset) as u32;
            self.time_index
                .maybe_push(self.max_timestamp, relative_offset);
        }
        let mut files = vec![
            ("index", self.offset_index.encode()),
            ("timeindex", self.time_index.encode()),
        ];
        if let Some(zones) = &self.zone_index {
            files.push(("zoneindex", zones.encode()));
        }
        for (extension, bytes) in files {
            let path = self.index_path(extension);
            fs::write(&path, bytes).map_err(|source| LogError::io("writing", &path, source))?;
        }
        Ok(())
    }

    /// The index files, opened for a later fsync.
    pub(crate) fn index_files(&self) -> Vec<(PathBuf, Arc<File>)> {
        INDEX_EXTENSIONS
            .into_iter()
            .filter_map(|extension| {
                let path = self.index_path(extension);
                File::open(&path).ok().map(|file| (path, Arc::new(file)))
            })
            .collect()
    }

    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        fs::remove_file(&self.path)
            .map_err(|source| LogError::io("deleting", &self.path, source))?;
        for extension in INDEX_EXTENSIONS {
            let path = self.index_path(extension);
            match fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LogError::io("deleting", &path, error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The header of the batch at `position`, checked to lie within `size`.
    pub(crate) fn read_header(&self, position: u64, size: u64) -> Result<BatchHeader, LogError> {
        let mut bytes = [0u8; BATCH_HEADER_LEN];
        if position + BATCH_HEADER_LEN as u64 > size {
            return Err(self.corrupt(position, "batch header runs past the segment end".into()));
        }
        self.file
            .read_exact_at(&mut bytes, position)
            .map_err(|source| LogError::io("reading", &self.path, source))?;
        let header = BatchHeader::parse(&bytes)
            .map_err(|error| self.corrupt(position, error.to_string()))?;
        if position + header.total_len() as u64 > size {
            return Err(self.corrupt(position, "batch runs past the segment end".into()));
        }
        Ok(header)
    }

    fn corrupt(&self, position: u64, reason: String) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason,
        }
    }

    /// The base offset of the first batch starting at or after `position` (`next_offset` if
    /// none).
    pub(crate) fn offset_at_or_after(&self, position: u64) -> Result<i64, LogError> {
        let start = self
            .offset_index
            .entries
            .partition_point(|&(_, at)| (at as u64) <= position);
        let mut at = if start == 0 {
            0
        } else {
            self.offset_index.entries[start - 1].1 as u64
        };
        while at < self.size {
            let header = self.read_header(at, self.size)?;
            if at >= position {
                return Ok(header.base_offset);
            }
            at += header.total_len() as u64;
        }
        Ok(self.next_offset)
    }

    /// Position and header of the first batch whose last offset is at least `offset`.
    fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative_offset = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut position = self.offset_index.lookup(relative_offset) as u64;
        while position < self.size {
            let header = self.read_header(position, self.size)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Whole batches from the one holding `offset` (or the next one), at most `max_bytes`
    /// unless the first batch alone is larger, all with last offset below `end_offset`.
    /// `None` if the segment has nothing at or after `offset`.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        end_offset: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let Some((position, first)) = self.find_batch(offset)? else {
            return Ok(None);
        };
        if first.last_offset() >= end_offset {
            return Ok(Some(Bytes::new()));
        }
        let max_bytes = max_bytes.max(first.total_len());
        let want = (max_bytes as u64).min(self.size.saturating_sub(position)) as usize;
        if want >= MAP_MIN_BYTES
            && let Some(bytes) = self.read_mapped(position, want, end_offset)?
        {
            return Ok(Some(bytes));
        }
        read_batches(
            &self.file, &self.path, position, self.size, max_bytes, end_offset,
        )
        .map(Some)
    }

    /// The whole batches of `want` bytes from `position` that end below `end_offset`, as a
    /// slice of the file mapped read-only with its pages populated: nothing is zeroed or copied
    /// out of the page cache, and the mapping goes when the bytes are dropped. `None` if the
    /// range cannot be mapped (the caller then reads it).
    fn read_mapped(
        &self,
        position: u64,
        want: usize,
        end_offset: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let aligned = position - position % PAGE_BYTES;
        let start = (position - aligned) as usize;
        // SAFETY: the mapped bytes (below `size`, whole batches) never change while mapped:
        // the log only appends past them, and cuts a file only where nothing was read (a failed
        // append's partial write; recovery, before any read). The range ends inside the file.
        let map = unsafe {
            MmapOptions::new()
                .offset(aligned)
                .len(start + want)
                .populate()
                .map(&*self.file)
        };
        let map = match map {
            Ok(map) => map,
            Err(error) => {
                tracing::debug!(path = %self.path.display(), %error, "cannot map a segment range; reading it");
                return Ok(None);
            }
        };
        let taken = whole_batches(&map[start..], &self.path, position, end_offset)?;
        Ok(Some(Bytes::from_owner(MappedRange {
            map,
            start,
            end: start + taken,
        })))
    }

    /// A reader of this (sealed) segment from the batch holding `offset`, usable without the
    /// log: a sealed segment's bytes never change, and the open file outlives a deletion.
    pub(crate) fn sealed_slice(&self, offset: i64) -> Result<Option<crate::SealedSlice>, LogError> {
        Ok(self
            .find_batch(offset)?
            .map(|(position, _)| crate::SealedSlice {
                file: Arc::clone(&self.file),
                path: self.path.clone(),
                position,
                end: self.size,
                segment_next_offset: self.next_offset,
            }))
    }

    /// The first record with timestamp >= `target` in this segment, as (offset, timestamp).
    pub(crate) fn offset_for_timestamp(&self, target: i64) -> Result<Option<(i64, i64)>, LogError> {
        if self.max_timestamp < target {
            return Ok(None);
        }
        let mut position = match self.time_index.lookup(target) {
            Some(relative_offset) => self.offset_index.lookup(relative_offset) as u64,
            None => 0,
        };
        let mut batch = Vec::new();
        while position < self.size {
            let header = self.read_header(position, self.size)?;
            let total = header.total_len();
            if header.max_timestamp >= target {
                let compressed = header.compression() != Ok(Compression::None);
                if compressed || header.timestamp_type() == TimestampType::LogAppendTime {
                    return Ok(Some((header.base_offset, header.max_timestamp)));
                }
                batch.resize(total, 0);
                self.file
                    .read_exact_at(&mut batch, position)
                    .map_err(|source| LogError::io("reading", &self.path, source))?;
                let records = records::records(&batch)
                    .map_err(|error| self.corrupt(position, error.to_string()))?;
                for record in records {
                    let record =
                        record.map_err(|error| self.corrupt(position, error.to_string()))?;
                    let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
                    if timestamp >= target {
                        return Ok(Some((
                            header.base_offset + record.offset_delta as i64,
                            timestamp,
                        )));
                    }
                }
            }
            position += total as u64;
        }
        Ok(None)
    }
}

struct Scanned {
    problem: Option<String>,
}

/// Whole batches of `file` from `position` (a batch boundary) up to `end`, at most `max_bytes`
/// (at least the first batch, whatever `max_bytes` says, if `max_bytes` covers its length),
/// none with a last offset at or above `end_offset`.
pub(crate) fn read_batches(
    file: &File,
    path: &Path,
    position: u64,
    end: u64,
    max_bytes: usize,
    end_offset: i64,
) -> Result<Bytes, LogError> {
    let want = (max_bytes as u64).min(end.saturating_sub(position)) as usize;
    let mut buffer = vec![0u8; want];
    file.read_exact_at(&mut buffer, position)
        .map_err(|source| LogError::io("reading", path, source))?;
    let taken = whole_batches(&buffer, path, position, end_offset)?;
    buffer.truncate(taken);
    Ok(Bytes::from(buffer))
}

/// The length of the whole batches at the start of `bytes` (read from `position` of the file
/// at `path`) that end below `end_offset`.
fn whole_batches(
    bytes: &[u8],
    path: &Path,
    position: u64,
    end_offset: i64,
) -> Result<usize, LogError> {
    let mut taken = 0;
    while bytes.len() - taken >= BATCH_HEADER_LEN {
        let header = BatchHeader::parse(&bytes[taken..]).map_err(|error| LogError::Corrupt {
            path: path.to_path_buf(),
            position: position + taken as u64,
            reason: error.to_string(),
        })?;
        if taken + header.total_len() > bytes.len() || header.last_offset() >= end_offset {
            break;
        }
        taken += header.total_len();
    }
    Ok(taken)
}
