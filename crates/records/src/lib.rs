//! Kafka RecordBatch v2 ("magic 2") on raw bytes: parse the 61-byte header, validate lengths,
//! CRC32C and (for uncompressed batches) every record, split a record set into batches, and
//! rewrite the few fields a broker owns (base offset, leader epoch, LogAppendTime) in place.
//! Beside that: bounded decompression of a records section ([`codecs`]), walking the records of
//! a decompressed section ([`records_in_section`]), and writing uncompressed batches record by
//! record ([`BatchEncoder`]).
//!
//! **Architecture invariant:** this crate does no I/O, and validation never decompresses: a
//! compressed batch is checked as far as its header and CRC go; its records stay opaque bytes
//! unless a caller asks [`codecs::decompress`], which bounds its output.
//!
//! ```
//! use records::{BatchBuilder, batches, set_base_offset};
//!
//! let mut set = BatchBuilder::new(0).record(Some(b"k"), Some(b"v"), 1_000).build();
//! set_base_offset(&mut set, 42).unwrap();
//! let (header, range) = batches(&set).next().unwrap().unwrap();
//! assert_eq!((header.base_offset, header.last_offset(), range), (42, 42, 0..set.len()));
//! ```

mod builder;
pub mod codecs;
mod encoder;
mod record;

use std::ops::Range;

pub use builder::{BatchBuilder, ProducerIdentity, SimpleRecord, build_uncompressed_batch};
pub use encoder::{BatchEncoder, RecordFields};
pub use record::{
    Header, HeaderIter, Record, RecordIter, min_timestamp, records, records_in_section,
};

/// Bytes in a v2 batch header, from `baseOffset` to the end of `recordCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format this crate understands.
pub const MAGIC_V2: i8 = 2;
/// The CRC covers the batch from `attributes` to its end.
pub const CRC_START: usize = 21;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a batch or record set was rejected. The broker maps `CorruptMessage` (and the framing
/// errors) to Kafka's CORRUPT_MESSAGE (2) and `InvalidRecordCount`/`InvalidRecord` to
/// INVALID_RECORD (87).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("batch is truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {batch_length} is invalid (a v2 batch needs at least 49)")]
    InvalidBatchLength { batch_length: i32 },
    #[error("unsupported batch magic {magic} (only magic 2 is supported)")]
    BadMagic { magic: i8 },
    #[error("batch crc mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CorruptMessage { expected: u32, actual: u32 },
    #[error("unknown compression codec {codec} in batch attributes")]
    UnknownCompression { codec: i16 },
    #[error(
        "batch record count {record_count} does not match last offset delta {last_offset_delta}"
    )]
    InvalidRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("record {index} of the batch is invalid: {reason}")]
    InvalidRecord { index: i32, reason: &'static str },
    #[error(
        "batch is compressed ({compression:?}); its records cannot be read without decompressing"
    )]
    Compressed { compression: Compression },
    #[error("empty record set")]
    EmptyRecordSet,
    #[error("batch of {bytes} bytes is too large for a v2 batch (at most 2 GiB)")]
    BatchTooLarge { bytes: usize },
}

impl RecordError {
    /// True for errors Kafka reports as INVALID_RECORD (87) rather than CORRUPT_MESSAGE (2).
    pub fn is_invalid_record(&self) -> bool {
        matches!(
            self,
            RecordError::InvalidRecordCount { .. } | RecordError::InvalidRecord { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Result<Compression, RecordError> {
        Ok(match attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            codec => return Err(RecordError::UnknownCompression { codec }),
        })
    }

    pub fn codec(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after this field: the batch is `12 + batch_length` bytes long.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `bytes`. Checks only that the header is there, that
    /// the magic is 2 and that `batch_length` can hold a header; see [`validate_batch`].
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(RecordError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: bytes.len(),
            });
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(RecordError::BadMagic { magic });
        }
        let header = BatchHeader {
            base_offset: get_i64(bytes, BASE_OFFSET_AT),
            batch_length: get_i32(bytes, BATCH_LENGTH_AT),
            partition_leader_epoch: get_i32(bytes, PARTITION_LEADER_EPOCH_AT),
            magic,
            crc: get_i32(bytes, CRC_AT) as u32,
            attributes: get_i16(bytes, ATTRIBUTES_AT),
            last_offset_delta: get_i32(bytes, 23),
            base_timestamp: get_i64(bytes, 27),
            max_timestamp: get_i64(bytes, MAX_TIMESTAMP_AT),
            producer_id: get_i64(bytes, 43),
            producer_epoch: get_i16(bytes, 51),
            base_sequence: get_i32(bytes, 53),
            record_count: get_i32(bytes, RECORD_COUNT_AT),
        };
        if (header.batch_length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(RecordError::InvalidBatchLength {
                batch_length: header.batch_length,
            });
        }
        Ok(header)
    }

