//! Writes uncompressed v2 batches record by record into a caller's buffer, with no allocation
//! of its own: for re-encoding batches from another representation (the cold tier's Parquet)
//! at memory speed.

use std::ops::Range;

use crate::record::{put_varint, put_varlong};
use crate::{
    ATTRIBUTES_AT, BATCH_HEADER_LEN, BATCH_LENGTH_AT, BatchHeader, COMPRESSION_MASK, CRC_AT,
    CRC_START, Header, LOG_OVERHEAD, MAGIC_V2, RECORD_COUNT_AT, RecordError,
};

/// The fields of one record for [`BatchEncoder::record`] (headers are passed beside them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFields<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// One uncompressed batch being written at the end of a buffer: [`BatchEncoder::begin`] writes
/// the header, [`BatchEncoder::record`] appends a record, [`BatchEncoder::finish`] fills in the
/// batch length, record count and CRC. Between `begin` and `finish` the buffer may only grow
/// through this encoder.
///
/// ```
/// use records::{BatchEncoder, BatchHeader, Header, RecordFields};
///
/// let template = BatchHeader::parse(&records::BatchBuilder::new(7).record(None, None, 0).build())
///     .unwrap();
/// let mut out = Vec::new();
/// let mut encoder = BatchEncoder::begin(&mut out, &template);
/// let record = RecordFields {
///     attributes: 0,
///     timestamp_delta: 0,
///     offset_delta: 0,
///     key: None,
///     value: Some(b"v"),
/// };
/// encoder.record(&mut out, &record, [Header { key: b"h", value: None }]).unwrap();
/// let range = encoder.finish(&mut out).unwrap();
/// assert_eq!(records::validate_batch(&out[range]).unwrap().base_offset, 7);
/// ```
#[derive(Debug)]
pub struct BatchEncoder {
    start: usize,
    record_count: i32,
}

impl BatchEncoder {
    /// Starts a batch at the end of `out` with the fields of `header`. Its `batch_length`,
    /// `magic`, `crc` and `record_count` are ignored (`finish` computes them), and the codec
    /// bits of its attributes are cleared: the records are written uncompressed.
    pub fn begin(out: &mut Vec<u8>, header: &BatchHeader) -> BatchEncoder {
        let start = out.len();
        put_header(
            out,
            &BatchHeader {
                attributes: header.attributes & !COMPRESSION_MASK,
                ..*header
            },
        );
        BatchEncoder {
            start,
            record_count: 0,
        }
    }

    /// Appends one record. Fails, writing nothing, if a field or the record is longer than a
    /// v2 record can say (2 GiB).
    pub fn record<'h, H>(
        &mut self,
        out: &mut Vec<u8>,
        record: &RecordFields<'_>,
        headers: H,
    ) -> Result<(), RecordError>
    where
        H: IntoIterator<Item = Header<'h>>,
        H::IntoIter: Clone,
    {
        let index = self.record_count;
        let invalid = |reason| RecordError::InvalidRecord { index, reason };
        let headers = headers.into_iter();
        let mut header_count = 0usize;
        let mut headers_len = 0usize;
        for header in headers.clone() {
            header_count += 1;
            headers_len += nullable_len(Some(header.key)).map_err(invalid)?
                + nullable_len(header.value).map_err(invalid)?;
        }
        let header_count =
            i32::try_from(header_count).map_err(|_| invalid("more than 2^31 headers"))?;
        let body_len = 1
            + varlong_len(record.timestamp_delta)
            + varlong_len(record.offset_delta as i64)
            + nullable_len(record.key).map_err(invalid)?
            + nullable_len(record.value).map_err(invalid)?
            + varlong_len(header_count as i64)
            + headers_len;
        let body_len =
            i32::try_from(body_len).map_err(|_| invalid("record is longer than 2 GiB"))?;
        if self.record_count == i32::MAX {
            return Err(invalid("more than 2^31 records in one batch"));
        }
        out.reserve(varlong_len(body_len as i64) + body_len as usize);
        put_varint(out, body_len);
        let body_start = out.len();
        out.push(record.attributes as u8);
        put_varlong(out, record.timestamp_delta);
        put_varint(out, record.offset_delta);
        put_nullable(out, record.key);
        put_nullable(out, record.value);
        put_varint(out, header_count);
        for header in headers {
            put_nullable(out, Some(header.key));
            put_nullable(out, header.value);
        }
        debug_assert_eq!(out.len() - body_start, body_len as usize);
        self.record_count += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Fills in the batch length, the record count and the CRC; returns where the batch is in
    /// `out`. Fails if the batch is longer than 2 GiB.
    pub fn finish(self, out: &mut [u8]) -> Result<Range<usize>, RecordError> {
        let batch = &mut out[self.start..];
        batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
            .copy_from_slice(&self.record_count.to_be_bytes());
        seal(batch)?;
        Ok(self.start..out.len())
    }
}

/// Appends the 61 header bytes of `header` as given, with a zero CRC.
pub(crate) fn put_header(out: &mut Vec<u8>, header: &BatchHeader) {
    let start = out.len();
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    out.extend_from_slice(&header.batch_length.to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&[0; 4]); // crc, see `seal`
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.record_count.to_be_bytes());
    debug_assert_eq!(out.len() - start, BATCH_HEADER_LEN);
    debug_assert_eq!(ATTRIBUTES_AT, CRC_START);
}

/// Sets the batch length from `batch.len()` and computes the CRC.
pub(crate) fn seal(batch: &mut [u8]) -> Result<(), RecordError> {
    let batch_length = i32::try_from(batch.len() - LOG_OVERHEAD)
        .map_err(|_| RecordError::BatchTooLarge { bytes: batch.len() })?;
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Bytes of a zigzag varlong (a varint in `i32` range encodes the same).
#[inline]
fn varlong_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - raw.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

#[inline]
fn nullable_len(bytes: Option<&[u8]>) -> Result<usize, &'static str> {
    match bytes {
        None => Ok(1),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).map_err(|_| "field is longer than 2 GiB")?;
            Ok(varlong_len(len as i64) + bytes.len())
        }
    }
}

#[inline]
pub(crate) fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_len_matches_the_encoding() {
        for value in [
            0,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(varlong_len(value), out.len(), "{value}");
        }
    }
}