    pub fn compression(&self) -> Result<Compression, RecordError> {
        Compression::from_attributes(self.attributes)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Bytes of the whole batch, header included. `parse` guarantees it is at least 61.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The sequence number of the last record, wrapping past `i32::MAX` to 0 as Kafka does;
    /// -1 for a batch without a sequence.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Checks one batch as a producer sent it: framing, magic, CRC, `record_count >= 1` and
/// `record_count == last_offset_delta + 1`, and for an uncompressed batch every record (lengths
/// in bounds, offset deltas `0..record_count` in order, exact count). Compressed batches are
/// checked up to their CRC. Bytes after the batch are ignored: use [`batches`] for a record set.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = check_frame_and_crc(bytes)?;
    if header.record_count < 1 || header.record_count as i64 != header.last_offset_delta as i64 + 1
    {
        return Err(RecordError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.compression()? == Compression::None {
        let mut count = 0i32;
        for record in records(&bytes[..header.total_len()])? {
            let record = record?;
            if record.offset_delta != count {
                return Err(RecordError::InvalidRecord {
                    index: count,
                    reason: "offset delta is not the record's position in the batch",
                });
            }
            count += 1;
        }
        if count != header.record_count {
            return Err(RecordError::InvalidRecord {
                index: count,
                reason: "batch holds fewer records than its record count",
            });
        }
    }
    Ok(header)
}

/// Checks one batch read back from the log: framing, magic, CRC and a record count that a
/// compacted batch may have (`0 <= record_count <= last_offset_delta + 1`). Records are not
/// walked: the CRC vouches for them, and they were walked when appended.
pub fn validate_stored_batch(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    check_record_count(check_frame_and_crc(bytes)?)
}

/// [`validate_stored_batch`] without the CRC, for a reader of this broker's own log that walks
/// the records itself (SQL scans): the CRC was checked when the batch was appended and again
/// when the log was recovered, and the walk still catches a record that does not parse.
pub fn validate_own_batch(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(bytes)?;
    if bytes.len() < header.total_len() {
        return Err(RecordError::Truncated {
            needed: header.total_len(),
            available: bytes.len(),
        });
    }
    header.compression()?;
    check_record_count(header)
}

fn check_record_count(header: BatchHeader) -> Result<BatchHeader, RecordError> {
    if header.record_count < 0
        || header.last_offset_delta < 0
        || header.record_count as i64 > header.last_offset_delta as i64 + 1
    {
        return Err(RecordError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

fn check_frame_and_crc(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(bytes)?;
    let total = header.total_len();
    if bytes.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    header.compression()?;
    let actual = crc32c::crc32c(&bytes[CRC_START..total]);
    if actual != header.crc {
        return Err(RecordError::CorruptMessage {
            expected: header.crc,
            actual,
        });
    }
    Ok(header)
}

/// How strictly [`BatchIter`] checks each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// [`validate_batch`]: input from a producer.
    Producer,
    /// [`validate_stored_batch`]: bytes read back from the log.
    Stored,
    /// [`validate_own_batch`]: bytes read back from the log by a reader that walks the records.
    Own,
}

/// Splits a record set into its batches, validating each; stops after the first error.
/// Yields each batch's header and its byte range within the record set.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    validation: Validation,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8], validation: Validation) -> BatchIter<'a> {
        BatchIter {
            bytes,
            position: 0,
            validation,
            failed: false,
        }
    }

    /// Where the next batch starts (after an error: where the bad batch starts).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Range<usize>), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.position..];
        let checked = match self.validation {
            Validation::Producer => validate_batch(rest),
            Validation::Stored => validate_stored_batch(rest),
            Validation::Own => validate_own_batch(rest),
        };
        match checked {
            Ok(header) => {
                let range = self.position..self.position + header.total_len();
                self.position = range.end;
                Some(Ok((header, range)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// The batches of a record set from a producer, each checked with [`validate_batch`].
pub fn batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter::new(bytes, Validation::Producer)
}

/// The batches of a record set read from the log, each checked with [`validate_stored_batch`].
pub fn stored_batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter::new(bytes, Validation::Stored)
}

/// The batches of a record set read from this broker's own log by a reader that walks their
/// records, each checked with [`validate_own_batch`] (no CRC).
pub fn own_batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter::new(bytes, Validation::Own)
}

/// Validates a whole producer record set: at least one batch, every batch valid, no trailing
/// bytes. Returns the headers and ranges.
pub fn validate_record_set(bytes: &[u8]) -> Result<Vec<(BatchHeader, Range<usize>)>, RecordError> {
    if bytes.is_empty() {
        return Err(RecordError::EmptyRecordSet);
    }
    batches(bytes).collect()
}

fn check_len(batch: &[u8], needed: usize) -> Result<(), RecordError> {
    if batch.len() < needed {
        return Err(RecordError::Truncated {
            needed,
            available: batch.len(),
        });
    }
    Ok(())
}

/// Rewrites `baseOffset`. The field is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), RecordError> {
    check_len(batch, BATCH_HEADER_LEN)?;
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Rewrites `partitionLeaderEpoch`. The field is outside the CRC, so the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), RecordError> {
    check_len(batch, BATCH_HEADER_LEN)?;
    let at = PARTITION_LEADER_EPOCH_AT;
    batch[at..at + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Marks the batch LogAppendTime with `append_time_ms`, as Kafka does: sets the timestamp-type
/// bit and `maxTimestamp`, leaves `baseTimestamp` and the records alone, and recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], append_time_ms: i64) -> Result<(), RecordError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len();
    check_len(batch, total)?;
    let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..total]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn get_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn get_i32(bytes: &[u8], at: usize) -> i32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(field)
}

fn get_i64(bytes: &[u8], at: usize) -> i64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(field)
}

#[cfg(test)]
mod tests;

/// The 32-bit MurmurHash2 variant Kafka's default partitioner uses (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner gives a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod partitioner_tests {
    use super::murmur2;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's own test vectors (as signed Java ints).
        let check = |input: &[u8], expect: i32| {
            assert_eq!(
                murmur2(input) as i32,
                expect,
                "{:?}",
                String::from_utf8_lossy(input)
            )
        };
        check(b"21", -973932308);
        check(b"foobar", -790332482);
        check(b"a-little-bit-long-string", -985981536);
        check(b"a-little-bit-longer-string", -1486304829);
        check(
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        );
        check(b"abc", 479470107);
    }
}
